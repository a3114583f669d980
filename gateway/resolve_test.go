package gateway

import (
	"context"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/pgbattery/pgbattery/test/testutil"
)

// Commit resolution (resolve.go, capture.go) against real PostgreSQL.

// TestCommitCapture checks that capturing the transaction id of COMMITs is
// invisible to clients, in both protocols, with every kind of transaction
// end, and leaves the session's tracked state intact.
func TestCommitCapture(t *testing.T) {
	t.Parallel()
	pg := startPostgres(t, testutil.Addr(t))
	g := startGateway(t, pg, testutil.Addr(t), nil)
	var captured atomic.Int64
	hook := func() bool { captured.Add(1); return false }
	g.commitHook.Store(&hook)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	mustExec(t, ctx, conn, "CREATE TABLE cap (id int)")
	pc := conn.PgConn()

	const rounds = 50
	for i := 0; i < rounds; i++ {
		// Simple protocol: BEGIN, a write, COMMIT.
		mustExec(t, ctx, conn, "BEGIN")
		if _, err := conn.Exec(ctx, "INSERT INTO cap VALUES ($1)", i); err != nil {
			t.Fatal(err)
		}
		tag, err := conn.Exec(ctx, "COMMIT")
		if err != nil || tag.String() != "COMMIT" {
			t.Fatalf("simple COMMIT: %q, %v", tag, err)
		}
		if pc.TxStatus() != 'I' {
			t.Fatalf("status %c after COMMIT", pc.TxStatus())
		}
		// Extended protocol (Parse/Bind/Describe/Execute/Sync of "END").
		mustExec(t, ctx, conn, "BEGIN")
		mustExec(t, ctx, conn, "SET work_mem = '2MB'")
		ctag, err := pc.ExecParams(ctx, "END", nil, nil, nil, nil).Close()
		if err != nil || ctag.String() != "COMMIT" {
			t.Fatalf("extended END: %q, %v", ctag, err)
		}
		// A read-only transaction (no transaction id).
		mustExec(t, ctx, conn, "BEGIN")
		var one int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			t.Fatal(err)
		}
		mustExec(t, ctx, conn, "commit")
	}
	// COMMIT of a failed transaction answers ROLLBACK; COMMIT AND CHAIN
	// keeps a transaction open (not captured); a COMMIT with another
	// statement in the same Query is not captured either.
	mustExec(t, ctx, conn, "BEGIN")
	if _, err := conn.Exec(ctx, "SELECT 1/0"); err == nil {
		t.Fatal("division by zero succeeded")
	}
	if tag, err := conn.Exec(ctx, "COMMIT"); err != nil || tag.String() != "ROLLBACK" {
		t.Fatalf("COMMIT of a failed transaction: %q, %v", tag, err)
	}
	mustExec(t, ctx, conn, "BEGIN")
	if tag, err := conn.Exec(ctx, "COMMIT AND CHAIN"); err != nil || tag.String() != "COMMIT" || pc.TxStatus() != 'T' {
		t.Fatalf("COMMIT AND CHAIN: %q, %v, status %c", tag, err, pc.TxStatus())
	}
	mustExec(t, ctx, conn, "INSERT INTO cap VALUES (-1); COMMIT")
	// A pipelined batch with the COMMIT in the middle, extended protocol.
	mustExec(t, ctx, conn, "BEGIN")
	batch := &pgx.Batch{}
	batch.Queue("INSERT INTO cap VALUES (-2)")
	batch.Queue("COMMIT")
	batch.Queue("SELECT count(*) FROM cap")
	if err := conn.SendBatch(ctx, batch).Close(); err != nil {
		t.Fatalf("batch: %v", err)
	}

	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM cap").Scan(&n); err != nil || n != rounds+2 {
		t.Fatalf("rows: %d, %v", n, err)
	}
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'pgbattery%'").Scan(&n); err != nil || n != 0 {
		t.Fatalf("the capture left prepared statements behind: %d, %v", n, err)
	}
	checkShow(t, ctx, conn, "work_mem", "2MB")
	if got := captured.Load(); got != 3*rounds {
		t.Fatalf("%d COMMITs captured, want %d", got, 3*rounds)
	}
	for _, si := range g.Sessions() {
		if si.State.Pins != 0 || si.State.TxStatus != 'I' || si.State.Settings["work_mem"] == "" {
			t.Fatalf("session state after the captures: %+v", si.State)
		}
	}
}

// commitGate is a commitResultHook that holds COMMIT results until want of
// them have arrived, then lets the test fail the primary and drops them all
// (the back ends count as lost with the results on the wire).
type commitGate struct {
	arrived chan struct{}
	release chan struct{}
}

func newCommitGate(g *testGateway) *commitGate {
	c := &commitGate{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	hook := func() bool {
		c.arrived <- struct{}{}
		<-c.release
		return true
	}
	g.commitHook.Store(&hook)
	return c
}

func (c *commitGate) wait(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for i := 0; i < n; i++ {
		select {
		case <-c.arrived:
		case <-timeout:
			t.Fatalf("%d of %d COMMIT results arrived", i, n)
		}
	}
}

// fenceOf reads the fence xid on a freshly promoted primary, as the agent's
// recordFence does before the primary takes writes.
func fenceOf(t *testing.T, ctx context.Context, n *pgNode) uint64 {
	t.Helper()
	conn := n.superConn(t, ctx)
	defer conn.Close(context.Background())
	var fence uint64
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Wait for the end of recovery: the fence is read on a primary.
		var inRecovery bool
		if err := conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil {
			t.Fatal(err)
		}
		if !inRecovery {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the promoted standby is still in recovery")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := conn.QueryRow(ctx, "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint").Scan(&fence); err != nil {
		t.Fatal(err)
	}
	return fence
}

// TestCommitResolution fails the primary with COMMITs in flight: three
// whose results were on the wire after the commit reached the synchronous
// standby (simple protocol, extended protocol, and a read-only
// transaction) resolve to success; one whose COMMIT had not happened yet (a
// deferred trigger sleeps in it) resolves to 40001. All four sessions go
// on on the new primary.
func TestCommitResolution(t *testing.T) {
	t.Parallel()
	primary, standby := startPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	super := primary.superConn(t, ctx)
	makeStandbySynchronous(t, ctx, super)
	super.Close(ctx)

	g := startGateway(t, primary.pgServer, testutil.Addr(t), func(c *Config) { c.HoldTimeout = 30 * time.Second })
	dsn := g.dsn("alice", alicePassword, "alice", "sslmode=disable")
	simple, extended, reader, slow := connectPGX(t, dsn), connectPGX(t, dsn), connectPGX(t, dsn), connectPGX(t, dsn)
	mustExec(t, ctx, simple, "BEGIN")
	mustExec(t, ctx, simple, "INSERT INTO t VALUES (1)")
	mustExec(t, ctx, simple, "SET work_mem = '3MB'") // committed with the transaction
	mustExec(t, ctx, extended, "BEGIN")
	mustExec(t, ctx, extended, "INSERT INTO t VALUES (2)")
	mustExec(t, ctx, reader, "BEGIN")
	var n int
	if err := reader.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, slow, "BEGIN")
	mustExec(t, ctx, slow, "INSERT INTO slow_commit VALUES (1)")
	mustExec(t, ctx, slow, "INSERT INTO t VALUES (4)")

	slowRes := make(chan error, 1)
	go func() { _, err := slow.Exec(ctx, "COMMIT"); slowRes <- err }()
	waitActive(t, ctx, primary, "COMMIT", 1)

	gate := newCommitGate(g)
	type res struct {
		tag string
		err error
	}
	results := make(chan res, 3)
	go func() { tag, err := simple.Exec(ctx, "COMMIT"); results <- res{"simple " + tag.String(), err} }()
	go func() {
		tag, err := extended.PgConn().ExecParams(ctx, "COMMIT", nil, nil, nil, nil).Close()
		results <- res{"extended " + tag.String(), err}
	}()
	go func() { tag, err := reader.Exec(ctx, "COMMIT"); results <- res{"read-only " + tag.String(), err} }()
	gate.wait(t, 3)

	// The primary dies with the three results on the wire.
	g.router.set(g.router.primary, false, nil)
	primary.kill(t)
	close(gate.release)
	standby.promote(t)
	g.router.setFence(2, fenceOf(t, ctx, standby))
	g.router.set(Target{Epoch: 2, Node: "n2", Addr: standby.addr}, true, nil)

	want := map[string]bool{"simple COMMIT": true, "extended COMMIT": true, "read-only COMMIT": true}
	for i := 0; i < 3; i++ {
		r := <-results
		if r.err != nil || !want[r.tag] {
			t.Fatalf("COMMIT in flight (%s): %v", r.tag, r.err)
		}
		delete(want, r.tag)
	}
	wantCode(t, "COMMIT that had not happened", <-slowRes, "40001")

	for _, c := range []*pgx.Conn{simple, extended, reader, slow} {
		if h := serverHost(t, ctx, c); h != standby.host {
			t.Fatalf("session on %s after the failover, want %s", h, standby.host)
		}
		if c.PgConn().TxStatus() != 'I' {
			t.Fatalf("transaction status %c", c.PgConn().TxStatus())
		}
	}
	var ids []int
	rows, err := simple.Query(ctx, "SELECT id FROM t ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int
		rows.Scan(&id)
		ids = append(ids, id)
	}
	if rows.Err() != nil || len(ids) != 2 || ids[0] != 1 || ids[1] != 2 {
		t.Fatalf("rows on the new primary: %v, %v", ids, rows.Err())
	}
	checkShow(t, ctx, simple, "work_mem", "3MB")
	mustExec(t, ctx, slow, "INSERT INTO t VALUES (5)")
	st := g.MigrationStats()
	if st.CommitCommitted != 3 || st.CommitAborted != 1 || st.CommitUnknown != 0 || st.Aborted != 0 || st.Unknown != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestCommitResolutionXidReuse provokes the xid reuse hazard: a transaction
// commits on the old primary but never reaches the standby (its walsender
// is stopped), the standby is promoted, and the new primary gives the same
// transaction id to transactions of its own, which commit. pg_xact_status
// on the new primary then says "committed" for that id; the fence must
// make the gateway answer 40001.
func TestCommitResolutionXidReuse(t *testing.T) {
	t.Parallel()
	primary, standby := startPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	super := primary.superConn(t, ctx)
	defer super.Close(context.Background())
	var walsender int
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Caught up, so the standby knows every transaction id but ours.
		err := super.QueryRow(ctx, `SELECT pid FROM pg_stat_replication
			WHERE state = 'streaming' AND replay_lsn = pg_current_wal_lsn()`).Scan(&walsender)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the standby did not catch up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := syscall.Kill(walsender, syscall.SIGSTOP); err != nil {
		t.Skipf("cannot stop the walsender (pid %d): %v", walsender, err)
	}
	t.Cleanup(func() { syscall.Kill(walsender, syscall.SIGKILL) })

	g := startGateway(t, primary.pgServer, testutil.Addr(t), func(c *Config) { c.HoldTimeout = 60 * time.Second })
	conn := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	mustExec(t, ctx, conn, "BEGIN")
	mustExec(t, ctx, conn, "INSERT INTO t VALUES (42)")
	var xid uint64
	if err := conn.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint").Scan(&xid); err != nil {
		t.Fatal(err)
	}
	gate := newCommitGate(g)
	commitRes := make(chan error, 1)
	go func() { _, err := conn.Exec(ctx, "COMMIT"); commitRes <- err }()
	gate.wait(t, 1)
	var status string
	if err := super.QueryRow(ctx, "SELECT pg_xact_status($1::text::xid8)", strconv.FormatUint(xid, 10)).Scan(&status); err != nil || status != "committed" {
		t.Fatalf("transaction %d on the old primary: %q, %v", xid, status, err)
	}

	g.router.set(g.router.primary, false, nil)
	primary.kill(t)
	syscall.Kill(walsender, syscall.SIGKILL)
	close(gate.release)
	standby.promote(t)
	fence := fenceOf(t, ctx, standby)
	if fence > xid {
		t.Fatalf("fence %d is above the lost transaction %d: the standby saw it", fence, xid)
	}
	// The new primary reaches and passes the same transaction id.
	direct, err := standby.connect(ctx, "alice", alicePassword, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(context.Background())
	for i := 0; ; i++ {
		var next uint64
		if err := direct.QueryRow(ctx, "SELECT pg_current_xact_id()::text::bigint").Scan(&next); err != nil {
			t.Fatal(err)
		}
		if next > xid {
			break
		}
		if i > 100000 {
			t.Fatalf("transaction ids did not reach %d (at %d)", xid, next)
		}
	}
	if err := direct.QueryRow(ctx, "SELECT pg_xact_status($1::text::xid8)", strconv.FormatUint(xid, 10)).Scan(&status); err != nil || status != "committed" {
		t.Fatalf("the hazard was not provoked: transaction %d on the new primary is %q (%v)", xid, status, err)
	}
	g.router.setFence(2, fence)
	g.router.set(Target{Epoch: 2, Node: "n2", Addr: standby.addr}, true, nil)

	wantCode(t, "COMMIT lost with the old timeline", <-commitRes, "40001")
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t WHERE id = 42").Scan(&n); err != nil || n != 0 {
		t.Fatalf("row of the lost transaction on the new primary: %d, %v", n, err)
	}
	if h := serverHost(t, ctx, conn); h != standby.host {
		t.Fatalf("session on %s", h)
	}
	if st := g.MigrationStats(); st.CommitAborted != 1 || st.CommitCommitted != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// makeStandbySynchronous makes every standby of the primary super is
// connected to synchronous and waits until one is.
func makeStandbySynchronous(t *testing.T, ctx context.Context, super *pgx.Conn) {
	t.Helper()
	mustExec(t, ctx, super, "ALTER SYSTEM SET synchronous_standby_names = '*'")
	mustExec(t, ctx, super, "SELECT pg_reload_conf()")
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := super.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the standby did not become synchronous")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
