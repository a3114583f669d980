package command

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"

	"github.com/hashicorp/cli"
)

// keygenBytes is the key size printed: AES-256, the strongest memberlist
// accepts.
const keygenBytes = 32

// KeygenCommand prints a new gossip encryption key.
type KeygenCommand struct {
	UI cli.Ui
}

func (c *KeygenCommand) Run(args []string) int {
	if len(args) > 0 {
		c.UI.Error("The keygen command takes no arguments.")
		c.UI.Error("")
		c.UI.Error(strings.TrimSpace(c.Help()))
		return 1
	}
	key := make([]byte, keygenBytes)
	if _, err := rand.Read(key); err != nil {
		c.UI.Error(fmt.Sprintf("Error reading random data: %s", err))
		return 1
	}
	c.UI.Output(base64.StdEncoding.EncodeToString(key))
	return 0
}

func (c *KeygenCommand) Synopsis() string { return "Generates a new gossip encryption key" }

func (c *KeygenCommand) Help() string {
	return usage(`
Usage: pgbattery keygen

  Prints a new random 32-byte key, base64-encoded, for the encrypt setting
  (or -encrypt flag). Every agent of a cluster must use the same key.
`, nil)
}
