package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgbattery/pgbattery/pgctl"
	"github.com/pgbattery/pgbattery/test/testutil"
)

// Session migration tests: a real primary and a streaming standby (pgctl
// Clone), a router the test controls, and a failover done by hand: kill -9
// the primary's postmaster (or leave it up, for a switchover), promote the
// standby, and name it in the router with a new epoch.

// pgNode is one PostgreSQL instance of a pair.
type pgNode struct {
	*pgServer
	inst *pgctl.Instance
	pm   *pgctl.Postmaster
}

// startPair starts a primary on one address (set up as startPostgres does,
// plus a table t owned by alice) and a streaming standby cloned from it on
// another.
func startPair(t *testing.T) (primary, standby *pgNode) {
	t.Helper()
	return startPairWith(t, nil)
}

// startPairWith is startPair with extra settings for the standby (a
// different TimeZone, say, to see ParameterStatus after a move).
func startPairWith(t *testing.T, standbyParams map[string]string) (primary, standby *pgNode) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(pgBin, "postgres")); err != nil {
		t.Skipf("PostgreSQL 15 binaries not found at %s", pgBin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bins, err := pgctl.FindBinaries(ctx, pgBin)
	if err != nil {
		t.Fatalf("finding PostgreSQL binaries: %v", err)
	}
	hosts := testutil.Addrs(t, 2)
	newNode := func(name, host string, extra map[string]string) *pgNode {
		params := map[string]string{"fsync": "off", "max_connections": "100", "shared_buffers": "16MB"}
		for k, v := range extra {
			params[k] = v
		}
		inst, err := pgctl.NewInstance(pgctl.Config{
			NodeName:    name,
			Binaries:    bins,
			Dir:         testutil.TempDir(t),
			ListenAddr:  host,
			Port:        5433,
			Parameters:  params,
			HBA:         []string{"host all all 127.0.0.0/8 scram-sha-256"},
			Superuser:   pgctl.Credentials{User: "postgres", Password: superPassword},
			Replication: pgctl.Credentials{Password: "replication-secret-for-tests"},
			Logger:      hclog.NewNullLogger(),
		})
		if err != nil {
			t.Fatalf("pgctl: %v", err)
		}
		n := &pgNode{pgServer: &pgServer{addr: net.JoinHostPort(host, "5433"), host: host}, inst: inst}
		t.Cleanup(func() {
			sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer scancel()
			// The killed primary is not running any more; that is fine.
			inst.Stop(sctx, pgctl.StopImmediate)
		})
		return n
	}
	primary = newNode("n1", hosts[0], nil)
	if err := primary.inst.InitDB(ctx, pgctl.InitDBOptions{NoSync: true}); err != nil {
		t.Fatalf("initdb: %v", err)
	}
	if primary.pm, err = primary.inst.Start(ctx, pgctl.StartOptions{}); err != nil {
		t.Fatalf("starting the primary: %v", err)
	}
	conn := primary.superConn(t, ctx)
	for _, q := range []string{
		"SET password_encryption = 'scram-sha-256'",
		"CREATE ROLE alice LOGIN PASSWORD '" + alicePassword + "'",
		"CREATE DATABASE alice OWNER alice",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	conn.Close(ctx)
	aconn, err := primary.connect(ctx, "alice", alicePassword, "alice")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"CREATE TABLE t (id int PRIMARY KEY)",
		// slow_commit makes COMMIT take a minute: a deferred trigger.
		"CREATE TABLE slow_commit (id int)",
		"CREATE FUNCTION sleep_a_minute() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN PERFORM pg_sleep(60); RETURN NULL; END$$",
		"CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON slow_commit DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sleep_a_minute()",
	} {
		if _, err := aconn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	aconn.Close(ctx)

	standby = newNode("n2", hosts[1], standbyParams)
	if err := standby.inst.Clone(ctx, pgctl.Peer{Host: primary.host, Port: 5433}, pgctl.CloneOptions{}); err != nil {
		t.Fatalf("cloning the standby: %v", err)
	}
	if standby.pm, err = standby.inst.Start(ctx, pgctl.StartOptions{}); err != nil {
		t.Fatalf("starting the standby: %v", err)
	}
	return primary, standby
}

// killPrimary kill -9s the node's postmaster and waits until it is gone
// (its back ends exit when they notice).
func (n *pgNode) kill(t *testing.T) {
	t.Helper()
	if err := syscall.Kill(n.pm.PID(), syscall.SIGKILL); err != nil {
		t.Fatalf("killing postmaster %d: %v", n.pm.PID(), err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", n.addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("PostgreSQL on %s still accepts connections after kill -9", n.addr)
}

func (n *pgNode) promote(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := n.inst.Promote(ctx); err != nil {
		t.Fatalf("promoting %s: %v", n.addr, err)
	}
}

// serverHost returns the address of the server a connection runs on.
func serverHost(t *testing.T, ctx context.Context, conn *pgx.Conn) string {
	t.Helper()
	var addr string
	if err := conn.QueryRow(ctx, "SELECT host(inet_server_addr())").Scan(&addr); err != nil {
		t.Fatalf("server address: %v", err)
	}
	return addr
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := sqlstate(err); got != code {
		t.Fatalf("%s: want SQLSTATE %s, got %v", what, code, err)
	}
}

// waitActive waits until n queries matching pattern run on the node.
func waitActive(t *testing.T, ctx context.Context, n *pgNode, pattern string, want int) {
	t.Helper()
	conn := n.superConn(t, ctx)
	defer conn.Close(context.Background())
	deadline := time.Now().Add(15 * time.Second)
	for {
		var got int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1", pattern).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got >= want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d queries like %q running, want %d", got, pattern, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// blockingRows is a CopyFromSource that gives one row and then waits for
// release.
type blockingRows struct {
	n       int
	release chan struct{}
}

func (b *blockingRows) Next() bool {
	b.n++
	if b.n == 2 {
		<-b.release
	}
	return b.n <= 2
}
func (b *blockingRows) Values() ([]any, error) { return []any{1000 + b.n}, nil }
func (b *blockingRows) Err() error             { return nil }

type result struct {
	err  error
	took time.Duration
	val  int
}

// TestFailoverKill kills the primary with sessions in every state of the
// design.md §6 table and checks what each client sees, and that each keeps
// working on the new primary.
func TestFailoverKill(t *testing.T) {
	t.Parallel()
	start := time.Now()
	primary, standby := startPair(t)
	t.Logf("pair started in %s", time.Since(start))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	g := startGateway(t, primary.pgServer, testutil.Addr(t), func(c *Config) { c.HoldTimeout = 30 * time.Second })
	dsn := g.dsn("alice", alicePassword, "alice", "sslmode=disable")

	// Idle pgx session with a SET, application_name and a named prepared
	// statement.
	idle := connectPGX(t, dsn+" application_name=idler")
	mustExec(t, ctx, idle, "SET statement_timeout = '123s'")
	if _, err := idle.Prepare(ctx, "byid", "SELECT count(*) FROM t WHERE id = $1"); err != nil {
		t.Fatal(err)
	}
	// Simple-protocol (psql-like) session.
	simple := connectPGX(t, dsn+" default_query_exec_mode=simple_protocol")
	mustExec(t, ctx, simple, "SET work_mem = '7MB'")
	// LISTEN.
	listener := connectPGX(t, dsn)
	mustExec(t, ctx, listener, "LISTEN failover_chan")
	// Pinned by a temporary table.
	pinned := connectPGX(t, dsn)
	mustExec(t, ctx, pinned, "CREATE TEMP TABLE scratch (x int)")
	// Idle in an explicit transaction.
	txConn := connectPGX(t, dsn)
	tx, err := txConn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, tx.Conn(), "INSERT INTO t VALUES (1)")
	// A statement in flight inside an explicit transaction.
	txBusy := connectPGX(t, dsn)
	mustExec(t, ctx, txBusy, "BEGIN")
	// A COMMIT in flight (held up by a deferred trigger).
	committer := connectPGX(t, dsn)
	mustExec(t, ctx, committer, "BEGIN")
	mustExec(t, ctx, committer, "INSERT INTO slow_commit VALUES (1)")
	// Sessions with requests in flight, and one that will send while no
	// primary is known.
	writer := connectPGX(t, dsn)
	reader := connectPGX(t, dsn)
	simpleReader := connectPGX(t, dsn+" default_query_exec_mode=simple_protocol")
	copier := connectPGX(t, dsn)
	late := connectPGX(t, dsn)
	for _, c := range []*pgx.Conn{writer, reader, simpleReader, copier, late, txBusy, committer} {
		if h := serverHost(t, ctx, c); h != primary.host {
			t.Fatalf("session on %s, want the primary %s", h, primary.host)
		}
	}

	run := func(f func() (int, error)) chan result {
		ch := make(chan result, 1)
		go func() {
			start := time.Now()
			v, err := f()
			ch <- result{err: err, took: time.Since(start), val: v}
		}()
		return ch
	}
	writeRes := run(func() (int, error) {
		_, err := writer.Exec(ctx, "INSERT INTO t SELECT 2 FROM pg_sleep(60)")
		return 0, err
	})
	txBusyRes := run(func() (int, error) {
		_, err := txBusy.Exec(ctx, "INSERT INTO t SELECT 3 FROM pg_sleep(60)")
		return 0, err
	})
	readRes := run(func() (int, error) {
		var v int
		err := reader.QueryRow(ctx, "SELECT 7 FROM pg_sleep($1::float8)", 1.5).Scan(&v)
		return v, err
	})
	simpleReadRes := run(func() (int, error) {
		var v int
		// Larger than the read buffer: re-run from the set-aside scratch
		// buffer (record, migrate.go).
		err := simpleReader.QueryRow(ctx, "SELECT 8 FROM pg_sleep(1.5) /* "+strings.Repeat("padding ", 1000)+"*/").Scan(&v)
		return v, err
	})
	commitRes := run(func() (int, error) {
		_, err := committer.Exec(ctx, "COMMIT")
		return 0, err
	})
	release := make(chan struct{})
	copyRes := run(func() (int, error) {
		n, err := copier.CopyFrom(ctx, pgx.Identifier{"t"}, []string{"id"}, &blockingRows{release: release})
		return int(n), err
	})
	waitActive(t, ctx, primary, "%pg_sleep%", 4)
	waitActive(t, ctx, primary, "COMMIT", 1)
	waitActive(t, ctx, primary, "copy%", 1)

	// The primary dies; the agent first suspects it, then promotes.
	g.router.set(g.router.primary, false, nil)
	primary.kill(t)
	lateSent := time.Now()
	var lateTook time.Duration
	lateRes := run(func() (int, error) {
		var v int
		err := late.QueryRow(ctx, "SELECT 9").Scan(&v)
		return v, err
	})
	t.Logf("killed at %s", time.Since(start))
	standby.promote(t)
	t.Logf("promoted at %s", time.Since(start))
	time.Sleep(200 * time.Millisecond)
	select {
	case r := <-lateRes:
		t.Fatalf("a request ran while no primary was named: %+v", r)
	default:
	}
	switched := time.Now()
	g.router.set(Target{Epoch: 2, Node: "n2", Addr: standby.addr}, true, nil)
	defer func() { t.Logf("held request answered %s after the new primary was named", lateTook) }()

	// Autocommit write in flight: 40003, and the session goes on.
	r := <-writeRes
	wantCode(t, "autocommit write in flight", r.err, "40003")
	if h := serverHost(t, ctx, writer); h != standby.host {
		t.Fatalf("writer now on %s, want %s", h, standby.host)
	}
	// Statement in flight in a transaction: 40001, then ROLLBACK, then on.
	r = <-txBusyRes
	wantCode(t, "statement in a transaction", r.err, "40001")
	_, err = txBusy.Exec(ctx, "SELECT 1")
	wantCode(t, "statement in the failed transaction", err, "25P02")
	// ROLLBACK in the extended protocol (Parse/Bind/Describe/Execute/Sync),
	// as JDBC sends it.
	if _, err := txBusy.PgConn().ExecParams(ctx, "ROLLBACK", nil, nil, nil, nil).Close(); err != nil {
		t.Fatalf("extended-protocol ROLLBACK after the failover: %v", err)
	}
	if txBusy.PgConn().TxStatus() != 'I' {
		t.Fatalf("transaction status %c after ROLLBACK", txBusy.PgConn().TxStatus())
	}
	if h := serverHost(t, ctx, txBusy); h != standby.host {
		t.Fatalf("transaction session now on %s", h)
	}
	// COMMIT in flight: this router knows no fence xid for epoch 2, so the
	// outcome cannot be resolved safely: 08007 (TestCommitResolution has
	// the fence); the session goes on.
	r = <-commitRes
	wantCode(t, "COMMIT in flight", r.err, "08007")
	if h := serverHost(t, ctx, committer); h != standby.host {
		t.Fatalf("committer now on %s", h)
	}
	// Read-only statements in flight: re-run, no error.
	for name, ch := range map[string]chan result{"extended": readRes, "simple": simpleReadRes} {
		r := <-ch
		if r.err != nil || (r.val != 7 && r.val != 8) {
			t.Fatalf("%s read in flight: %v (value %d)", name, r.err, r.val)
		}
	}
	// COPY in flight: 40001 with the client's COPY properly ended.
	close(release)
	r = <-copyRes
	wantCode(t, "COPY in flight", r.err, "40001")
	if h := serverHost(t, ctx, copier); h != standby.host {
		t.Fatalf("copier now on %s", h)
	}
	// Held while no primary: ran after the switch, without error.
	r = <-lateRes
	if r.err != nil || r.val != 9 {
		t.Fatalf("held request: %+v", r)
	}
	lateTook = (r.took - time.Duration(switched.Sub(lateSent))).Round(time.Millisecond)

	// Idle in a transaction: the next statement gets 40001, ROLLBACK
	// is answered, and the session continues.
	_, err = tx.Exec(ctx, "INSERT INTO t VALUES (4)")
	wantCode(t, "idle in transaction", err, "40001")
	if err := tx.Rollback(ctx); err != nil {
		t.Fatalf("ROLLBACK after the failover: %v", err)
	}
	if h := serverHost(t, ctx, txConn); h != standby.host {
		t.Fatalf("transaction session now on %s", h)
	}

	// The idle sessions kept their state.
	checkShow(t, ctx, idle, "statement_timeout", "123s")
	checkShow(t, ctx, idle, "application_name", "idler")
	var n int
	if err := idle.QueryRow(ctx, "byid", 1).Scan(&n); err != nil {
		t.Fatalf("prepared statement after the failover: %v", err)
	}
	if h := serverHost(t, ctx, idle); h != standby.host {
		t.Fatalf("idle session now on %s", h)
	}
	checkShow(t, ctx, simple, "work_mem", "7MB")

	// LISTEN survived: a NOTIFY on the new primary reaches the client.
	direct, err := standby.connect(ctx, "alice", alicePassword, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(context.Background())
	mustExec(t, ctx, direct, "NOTIFY failover_chan, 'after'")
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	note, err := listener.WaitForNotification(wctx)
	wcancel()
	if err != nil || note.Channel != "failover_chan" || note.Payload != "after" {
		t.Fatalf("notification after the failover: %+v, %v", note, err)
	}

	// Pinned: FATAL 57P01 that says why.
	_, err = pinned.Exec(ctx, "SELECT 1")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "57P01" || !strings.Contains(pgErr.Message, "temporary table") {
		t.Fatalf("pinned session: %v", err)
	}

	t.Logf("checked at %s", time.Since(start))
	st := g.MigrationStats()
	t.Logf("migration stats: %+v", st)
	if st.PinnedClosed != 1 || st.Unknown != 1 || st.Rerun != 2 || st.Aborted != 3 || st.CommitUnknown != 1 || st.Migrated != 11 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSwitchover moves sessions while the old primary stays up: a held
// request continues on the same back end when the suspicion is refuted,
// and quiet sessions move when the router names a new primary, without
// sending anything first.
func TestSwitchover(t *testing.T) {
	t.Parallel()
	primary, standby := startPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	g := startGateway(t, primary.pgServer, testutil.Addr(t), func(c *Config) { c.HoldTimeout = 30 * time.Second })
	dsn := g.dsn("alice", alicePassword, "alice", "sslmode=disable")
	conn := connectPGX(t, dsn)
	mustExec(t, ctx, conn, "SET search_path = public")
	listener := connectPGX(t, dsn)
	mustExec(t, ctx, listener, "LISTEN sw")
	pid := func(c *pgx.Conn) int {
		var p int
		if err := c.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	before := pid(conn)

	// A request held past the hold timeout gets 57P03; the session stays
	// on its back end and works once the primary is fresh again.
	short := startGateway(t, primary.pgServer, testutil.Addr(t), func(c *Config) { c.HoldTimeout = 300 * time.Millisecond })
	shortConn := connectPGX(t, short.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	shortPID := pid(shortConn)
	short.router.set(short.router.primary, false, nil)
	_, err := shortConn.Exec(ctx, "SELECT 1")
	wantCode(t, "held past the hold timeout", err, "57P03")
	var one int
	err = shortConn.QueryRow(ctx, "SELECT $1::int", 1).Scan(&one)
	wantCode(t, "held past the hold timeout (extended)", err, "57P03")
	short.router.set(short.router.primary, true, nil)
	if p := pid(shortConn); p != shortPID {
		t.Fatalf("after a hold timeout the session moved from back end %d to %d", shortPID, p)
	}

	// Suspected, then refuted: the request waits and then runs on the
	// same back end.
	old := g.router.primary
	g.router.set(old, false, nil)
	held := make(chan int, 1)
	go func() { held <- pid(conn) }()
	select {
	case p := <-held:
		t.Fatalf("request ran while the primary was suspected (pid %d)", p)
	case <-time.After(300 * time.Millisecond):
	}
	g.router.set(old, true, nil)
	if p := <-held; p != before {
		t.Fatalf("after a refuted suspicion the session moved from back end %d to %d", before, p)
	}

	// Suspected, then a new primary: the request runs there.
	g.router.set(old, false, nil)
	moved := make(chan string, 1)
	go func() { moved <- serverHost(t, ctx, conn) }()
	standby.promote(t)
	named := time.Now()
	g.router.set(Target{Epoch: 2, Node: "n2", Addr: standby.addr}, true, nil)
	if h := <-moved; h != standby.host {
		t.Fatalf("held request ran on %s, want the new primary %s", h, standby.host)
	}
	t.Logf("held request answered %s after the new primary was named", time.Since(named).Round(time.Millisecond))
	checkShow(t, ctx, conn, "search_path", "public")

	// The quiet LISTEN session moved by itself: a NOTIFY on the new
	// primary reaches it.
	deadline := time.Now().Add(10 * time.Second)
	for g.MigrationStats().Migrated < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the idle session did not move: %+v", g.MigrationStats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	direct, err := standby.connect(ctx, "alice", alicePassword, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(context.Background())
	mustExec(t, ctx, direct, "NOTIFY sw, 'moved'")
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	note, err := listener.WaitForNotification(wctx)
	wcancel()
	if err != nil || note.Payload != "moved" {
		t.Fatalf("notification after the switchover: %+v, %v", note, err)
	}
	if h := serverHost(t, ctx, listener); h != standby.host {
		t.Fatalf("listener on %s", h)
	}
	g.mu.Lock()
	counts := fmt.Sprint(g.perBackend)
	g.mu.Unlock()
	if !strings.Contains(counts, standby.addr+":2") || strings.Contains(counts, primary.addr) {
		t.Fatalf("per-backend session counts after the move: %s", counts)
	}
}

func mustExec(t *testing.T, ctx context.Context, conn *pgx.Conn, q string) {
	t.Helper()
	if _, err := conn.Exec(ctx, q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func checkShow(t *testing.T, ctx context.Context, conn *pgx.Conn, name, want string) {
	t.Helper()
	var got string
	if err := conn.QueryRow(ctx, "SHOW "+name).Scan(&got); err != nil {
		t.Fatalf("SHOW %s: %v", name, err)
	}
	if got != want {
		t.Fatalf("%s = %q, want %q", name, got, want)
	}
}

// TestNewSessionHeldByFencedPrimary: a new session is not given to a
// primary its agent has fenced (read-only by default). Such a primary may
// show a read a COMMIT whose session the fence ended while it waited for
// its synchronous standby: committed locally, never acknowledged, and
// absent from the next primary (TestChaos_FlappingPartitions, seed 7: a
// register read went back in time). The session waits for the fence to
// lift, or for the hold timeout; so does a client that asks for read-only
// transactions itself (TestRoleReadOnlyIsServed has more of those).
func TestNewSessionHeldByFencedPrimary(t *testing.T) {
	t.Parallel()
	pg, ctx, super, g := newFenceFixture(t)
	fence := func(on bool) { t.Helper(); setFence(t, ctx, pg, super, on) }
	short := startGateway(t, pg, testutil.Addr(t), func(c *Config) { c.HoldTimeout = 300 * time.Millisecond })
	dsn := g.dsn("alice", alicePassword, "alice", "sslmode=disable")

	fence(true)
	done := make(chan error, 2)
	sessionLater(ctx, dsn, done, "CREATE TABLE IF NOT EXISTS fenced_probe (x int)", "INSERT INTO fenced_probe VALUES (1)")
	sessionLater(ctx, dsn+" options='-c default_transaction_read_only=on'", done, "SELECT 1")
	wantHeld(t, done, "a new session (or one asking for read-only transactions) on a fenced primary")
	_, err := pgx.Connect(ctx, short.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	wantCode(t, "a new session to a fenced primary past the hold timeout", err, "57P03")

	fence(false)
	wantReleased(t, ctx, done, 2, "the held sessions after the fence lifted")
}

// sessionLater connects to dsn and runs sqls in the background; done gets
// the first error, or nil.
func sessionLater(ctx context.Context, dsn string, done chan<- error, sqls ...string) {
	go func() {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			done <- err
			return
		}
		defer conn.Close(context.Background())
		for _, q := range sqls {
			if _, err := conn.Exec(ctx, q); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
}

// newFenceFixture starts a PostgreSQL, a superuser connection to it (for
// setFence) and a gateway that holds requests up to 30 s; the context
// bounds the test.
func newFenceFixture(t *testing.T) (*pgServer, context.Context, *pgx.Conn, *testGateway) {
	t.Helper()
	pg := startPostgres(t, testutil.Addr(t))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	super := pg.superConn(t, ctx)
	t.Cleanup(func() { super.Close(context.Background()) })
	g := startGateway(t, pg, testutil.Addr(t), func(c *Config) { c.HoldTimeout = 30 * time.Second })
	return pg, ctx, super, g
}

// wantHeld fails if what, whose result done carries, is answered within a
// second.
func wantHeld(t *testing.T, done <-chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s was answered (%v), want it held", what, err)
	case <-time.After(time.Second):
	}
}

// wantReleased waits for n results on done and fails on any error.
func wantReleased(t *testing.T, ctx context.Context, done <-chan error, n int, what string) {
	t.Helper()
	for range n {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-ctx.Done():
			t.Fatalf("%s: never answered", what)
		}
	}
}

// setFence fences the server, or lifts the fence, with pgctl as the agent
// does (the managed file, then a reload), and waits until super's session
// has processed the reload.
func setFence(t *testing.T, ctx context.Context, pg *pgServer, super *pgx.Conn, on bool) {
	t.Helper()
	if err := pg.inst.SetFenced(ctx, on); err != nil {
		t.Fatalf("setting the fence to %v: %v", on, err)
	}
	// The postmaster signals every back end at once; when super's own
	// sees the new value, the others have their signal too.
	want := map[bool]string{true: "on", false: "off"}[on]
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var got string
		if err := super.QueryRow(ctx, "SHOW default_transaction_read_only").Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("default_transaction_read_only still %s 10s after the reload", got)
		}
	}
}

// TestWriteRefusedByFenceIsRerun: a primary that loses its lease turns
// read-only (the fence) a moment before it ends its sessions, and a write
// arriving in between is refused with 25006 (TestChaos_FlappingPartitions
// saw bursts of them). The gateway keeps such a refusal of a request
// outside a transaction block from the client, holds the request until a
// primary serves writes, and sends it again: it takes effect exactly once
// and the client sees no error, in the simple protocol and in the extended
// one (a statement prepared before, and an unnamed one parsed with the
// request). A client that made its own session read-only still gets 25006
// at once, and so does a write in a transaction block.
func TestWriteRefusedByFenceIsRerun(t *testing.T) {
	t.Parallel()
	pg, ctx, super, g := newFenceFixture(t)
	connect := func(mode pgx.QueryExecMode) *pgx.Conn {
		t.Helper()
		cfg, err := pgx.ParseConfig(g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = mode
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		return conn
	}
	writers := map[int32]*pgx.Conn{
		2: connect(pgx.QueryExecModeSimpleProtocol),
		3: connect(pgx.QueryExecModeCacheStatement),
		4: connect(pgx.QueryExecModeExec),
	}
	ownReadOnly, inBlock := connect(pgx.QueryExecModeSimpleProtocol), connect(pgx.QueryExecModeSimpleProtocol)
	characteristics := connect(pgx.QueryExecModeCacheStatement)
	mustExec(t, ctx, ownReadOnly, "CREATE TABLE fence_rerun (x int)")
	for x, conn := range writers {
		if _, err := conn.Exec(ctx, "INSERT INTO fence_rerun VALUES ($1)", -x); err != nil {
			t.Fatalf("insert before the fence: %v", err)
		}
	}
	mustExec(t, ctx, ownReadOnly, "SET default_transaction_read_only = on")
	mustExec(t, ctx, characteristics, "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
	before := g.MigrationStats()

	setFence(t, ctx, pg, super, true)
	for x, conn := range writers {
		if x%2 == 0 {
			// A read first: the back end applies the reload and reports
			// default_transaction_read_only=on with its answer, before
			// the write is refused.
			var n int
			if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
				t.Fatalf("a read on the fenced primary: %v", err)
			}
		}
	}
	done := make(chan error, len(writers))
	for x, conn := range writers {
		go func() {
			_, err := conn.Exec(ctx, "INSERT INTO fence_rerun VALUES ($1)", x)
			done <- err
		}()
	}
	_, err := ownReadOnly.Exec(ctx, "INSERT INTO fence_rerun VALUES (100)")
	wantCode(t, "a write in a session the client made read-only", err, "25006")
	_, err = characteristics.Exec(ctx, "INSERT INTO fence_rerun VALUES (102)")
	wantCode(t, "a write in a session the client made read-only by its characteristics", err, "25006")
	mustExec(t, ctx, inBlock, "BEGIN")
	_, err = inBlock.Exec(ctx, "INSERT INTO fence_rerun VALUES (101)")
	wantCode(t, "a write in a transaction block", err, "25006")
	mustExec(t, ctx, inBlock, "ROLLBACK")
	wantHeld(t, done, "a write on the fenced primary")
	setFence(t, ctx, pg, super, false)
	wantReleased(t, ctx, done, len(writers), "a held write after the fence lifted")
	for x, conn := range writers {
		if _, err := conn.Exec(ctx, "INSERT INTO fence_rerun VALUES ($1)", 10*x); err != nil {
			t.Fatalf("the session after the re-run: %v", err)
		}
	}
	var rows string
	if err := ownReadOnly.QueryRow(ctx, "SELECT string_agg(x::text, ' ' ORDER BY x) FROM fence_rerun").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if want := "-4 -3 -2 2 3 4 20 30 40"; rows != want {
		t.Errorf("rows %q, want %q: each refused write once, the read-only session's and the block's not at all", rows, want)
	}
	if d := g.MigrationStats().sub(before); d.Rerun != int64(len(writers)) || d.Unknown != 0 || d.Aborted != 0 {
		t.Errorf("migration counters %+v, want %d re-runs and no error", d, len(writers))
	}
}

// TestFenceTerminateIsHidden: a primary's fence ends its sessions with the
// same FATAL as an administrator's pg_terminate_backend. A gateway that
// still sees that primary as healthy (its lease lapsed behind a partition
// that leaves this gateway connected to it) tells them apart by the server
// being fenced now: the session waits for a primary that serves writes and
// goes on, instead of ending with 57P01. So does a session whose client
// asked for read-only transactions, which sees no difference in
// default_transaction_read_only. (An administrator's terminate of a healthy
// primary still ends the session: TestGateway/pgx.)
func TestFenceTerminateIsHidden(t *testing.T) {
	t.Parallel()
	pg, ctx, super, g := newFenceFixture(t)
	dsn := g.dsn("alice", alicePassword, "alice", "sslmode=disable")
	conns := []*pgx.Conn{connectPGX(t, dsn), connectPGX(t, dsn+" options='-c default_transaction_read_only=on'")}
	pids := make([]uint32, len(conns))
	for i, conn := range conns {
		mustExec(t, ctx, conn, "SET application_name = 'kept across the fence'")
		if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pids[i]); err != nil {
			t.Fatal(err)
		}
	}

	setFence(t, ctx, pg, super, true)
	pidsAfter := make([]uint32, len(conns))
	done := make(chan error, len(conns))
	for i, conn := range conns {
		mustExec(t, ctx, super, fmt.Sprintf("SELECT pg_terminate_backend(%d)", pids[i]))
		go func() { done <- conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pidsAfter[i]) }()
	}
	wantHeld(t, done, "the sessions' next query on the fenced primary")
	setFence(t, ctx, pg, super, false)
	wantReleased(t, ctx, done, len(conns), "the sessions' queries after the fence lifted")
	for i, conn := range conns {
		if pidsAfter[i] == pids[i] {
			t.Fatalf("session %d still on back end %d, which was terminated", i, pids[i])
		}
		checkShow(t, ctx, conn, "application_name", "kept across the fence")
	}
}

// TestRoleReadOnlyIsServed: a role made read-only by its own setting (ALTER
// ROLE ... SET default_transaction_read_only = on, a common way to give
// reports a read-only login) reports default_transaction_read_only=on like
// a fenced primary does. Its sessions are served, not held as if the
// primary were fenced, and its writes get 25006 at once. While the primary
// really is fenced, new sessions of that role, and of clients that ask for
// read-only transactions themselves, are held like any other: a fenced old
// primary may show reads the next primary does not have.
func TestRoleReadOnlyIsServed(t *testing.T) {
	t.Parallel()
	pg, ctx, super, g := newFenceFixture(t)
	const pw = "reporter pässword"
	mustExec(t, ctx, super, "CREATE ROLE reporter LOGIN PASSWORD '"+pw+"'")
	mustExec(t, ctx, super, "ALTER ROLE reporter SET default_transaction_read_only = on")
	alice := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	mustExec(t, ctx, alice, "CREATE TABLE reported (x int)")
	mustExec(t, ctx, alice, "GRANT SELECT, INSERT ON reported TO reporter")

	cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
	defer ccancel()
	reporter, err := pgx.Connect(cctx, g.dsn("reporter", pw, "alice", "sslmode=disable"))
	if err != nil {
		t.Fatalf("a session of a read-only role (held as if the primary were fenced?): %v", err)
	}
	defer reporter.Close(context.Background())
	var n int
	if err := reporter.QueryRow(ctx, "SELECT count(*) FROM reported").Scan(&n); err != nil {
		t.Fatalf("a read of the read-only role: %v", err)
	}
	_, err = reporter.Exec(ctx, "INSERT INTO reported VALUES (1)")
	wantCode(t, "a write of the read-only role", err, "25006")
	before := g.MigrationStats()
	setFence(t, ctx, pg, super, true)
	_, err = reporter.Exec(ctx, "INSERT INTO reported VALUES (2)")
	wantCode(t, "a write of the read-only role on a fenced primary", err, "25006")
	if d := g.MigrationStats().sub(before); d.Rerun != 0 {
		t.Errorf("a refusal the role asked for was re-run: %+v", d)
	}

	done := make(chan error, 2)
	sessionLater(ctx, g.dsn("reporter", pw, "alice", "sslmode=disable"), done, "SELECT count(*) FROM reported")
	sessionLater(ctx, g.dsn("alice", alicePassword, "alice", "sslmode=disable options='-c default_transaction_read_only=on'"),
		done, "SELECT count(*) FROM reported")
	wantHeld(t, done, "a new read-only session on the fenced primary")
	setFence(t, ctx, pg, super, false)
	wantReleased(t, ctx, done, 2, "the read-only sessions after the fence lifted")
}
