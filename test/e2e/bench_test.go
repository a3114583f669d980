package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgbattery/pgbattery/test/checker"
	"github.com/pgbattery/pgbattery/test/workload"
)

// TestFailoverBench measures the write gap a client sees at each kind of
// primary failure, and at a planned switchover: a probe writes every 10 ms to the writable primary
// (multi-host DSN, re-resolved on connection errors) and the gap is the
// time between its last acknowledged write before the fault and its first
// after. Runs only with PGBATTERY_BENCH=1 (make bench); PGBATTERY_BENCH_RUNS
// sets the runs per kind (default 5), PGBATTERY_BENCH_OUT a JSON file for
// the results.
func TestFailoverBench(t *testing.T) {
	if os.Getenv("PGBATTERY_BENCH") != "1" {
		t.Skip("set PGBATTERY_BENCH=1 to run the failover benchmark")
	}
	runs := 5
	if s := os.Getenv("PGBATTERY_BENCH_RUNS"); s != "" {
		if _, err := fmt.Sscan(s, &runs); err != nil || runs < 1 || runs > 100 {
			t.Fatalf("PGBATTERY_BENCH_RUNS=%q: want 1..100", s)
		}
	}
	c := startFaultCluster(t, 3, true)
	kinds := []string{"postgres-killed", "node-killed", "partition", "switchover"}
	gaps := map[string][]time.Duration{}
	for round := 0; round < runs; round++ {
		for _, kind := range kinds {
			gap, ok := benchOnce(t, c, kind, round)
			if ok {
				gaps[kind] = append(gaps[kind], gap)
			}
		}
	}

	type row struct {
		Fault    string    `json:"fault"`
		Runs     int       `json:"runs"`
		MedianMS float64   `json:"median_ms"`
		MaxMS    float64   `json:"max_ms"`
		GapsMS   []float64 `json:"gaps_ms"`
	}
	var rows []row
	var b strings.Builder
	fmt.Fprintf(&b, "%-16s %5s %10s %10s\n", "fault", "runs", "median", "max")
	for _, kind := range kinds {
		g := slices.Clone(gaps[kind])
		slices.Sort(g)
		r := row{Fault: kind, Runs: len(g)}
		for _, d := range g {
			r.GapsMS = append(r.GapsMS, ms(d))
		}
		if len(g) > 0 {
			r.MedianMS, r.MaxMS = ms(median(g)), ms(g[len(g)-1])
		}
		rows = append(rows, r)
		fmt.Fprintf(&b, "%-16s %5d %8.0fms %8.0fms\n", kind, r.Runs, r.MedianMS, r.MaxMS)
	}
	t.Logf("failover write gap (probe every 10 ms, 3 nodes on loopback):\n%s", b.String())
	if out := os.Getenv("PGBATTERY_BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(map[string]any{"benchmark": "failover-write-gap", "runs_per_fault": runs, "results": rows}, "", "  ")
		if err := os.WriteFile(out, append(js, '\n'), 0o644); err != nil {
			t.Errorf("writing %s: %v", out, err)
		}
	}
	for _, kind := range kinds {
		if len(gaps[kind]) != runs {
			t.Errorf("%s: %d of %d runs measured a gap", kind, len(gaps[kind]), runs)
		}
	}
}

// benchOnce injects one fault into the settled cluster's primary and
// returns the probe's write gap around it; the cluster is healed before it
// returns (settle at the next run brings stopped nodes back).
func benchOnce(t *testing.T, c *faultCluster, kind string, round int) (time.Duration, bool) {
	t.Helper()
	old := c.settle(t)
	clock := checker.NewClock()
	probe, err := workload.StartWriteGap(t.Context(), workload.WriteGapConfig{
		DSN:       c.dsn(t),
		Interval:  10 * time.Millisecond,
		OpTimeout: 5 * time.Second,
		Table:     "bench_write_gap",
		Clock:     clock,
		Logger:    hclog.NewNullLogger(),
	})
	if err != nil {
		t.Fatalf("starting the write-gap probe: %v", err)
	}
	defer probe.Stop()
	time.Sleep(1500 * time.Millisecond)

	faultAt := clock.Now()
	heal := func() {}
	switch kind {
	case "postgres-killed":
		killPostgres(t, old)
	case "node-killed":
		killNode(t, old)
	case "partition":
		heal = c.partition(t, old)
	case "switchover":
		// Planned: the old primary hands over to a caught-up standby and
		// follows it; the gap is the write pause the handover costs.
		out, code := opCLI(t, c.others(old)[0], 90*time.Second, "switchover", "-wait")
		if code != 0 {
			t.Errorf("switchover run %d: exit %d:\n%s", round+1, code, out)
			probe.Stop()
			return 0, false
		}
	}
	// The fault has taken effect (the processes are dead, the rules are
	// in): a write invoked from now on shows the cluster serving again.
	effectAt := clock.Now()
	recovered := false
	deadline := time.Now().Add(90 * time.Second)
	for !recovered && time.Now().Before(deadline) {
		for _, op := range probe.History() {
			if op.Outcome == checker.OutcomeOK && op.Invoke > effectAt {
				recovered = true
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond)
	hist := probe.Stop()
	heal()
	if !recovered {
		t.Errorf("%s run %d: no write acknowledged within 90s of the fault on %s", kind, round+1, old.name)
		if old.cmd == nil {
			c.restart(old) // let the cluster recover for the next runs
		}
		return 0, false
	}
	if kind == "partition" || kind == "switchover" {
		waitFor(t, 3*time.Minute, "the old primary to rejoin as a replica", func() bool { return role(old) == "replica" })
	}
	// The gap is the longest pause between two acknowledgements from the
	// fault until the first write invoked after it took effect was
	// acknowledged. (Writes in flight as the fault is injected may still
	// be acknowledged just after it; they do not end the outage.)
	var acks []time.Duration
	var recovery time.Duration = -1
	for _, op := range hist {
		if op.Outcome != checker.OutcomeOK {
			continue
		}
		acks = append(acks, op.Complete)
		if op.Invoke > effectAt && (recovery < 0 || op.Complete < recovery) {
			recovery = op.Complete
		}
	}
	slices.Sort(acks)
	var gap time.Duration
	for i := 1; i < len(acks) && acks[i-1] <= recovery; i++ {
		if acks[i] > faultAt && acks[i] <= recovery {
			gap = max(gap, acks[i]-acks[i-1])
		}
	}
	res := checker.CheckWriteGap(hist, checker.WriteGapOptions{Faults: []checker.Event{{Name: kind, Start: faultAt}}})
	if len(res.Gaps) == 1 {
		t.Logf("%s run %d on %s: outage %s (checker's first-ack-after gap %s)", kind, round+1, old.name, gap, res.Gaps[0].Duration)
	}
	return gap, true
}

func median(sorted []time.Duration) time.Duration {
	n := len(sorted)
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
