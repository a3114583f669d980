package consensus

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkElectionAfterLeaderKill measures, per trial, the time from
// stopping the leader of a 3-server group (raft shutdown: it sends nothing
// more, as after a crash) to another server being leader, then restarts
// the old leader from its data dir. It reports p50, p99 and max over b.N
// trials:
//
//	go test ./agent/consensus -run '^$' -bench ElectionAfterLeaderKill -benchtime 30x
//
// PGB_RAFT_BASE_MS=100,150 sweeps other base timeouts (heartbeat = election
// = leader lease) at multiplier 1, for choosing the defaults.
func BenchmarkElectionAfterLeaderKill(b *testing.B) {
	variants := []timingVariant{{"multiplier=1", []nodeOpt{multiplier(1)}}, {"multiplier=2", []nodeOpt{multiplier(2)}}}
	variants = append(variants, baseSweep(b)...)
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			nodes := newCluster(b, 3, v.opts...)
			samples := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				apply(b, nodes, fmt.Sprintf("trial=%d", i))
				leader := waitLeader(b, nodes, 10*time.Second)
				// Let every follower hear a heartbeat or two after the
				// restart of the previous trial.
				time.Sleep(2 * leader.node.Timings().HeartbeatTimeout)
				b.StartTimer()

				start := time.Now()
				leader.stop()
				var elected time.Duration
				deadline := start.Add(10 * time.Second)
				for elected == 0 {
					for _, tn := range running(nodes) {
						if tn.node.IsLeader() {
							elected = time.Since(start)
						}
					}
					if time.Now().After(deadline) {
						b.Fatal("no new leader within 10s")
					}
					time.Sleep(time.Millisecond)
				}
				samples = append(samples, elected)

				b.StopTimer()
				leader.start()
				waitLeader(b, nodes, 10*time.Second)
				b.StartTimer()
			}
			b.StopTimer()
			sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
			pct := func(p float64) time.Duration { return samples[int(p*float64(len(samples)-1)+0.5)] }
			b.ReportMetric(float64(pct(0.5).Milliseconds()), "p50-ms")
			b.ReportMetric(float64(pct(0.99).Milliseconds()), "p99-ms")
			b.ReportMetric(float64(samples[len(samples)-1].Milliseconds()), "max-ms")
			b.ReportMetric(0, "ns/op")
			b.Logf("%s: %d trials, election after leader kill p50 %v p99 %v max %v (timings %+v)",
				v.name, len(samples), pct(0.5), pct(0.99), samples[len(samples)-1], nodes[0].node.Timings())
		})
	}
}

// BenchmarkSpuriousElections runs a healthy 3-server group for b.N seconds,
// applying an entry every 10 ms, and reports how many new terms began
// (each one an election nobody needed; each re-arms the controller's
// hold-down). Run it under the load you care about:
//
//	go test ./agent/consensus -run '^$' -bench SpuriousElections -benchtime 30x
func BenchmarkSpuriousElections(b *testing.B) {
	b.Run("default", func(b *testing.B) { spuriousElections(b) })
	for _, v := range baseSweep(b) {
		b.Run(v.name, func(b *testing.B) { spuriousElections(b, v.opts...) })
	}
}

func spuriousElections(b *testing.B, opts ...nodeOpt) {
	nodes := newCluster(b, 3, opts...)
	leader := waitLeader(b, nodes, 10*time.Second)
	startTerm := leader.node.Term()
	failedApplies := 0
	b.ResetTimer()
	end := time.Now().Add(time.Duration(b.N) * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		time.Sleep(10 * time.Millisecond)
		var l *testNode
		for _, tn := range nodes {
			if tn.node.IsLeader() {
				l = tn
			}
		}
		if l == nil {
			failedApplies++
			continue
		}
		if _, err := l.node.Apply(ctxTimeout(b, time.Second), []byte(fmt.Sprintf("k=%d", i))); err != nil {
			failedApplies++
		}
	}
	b.StopTimer()
	var term uint64
	for _, tn := range nodes {
		if t := tn.node.Term(); t > term {
			term = t
		}
	}
	b.ReportMetric(float64(term-startTerm), "new-terms")
	b.ReportMetric(float64(failedApplies), "failed-applies")
	b.ReportMetric(0, "ns/op")
	b.Logf("%d s: %d new terms, %d failed applies (timings %+v)", b.N, term-startTerm, failedApplies, nodes[0].node.Timings())
}

type timingVariant struct {
	name string
	opts []nodeOpt
}

// baseSweep reads PGB_RAFT_BASE_MS ("100,150"): variants with those base
// timeouts (heartbeat = election = leader lease) at multiplier 1.
func baseSweep(b *testing.B) []timingVariant {
	env := os.Getenv("PGB_RAFT_BASE_MS")
	if env == "" {
		return nil
	}
	var out []timingVariant
	for _, f := range strings.Split(env, ",") {
		ms, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || ms < 5 {
			b.Fatalf("PGB_RAFT_BASE_MS: bad value %q", f)
		}
		d := time.Duration(ms) * time.Millisecond
		out = append(out, timingVariant{fmt.Sprintf("base=%dms", ms), []nodeOpt{multiplier(1), tweak(func(c *Config) {
			c.baseTimings = &Timings{HeartbeatTimeout: d, ElectionTimeout: d, LeaderLeaseTimeout: d}
		})}})
	}
	return out
}
