// Command pgbattery gives PostgreSQL high availability with no external
// coordination service. See README.md.
package main

import (
	"os"

	"github.com/pgbattery/pgbattery/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
