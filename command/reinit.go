package command

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/hashicorp/cli"

	"github.com/pgbattery/pgbattery/agent/api"
)

// ReinitCommand asks a standby to re-clone its PostgreSQL from the primary.
type ReinitCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags

	force   bool
	reason  string
	wait    bool
	timeout time.Duration
	help    string
}

// reinitPoll is how often -wait looks at the request.
const reinitPoll = 500 * time.Millisecond

func newReinitCommand(ui cli.Ui) *ReinitCommand {
	c := &ReinitCommand{UI: ui}
	c.flags = newFlagSet("reinit")
	c.flags.BoolVar(&c.force, "force", false, "Re-initialize the node even when it is a synchronous standby the replication mode cannot do without: commits block until it is back.")
	c.flags.StringVar(&c.reason, "reason", "", "A note recorded with the request.")
	c.flags.BoolVar(&c.wait, "wait", false, "Wait until the node has re-cloned and started as a standby, and print the outcome.")
	c.flags.DurationVar(&c.timeout, "timeout", 30*time.Minute, "With -wait, how long to wait. The request stays in force after a timeout.")
	c.http.AddTo(c.flags)
	c.help = usage(reinitHelp, c.flags)
	return c
}

const reinitHelp = `
Usage: pgbattery reinit [options] NODE

  Re-initializes the PostgreSQL of NODE, a standby: its agent stops
  PostgreSQL, sets the data directory aside (PGDATA becomes PGDATA.old,
  replacing any earlier set-aside copy), clones the current primary with
  pg_basebackup and starts as its standby. Use it for a standby that is
  broken or has diverged in a way pg_rewind cannot mend.

  The request is recorded in the cluster state: the node carries it out
  even if its agent restarts first, and it is refused (exit 1) for the
  primary, a witness, an unknown node, while no primary serves, or when
  the node is a synchronous standby that writes cannot do without (-force
  overrides the last).
`

func (c *ReinitCommand) Run(args []string) int {
	if !parseFlags(c.UI, c.flags, args, c.help) {
		return 1
	}
	// The node may come before flags too (reinit n2 -wait).
	var node string
	if c.flags.NArg() > 0 {
		node = c.flags.Arg(0)
		if !parseFlags(c.UI, c.flags, c.flags.Args()[1:], c.help) {
			return 1
		}
	}
	if node == "" || c.flags.NArg() != 0 {
		c.UI.Error("The reinit command takes exactly one argument, the node name.")
		c.UI.Error("")
		c.UI.Error(c.help)
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error connecting to the pgbattery agent: %s", err))
		return 1
	}
	resp, err := client.Reinit(context.Background(), node, api.ReinitOptions{Force: c.force, Reason: c.reason})
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error: %s", err))
		return 1
	}
	c.UI.Output(fmt.Sprintf("Reinit of %s requested (id %s): it re-clones from %s (epoch %d)", resp.Node, resp.ID, resp.From, resp.Epoch))
	if !c.wait {
		c.UI.Output("Follow it with: pgbattery status")
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	for {
		st, err := client.ReinitStatus(ctx)
		if err == nil {
			for _, rec := range st.Recent {
				if rec.ID != resp.ID {
					continue
				}
				if rec.Outcome == "done" {
					c.UI.Output(fmt.Sprintf("Reinit of %s done: %s", rec.Node, rec.Detail))
					return 0
				}
				c.UI.Error(fmt.Sprintf("Reinit of %s %s: %s", rec.Node, rec.Outcome, rec.Detail))
				return 1
			}
		}
		select {
		case <-ctx.Done():
			c.UI.Error(fmt.Sprintf("Gave up waiting after %s; the reinit request %s stays pending (see GET /v1/operator/reinit)", c.timeout, resp.ID))
			return 1
		case <-time.After(reinitPoll):
		}
	}
}

func (c *ReinitCommand) Synopsis() string {
	return "Re-clones a standby's PostgreSQL from the primary"
}
func (c *ReinitCommand) Help() string { return c.help }
