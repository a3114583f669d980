package command

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/cli"

	"github.com/pgbattery/pgbattery/agent/api"
	"github.com/pgbattery/pgbattery/agent/doctor"
)

// DoctorCommand checks the cluster's health and explains what to fix.
type DoctorCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	http  HTTPFlags

	format          string
	clockThreshold  time.Duration
	minFreeWAL      string
	maxSlotRetained string
	verbose         bool
	help            string
}

func newDoctorCommand(ui cli.Ui) *DoctorCommand {
	c := &DoctorCommand{UI: ui}
	c.flags = newFlagSet("doctor")
	c.flags.StringVar(&c.format, "format", "text", "Output format: text or json.")
	c.flags.DurationVar(&c.clockThreshold, "clock-threshold", doctor.DefaultClockThreshold, "A node whose clock is further than this from the asked agent's fails clock.offset.")
	c.flags.StringVar(&c.minFreeWAL, "min-free-wal", "1GB", "A node with less free space than this where pg_wal lives fails disk.wal.")
	c.flags.StringVar(&c.maxSlotRetained, "max-slot-retained", "1GB", "A replication slot holding back more WAL than this warns (fails when inactive).")
	c.flags.BoolVar(&c.verbose, "verbose", false, "Show the details of the checks that passed too.")
	c.http.AddTo(c.flags)
	c.help = usage(doctorHelp, c.flags)
	return c
}

const doctorHelp = `
Usage: pgbattery doctor [options]

  Checks the cluster for what failover, switchover and rejoin depend on,
  and explains each problem and what to do about it: agents reachable,
  binary and PostgreSQL versions alike, clock offsets, raft quorum and
  voter count, gossip encryption, TLS, synchronous replication and missing
  standbys, settings a standby must match, disk space for WAL, data
  checksums or wal_log_hints (for pg_rewind), and replication slots that
  retain too much WAL.

  The agent asked gathers every member's report over the agents' HTTP
  APIs. Use it before going live and as a periodic gate.

  Exit code: 0 when no check fails (warnings allowed), 1 when one does or
  the agent cannot be asked.
`

func (c *DoctorCommand) Run(args []string) int {
	if !parseFlags(c.UI, c.flags, args, c.help) {
		return 1
	}
	if c.flags.NArg() > 0 {
		c.UI.Error("The doctor command takes no arguments.")
		return 1
	}
	if c.format != "text" && c.format != "json" {
		c.UI.Error(fmt.Sprintf("Invalid -format %q: use text or json.", c.format))
		return 1
	}
	if c.clockThreshold <= 0 {
		c.UI.Error("-clock-threshold must be positive.")
		return 1
	}
	client, err := c.http.APIClient()
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error connecting to the pgbattery agent: %s", err))
		return 1
	}
	res, err := client.Doctor(context.Background(), api.DoctorOptions{
		ClockThreshold: c.clockThreshold, MinFreeWAL: c.minFreeWAL, MaxSlotRetained: c.maxSlotRetained,
		Input: c.format == "json",
	})
	if err != nil {
		c.UI.Error(fmt.Sprintf("Error running the checks: %s", err))
		return 1
	}
	if c.format == "json" {
		out, err := json.MarshalIndent(res, "", "  ")
		if err != nil {
			c.UI.Error(fmt.Sprintf("Error encoding the result: %s", err))
			return 1
		}
		c.UI.Output(string(out))
	} else {
		c.UI.Output(formatDoctor(res, c.verbose))
	}
	if doctor.Worst(res.Checks) == doctor.Fail {
		return 1
	}
	return 0
}

// formatDoctor renders the checks, problems first explained.
func formatDoctor(res *doctor.Result, verbose bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Checked from %s at %s\n\n", res.Asker, res.Time.Format(time.RFC3339))
	width := 0
	for _, ch := range res.Checks {
		width = max(width, len(ch.ID))
	}
	counts := map[doctor.Status]int{}
	for _, ch := range res.Checks {
		counts[ch.Status]++
		fmt.Fprintf(&b, "[%-4s] %-*s  %s\n", ch.Status, width, ch.ID, ch.Summary)
		if ch.Status == doctor.OK && !verbose {
			continue
		}
		indent := strings.Repeat(" ", 7)
		for _, d := range ch.Details {
			fmt.Fprintf(&b, "%s- %s\n", indent, d)
		}
		if ch.Advice != "" {
			b.WriteString(wrap(ch.Advice, 78, indent))
		}
		if len(ch.Details) > 0 || ch.Advice != "" {
			b.WriteString("\n")
		}
	}
	fmt.Fprintf(&b, "\n%d failed, %d warnings, %d ok\n", counts[doctor.Fail], counts[doctor.Warn], counts[doctor.OK])
	return b.String()
}

func (c *DoctorCommand) Synopsis() string { return "Checks the cluster's health and explains problems" }
func (c *DoctorCommand) Help() string     { return c.help }
