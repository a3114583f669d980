package command

import (
	"context"
	"flag"
	"fmt"

	"github.com/hashicorp/cli"
)

// OperatorRaftTransferLeaderCommand hands raft leadership to another server.
type OperatorRaftTransferLeaderCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags

	id   string
	help string
}

func newOperatorRaftTransferLeaderCommand(ui cli.Ui) *OperatorRaftTransferLeaderCommand {
	c := &OperatorRaftTransferLeaderCommand{UI: ui}
	c.flags = newFlagSet("transfer-leader")
	c.flags.StringVar(&c.id, "id", "", "The raft ID of the voter to hand leadership to. Default: the most up-to-date voter.")
	c.http.AddTo(c.flags)
	c.help = usage(transferLeaderHelp, c.flags)
	return c
}

const transferLeaderHelp = `
Usage: pgbattery operator raft transfer-leader [-id=ID] [options]

  Makes the raft leader hand its office to another voter, for example
  before maintenance on the leader's machine. The raft leader runs the
  controller but not necessarily the primary PostgreSQL: moving it does not
  move the primary (use pgbattery switchover for that).
`

func (c *OperatorRaftTransferLeaderCommand) Run(args []string) int {
	if !parseFlags(c.UI, c.flags, args, c.help) {
		return 1
	}
	if c.flags.NArg() > 0 {
		c.UI.Error("The transfer-leader command takes no arguments (use -id=ID).")
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error connecting to the pgbattery agent: %s", err))
		return 1
	}
	resp, err := client.RaftTransferLeader(context.Background(), c.id)
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error transferring leadership: %s", err))
		return 1
	}
	to := resp.To
	if to == "" {
		to = "another voter"
	}
	c.UI.Output(fmt.Sprintf("Raft leadership transferred from %s to %s", resp.From, to))
	return 0
}

func (c *OperatorRaftTransferLeaderCommand) Synopsis() string {
	return "Hands raft leadership to another server"
}
func (c *OperatorRaftTransferLeaderCommand) Help() string { return c.help }
