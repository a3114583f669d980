package command

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/hashicorp/cli"

	"github.com/pgbattery/pgbattery/agent/api"
)

// StatusCommand shows the cluster on one screen.
type StatusCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags

	format string
	watch  bool
	help   string
}

func newStatusCommand(ui cli.Ui) *StatusCommand {
	c := &StatusCommand{UI: ui}
	c.flags = newFlagSet("status")
	c.flags.StringVar(&c.format, "format", "text", "Output format: text or json.")
	c.flags.BoolVar(&c.watch, "watch", false, "Redraw the screen every second until interrupted (text format only).")
	c.http.AddTo(c.flags)
	c.help = usage(statusHelp, c.flags)
	return c
}

const statusHelp = `
Usage: pgbattery status [options]

  Shows the cluster on one screen: cluster id, epoch, timeline, primary, raft
  leader, whether automatic failover is paused, what the controller is doing
  and why, the synchronous replication rule, the last failover, and for
  every node its role, PostgreSQL state, WAL position, lag behind the
  primary, synchronous standby membership and gossip status.

  The agent asked forwards the request to the raft leader; when the leader
  cannot be reached it answers from its own copy of the state and says so.
`

func (c *StatusCommand) Run(args []string) int {
	if !parseFlags(c.UI, c.flags, args, c.help) {
		return 1
	}
	if c.flags.NArg() > 0 {
		c.UI.Error("The status command takes no arguments.")
		return 1
	}
	if c.format != "text" && c.format != "json" {
		c.UI.Error(fmt.Sprintf("Invalid -format %q: use text or json.", c.format))
		return 1
	}
	if c.watch && c.format != "text" {
		c.UI.Error("-watch works with -format=text only.")
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error connecting to the pgbattery agent: %s", err))
		return 1
	}
	if c.watch {
		return c.runWatch(client)
	}
	st, err := client.Status(context.Background())
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error retrieving the cluster status: %s", err))
		return 1
	}
	if c.format == "json" {
		out, err := json.MarshalIndent(st, "", "  ")
		if err != nil {
			c.UI.Error(fmt.Sprintf("Error encoding the status: %s", err))
			return 1
		}
		c.UI.Output(string(out))
		return 0
	}
	c.UI.Output(formatStatus(st))
	return 0
}

// runWatch redraws the status every second until Ctrl-C.
func (c *StatusCommand) runWatch(client *api.Client) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		reqCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		st, err := client.Status(reqCtx)
		cancel()
		// Clear the screen and move the cursor home, then redraw.
		screen := "\x1b[H\x1b[2J" + time.Now().Format("15:04:05") + "  (Ctrl-C to stop)\n\n"
		if err != nil {
			screen += fmt.Sprintf("Error retrieving the cluster status: %s", err)
		} else {
			screen += formatStatus(st)
		}
		c.UI.Output(screen)
		select {
		case <-ctx.Done():
			return 0
		case <-tick.C:
		}
	}
}

// formatStatus renders the one-screen view.
func formatStatus(st *api.ClusterStatus) string {
	kv := newTable()
	kv.row("Cluster:", orDash(st.ClusterID))
	kv.row("Epoch:", st.Epoch)
	kv.row("Timeline:", st.Timeline)
	primary := orDash(st.Primary)
	switch {
	case st.Primary == "":
	case st.Writable:
		primary += " (writable)"
	case st.PrimaryReady:
		primary += " (not writable: lease released or switchover draining)"
	default:
		primary += " (not ready)"
	}
	kv.row("Primary:", primary)
	kv.row("Raft leader:", orDash(st.Raft.Leader))
	paused := "no"
	if st.Paused {
		paused = "yes (automatic failover disabled)"
	}
	kv.row("Paused:", paused)
	ctrl := orDash(st.Controller.State)
	if st.Controller.Reason != "" {
		ctrl += ": " + st.Controller.Reason
	}
	kv.row("Controller:", ctrl)
	kv.row("Sync:", formatSync(st.Sync))
	if p := st.Pending; p != nil {
		target := p.Target
		if target == "" {
			target = "(controller's choice)"
		}
		kv.row("Pending:", fmt.Sprintf("%s %s -> %s", p.Kind, orDash(p.From), target))
	}
	if t := st.LastFailover; t != nil {
		kv.row("Last failover:", formatTransitionLine(*t))
	} else {
		kv.row("Last failover:", "none")
	}
	if !st.FromLeader {
		kv.row("Note:", fmt.Sprintf("answered by %s, not the raft leader: the controller state is unknown", st.Node))
	}
	return strings.TrimRight(kv.String()+"\n"+formatMemberTable(st), "\n")
}

func formatSync(s api.SyncState) string {
	if s.Mode == "" {
		return "-"
	}
	if len(s.Standbys) == 0 || s.K == 0 {
		return s.Mode + ", no synchronous standbys"
	}
	return fmt.Sprintf("%s, ANY %d (%s)", s.Mode, s.K, strings.Join(s.Standbys, ", "))
}

func formatTransitionLine(t api.Transition) string {
	s := fmt.Sprintf("epoch %d, %s %s -> %s", t.Epoch, t.Kind, orDash(t.From), t.To)
	if t.WriteGapMS > 0 {
		s += fmt.Sprintf(", write gap %dms", t.WriteGapMS)
	}
	if t.MaybeLost > 0 {
		s += fmt.Sprintf(", up to %d bytes may be lost", t.MaybeLost)
	}
	if t.Reason != "" {
		s += " (" + t.Reason + ")"
	}
	return s
}

func formatMemberTable(st *api.ClusterStatus) string {
	tab := newTable("Node", "Role", "Postgres", "LSN", "Lag", "Sync", "Gossip")
	for _, m := range st.Members {
		sync := "-"
		if m.Sync {
			sync = "sync"
		}
		lag := "-"
		if m.LagBytes != nil {
			lag = formatBytes(*m.LagBytes)
		}
		tab.row(m.Name, m.Role, postgresColumn(m), orDash(m.LSN), lag, sync, orDash(m.GossipStatus))
	}
	return tab.String()
}

// postgresColumn says what the fresh probe found.
func postgresColumn(m api.MemberStatus) string {
	switch {
	case m.Role == "witness":
		return "-"
	case !m.Probed:
		return "unreachable"
	case !m.Running:
		if m.Postgres != "" {
			return m.Postgres
		}
		return "stopped"
	case !m.InRecovery && m.Writable:
		return "read-write"
	case !m.InRecovery:
		return "read-only (fenced)"
	case m.Healthy:
		return "streaming"
	default:
		return "standby, not streaming"
	}
}

func formatBytes(n uint64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	}
}

func (c *StatusCommand) Synopsis() string { return "Shows the cluster's state on one screen" }
func (c *StatusCommand) Help() string     { return c.help }
