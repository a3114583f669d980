// Package procs sizes the Go scheduler (GOMAXPROCS) to the agent's load.
//
// Why: the gateway forwards one small request and its answer at a time for
// most sessions, and each hop parks a goroutine and wakes it from the
// netpoller. With idle Ps the runtime spins threads looking for work around
// every such wake-up, on cores PostgreSQL needs: at one pgbench client, the
// gateway on one P made 1-5 % more transactions a second than on two, level
// with PgBouncer (docs/benchmarks.md). One P cannot carry a busy gateway,
// though, so the agent runs on one P while its whole load fits
// comfortably in one core and on the runtime's default (the CPU count or
// the cgroup's limit) as soon as it does not.
//
// An operator who sets GOMAXPROCS in the environment keeps exactly that: the
// sizer does nothing. One sizer runs per process; a second Run returns at
// once.
package procs

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Load is what one sample saw.
type Load struct {
	// CPU the process used, in cores: 1.0 is one core busy for the whole
	// sample.
	CPU float64
	// Queued is the share of goroutine wake-ups that waited longer than
	// QueuedAfter for a P (the runtime's /sched/latencies histogram):
	// whether goroutines queue, which CPU time alone does not tell. At 32
	// pgbench clients the gateway uses about half a core on one P, yet
	// most of its wake-ups wait; at one client none do.
	Queued float64
	// Wakeups is how many wake-ups the runtime timed in the sample (it
	// times one in eight).
	Wakeups uint64
}

// QueuedAfter is the wait for a P above which a wake-up counts as queued.
const QueuedAfter = 50 * time.Microsecond

// Policy decides the number of Ps from the process's load.
type Policy struct {
	// On one P, a sample above either bound moves to the default at once.
	UpCPU, UpQueued float64
	// On more Ps, Settle samples in a row below both bounds move to one P.
	DownCPU, DownQueued float64
	Settle              int
	// Queued counts only in a sample with at least MinWakeups timed
	// wake-ups: the few of an idle agent on a busy machine wait for a CPU,
	// not for a P, and more Ps would not help them.
	MinWakeups uint64
}

// DefaultPolicy leaves a wide band between the bounds so a steady load does
// not flip the setting. Measured on the gateway (2 CPUs, pgbench -S): one
// client costs ~0.3 core with no queued wake-ups; 2-4 clients queue 0-5 %;
// 32 clients 0.5-0.6 core with 60-80 % queued, on one P or two. One client
// makes ~1800 timed wake-ups a second, an idle agent a few dozen.
var DefaultPolicy = Policy{UpCPU: 0.75, UpQueued: 0.2, DownCPU: 0.5, DownQueued: 0.05, Settle: 3, MinWakeups: 200}

// next returns the Ps for the next interval and the updated count of light
// samples, given the current Ps, the default Ps and the last sample.
func (p Policy) next(cur, def int, l Load, light int) (int, int) {
	if def <= 1 {
		return def, 0
	}
	if l.Wakeups < p.MinWakeups {
		l.Queued = 0
	}
	if cur <= 1 {
		if l.CPU > p.UpCPU || l.Queued > p.UpQueued {
			return def, 0
		}
		return 1, 0
	}
	if l.CPU >= p.DownCPU || l.Queued >= p.DownQueued {
		return cur, 0
	}
	if light+1 >= p.Settle {
		return 1, 0
	}
	return cur, light + 1
}

// Sizer samples the process's load every Interval and sets GOMAXPROCS by
// its Policy.
type Sizer struct {
	Interval time.Duration
	Policy   Policy
	Logger   hclog.Logger
	// Sampled, if set, is called after every sample with the Ps now in
	// force and the load seen (for gauges).
	Sampled func(procs int, l Load)
}

// New returns a Sizer with the default policy, sampling every second.
func New(logger hclog.Logger) *Sizer {
	return &Sizer{Interval: time.Second, Policy: DefaultPolicy, Logger: logger}
}

// running makes Run exclusive in a process: GOMAXPROCS is the process's,
// and agents started side by side in one test binary would otherwise each
// take the other's setting for the runtime's default.
var running atomic.Bool

// Enabled reports whether the sizer would act: not when the operator set
// GOMAXPROCS, nor when the runtime's default is one P anyway. Call it before
// Run has changed anything.
func Enabled() bool {
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		return false
	}
	return runtime.GOMAXPROCS(0) > 1
}

// Run sizes GOMAXPROCS until ctx is done, then gives the runtime its default
// back. It starts on the default: the agent's start-up (TLS, raft log
// replay, PostgreSQL recovery checks) is its busiest moment.
func (s *Sizer) Run(ctx context.Context) {
	if !Enabled() || !running.CompareAndSwap(false, true) {
		return
	}
	defer running.Store(false)
	defer runtime.SetDefaultGOMAXPROCS()
	// The runtime's own choice (the CPU count, or a lower cgroup CPU limit),
	// as of the last time it was in force. Asking again would mean setting
	// it, a stop-the-world each time.
	def := runtime.GOMAXPROCS(0)
	m, err := newMeter()
	if err != nil {
		s.Logger.Warn("not sizing the Go scheduler", "error", err)
		return
	}
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	light := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l, err := m.sample()
		if err != nil {
			continue
		}
		cur := runtime.GOMAXPROCS(0)
		var next int
		next, light = s.Policy.next(cur, def, l, light)
		switch {
		case next == cur:
		case next == def:
			// Back to the runtime's own choice, which follows cgroup
			// limit changes again.
			runtime.SetDefaultGOMAXPROCS()
			next = runtime.GOMAXPROCS(0)
			def = next
		default:
			runtime.GOMAXPROCS(next)
		}
		if next != cur {
			s.Logger.Debug("resized the Go scheduler", "gomaxprocs", next,
				"cpu_cores", fmt.Sprintf("%.2f", l.CPU), "queued", fmt.Sprintf("%.2f", l.Queued))
		}
		if s.Sampled != nil {
			s.Sampled(next, l)
		}
	}
}

// meter measures the load between two samples.
type meter struct {
	cpu      time.Duration
	at       time.Time
	latency  []metrics.Sample
	previous []uint64 // the latency histogram's counts at the last sample
}

const schedLatencies = "/sched/latencies:seconds"

func newMeter() (*meter, error) {
	m := &meter{latency: []metrics.Sample{{Name: schedLatencies}}}
	if _, err := m.sample(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *meter) sample() (Load, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return Load{}, fmt.Errorf("reading the process's CPU time: %w", err)
	}
	metrics.Read(m.latency)
	if m.latency[0].Value.Kind() != metrics.KindFloat64Histogram {
		return Load{}, fmt.Errorf("runtime metric %s not supported", schedLatencies)
	}
	cpu, now := time.Duration(ru.Utime.Nano()+ru.Stime.Nano()), time.Now()
	h := m.latency[0].Value.Float64Histogram()

	var l Load
	if !m.at.IsZero() && len(m.previous) == len(h.Counts) {
		l.CPU = float64(cpu-m.cpu) / float64(now.Sub(m.at))
		var all, queued uint64
		for i, c := range h.Counts {
			d := c - m.previous[i]
			all += d
			// Buckets[i] is bucket i's lower bound.
			if h.Buckets[i] >= QueuedAfter.Seconds() {
				queued += d
			}
		}
		l.Wakeups = all
		if all > 0 {
			l.Queued = float64(queued) / float64(all)
		}
	}
	m.cpu, m.at = cpu, now
	m.previous = append(m.previous[:0], h.Counts...)
	return l, nil
}
