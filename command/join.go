package command

import (
	"context"
	"flag"
	"fmt"

	"github.com/hashicorp/cli"
)

// JoinCommand tells the local agent to join a cluster.
type JoinCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags
	help  string
}

func newJoinCommand(ui cli.Ui) *JoinCommand {
	c := &JoinCommand{UI: ui}
	c.flags = newFlagSet("join")
	c.http.AddTo(c.flags)
	c.help = usage(joinHelp, c.flags)
	return c
}

const joinHelp = `
Usage: pgbattery join [options] ADDRESS ...

  Tells the local agent to join the cluster through the agents at the given
  addresses: "host", "host:port" or "[IPv6]:port" (the port defaults to the
  gossip port 8301). Joining through one member is enough.
`

func (c *JoinCommand) Run(args []string) int {
	if !parseFlags(c.UI, c.flags, args, c.help) {
		return 1
	}
	addrs := c.flags.Args()
	if len(addrs) == 0 {
		c.UI.Error("At least one address to join is required.")
		c.UI.Error("")
		c.UI.Error(c.help)
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error connecting to the pgbattery agent: %s", err))
		return 1
	}
	n, err := client.Join(context.Background(), addrs)
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error joining the cluster: %s", err))
		return 1
	}
	if n == 0 {
		c.UI.Error("Error joining the cluster: no node could be contacted.")
		return 1
	}
	c.UI.Output(fmt.Sprintf("Successfully joined cluster by contacting %d nodes.", n))
	return 0
}

func (c *JoinCommand) Synopsis() string { return "Tells the local agent to join a cluster" }
func (c *JoinCommand) Help() string     { return c.help }
