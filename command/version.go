package command

import (
	"strings"

	"github.com/hashicorp/cli"

	"github.com/pgbattery/pgbattery/agent/version"
)

// VersionCommand prints the build identity.
type VersionCommand struct {
	UI cli.Ui
}

func (c *VersionCommand) Run(args []string) int {
	if len(args) > 0 {
		c.UI.Error("The version command takes no arguments.")
		c.UI.Error("")
		c.UI.Error(strings.TrimSpace(c.Help()))
		return 1
	}
	c.UI.Output(strings.TrimRight(version.Info(), "\n"))
	return 0
}

func (c *VersionCommand) Synopsis() string { return "Prints the pgbattery version" }

func (c *VersionCommand) Help() string {
	return usage(`
Usage: pgbattery version

  Prints the version of this pgbattery binary, the git commit it was built
  from, the Go version, and the PostgreSQL major versions it supports.
`, nil)
}
