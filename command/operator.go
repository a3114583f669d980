package command

import (
	"github.com/hashicorp/cli"
)

// OperatorCommand is the parent of the operator subcommands; it only shows
// help, as Consul's does.
type OperatorCommand struct {
	name, synopsis, help string
}

func newOperatorCommand() *OperatorCommand {
	return &OperatorCommand{name: "operator", synopsis: "Provides cluster-level tools for operators", help: `
Usage: pgbattery operator <subcommand> [options]

  Cluster-level tools for operators, such as inspecting and changing the
  raft configuration. Run a subcommand with -h for its help.`}
}

func newOperatorRaftCommand() *OperatorCommand {
	return &OperatorCommand{name: "operator raft", synopsis: "Inspects and changes the raft configuration", help: `
Usage: pgbattery operator raft <subcommand> [options]

  Inspects and changes the raft configuration of the control plane:
  list-peers, remove-peer, transfer-leader. Run a subcommand with -h for its
  help.`}
}

// Run shows the help: a parent command has nothing of its own to do.
func (c *OperatorCommand) Run(args []string) int { return cli.RunResultHelp }
func (c *OperatorCommand) Synopsis() string      { return c.synopsis }
func (c *OperatorCommand) Help() string          { return c.help[1:] }
