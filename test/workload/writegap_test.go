package workload

import (
	"context"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgbattery/pgbattery/pgctl"
	"github.com/pgbattery/pgbattery/test/checker"
)

// The write-gap probe across a real PostgreSQL kill -9 and restart: the gap
// around the fault covers the outage, writes resume, and the errors are
// counted by code.
func TestWriteGapAcrossRestart(t *testing.T) {
	pg := startPostgres(t, "n1")
	ctx := context.Background()
	clock := checker.NewClock()
	w, err := StartWriteGap(ctx, WriteGapConfig{
		DSN:            pg.dsn,
		OpTimeout:      2 * time.Second,
		ConnectTimeout: time.Second,
		Clock:          clock,
		Logger:         hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Warn, Output: testLogWriter{t}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	time.Sleep(500 * time.Millisecond)

	// The fault's time is when it has certainly taken effect: a write in
	// flight while the kill was being sent may still be acknowledged.
	pg.kill(t)
	fault := checker.Event{Name: "kill -9 postgres", Start: clock.Now()}
	time.Sleep(300 * time.Millisecond)
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if _, err := pg.Start(sctx, pgctl.StartOptions{}); err != nil {
		t.Fatalf("restarting PostgreSQL: %v", err)
	}
	restarted := clock.Now()
	fault.End = restarted
	time.Sleep(500 * time.Millisecond)
	ops := w.Stop()

	r := checker.CheckWriteGap(ops, checker.WriteGapOptions{Faults: []checker.Event{fault}})
	requireOK(t, r)
	if len(r.Gaps) != 1 {
		t.Fatalf("want one gap, got %+v", r.Gaps)
	}
	g := r.Gaps[0]
	// PostgreSQL was down for at least the 300 ms before the restart
	// began (it may accept writes a little before Start returns).
	if !g.Recovered || g.FirstAckAfter < fault.Start+300*time.Millisecond || g.LastAckBefore > fault.Start {
		t.Fatalf("gap around the kill is wrong: %+v (fault at %v, restarted at %v)", g, fault.Start, restarted)
	}
	if g.Duration < 300*time.Millisecond {
		t.Fatalf("gap %v shorter than the outage", g.Duration)
	}
	if r.Stats.Values["max_gap_ms"] < g.DurationMS {
		t.Fatalf("max gap %v ms below the fault's gap %v ms", r.Stats.Values["max_gap_ms"], g.DurationMS)
	}
	if r.Stats.Failed+r.Stats.Unknown == 0 || len(r.Stats.ErrorsBySQLState) == 0 {
		t.Fatalf("no errors recorded across a kill -9: %+v", r.Stats)
	}
	if r.Stats.Values["acked"] < 10 {
		t.Fatalf("only %v writes acknowledged in ~1.3 s of up time at 10 ms", r.Stats.Values["acked"])
	}
	t.Logf("gap around the kill: %v ms (last ack %v, first ack %v)", g.DurationMS, g.LastAckBefore, g.FirstAckAfter)
}
