package procs

import (
	"context"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestPolicyNext(t *testing.T) {
	p := Policy{UpCPU: 0.75, UpQueued: 0.2, DownCPU: 0.5, DownQueued: 0.05, Settle: 3, MinWakeups: 100}
	cases := []struct {
		name                 string
		cur, def, light      int
		load                 Load
		wantProcs, wantLight int
	}{
		{"one CPU: nothing to size", 1, 1, 0, Load{3.0, 0.9, 1000}, 1, 0},
		{"one P, light load: stays", 1, 4, 0, Load{0.6, 0.1, 1000}, 1, 0},
		{"one P, busy: straight to the default", 1, 4, 0, Load{0.8, 0, 1000}, 4, 0},
		{"one P, goroutines queue: to the default", 1, 4, 0, Load{0.5, 0.3, 1000}, 4, 0},
		{"one P, a few queued wake-ups do not count", 1, 4, 0, Load{0.01, 0.5, 20}, 1, 0},
		{"default, busy: stays", 4, 4, 2, Load{0.9, 0, 1000}, 4, 0},
		{"default, queued: stays", 4, 4, 2, Load{0.3, 0.06, 1000}, 4, 0},
		{"default, light: counts", 4, 4, 0, Load{0.3, 0.01, 1000}, 4, 1},
		{"default, idle with a few queued wake-ups: counts", 4, 4, 0, Load{0.01, 0.5, 20}, 4, 1},
		{"default, light long enough: one P", 4, 4, 2, Load{0.3, 0, 1000}, 1, 0},
		{"a busy sample restarts the count", 4, 4, 2, Load{0.5, 0, 1000}, 4, 0},
	}
	for _, c := range cases {
		procs, light := p.next(c.cur, c.def, c.load, c.light)
		if procs != c.wantProcs || light != c.wantLight {
			t.Errorf("%s: next(%d, %d, %+v, %d) = %d, %d; want %d, %d",
				c.name, c.cur, c.def, c.load, c.light, procs, light, c.wantProcs, c.wantLight)
		}
	}
}

// TestSizerFollowsLoad runs the sizer on this process: idle it goes to one
// P, under a load of more than one core back to the default, and when it
// stops it leaves the default in force.
func TestSizerFollowsLoad(t *testing.T) {
	if !Enabled() {
		t.Skip("GOMAXPROCS is set or the runtime's default is one P")
	}
	def := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.SetDefaultGOMAXPROCS() })

	var mu sync.Mutex
	var resized []int
	s := &Sizer{
		Interval: 50 * time.Millisecond,
		Policy:   Policy{UpCPU: 0.75, UpQueued: 0.2, DownCPU: 0.5, DownQueued: 0.05, Settle: 3, MinWakeups: 200},
		Logger:   hclog.NewNullLogger(),
		Sampled: func(procs int, _ Load) {
			mu.Lock()
			if n := len(resized); n == 0 || resized[n-1] != procs {
				resized = append(resized, procs)
			}
			mu.Unlock()
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitProcs := func(want int, why string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for runtime.GOMAXPROCS(0) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: GOMAXPROCS is %d, want %d", why, runtime.GOMAXPROCS(0), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitProcs(1, "idle")

	// A load of more than one core: one P runs flat out.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range def {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for i := 0; i < 1e5; i++ {
					_ = i * i
				}
			}
		})
	}
	waitProcs(def, "busy")
	close(stop)
	wg.Wait()
	waitProcs(1, "idle again")

	cancel()
	<-done
	if got := runtime.GOMAXPROCS(0); got != def {
		t.Fatalf("after Run returned, GOMAXPROCS is %d, want the default %d", got, def)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []int{def, 1, def, 1}; !slices.Equal(resized, want) {
		t.Fatalf("GOMAXPROCS went %v, want %v", resized, want)
	}
}

// TestMeterSeesQueuedGoroutines checks the meter reads the runtime's
// scheduling latencies: goroutines that take turns on one P wait for it.
func TestMeterSeesQueuedGoroutines(t *testing.T) {
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	m, err := newMeter()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				// ~100µs of work, then the P goes to the next in line.
				for end := time.Now().Add(100 * time.Microsecond); time.Now().Before(end); {
				}
				runtime.Gosched()
			}
		})
	}
	wg.Wait()
	l, err := m.sample()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("load: %+v", l)
	if l.Queued < 0.5 {
		t.Fatalf("8 goroutines taking turns on one P: %.2f of wake-ups queued longer than %v, want most", l.Queued, QueuedAfter)
	}
	if l.Wakeups == 0 || l.CPU <= 0 {
		t.Fatalf("load %+v: want timed wake-ups and CPU used", l)
	}
}

// TestOneSizerPerProcess: a second sizer in the process leaves GOMAXPROCS
// to the first (agents side by side in one test binary).
func TestOneSizerPerProcess(t *testing.T) {
	if !Enabled() {
		t.Skip("GOMAXPROCS is set or the runtime's default is one P")
	}
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan struct{})
	s := &Sizer{Interval: time.Hour, Policy: DefaultPolicy, Logger: hclog.NewNullLogger()}
	go func() { defer close(first); s.Run(ctx) }()
	defer func() { cancel(); <-first }()
	deadline := time.Now().Add(10 * time.Second)
	for !running.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the first sizer did not start")
		}
		time.Sleep(time.Millisecond)
	}
	second := make(chan struct{})
	go func() { defer close(second); s.Run(context.Background()) }()
	select {
	case <-second:
	case <-time.After(10 * time.Second):
		t.Fatal("a second Run in the process did not return at once")
	}
}
