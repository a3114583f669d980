package command

import (
	"context"
	"flag"
	"fmt"

	"github.com/hashicorp/cli"
)

// OperatorRaftRemovePeerCommand removes a server from the raft configuration.
type OperatorRaftRemovePeerCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags

	id   string
	help string
}

func newOperatorRaftRemovePeerCommand(ui cli.Ui) *OperatorRaftRemovePeerCommand {
	c := &OperatorRaftRemovePeerCommand{UI: ui}
	c.flags = newFlagSet("remove-peer")
	c.flags.StringVar(&c.id, "id", "", "The raft ID of the peer to remove (the ID column of list-peers; required).")
	c.http.AddTo(c.flags)
	c.help = usage(removePeerHelp, c.flags)
	return c
}

const removePeerHelp = `
Usage: pgbattery operator raft remove-peer -id=ID [options]

  Removes a server from the raft configuration: for a server that is gone
  for good and did not leave gracefully, so that it no longer counts toward
  the quorum. The change is made by the raft leader (the agent asked
  forwards it there). Removing a live server is pointless: its agent adds it
  back.
`

func (c *OperatorRaftRemovePeerCommand) Run(args []string) int {
	if !parseFlags(c.UI, c.flags, args, c.help) {
		return 1
	}
	if c.flags.NArg() > 0 {
		c.UI.Error("The remove-peer command takes no arguments (use -id=ID).")
		return 1
	}
	if c.id == "" {
		c.UI.Error("Missing peer ID: -id=ID (see pgbattery operator raft list-peers).")
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error connecting to the pgbattery agent: %s", err))
		return 1
	}
	if err := client.RaftRemovePeer(context.Background(), c.id); err != nil {
		c.UI.Error(fmt.Sprintf("Error removing peer: %s", err))
		return 1
	}
	c.UI.Output(fmt.Sprintf("Removed peer with id %q", c.id))
	return 0
}

func (c *OperatorRaftRemovePeerCommand) Synopsis() string {
	return "Removes a server from the raft configuration"
}
func (c *OperatorRaftRemovePeerCommand) Help() string { return c.help }
