package command

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"

	"github.com/hashicorp/cli"

	"github.com/pgbattery/pgbattery/agent/api"
)

// OperatorRaftListPeersCommand shows the raft configuration.
type OperatorRaftListPeersCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags

	format string
	help   string
}

func newOperatorRaftListPeersCommand(ui cli.Ui) *OperatorRaftListPeersCommand {
	c := &OperatorRaftListPeersCommand{UI: ui}
	c.flags = newFlagSet("list-peers")
	c.flags.StringVar(&c.format, "format", "text", "Output format: text or json.")
	c.http.AddTo(c.flags)
	c.help = usage(listPeersHelp, c.flags)
	return c
}

const listPeersHelp = `
Usage: pgbattery operator raft list-peers [options]

  Shows the raft configuration with Consul's columns: Node, ID, Address,
  State (leader, follower, candidate; unknown when the peer did not answer),
  Voter, RaftProtocol, Commit Index (the highest entry the peer knows
  committed) and Trails Leader By (committed entries the peer has not yet
  applied). Each peer's progress is asked from its agent; a peer that does
  not answer shows "-" in the columns only it can report.
`

func (c *OperatorRaftListPeersCommand) Run(args []string) int {
	if !parseFlags(c.UI, c.flags, args, c.help) {
		return 1
	}
	if c.flags.NArg() > 0 {
		c.UI.Error("The list-peers command takes no arguments.")
		return 1
	}
	if c.format != "text" && c.format != "json" {
		c.UI.Error(fmt.Sprintf("Invalid -format %q: use text or json.", c.format))
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error connecting to the pgbattery agent: %s", err))
		return 1
	}
	peers, err := client.RaftPeers(context.Background())
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error retrieving the raft configuration: %s", err))
		return 1
	}
	if c.format == "json" {
		out, err := json.MarshalIndent(peers, "", "  ")
		if err != nil {
			c.UI.Error(fmt.Sprintf("Error encoding the peers: %s", err))
			return 1
		}
		c.UI.Output(string(out))
		return 0
	}
	c.UI.Output(formatRaftPeers(peers))
	return 0
}

func formatRaftPeers(peers []api.RaftPeer) string {
	tab := newTable("Node", "ID", "Address", "State", "Voter", "RaftProtocol", "Commit Index", "Trails Leader By")
	for _, p := range peers {
		node, proto, commit, trails := orDash(p.Node), "-", "-", "-"
		if p.Reported {
			proto = orDash(p.RaftProtocol)
			commit = fmt.Sprint(p.CommitIndex)
			trails = fmt.Sprintf("%d commits", p.TrailsLeaderBy)
		}
		tab.row(node, p.ID, p.Address, p.State, p.Voter, proto, commit, trails)
	}
	return strings.TrimRight(tab.String(), "\n")
}

func (c *OperatorRaftListPeersCommand) Synopsis() string {
	return "Displays the raft peer configuration"
}
func (c *OperatorRaftListPeersCommand) Help() string { return c.help }
