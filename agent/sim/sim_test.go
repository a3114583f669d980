package sim

import (
	"flag"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/agent/fsm"
)

var (
	flagSeeds = flag.Int("sim.seeds", 0, "schedules per configuration (0: a default that keeps go test ./agent/... quick)")
	flagBase  = flag.Int64("sim.base", 1, "first seed of TestSimSchedules")
	flagSeed  = flag.Int64("sim.seed", -1, "replay this one seed (with -sim.nodes, -sim.mode), printing its schedule")
	flagNodes = flag.Int("sim.nodes", 3, "nodes for -sim.seed")
	flagMode  = flag.String("sim.mode", fsm.ModeQuorum, "replication mode for -sim.seed")
	flagTrace = flag.Bool("sim.trace", false, "with -sim.seed: log every event")
)

type simConfig struct {
	nodes  int
	mode   string
	weight int // share of the default schedule count
}

var configs = []simConfig{
	{3, fsm.ModeQuorum, 8},
	{5, fsm.ModeQuorum, 5},
	{3, fsm.ModeStrict, 3},
	{5, fsm.ModeStrict, 2},
	{3, fsm.ModeAsync, 2},
	{5, fsm.ModeAsync, 1},
}

// defaultSchedules is the number of schedules per unit of weight.
func defaultSchedules() int {
	if raceEnabled {
		return 8
	}
	return 80
}

// runMany plays seeds base..base+count-1 on all cores and reports the first
// failing one with its schedule and the command that replays it.
func runMany(t *testing.T, opts Options, count int, base int64) (failed []*Result) {
	t.Helper()
	var (
		next atomic.Int64
		mu   sync.Mutex
		wg   sync.WaitGroup
		fo   atomic.Int64
		so   atomic.Int64
		ack  atomic.Int64
	)
	start := time.Now()
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(count) {
					return
				}
				o := opts
				o.Seed = base + i
				r := Run(o)
				fo.Add(int64(r.Failovers))
				so.Add(int64(r.Switchovers))
				ack.Add(int64(r.Acked))
				if r.Failed() {
					mu.Lock()
					failed = append(failed, r)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d schedules (%d nodes, %s) in %s: %d failovers, %d switchovers, %d acknowledged writes, %d failing",
		count, opts.Nodes, opts.Mode, time.Since(start).Round(time.Millisecond), fo.Load(), so.Load(), ack.Load(), len(failed))
	return failed
}

func replayCommand(r *Result, o Options) string {
	return fmt.Sprintf("go test ./agent/sim -run TestSimReplay -sim.seed=%d -sim.nodes=%d -sim.mode=%s -v", r.Seed, o.Nodes, o.Mode)
}

// TestSimSchedules explores random fault schedules in every configuration
// and checks the promises at every step.
func TestSimSchedules(t *testing.T) {
	for _, c := range configs {
		count := c.weight * defaultSchedules()
		if *flagSeeds > 0 {
			count = *flagSeeds
		}
		t.Run(fmt.Sprintf("%dnodes-%s", c.nodes, c.mode), func(t *testing.T) {
			o := Options{Nodes: c.nodes, Mode: c.mode}
			failed := runMany(t, o, count, *flagBase)
			if len(failed) > 0 {
				first := failed[0]
				for _, r := range failed {
					if r.Seed < first.Seed {
						first = r
					}
				}
				var seeds []int64
				for _, r := range failed {
					seeds = append(seeds, r.Seed)
				}
				t.Fatalf("%d schedule(s) violated the promises (seeds %v); first: replay with\n  %s\n%s", len(failed), seeds, replayCommand(first, o), first)
			}
		})
	}
}

// TestSimReplay replays one seed (-sim.seed) and prints its schedule.
func TestSimReplay(t *testing.T) {
	if *flagSeed < 0 {
		t.Skip("use -sim.seed=N to replay one schedule")
	}
	r := Run(Options{Seed: *flagSeed, Nodes: *flagNodes, Mode: *flagMode, Trace: *flagTrace})
	t.Log(r.String())
	if r.Failed() {
		t.Fatalf("seed %d violated the promises", *flagSeed)
	}
}

// TestSimDeterministic: a seed replays to exactly the same schedule.
func TestSimDeterministic(t *testing.T) {
	for _, seed := range []int64{3, 77, 1234} {
		a := Run(Options{Seed: seed, Nodes: 5, Trace: true})
		b := Run(Options{Seed: seed, Nodes: 5, Trace: true})
		if !reflect.DeepEqual(a.Log, b.Log) || !reflect.DeepEqual(a.Violations, b.Violations) {
			t.Fatalf("seed %d is not reproducible", seed)
		}
		if len(a.Log) < 20 {
			t.Fatalf("seed %d: suspiciously short schedule:\n%s", seed, a)
		}
	}
}

// TestSimExercisesFailover makes sure the schedules do what they claim:
// failovers and switchovers happen and writes are acknowledged, so the
// invariants are tested against real transitions.
func TestSimExercisesFailover(t *testing.T) {
	var fo, so, ack int
	for seed := int64(1); seed <= 40; seed++ {
		r := Run(Options{Seed: seed, Nodes: 3})
		fo += r.Failovers
		so += r.Switchovers
		ack += r.Acked
	}
	if fo < 20 || so < 5 || ack < 10000 {
		t.Fatalf("schedules too tame: %d failovers, %d switchovers, %d acknowledged writes in 40 seeds", fo, so, ack)
	}
}

// The checker must be able to fail: each broken variant below violates a
// promise, and the checker must say which.
func TestSimCatchesBrokenRules(t *testing.T) {
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"controller ignores the hold-down", Options{Nodes: 3, UnsafeIgnoreHoldDown: true}, "one writer"},
		{"primary does not fence itself", Options{Nodes: 3, UnsafeNoSelfFence: true}, "one writer"},
		{"primary acknowledges without standbys", Options{Nodes: 3, UnsafeAckWithoutStandbys: true}, "without acknowledged write"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			count := 100
			if raceEnabled {
				count = 30
			}
			failed := runMany(t, c.opts, count, 1)
			if len(failed) == 0 {
				t.Fatalf("the checker never caught %q in %d schedules", c.name, count)
			}
			found := false
			for _, r := range failed {
				for _, v := range r.Violations {
					if strings.Contains(v, c.want) {
						found = true
					}
				}
			}
			if !found {
				t.Fatalf("violations were found but none mentions %q: %v", c.want, failed[0].Violations)
			}
			t.Logf("caught in %d of %d schedules, e.g. seed %d: %s", len(failed), count, failed[0].Seed, failed[0].Violations[0])
		})
	}
}

// BenchmarkSchedule measures one simulated schedule (25 s of simulated
// time, 3 nodes, quorum mode).
func BenchmarkSchedule(b *testing.B) {
	for i := 0; i < b.N; i++ {
		Run(Options{Seed: int64(i), Nodes: 3})
	}
}
