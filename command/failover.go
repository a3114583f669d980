package command

import (
	"flag"
	"fmt"

	"github.com/hashicorp/cli"

	"github.com/pgbattery/pgbattery/agent/api"
)

// FailoverCommand forces a node to become primary.
type FailoverCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags

	to   string
	wait bool
	help string
}

func newFailoverCommand(ui cli.Ui) *FailoverCommand {
	c := &FailoverCommand{UI: ui}
	c.flags = newFlagSet("failover")
	c.flags.StringVar(&c.to, "to", "", "The node to make primary (required).")
	c.flags.BoolVar(&c.wait, "wait", false, fmt.Sprintf("Wait (up to %s) until the new primary accepts writes, and print it.", api.SwitchoverWaitTimeout))
	c.http.AddTo(c.flags)
	c.help = usage(failoverHelp, c.flags)
	return c
}

const failoverHelp = `
Usage: pgbattery failover -to NODE [options]

  Makes NODE the primary whatever its WAL position: for when no primary is
  healthy and the automatic failover cannot (or must not) choose. Once the
  old primary's lease has ended, NODE is promoted; transactions that were
  acknowledged but had not reached NODE are LOST. The history records how
  many bytes may have been lost. Prefer "pgbattery switchover" while the
  primary is healthy.
`

func (c *FailoverCommand) Run(args []string) int {
	if !parseFlags(c.UI, c.flags, args, c.help) {
		return 1
	}
	if c.flags.NArg() > 0 {
		c.UI.Error("The failover command takes no arguments (use -to NODE).")
		return 1
	}
	if c.to == "" {
		c.UI.Error("The failover command needs a target: -to NODE.")
		c.UI.Error("")
		c.UI.Error(c.help)
		return 1
	}
	c.UI.Warn(fmt.Sprintf("Warning: a manual failover promotes %s whatever WAL it holds; data that was not yet on %s may be lost.", c.to, c.to))
	return runOperation(c.UI, &c.http, "failover", api.SwitchoverOptions{To: c.to, Wait: c.wait})
}

func (c *FailoverCommand) Synopsis() string {
	return "Makes a node primary now, even if that loses data"
}
func (c *FailoverCommand) Help() string { return c.help }
