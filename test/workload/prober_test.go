package workload

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/checker"
)

// Two real PostgreSQL instances. First n2 is fenced (read-only): one
// writer, no split brain. Then n2's fence is lifted while n1 stays
// writable: the prober must report split brain. Then n1 is killed: its
// failed probes count as unreachable, never writable.
func TestProberAgainstPostgres(t *testing.T) {
	n1 := startPostgres(t, "n1")
	n2 := startPostgres(t, "n2")
	ctx := context.Background()
	if err := n2.SetFenced(ctx, true); err != nil {
		t.Fatalf("fencing n2: %v", err)
	}
	clock := checker.NewClock()
	cfg := ProberConfig{
		Nodes:        map[string]string{"n1": n1.dsn, "n2": n2.dsn},
		Interval:     20 * time.Millisecond,
		ProbeTimeout: 300 * time.Millisecond,
		Clock:        clock,
	}

	t.Run("one writer", func(t *testing.T) {
		p, err := StartProber(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		samples := p.Stop()
		r := checker.CheckSplitBrain(samples, checker.SplitBrainOptions{})
		requireOK(t, r)
		if r.Stats.Values["writable_samples"] < 3 {
			t.Fatalf("n1 was hardly ever seen writable: %v", r.Stats.Values)
		}
		for _, s := range samples {
			if s.Node == "n2" && s.State == checker.ProbeWritable {
				t.Fatalf("fenced n2 sampled writable: %v", s)
			}
		}
		if gap := r.Stats.Values["max_sample_gap_ms"]; gap > 200 {
			t.Logf("warning: a node went %v ms between probes", gap)
		}
	})

	t.Run("two writers", func(t *testing.T) {
		p, err := StartProber(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if err := n2.SetFenced(ctx, false); err != nil {
			p.Stop()
			t.Fatalf("unfencing n2: %v", err)
		}
		time.Sleep(1500 * time.Millisecond)
		samples := p.Stop()
		// Certain, not merely possible: it passes TolerateUncertain too.
		r := checker.CheckSplitBrain(samples, checker.SplitBrainOptions{TolerateUncertain: true})
		requireProblem(t, r, "split brain: n1 and n2 both accepted writes")
	})

	t.Run("killed node is unreachable, not writable", func(t *testing.T) {
		if err := n2.SetFenced(ctx, true); err != nil {
			t.Fatalf("fencing n2 again: %v", err)
		}
		p, err := StartProber(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		n1.kill(t)
		killedAt := clock.Now() // the postmaster and its children are gone
		time.Sleep(500 * time.Millisecond)
		samples := p.Stop()
		requireOK(t, checker.CheckSplitBrain(samples, checker.SplitBrainOptions{}))
		var unreachable int
		for _, s := range samples {
			if s.Node != "n1" || s.Start < killedAt {
				continue
			}
			if s.State == checker.ProbeWritable {
				t.Fatalf("killed n1 sampled writable: %v", s)
			}
			if s.State == checker.ProbeUnreachable {
				unreachable++
			}
		}
		if unreachable == 0 {
			t.Fatalf("no unreachable samples of the killed node")
		}
	})
}

func TestProberConfigBounds(t *testing.T) {
	ctx := context.Background()
	bad := []ProberConfig{
		{},
		{Nodes: map[string]string{"n1": "host=127.0.0.9"}, Interval: 51 * time.Millisecond},
		{Nodes: map[string]string{"n1": "host=127.0.0.9"}, ProbeTimeout: time.Minute},
		{Nodes: map[string]string{"": "host=127.0.0.9"}},
		{Nodes: map[string]string{"n1": "host=127.0.0.9"}, Table: "Robert'); DROP TABLE students;--"},
	}
	for i, cfg := range bad {
		if p, err := StartProber(ctx, cfg); err == nil {
			p.Stop()
			t.Errorf("config %d accepted", i)
		} else if strings.Contains(err.Error(), "password") {
			t.Errorf("error leaks DSN: %v", err)
		}
	}
}
