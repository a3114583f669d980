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

// HistoryCommand lists every change of primary with its evidence.
type HistoryCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags

	format   string
	detailed bool
	help     string
}

func newHistoryCommand(ui cli.Ui) *HistoryCommand {
	c := &HistoryCommand{UI: ui}
	c.flags = newFlagSet("history")
	c.flags.StringVar(&c.format, "format", "text", "Output format: text or json.")
	c.flags.BoolVar(&c.detailed, "detailed", false, "Also show the reason and each candidate's evidence.")
	c.http.AddTo(c.flags)
	c.help = usage(historyHelp, c.flags)
	return c
}

const historyHelp = `
Usage: pgbattery history [options]

  Lists the cluster's changes of primary, oldest first: bootstrap,
  failovers, switchovers, manual failovers and reinstatements, with the
  epoch, the nodes, the WAL position promoted and the write gap measured by
  the gateway. -detailed adds the reason and, for every candidate, its WAL
  positions and why it was not chosen; -format=json gives all of it.
`

func (c *HistoryCommand) Run(args []string) int {
	if !parseFlags(c.UI, c.flags, args, c.help) {
		return 1
	}
	if c.flags.NArg() > 0 {
		c.UI.Error("The history command takes no arguments.")
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
	hist, err := client.History(context.Background())
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error retrieving the history: %s", err))
		return 1
	}
	if c.format == "json" {
		out, err := json.MarshalIndent(hist, "", "  ")
		if err != nil {
			c.UI.Error(fmt.Sprintf("Error encoding the history: %s", err))
			return 1
		}
		c.UI.Output(string(out))
		return 0
	}
	if len(hist) == 0 {
		c.UI.Output("No history yet: the cluster has not bootstrapped.")
		return 0
	}
	c.UI.Output(formatHistory(hist, c.detailed))
	return 0
}

func formatHistory(hist []api.Transition, detailed bool) string {
	tab := newTable("Epoch", "Kind", "From", "To", "LSN", "Write gap", "Decided by", "At (UTC)")
	for _, t := range hist {
		gap := "-"
		if t.WriteGapMS > 0 {
			gap = fmt.Sprintf("%dms", t.WriteGapMS)
		}
		at := "-"
		if !t.DecidedAt.IsZero() {
			at = t.DecidedAt.UTC().Format("2006-01-02 15:04:05.000")
		}
		tab.row(t.Epoch, t.Kind, orDash(t.From), t.To, orDash(t.PromoteLSN), gap, orDash(t.DecidedBy), at)
		if !detailed {
			continue
		}
		tab.line("    reason: %s", orDash(t.Reason))
		if t.MaybeLost > 0 {
			tab.line("    up to %d bytes may have been lost", t.MaybeLost)
		}
		for _, c := range t.Candidates {
			verdict := "chosen"
			if c.Rejected != "" {
				verdict = "rejected: " + c.Rejected
			}
			if c.Error != "" {
				verdict += " (" + c.Error + ")"
			}
			tab.line("    candidate %s: timeline %d, receive %s, replay %s, flush %s, %s", c.Node, c.Timeline,
				orDash(c.ReceiveLSN), orDash(c.ReplayLSN), orDash(c.FlushLSN), verdict)
		}
	}
	return strings.TrimRight(tab.String(), "\n")
}

func (c *HistoryCommand) Synopsis() string {
	return "Lists failovers and switchovers with their evidence"
}
func (c *HistoryCommand) Help() string { return c.help }
