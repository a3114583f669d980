package command

import (
	"context"
	"flag"
	"fmt"

	"github.com/hashicorp/cli"
)

// ForceLeaveCommand marks a failed node as left.
type ForceLeaveCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags
	help  string
}

func newForceLeaveCommand(ui cli.Ui) *ForceLeaveCommand {
	c := &ForceLeaveCommand{UI: ui}
	c.flags = newFlagSet("force-leave")
	c.http.AddTo(c.flags)
	c.help = usage(forceLeaveHelp, c.flags)
	return c
}

const forceLeaveHelp = `
Usage: pgbattery force-leave [options] NODE

  Marks a failed node as left, so the cluster stops trying to reach it. Use
  it for a node that is gone for good. A node that is still running rejoins
  on its own.
`

func (c *ForceLeaveCommand) Run(args []string) int {
	if !parseFlags(c.UI, c.flags, args, c.help) {
		return 1
	}
	if c.flags.NArg() != 1 {
		c.UI.Error("Exactly one node name is required.")
		c.UI.Error("")
		c.UI.Error(c.help)
		return 1
	}
	node := c.flags.Arg(0)
	client, err := c.http.APIClient()
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error connecting to the pgbattery agent: %s", err))
		return 1
	}
	if err := client.ForceLeave(context.Background(), node); err != nil {
		c.UI.Error(fmt.Sprintf("Error forcing %s to leave: %s", node, err))
		return 1
	}
	return 0
}

func (c *ForceLeaveCommand) Synopsis() string { return "Marks a failed node as left" }
func (c *ForceLeaveCommand) Help() string     { return c.help }
