package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgbattery/pgbattery/pgctl"
	"github.com/pgbattery/pgbattery/test/testutil"
)

// TestSwitchoverDrain runs a planned switchover the way the agents do it,
// with the router faked: the primary is marked draining (new transactions
// are held, running ones go on), the session inside a transaction commits,
// the old primary stops (fast shutdown, after which the standby has all of
// its WAL), the standby is promoted and named with a new epoch. No client
// sees an error; held statements run on the new primary. It also checks
// what a moved session keeps: ParameterStatus of values that differ on the
// new server, cancel, LISTEN and application_name.
func TestSwitchoverDrain(t *testing.T) {
	t.Parallel()
	primary, standby := startPairWith(t, map[string]string{"timezone": "Asia/Tokyo"})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	g := startGateway(t, primary.pgServer, testutil.Addr(t), func(c *Config) { c.HoldTimeout = 30 * time.Second })
	dsn := g.dsn("alice", alicePassword, "alice", "sslmode=disable")

	inTx := connectPGX(t, dsn)
	newTx := connectPGX(t, dsn)
	idle := connectPGX(t, dsn+" application_name=drainer")
	mustExec(t, ctx, idle, "SET statement_timeout = '77s'")
	listener := connectPGX(t, dsn)
	mustExec(t, ctx, listener, "LISTEN drain_chan")
	if tz := idle.PgConn().ParameterStatus("TimeZone"); tz == "Asia/Tokyo" || tz == "" {
		t.Fatalf("TimeZone before the move: %q", tz)
	}

	mustExec(t, ctx, inTx, "BEGIN")
	mustExec(t, ctx, inTx, "INSERT INTO t VALUES (10)")

	// The switchover is requested: the primary drains.
	old := g.router.primary
	draining := old
	draining.Draining = true
	g.router.set(draining, true, nil)

	type result struct {
		err  error
		host string
	}
	heldRes := make(chan result, 1)
	go func() {
		_, err := newTx.Exec(ctx, "INSERT INTO t VALUES (11)")
		var host string
		if err == nil {
			err = newTx.QueryRow(ctx, "SELECT host(inet_server_addr())").Scan(&host)
		}
		heldRes <- result{err, host}
	}()
	// The transaction in progress goes on and commits on the old primary.
	mustExec(t, ctx, inTx, "INSERT INTO t VALUES (12)")
	if tag, err := inTx.Exec(ctx, "COMMIT"); err != nil || tag.String() != "COMMIT" {
		t.Fatalf("COMMIT while draining: %q, %v", tag, err)
	}
	select {
	case r := <-heldRes:
		t.Fatalf("a new transaction ran on the draining primary: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
	// Its next transaction is held too.
	nextRes := make(chan result, 1)
	go func() {
		var host string
		err := inTx.QueryRow(ctx, "SELECT host(inet_server_addr())").Scan(&host)
		nextRes <- result{err, host}
	}()

	// Nothing is in a transaction on the old primary any more: the agent
	// would step down now.
	super := primary.superConn(t, ctx)
	var inXact int
	if err := super.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE backend_type = 'client backend' AND xact_start IS NOT NULL AND pid <> pg_backend_pid()`).Scan(&inXact); err != nil {
		t.Fatal(err)
	}
	super.Close(ctx)
	if inXact != 0 {
		t.Fatalf("%d client backends still in a transaction on the drained primary", inXact)
	}
	g.router.set(old, false, nil) // lease released
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	if err := primary.inst.Stop(sctx, pgctl.StopFast); err != nil {
		t.Fatalf("stopping the old primary: %v", err)
	}
	scancel()
	standby.promote(t)
	g.router.setFence(2, fenceOf(t, ctx, standby))
	g.router.set(Target{Epoch: 2, Node: "n2", Addr: standby.addr}, true, nil)

	for name, ch := range map[string]chan result{"held new transaction": heldRes, "next transaction": nextRes} {
		r := <-ch
		if r.err != nil || r.host != standby.host {
			t.Fatalf("%s: %+v", name, r)
		}
	}
	var n int
	if err := newTx.QueryRow(ctx, "SELECT count(*) FROM t WHERE id IN (10, 11, 12)").Scan(&n); err != nil || n != 3 {
		t.Fatalf("rows on the new primary: %d, %v", n, err)
	}

	// The idle session: state replayed, TimeZone reported, cancel works.
	if h := serverHost(t, ctx, idle); h != standby.host {
		t.Fatalf("idle session on %s", h)
	}
	checkShow(t, ctx, idle, "statement_timeout", "77s")
	checkShow(t, ctx, idle, "application_name", "drainer")
	if tz := idle.PgConn().ParameterStatus("TimeZone"); tz != "Asia/Tokyo" {
		t.Fatalf("TimeZone after the move: %q (no ParameterStatus for the new server's value)", tz)
	}
	// Cancel with the key the client got before the move.
	go func() {
		time.Sleep(300 * time.Millisecond)
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		if err := idle.PgConn().CancelRequest(cctx); err != nil {
			t.Errorf("sending the cancel request: %v", err)
		}
	}()
	start := time.Now()
	_, err := idle.Exec(ctx, "SELECT pg_sleep(20)")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57014" || time.Since(start) > 10*time.Second {
		t.Fatalf("cancel after the move: %v after %s", err, time.Since(start))
	}
	var one int
	if err := idle.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		t.Fatalf("after the cancel: %v", err)
	}

	// LISTEN resumed on the new primary.
	direct, err := standby.connect(ctx, "alice", alicePassword, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	for g.sessionsNotOn(2) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions did not move", g.sessionsNotOn(2))
		}
		time.Sleep(20 * time.Millisecond)
	}
	mustExec(t, ctx, direct, "NOTIFY drain_chan, 'moved'")
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	note, err := listener.WaitForNotification(wctx)
	wcancel()
	if err != nil || note.Payload != "moved" {
		t.Fatalf("notification after the switchover: %+v, %v", note, err)
	}

	st := g.MigrationStats()
	t.Logf("migration stats: %+v", st)
	if st.Aborted != 0 || st.Unknown != 0 || st.CommitUnknown != 0 || st.CommitAborted != 0 ||
		st.PinnedClosed != 0 || st.Failed != 0 || st.Migrated != 4 || st.Held < 2 {
		t.Fatalf("stats %+v", st)
	}
}
