package command

import (
	"context"
	"flag"
	"fmt"

	"github.com/hashicorp/cli"

	"github.com/pgbattery/pgbattery/agent/api"
)

// SwitchoverCommand requests a planned change of primary.
type SwitchoverCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags

	to    string
	force bool
	wait  bool
	help  string
}

func newSwitchoverCommand(ui cli.Ui) *SwitchoverCommand {
	c := &SwitchoverCommand{UI: ui}
	c.flags = newFlagSet("switchover")
	c.flags.StringVar(&c.to, "to", "", "The node to make primary. Default: the controller chooses the best caught-up standby.")
	c.flags.BoolVar(&c.force, "force", false, "Skip the checks that the target is caught up, in the synchronous set and not tagged nofailover. The switchover still promotes it only once it holds the old primary's final WAL position.")
	c.flags.BoolVar(&c.wait, "wait", false, fmt.Sprintf("Wait (up to %s) until the new primary accepts writes, and print it.", api.SwitchoverWaitTimeout))
	c.http.AddTo(c.flags)
	c.help = usage(switchoverHelp, c.flags)
	return c
}

const switchoverHelp = `
Usage: pgbattery switchover [options]

  Moves the primary role to another node without losing data: the primary
  fences itself and hands over its final WAL position, the target is
  promoted once it holds that position, and the old primary follows it as a
  standby. If no target catches up in time, the old primary gets its office
  back. The request is refused (exit 1) when the target is not a member,
  not a healthy streaming standby, lags behind, or another operation is
  pending.
`

func (c *SwitchoverCommand) Run(args []string) int {
	if !parseFlags(c.UI, c.flags, args, c.help) {
		return 1
	}
	if c.flags.NArg() > 0 {
		c.UI.Error("The switchover command takes no arguments (use -to NODE).")
		return 1
	}
	return runOperation(c.UI, &c.http, "switchover", api.SwitchoverOptions{To: c.to, Force: c.force, Wait: c.wait})
}

// runOperation sends a switchover or failover and reports its outcome.
func runOperation(ui cli.Ui, hf *HTTPFlags, kind string, o api.SwitchoverOptions) int {
	client, err := hf.APIClient()
	if err != nil {
		ui.Error(fmt.Sprintf("Error connecting to the pgbattery agent: %s", err))
		return 1
	}
	var resp *api.OperationResponse
	if kind == "failover" {
		resp, err = client.Failover(context.Background(), o)
	} else {
		resp, err = client.Switchover(context.Background(), o)
	}
	if err != nil {
		ui.Error(fmt.Sprintf("Error: %s", err))
		return 1
	}
	ui.Output(formatOperation(resp))
	if resp.Waited && resp.NewPrimary == resp.From {
		return 1
	}
	return 0
}

func formatOperation(r *api.OperationResponse) string {
	target := r.Target
	if target == "" {
		target = "the best standby"
	}
	s := fmt.Sprintf("%s requested at epoch %d: %s -> %s", capitalize(r.Kind), r.Epoch, orDash(r.From), target)
	if !r.Waited {
		return s + "\nFollow it with: pgbattery status"
	}
	if r.NewPrimary == r.From {
		why := ""
		if r.Transition != nil {
			why = ": " + r.Transition.Reason
		}
		return s + fmt.Sprintf("\nThe %s did not finish; %s is primary again at epoch %d%s", r.Kind, r.NewPrimary, r.NewEpoch, why)
	}
	return s + fmt.Sprintf("\nNew primary: %s (epoch %d)", r.NewPrimary, r.NewEpoch)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}

func (c *SwitchoverCommand) Synopsis() string {
	return "Moves the primary to another node without losing data"
}
func (c *SwitchoverCommand) Help() string { return c.help }
