package gossip

// Detection benchmarks (make bench). They measure, over many trials, the
// time from a fault to the first Suspect and to Failed on every peer, and
// count false Failed events with the CPUs busy. Times come from
// CLOCK_MONOTONIC of the one host all nodes run on (see node_test.go), so
// "kill sent" and "peer saw Suspect" are on the same clock.
//
//	PGBATTERY_BENCH=1 go test -run '^$' -bench 'Detection|FalseFailed' -benchtime 1x -timeout 30m ./gossip/
//
// PGBATTERY_GOSSIP_TRIALS (default 20), PGBATTERY_GOSSIP_NODES (default 3),
// PGBATTERY_GOSSIP_PROFILE (default: the default profile) and
// PGBATTERY_GOSSIP_LOAD_DURATION (default 5m) and PGBATTERY_GOSSIP_NICE
// (niceness of the node processes in the load run, default 0) and
// PGBATTERY_GOSSIP_RT (their SCHED_RR priority, default none) tune them.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/testutil"
)

func benchEnabled(b *testing.B) {
	if os.Getenv("PGBATTERY_BENCH") == "" {
		b.Skip("set PGBATTERY_BENCH=1 (make bench) to run the gossip detection benchmarks")
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

type fault int

const (
	faultKill fault = iota
	faultPartition
)

type latencies struct {
	suspect, failed []time.Duration
	missed          int // peers that saw no Failed within the bound
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(p*float64(len(s))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d.Microseconds())/1000) }

func (l latencies) report(b *testing.B, name string, trials, nodes int, profile string) {
	line := fmt.Sprintf("%s: %d trials x %d peers (cluster of %d, profile %s)\n"+
		"  first Suspect: p50 %s  p99 %s  max %s\n"+
		"  Failed:        p50 %s  p99 %s  max %s  (no Failed within 10s: %d)",
		name, trials, nodes-1, nodes, profile,
		ms(percentile(l.suspect, .5)), ms(percentile(l.suspect, .99)), ms(percentile(l.suspect, 1)),
		ms(percentile(l.failed, .5)), ms(percentile(l.failed, .99)), ms(percentile(l.failed, 1)), l.missed)
	b.Log("\n" + line)
	fmt.Println(line)
	b.ReportMetric(float64(percentile(l.suspect, .5).Milliseconds()), "suspect-p50-ms")
	b.ReportMetric(float64(percentile(l.suspect, .99).Milliseconds()), "suspect-p99-ms")
	b.ReportMetric(float64(percentile(l.failed, .5).Milliseconds()), "failed-p50-ms")
	b.ReportMetric(float64(percentile(l.failed, .99).Milliseconds()), "failed-p99-ms")
}

func runDetectionTrials(b *testing.B, f fault) {
	benchEnabled(b)
	trials := envInt("PGBATTERY_GOSSIP_TRIALS", 20)
	n := envInt("PGBATTERY_GOSSIP_NODES", 3)
	profile := os.Getenv("PGBATTERY_GOSSIP_PROFILE")
	ns := ""
	if f == faultPartition {
		ns = newNetns(b)
	}
	addrs := testutil.Addrs(b, n)
	var l latencies
	for i := 0; i < b.N; i++ {
		for trial := 0; trial < trials; trial++ {
			nodes := startCluster(b, clusterOpts{n: n, ns: ns, addrs: addrs, profile: profile})
			// Settle, then fault at a random phase of the probe schedule.
			time.Sleep(time.Second + rand.N(500*time.Millisecond))
			primary, peers := nodes[0], nodes[1:]
			var at int64
			switch f {
			case faultKill:
				at = primary.kill()
			case faultPartition:
				at = monoNow()
				partition(b, ns, primary.addr())
			}
			for _, p := range peers {
				fl, ok := p.waitEvent(EventFailed, primary.spec.Name, at, 10*time.Second)
				if !ok {
					l.missed++
					continue
				}
				l.failed = append(l.failed, time.Duration(fl.Mono-at))
				if s, ok := p.firstEvent(EventSuspect, primary.spec.Name, at); ok {
					l.suspect = append(l.suspect, time.Duration(s.Mono-at))
				}
			}
			for _, nd := range nodes {
				nd.kill()
			}
			if f == faultPartition {
				heal(b, ns)
			}
		}
	}
	name := map[fault]string{faultKill: "kill -9 of the primary", faultPartition: "partition of the primary (nftables drop)"}[f]
	if profile == "" {
		profile = DefaultProfile
	}
	l.report(b, name, trials, n, profile)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

func BenchmarkDetectionKill(b *testing.B)      { runDetectionTrials(b, faultKill) }
func BenchmarkDetectionPartition(b *testing.B) { runDetectionTrials(b, faultPartition) }

// BenchmarkFalseFailedUnderLoad runs a cluster for PGBATTERY_GOSSIP_LOAD_DURATION
// (5m) with two CPU-burning processes, each as many busy threads as there
// are CPUs, and counts the Suspect and (false) Failed events the nodes see.
func BenchmarkFalseFailedUnderLoad(b *testing.B) {
	benchEnabled(b)
	dur := 5 * time.Minute
	if v, err := time.ParseDuration(os.Getenv("PGBATTERY_GOSSIP_LOAD_DURATION")); err == nil && v > 0 {
		dur = v
	}
	n := envInt("PGBATTERY_GOSSIP_NODES", 3)
	profile := os.Getenv("PGBATTERY_GOSSIP_PROFILE")
	for i := 0; i < b.N; i++ {
		// PGBATTERY_GOSSIP_NICE=-5 runs the nodes with more CPU priority
		// than the load, as docs/gossip.md recommends for agents.
		nice, _ := strconv.Atoi(os.Getenv("PGBATTERY_GOSSIP_NICE"))
		// PGBATTERY_GOSSIP_RT=N runs them with SCHED_RR priority N.
		rt, _ := strconv.Atoi(os.Getenv("PGBATTERY_GOSSIP_RT"))
		nodes := startCluster(b, clusterOpts{n: n, profile: profile, nice: nice, rtPrio: rt})
		startBurners(b, 2)
		stalls := startStallMeter(b)
		start := monoNow()
		time.Sleep(dur)
		counts := map[EventType]int{}
		var lines []string
		var episodes []time.Duration // Suspect until Alive or Failed
		for _, nd := range nodes {
			open := map[string]int64{}
			for _, l := range nd.events() {
				if l.Mono < start {
					continue
				}
				counts[l.Event.Type]++
				switch l.Event.Type {
				case EventSuspect:
					open[l.Event.Node] = l.Mono
				case EventAlive, EventFailed, EventJoin:
					if t0, ok := open[l.Event.Node]; ok {
						episodes = append(episodes, time.Duration(l.Mono-t0))
						delete(open, l.Event.Node)
					}
				}
				if l.Event.Type == EventFailed {
					lines = append(lines, fmt.Sprintf("%s saw %s failed at +%s", nd.spec.Name, l.Event.Node, time.Duration(l.Mono-start)))
				}
			}
		}
		if profile == "" {
			profile = DefaultProfile
		}
		line := fmt.Sprintf("false-Failed run: %s, %d nodes (profile %s, nice %d, SCHED_RR %d), %d CPUs, 2 burner processes x %d busy threads\n"+
			"  Failed %d  Suspect %d  Alive %d  Join %d",
			dur, n, profile, nice, rt, runtime.NumCPU(), runtime.NumCPU(),
			counts[EventFailed], counts[EventSuspect], counts[EventAlive], counts[EventJoin])
		if len(episodes) > 0 {
			line += fmt.Sprintf("\n  suspicion episodes (Suspect until Alive/Failed): p50 %s  p99 %s  max %s",
				ms(percentile(episodes, .5)), ms(percentile(episodes, .99)), ms(percentile(episodes, 1)))
		}
		var lates []time.Duration
		var big []string
		for _, s := range stalls() {
			lates = append(lates, s.late)
			if s.late > 500*time.Millisecond {
				big = append(big, fmt.Sprintf("%s at +%s", ms(s.late), time.Duration(s.mono-start).Round(time.Millisecond)))
			}
		}
		line += fmt.Sprintf("\n  machine: a 10ms sleeper woke >100ms late %d times, >500ms late %d times (%s), worst %s; load average %s",
			len(lates), len(big), strings.Join(big, ", "), ms(percentile(lates, 1)), loadavg())
		if len(lines) > 0 {
			line += "\n  " + strings.Join(lines, "\n  ")
		}
		b.Log("\n" + line)
		fmt.Println(line)
		b.ReportMetric(float64(counts[EventFailed]), "false-failed")
		b.ReportMetric(float64(counts[EventSuspect]), "suspects")
	}
}
