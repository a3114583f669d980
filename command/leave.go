package command

import (
	"context"
	"flag"
	"fmt"

	"github.com/hashicorp/cli"
)

// LeaveCommand makes the local agent leave the cluster gracefully.
type LeaveCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags
	help  string
}

func newLeaveCommand(ui cli.Ui) *LeaveCommand {
	c := &LeaveCommand{UI: ui}
	c.flags = newFlagSet("leave")
	c.http.AddTo(c.flags)
	c.help = usage(leaveHelp, c.flags)
	return c
}

const leaveHelp = `
Usage: pgbattery leave [options]

  Makes the local agent leave the cluster gracefully and shut down. Its peers
  record it as "left" rather than "failed", so no failover is started on its
  account.
`

func (c *LeaveCommand) Run(args []string) int {
	if !parseFlags(c.UI, c.flags, args, c.help) {
		return 1
	}
	if c.flags.NArg() > 0 {
		c.UI.Error("The leave command takes no arguments.")
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error connecting to the pgbattery agent: %s", err))
		return 1
	}
	if err := client.Leave(context.Background()); err != nil {
		c.UI.Error(fmt.Sprintf("Error leaving the cluster: %s", err))
		return 1
	}
	c.UI.Output("Graceful leave complete")
	return 0
}

func (c *LeaveCommand) Synopsis() string {
	return "Gracefully leaves the cluster and stops the local agent"
}
func (c *LeaveCommand) Help() string { return c.help }
