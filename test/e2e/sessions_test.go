package e2e

// Issue 6 acceptance: client sessions through the gateway survive failover
// and switchover exactly as design.md §6 says. Every test runs a real
// 3-node cluster of agents and talks to a gateway on a node that is not the
// primary, so that killing the primary node does not take the client's own
// gateway with it. One failover serves several rows of the table at once
// (each costs seconds, and the old primary's rejoin more).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// The application role the tests connect as through the gateways (SCRAM,
// superuser so that pgbench -i and advisory locks need no grants).
const (
	sessUser     = "sess_app"
	sessPassword = "sess-app-secret"
)

// startSessionCluster starts a 3-node cluster, settles it and creates the
// application role, and waits until every gateway lets it in.
func startSessionCluster(t *testing.T, cgroups bool) *faultCluster {
	t.Helper()
	c := startFaultCluster(t, 3, cgroups)
	primary := c.settle(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := execOn(ctx, t, primary, fmt.Sprintf(`DO $$BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN
			CREATE ROLE %s LOGIN SUPERUSER PASSWORD '%s';
		END IF; END$$`, sessUser, sessUser, sessPassword)); err != nil {
		t.Fatalf("creating role %s on %s: %v", sessUser, primary.name, err)
	}
	for _, p := range c.nodes {
		var lastErr error
		waitFor(t, 60*time.Second, "a session through the gateway of "+p.name, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, err := pgx.Connect(ctx, gatewayDSN(p, "probe"))
			if err != nil {
				lastErr = err
				return false
			}
			defer conn.Close(context.Background())
			_, lastErr = conn.Exec(ctx, "SELECT 1")
			return lastErr == nil
		})
		_ = lastErr
	}
	return c
}

// gatewayDSN is a libpq DSN for p's read-write gateway as the application
// role.
func gatewayDSN(p *agentProc, appName string) string {
	return dsnAs(p.addr, "5432", sessUser, sessPassword, appName)
}

func dsnAs(host, port, user, password, appName string) string {
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=postgres sslmode=disable connect_timeout=10 application_name=%s",
		host, port, user, password, appName)
}

// gwConnect opens a session through p's gateway; it is closed at cleanup.
func gwConnect(t *testing.T, p *agentProc, appName string) *pgx.Conn {
	t.Helper()
	return connectDSN(t, gatewayDSN(p, appName), appName+" through the gateway of "+p.name)
}

// connectDSN connects (retrying for a while) and closes at cleanup.
func connectDSN(t *testing.T, dsn, what string) *pgx.Conn {
	t.Helper()
	var conn *pgx.Conn
	var err error
	// A fresh cluster may still flap under load: retry for a while.
	for i := 0; i < 20; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		conn, err = pgx.Connect(ctx, dsn)
		cancel()
		if err == nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("connecting %s: %v", what, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		conn.Close(ctx)
	})
	return conn
}

// sqlstate is the SQLSTATE of a server (or gateway) error, "" for nil, and
// a short word for errors without one.
func sqlstate(err error) string {
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &pgErr):
		return pgErr.Code
	case errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err):
		return "timeout"
	default:
		return "conn-lost"
	}
}

// pgErrorOf returns err as a *pgconn.PgError, or nil.
func pgErrorOf(err error) *pgconn.PgError {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr
	}
	return nil
}

// sessCtx is a context for one statement of a test session: generous,
// since a statement may be held through a whole failover.
func sessCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 90*time.Second)
}

// serverAddr is the address of the PostgreSQL server the session runs on.
func serverAddr(conn *pgx.Conn) (string, error) {
	ctx, cancel := sessCtx()
	defer cancel()
	var addr string
	err := conn.QueryRow(ctx, "SELECT host(inet_server_addr())").Scan(&addr)
	return addr, err
}

// checkOn asserts that the session still works and runs on want.
func checkOn(t *testing.T, conn *pgx.Conn, want *agentProc) {
	t.Helper()
	addr, err := serverAddr(conn)
	if err != nil {
		t.Fatalf("the session does not work after the failover: %v (SQLSTATE %q)", err, sqlstate(err))
	}
	if addr != want.addr {
		t.Fatalf("the session runs on %s after the failover, want the new primary %s (%s)", addr, want.name, want.addr)
	}
}

// waitBackend waits until a session of application appName is active on p
// with the given wait event (the statement is certainly in flight there).
func waitBackend(t *testing.T, p *agentProc, appName, waitEvent string) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("%s waiting on %s in %s", appName, waitEvent, p.name), func() bool {
		n, err := queryOn[int](t, p, `SELECT count(*)::int FROM pg_stat_activity
			WHERE application_name = $1 AND state = 'active' AND wait_event = $2`, appName, waitEvent)
		return err == nil && n > 0
	})
}

// stopWalsenders SIGSTOPs p's WAL senders: nothing more of its WAL reaches
// the standbys, so a COMMIT on it waits for its synchronous standby for
// ever. It returns the pids stopped; they are continued at cleanup (they die
// with the node in the tests).
func stopWalsenders(t *testing.T, p *agentProc) []int {
	t.Helper()
	var pids []int
	for _, child := range childrenOf(postmasterPID(p.dataDir())) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", child))
		if strings.Contains(string(b), "walsender") {
			pids = append(pids, child)
		}
	}
	if len(pids) == 0 {
		t.Fatalf("%s has no WAL sender to stop", p.name)
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGSTOP)
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			// Only if it is still that WAL sender (pids get reused).
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if strings.Contains(string(b), "walsender") {
				syscall.Kill(pid, syscall.SIGCONT)
			}
		}
	})
	return pids
}

// stmtResult is what a statement run in the background returned.
type stmtResult struct {
	at       time.Time // when the answer came
	err      error
	val      string
	txStatus byte
}

// inBackground runs f on its own goroutine; the result arrives on the
// channel.
func inBackground(f func(ctx context.Context) (string, error), conn *pgx.Conn) <-chan stmtResult {
	ch := make(chan stmtResult, 1)
	go func() {
		ctx, cancel := sessCtx()
		defer cancel()
		v, err := f(ctx)
		ch <- stmtResult{at: time.Now(), err: err, val: v, txStatus: conn.PgConn().TxStatus()}
	}()
	return ch
}

func await(t *testing.T, what string, ch <-chan stmtResult) stmtResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s: no answer within 2 minutes", what)
		return stmtResult{}
	}
}

func wantSQLState(t *testing.T, what string, err error, want string) {
	t.Helper()
	if got := sqlstate(err); got != want {
		t.Fatalf("%s: got error %v (SQLSTATE %q), want SQLSTATE %q", what, err, got, want)
	}
}

// TestSessionFailover is the issue-6 acceptance on one cluster: every row
// of design.md §6 (one failover for most of them), COMMIT resolution of a
// commit that reached the standbys, real clients (psql, psycopg2, pgbench)
// across a failover, and a planned switchover under load.
func TestSessionFailover(t *testing.T) {
	c := startSessionCluster(t, false)
	t.Run("rows", func(t *testing.T) { testSessionRows(t, c) })
	t.Run("commit-replicated", func(t *testing.T) { testCommitReplicated(t, c) })
	t.Run("clients", func(t *testing.T) { testSessionClients(t, c) })
	t.Run("switchover", func(t *testing.T) { testSessionSwitchover(t, c) })
}

// testSessionRows puts one session in each state of the §6 table, kills the
// primary node (kill -9 of PostgreSQL and its agent), and checks what each
// session's client sees, one subtest per row.
func testSessionRows(t *testing.T, c *faultCluster) {
	primary := c.settle(t)
	gw := c.others(primary)[0]
	t.Logf("primary %s; clients use the gateway of %s", primary.name, gw.name)

	setup := gwConnect(t, gw, "sess_setup")
	ctx, cancel := sessCtx()
	defer cancel()
	if _, err := setup.Exec(ctx, `CREATE TABLE IF NOT EXISTS sess_rows (k text PRIMARY KEY, v text); TRUNCATE sess_rows;
		CREATE TABLE IF NOT EXISTS sess_burn (id bigserial PRIMARY KEY);
		CREATE OR REPLACE FUNCTION sess_notice_sleep(s float8) RETURNS text LANGUAGE plpgsql AS
		$$BEGIN RAISE NOTICE 'sleeping'; PERFORM pg_sleep(s); RETURN 'slept'; END$$`); err != nil {
		t.Fatalf("creating sess_rows: %v", err)
	}
	must := func(conn *pgx.Conn, sql string, args ...any) {
		t.Helper()
		ctx, cancel := sessCtx()
		defer cancel()
		if _, err := conn.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}

	// Idle, with state to replay: a SET, a LISTEN, a named prepared
	// statement.
	idle := gwConnect(t, gw, "sess_idle")
	must(idle, "SET statement_timeout = '123s'")
	must(idle, "LISTEN sess_channel")
	if _, err := idle.Prepare(ctx, "sess_idle_ps", "SELECT $1::int + 1"); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	// Idle now, sends its request right after the kill.
	held := gwConnect(t, gw, "sess_held")
	must(held, "SELECT 1")

	// Pinned sessions.
	pinTemp := gwConnect(t, gw, "sess_pin_temp")
	must(pinTemp, "CREATE TEMP TABLE sess_tmp (x int)")
	pinLock := gwConnect(t, gw, "sess_pin_lock")
	must(pinLock, "SELECT pg_advisory_lock(4242)")
	pinCursor := gwConnect(t, gw, "sess_pin_cursor")
	must(pinCursor, "BEGIN")
	must(pinCursor, "DECLARE sess_hold CURSOR WITH HOLD FOR SELECT 1")
	must(pinCursor, "COMMIT")

	// In flight when the node dies: a statement in an explicit
	// transaction, an autocommit write, a read whose first row already
	// reached the client.
	inTx := gwConnect(t, gw, "sess_in_tx")
	must(inTx, "BEGIN")
	must(inTx, "INSERT INTO sess_rows VALUES ('in-tx', 'before')")
	inTxRes := inBackground(func(ctx context.Context) (string, error) {
		_, err := inTx.Exec(ctx, "SELECT pg_sleep(120)")
		return "", err
	}, inTx)
	acWrite := gwConnect(t, gw, "sess_ac_write")
	acWriteRes := inBackground(func(ctx context.Context) (string, error) {
		_, err := acWrite.Exec(ctx, "INSERT INTO sess_rows SELECT 'ac-write', pg_sleep(120)::text")
		return "", err
	}, acWrite)
	roPartial := gwConnect(t, gw, "sess_ro_partial")
	firstRow := make(chan struct{})
	roPartialRes := inBackground(func(ctx context.Context) (string, error) {
		// The NOTICE makes the server flush the first row to the client
		// before it sleeps (PostgreSQL flushes its output at every notice).
		rows, err := roPartial.Query(ctx, "SELECT 'first' UNION ALL SELECT sess_notice_sleep(120)")
		if err != nil {
			close(firstRow)
			return "", err
		}
		n := 0
		for rows.Next() {
			if n++; n == 1 {
				close(firstRow)
			}
		}
		if n == 0 {
			close(firstRow)
		}
		rows.Close()
		return strconv.Itoa(n), rows.Err()
	}, roPartial)
	waitBackend(t, primary, "sess_in_tx", "PgSleep")
	waitBackend(t, primary, "sess_ac_write", "PgSleep")
	waitBackend(t, primary, "sess_ro_partial", "PgSleep")
	select {
	case <-firstRow:
	case <-time.After(30 * time.Second):
		t.Fatalf("the first row of the partial read did not reach the client")
	}

	// COMMIT in flight that certainly did not commit: the WAL senders are
	// stopped before the transaction writes, so no standby ever sees it;
	// the COMMIT waits for its synchronous standby until the node dies.
	//
	// Its session runs as a role allowed one connection per server. A
	// connection as that role, held on each standby from before the kill,
	// keeps the gateway from re-attaching the session to the new primary
	// (53300, which it retries) until the test has made the new primary
	// assign and commit the lost COMMIT's transaction id to another
	// transaction: the xid-reuse hazard, certainly in place when the
	// gateway resolves. Only the fence can then tell that the id is not the
	// session's transaction.
	if err := execOn(ctx, t, primary, `DO $$BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sess_limited') THEN
			CREATE ROLE sess_limited LOGIN PASSWORD 'sess-limited-secret' CONNECTION LIMIT 1;
		END IF; END$$;
		GRANT SELECT, INSERT ON sess_rows TO sess_limited`); err != nil {
		t.Fatalf("creating role sess_limited: %v", err)
	}
	var blockers []*pgx.Conn
	for _, s := range c.others(primary) {
		blockers = append(blockers, connectDSN(t, dsnAs(s.addr, "5433", "sess_limited", "sess-limited-secret", "sess_blocker"),
			"the blocker on "+s.name))
	}
	commitLost := connectDSN(t, dsnAs(gw.addr, "5432", "sess_limited", "sess-limited-secret", "sess_commit_lost"),
		"sess_commit_lost through the gateway of "+gw.name)
	stopWalsenders(t, primary)
	must(commitLost, "BEGIN")
	must(commitLost, "INSERT INTO sess_rows VALUES ('commit-lost', 'x')")
	var lostXid string
	if err := commitLost.QueryRow(ctx, "SELECT pg_current_xact_id()::text").Scan(&lostXid); err != nil {
		t.Fatalf("reading the xid: %v", err)
	}
	commitLostRes := inBackground(func(ctx context.Context) (string, error) {
		_, err := commitLost.Exec(ctx, "COMMIT")
		return "", err
	}, commitLost)
	waitBackend(t, primary, "sess_commit_lost", "SyncRep")

	// A read-only autocommit statement in flight, started last so that it
	// is still running at the kill.
	roRerun := gwConnect(t, gw, "sess_ro_rerun")
	roRerunRes := inBackground(func(ctx context.Context) (string, error) {
		var v string
		err := roRerun.QueryRow(ctx, "SELECT 'slept ' || pg_sleep(3)::text").Scan(&v)
		return v, err
	}, roRerun)
	waitBackend(t, primary, "sess_ro_rerun", "PgSleep")

	killedAt := time.Now()
	killNode(t, primary)
	// Sent while no primary is writable: held, then run on the new one.
	heldRes := inBackground(func(ctx context.Context) (string, error) {
		var addr string
		err := held.QueryRow(ctx, "INSERT INTO sess_rows VALUES ('held', 'x') RETURNING host(inet_server_addr())").Scan(&addr)
		return addr, err
	}, held)

	newPrimary := c.waitNewPrimary(t, primary, 2*time.Minute)
	t.Logf("new primary %s %s after the kill", newPrimary.name, time.Since(killedAt).Round(time.Millisecond))
	// Provoke xid reuse: write on the new primary until the lost COMMIT's
	// transaction id is committed there by another transaction.
	reused := ""
	for i := 0; i < 40 && reused != "committed"; i++ {
		burnXids(t, newPrimary, 25)
		reused, _ = queryOn[string](t, newPrimary, "SELECT coalesce(pg_xact_status($1::text::xid8), '')", lostXid)
	}
	if reused != "committed" {
		t.Fatalf("could not provoke the xid-reuse hazard: transaction %s on the new primary is %q", lostXid, reused)
	}
	select {
	case r := <-commitLostRes:
		t.Fatalf("the COMMIT was answered (%v) before the hazard was in place: the blockers did not hold the session off", r.err)
	default:
	}
	t.Logf("transaction id %s of the lost COMMIT is now committed on the new primary by another transaction; releasing the session", lostXid)
	for _, b := range blockers {
		b.Close(context.Background())
	}

	results := map[string]stmtResult{
		"in-tx":      await(t, "statement in a transaction", inTxRes),
		"ac-write":   await(t, "autocommit write", acWriteRes),
		"ro-partial": await(t, "partial read", roPartialRes),
		"commit":     await(t, "COMMIT in flight", commitLostRes),
		"ro-rerun":   await(t, "read-only statement", roRerunRes),
		"held":       await(t, "held request", heldRes),
	}

	t.Run("idle", func(t *testing.T) {
		checkOn(t, idle, newPrimary)
		ctx, cancel := sessCtx()
		defer cancel()
		var st string
		if err := idle.QueryRow(ctx, "SHOW statement_timeout").Scan(&st); err != nil || st != "123s" {
			t.Errorf("statement_timeout after the move: %q (%v), want the replayed 123s", st, err)
		}
		var n int
		if err := idle.QueryRow(ctx, "sess_idle_ps", 41).Scan(&n); err != nil || n != 42 {
			t.Errorf("named prepared statement after the move: %d (%v), want 42", n, err)
		}
		// Notifications resume: NOTIFY from another session.
		other := gwConnect(t, gw, "sess_notify")
		if _, err := other.Exec(ctx, "NOTIFY sess_channel, 'after'"); err != nil {
			t.Fatalf("notify: %v", err)
		}
		nctx, ncancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer ncancel()
		if n, err := idle.WaitForNotification(nctx); err != nil || n.Payload != "after" {
			t.Errorf("notification on the moved LISTEN session: %v (%v)", n, err)
		}
	})
	t.Run("held", func(t *testing.T) {
		r := results["held"]
		if r.err != nil {
			t.Fatalf("request sent while no primary was writable: %v (SQLSTATE %q), want it run on the new primary", r.err, sqlstate(r.err))
		}
		if r.val != newPrimary.addr {
			t.Errorf("held request ran on %s, want the new primary %s", r.val, newPrimary.addr)
		}
		checkOn(t, held, newPrimary)
	})
	t.Run("read-only-rerun", func(t *testing.T) {
		r := results["ro-rerun"]
		if r.err != nil {
			t.Fatalf("read-only autocommit statement in flight: %v (SQLSTATE %q), want it re-run on the new primary without error", r.err, sqlstate(r.err))
		}
		checkOn(t, roRerun, newPrimary)
	})
	t.Run("read-only-partial", func(t *testing.T) {
		// Part of the answer had reached the client: it cannot be re-run.
		r := results["ro-partial"]
		wantSQLState(t, "read with a row already sent", r.err, "40001")
		checkOn(t, roPartial, newPrimary)
	})
	t.Run("in-transaction", func(t *testing.T) {
		r := results["in-tx"]
		wantSQLState(t, "statement in an explicit transaction", r.err, "40001")
		if r.txStatus != 'E' {
			t.Errorf("transaction status after the error: %q, want 'E'", r.txStatus)
		}
		ctx, cancel := sessCtx()
		defer cancel()
		if _, err := inTx.Exec(ctx, "ROLLBACK"); err != nil {
			t.Fatalf("ROLLBACK after the error: %v", err)
		}
		if s := inTx.PgConn().TxStatus(); s != 'I' {
			t.Errorf("transaction status after ROLLBACK: %q, want 'I'", s)
		}
		if _, err := inTx.Exec(ctx, "INSERT INTO sess_rows VALUES ('in-tx-after', 'x')"); err != nil {
			t.Fatalf("a write after ROLLBACK: %v", err)
		}
		checkOn(t, inTx, newPrimary)
		if n, err := queryOn[int](t, newPrimary, "SELECT count(*)::int FROM sess_rows WHERE k = 'in-tx'"); err != nil || n != 0 {
			t.Errorf("the rolled-back transaction's row: %d rows (%v), want 0", n, err)
		}
	})
	t.Run("commit-not-replicated", func(t *testing.T) {
		// No standby received the transaction: it certainly did not
		// commit on the new timeline, whatever the xid means there now.
		r := results["commit"]
		wantSQLState(t, "COMMIT that never reached a standby", r.err, "40001")
		if n, err := queryOn[int](t, newPrimary, "SELECT count(*)::int FROM sess_rows WHERE k = 'commit-lost'"); err != nil || n != 0 {
			t.Errorf("the lost transaction's row on the new primary: %d rows (%v), want 0", n, err)
		}
		checkOn(t, commitLost, newPrimary)
	})
	t.Run("autocommit-write", func(t *testing.T) {
		r := results["ac-write"]
		wantSQLState(t, "autocommit write in flight", r.err, "40003")
		checkOn(t, acWrite, newPrimary)
	})
	for _, pin := range []struct {
		name string
		conn *pgx.Conn
		why  string
	}{
		{"pinned-temp-table", pinTemp, "temporary"},
		{"pinned-advisory-lock", pinLock, "advisory lock"},
		{"pinned-hold-cursor", pinCursor, "WITH HOLD cursor"},
	} {
		t.Run(pin.name, func(t *testing.T) {
			// The gateway ends the session as soon as it would move; the
			// FATAL is waiting in the socket.
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			err := pin.conn.PgConn().WaitForNotification(ctx)
			pgErr := pgErrorOf(err)
			if pgErr == nil || pgErr.Severity != "FATAL" || pgErr.Code != "57P01" {
				t.Fatalf("pinned session: %v, want FATAL 57P01", err)
			}
			if !strings.Contains(pgErr.Message, pin.why) {
				t.Errorf("FATAL message %q does not say why (%q)", pgErr.Message, pin.why)
			}
		})
	}
}

// burnXids runs n write transactions directly on p's PostgreSQL as soon as it
// accepts writes (each assigns and commits an xid). Real writes, not
// pg_current_xact_id(), which a read-only (fenced) server would also serve.
func burnXids(t *testing.T, p *agentProc, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for done := 0; done < n && time.Now().Before(deadline); {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := pgx.Connect(ctx, agentDSN(t, p))
		if err != nil {
			cancel()
			time.Sleep(20 * time.Millisecond)
			continue
		}
		for done < n {
			if _, err := conn.Exec(ctx, "INSERT INTO sess_burn DEFAULT VALUES"); err != nil {
				break
			}
			done++
		}
		conn.Close(context.Background())
		cancel()
		if done < n {
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// testCommitReplicated: a COMMIT whose record reached the standbys' WAL but
// whose acknowledgement never came back (the standbys' replies are dropped)
// is in flight when the primary node dies. The new primary has the
// transaction committed, so the client must see success.
func testCommitReplicated(t *testing.T, c *faultCluster) {
	if !testutil.IsRoot() {
		t.Skip("dropping the standbys' replies needs nftables (root)")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft is not installed")
	}
	primary := c.settle(t)
	gw := c.others(primary)[0]
	conn := gwConnect(t, gw, "sess_commit_repl")
	ctx, cancel := sessCtx()
	defer cancel()
	if _, err := conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS sess_commit (k text PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}

	// The standbys' replication connections as the primary sees them;
	// everything they send back (replies, TCP acknowledgements) is dropped.
	direct := connectAgentRole(t, primary)
	rows, err := direct.Query(ctx, "SELECT host(client_addr), client_port FROM pg_stat_replication WHERE client_addr IS NOT NULL")
	if err != nil {
		t.Fatal(err)
	}
	type peer struct {
		addr string
		port int
	}
	peers, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (peer, error) {
		var p peer
		return p, r.Scan(&p.addr, &p.port)
	})
	if err != nil || len(peers) == 0 {
		t.Fatalf("replication connections on %s: %v (%v)", primary.name, peers, err)
	}
	table := "pgbt_sess_" + randomHex(4)
	var rules strings.Builder
	fmt.Fprintf(&rules, "table inet %s {\n chain out {\n  type filter hook output priority 0; policy accept;\n", table)
	for _, p := range peers {
		fmt.Fprintf(&rules, "  ip saddr %s tcp sport %d ip daddr %s tcp dport 5433 drop\n", p.addr, p.port, primary.addr)
	}
	rules.WriteString(" }\n}\n")
	healed := false
	heal := func() {
		if !healed {
			healed = true
			exec.Command("nft", "delete", "table", "inet", table).Run()
		}
	}
	t.Cleanup(heal)

	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO sess_commit VALUES ('replicated')"); err != nil {
		t.Fatal(err)
	}
	nft := exec.Command("nft", "-f", "-")
	nft.Stdin = strings.NewReader(rules.String())
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	res := inBackground(func(ctx context.Context) (string, error) {
		_, err := conn.Exec(ctx, "COMMIT")
		return "", err
	}, conn)
	waitBackend(t, primary, "sess_commit_repl", "SyncRep")
	var flush string
	if err := direct.QueryRow(ctx, "SELECT pg_current_wal_flush_lsn()::text").Scan(&flush); err != nil {
		t.Fatal(err)
	}
	for _, s := range c.others(primary) {
		waitFor(t, 30*time.Second, "the commit record flushed on "+s.name, func() bool {
			ok, err := queryOn[bool](t, s, "SELECT pg_last_wal_receive_lsn() >= $1::pg_lsn", flush)
			return err == nil && ok
		})
	}
	killNode(t, primary)
	heal()
	newPrimary := c.waitNewPrimary(t, primary, 2*time.Minute)
	r := await(t, "COMMIT in flight", res)
	if r.err != nil {
		t.Fatalf("COMMIT whose record reached the standbys: %v (SQLSTATE %q), want success (resolved committed)", r.err, sqlstate(r.err))
	}
	if n, err := queryOn[int](t, newPrimary, "SELECT count(*)::int FROM sess_commit WHERE k = 'replicated'"); err != nil || n != 1 {
		t.Errorf("the committed row on the new primary: %d rows (%v), want 1", n, err)
	}
	checkOn(t, conn, newPrimary)
}

// lineReader collects a process's output lines on a channel.
func lineReader(r io.Reader) <-chan string {
	ch := make(chan string, 1000)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			select {
			case ch <- sc.Text():
			default: // the test reads what it waits for; drop floods
			}
		}
	}()
	return ch
}

// waitLine waits for a line starting with prefix and returns it.
func waitLine(t *testing.T, what string, lines <-chan string, prefix string, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	var seen []string
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("%s: output ended before %q; got %q", what, prefix, seen)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
			seen = append(seen, l)
		case <-deadline:
			t.Fatalf("%s: no %q within %s; got %q", what, prefix, timeout, seen)
		}
	}
}

// lockedBuffer is a strings.Builder safe for a process's writer.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// sessPsycopg2 is the psycopg2 client: it writes, says READY, waits for a
// line on stdin (the failover happens meanwhile), writes again and reads
// both rows back on the same connection.
const sessPsycopg2 = `
import sys
import psycopg2
conn = psycopg2.connect(sys.argv[1])
cur = conn.cursor()
cur.execute("CREATE TABLE IF NOT EXISTS sess_py (v text)")
cur.execute("TRUNCATE sess_py")
cur.execute("INSERT INTO sess_py VALUES ('before')")
conn.commit()
print("READY", flush=True)
sys.stdin.readline()
try:
    cur.execute("INSERT INTO sess_py VALUES ('after')")
    conn.commit()
    cur.execute("SELECT string_agg(v, ',' ORDER BY v) FROM sess_py")
    print("RESULT", cur.fetchone()[0], flush=True)
    conn.commit()
except psycopg2.Error as e:
    print("ERROR", e.pgcode, str(e).replace("\n", " "), flush=True)
    sys.exit(1)
conn.close()
`

// testSessionClients: psql and psycopg2 sessions left open across a kill -9
// of the primary node keep working without a reconnect; pgbench with
// --max-tries=10 runs through the same failover with no failed transaction.
func testSessionClients(t *testing.T, c *faultCluster) {
	psqlBin, err := exec.LookPath("psql")
	if err != nil {
		t.Skip("psql is not installed")
	}
	pgbenchBin, err := exec.LookPath("pgbench")
	if err != nil {
		t.Skip("pgbench is not installed")
	}
	python := "/usr/bin/python3"
	if _, err := os.Stat(python); err != nil {
		t.Skip("/usr/bin/python3 (with psycopg2) is not installed")
	}
	primary := c.settle(t)
	gw := c.others(primary)[0]
	conninfo := fmt.Sprintf("host=%s port=5432 user=%s dbname=postgres sslmode=disable", gw.addr, sessUser)
	env := append(os.Environ(), "PGPASSWORD="+sessPassword, "PGCONNECT_TIMEOUT=10")

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	initCmd := exec.CommandContext(ctx, pgbenchBin, "-i", "-s", "1", "-q", conninfo)
	initCmd.Env = env
	if out, err := initCmd.CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i through the gateway: %v\n%s", err, out)
	}

	// psql, driven through pipes.
	psql := exec.CommandContext(ctx, psqlBin, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=0", conninfo+" application_name=sess_psql")
	psql.Env = env
	psqlIn, _ := psql.StdinPipe()
	psqlOutPipe, _ := psql.StdoutPipe()
	var psqlErr lockedBuffer
	psql.Stderr = &psqlErr
	if err := psql.Start(); err != nil {
		t.Fatalf("starting psql: %v", err)
	}
	t.Cleanup(func() { psql.Process.Kill(); psql.Wait() })
	psqlOut := lineReader(psqlOutPipe)
	fmt.Fprint(psqlIn, "CREATE TABLE IF NOT EXISTS sess_psql (v text);\nTRUNCATE sess_psql;\n"+
		"INSERT INTO sess_psql VALUES ('before');\nSELECT 'ready-' || count(*) FROM sess_psql;\n")
	waitLine(t, "psql", psqlOut, "ready-1", 60*time.Second)

	// psycopg2.
	py := exec.CommandContext(ctx, python, "-c", sessPsycopg2, gatewayDSN(gw, "sess_psycopg2"))
	pyIn, _ := py.StdinPipe()
	pyOutPipe, _ := py.StdoutPipe()
	var pyErr lockedBuffer
	py.Stderr = &pyErr
	if err := py.Start(); err != nil {
		t.Fatalf("starting python3: %v", err)
	}
	t.Cleanup(func() { py.Process.Kill(); py.Wait() })
	pyOut := lineReader(pyOutPipe)
	waitLine(t, "psycopg2", pyOut, "READY", 60*time.Second)

	// pgbench spanning the failover.
	bench := exec.CommandContext(ctx, pgbenchBin, "-n", "-c", "4", "-j", "2", "-T", "30", "--max-tries=10", "-P", "5", conninfo)
	bench.Env = env
	var benchOut lockedBuffer
	bench.Stdout, bench.Stderr = &benchOut, &benchOut
	if err := bench.Start(); err != nil {
		t.Fatalf("starting pgbench: %v", err)
	}
	t.Cleanup(func() { bench.Process.Kill() })
	benchDone := make(chan error, 1)
	go func() { benchDone <- bench.Wait() }()
	time.Sleep(8 * time.Second)

	killNode(t, primary)
	// Both sessions send their next statements a moment later, as someone
	// typing would, while no primary is writable yet (the failover takes
	// seconds): held, then run on the new primary. (A request sent at the
	// very instant of the kill is the rows test's "held" case.)
	time.Sleep(500 * time.Millisecond)
	fmt.Fprint(psqlIn, "INSERT INTO sess_psql VALUES ('after');\nSELECT 'rows-' || string_agg(v, ',' ORDER BY v) FROM sess_psql;\n")
	fmt.Fprintln(pyIn, "GO")
	newPrimary := c.waitNewPrimary(t, primary, 2*time.Minute)
	t.Logf("new primary %s", newPrimary.name)

	t.Run("psql", func(t *testing.T) {
		got := waitLine(t, "psql", psqlOut, "rows-", 2*time.Minute)
		fmt.Fprint(psqlIn, "\\q\n")
		psqlIn.Close()
		waitErr := make(chan error, 1)
		go func() { waitErr <- psql.Wait() }()
		select {
		case err := <-waitErr:
			if err != nil {
				t.Errorf("psql exited with %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("psql did not exit after \\q")
		}
		if got != "rows-after,before" {
			t.Errorf("psql read %q after the failover, want rows-after,before", got)
		}
		stderr := psqlErr.String()
		for _, bad := range []string{"connection to server was lost", "reconnect", "server closed", "FATAL", "ERROR"} {
			if strings.Contains(stderr, bad) {
				t.Errorf("psql's stderr says %q:\n%s", bad, stderr)
			}
		}
	})
	t.Run("psycopg2", func(t *testing.T) {
		got := waitLine(t, "psycopg2", pyOut, "", 2*time.Minute)
		if got != "RESULT after,before" {
			t.Errorf("psycopg2 printed %q after the failover, want RESULT after,before; stderr:\n%s", got, pyErr.String())
		}
		pyIn.Close()
	})
	t.Run("pgbench", func(t *testing.T) {
		var err error
		select {
		case err = <-benchDone:
		case <-time.After(3 * time.Minute):
			t.Fatalf("pgbench did not finish; output:\n%s", benchOut.String())
		}
		out := benchOut.String()
		t.Logf("pgbench through the gateway across the failover:\n%s", out)
		if err != nil {
			t.Errorf("pgbench exited with %v", err)
		}
		failed := regexp.MustCompile(`number of failed transactions: (\d+)`).FindStringSubmatch(out)
		processed := regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindStringSubmatch(out)
		if failed == nil || processed == nil {
			t.Fatalf("pgbench's summary has no failed/processed counts")
		}
		if failed[1] != "0" {
			t.Errorf("pgbench: %s failed transactions, want 0", failed[1])
		}
		if processed[1] == "0" {
			t.Errorf("pgbench processed no transaction")
		}
		if strings.Contains(out, "aborted") {
			t.Errorf("a pgbench client aborted")
		}
	})
}

// testSessionSwitchover: a planned switchover while 5 sessions run short
// transactions in a loop and 20 sessions are idle, spread over every
// gateway: no client sees an error, every session survives, and every
// acknowledged increment is there.
func testSessionSwitchover(t *testing.T, c *faultCluster) {
	primary := c.settle(t)
	target := c.others(primary)[0]
	setup := gwConnect(t, target, "sess_sw_setup")
	ctx, cancel := sessCtx()
	defer cancel()
	if _, err := setup.Exec(ctx, `CREATE TABLE IF NOT EXISTS sess_sw (id int PRIMARY KEY, n bigint NOT NULL);
		TRUNCATE sess_sw; INSERT INTO sess_sw SELECT g, 0 FROM generate_series(1, 5) g`); err != nil {
		t.Fatal(err)
	}
	var idle []*pgx.Conn
	for i := 0; i < 20; i++ {
		idle = append(idle, gwConnect(t, c.nodes[i%len(c.nodes)], fmt.Sprintf("sess_sw_idle%d", i)))
	}
	type looper struct {
		conn       *pgx.Conn
		ok         atomic.Int64
		errs       []error
		okAfterSw  atomic.Int64
		switchedAt atomic.Bool
	}
	loopers := make([]*looper, 5)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range loopers {
		l := &looper{conn: gwConnect(t, c.nodes[i%len(c.nodes)], fmt.Sprintf("sess_sw_loop%d", i))}
		loopers[i] = l
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			for n := 0; n < 100000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := sessCtx()
				err := pgx.BeginFunc(ctx, l.conn, func(tx pgx.Tx) error {
					_, err := tx.Exec(ctx, "UPDATE sess_sw SET n = n + 1 WHERE id = $1", id)
					return err
				})
				cancel()
				if err != nil {
					l.errs = append(l.errs, err)
					if l.conn.IsClosed() {
						return
					}
				} else {
					l.ok.Add(1)
					if l.switchedAt.Load() {
						l.okAfterSw.Add(1)
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
		}(i + 1)
	}
	time.Sleep(2 * time.Second)

	var out string
	var code int
	start := time.Now()
	waitFor(t, 2*time.Minute, "a switchover the cluster accepts", func() bool {
		out, code = opCLI(t, primary, 90*time.Second, "switchover", "-to", target.name, "-wait")
		return code == 0 || !(strings.Contains(out, "409") || strings.Contains(out, "503"))
	})
	if code != 0 {
		close(stop)
		wg.Wait()
		t.Fatalf("switchover -to %s: exit %d:\n%s", target.name, code, out)
	}
	t.Logf("switchover took %s:\n%s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	for _, l := range loopers {
		l.switchedAt.Store(true)
	}
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()

	var total int64
	for i, l := range loopers {
		total += l.ok.Load()
		for _, err := range l.errs {
			t.Errorf("looping session %d: error %v (SQLSTATE %q)", i+1, err, sqlstate(err))
		}
		if l.okAfterSw.Load() == 0 {
			t.Errorf("looping session %d committed nothing after the switchover", i+1)
		}
		if !l.conn.IsClosed() {
			checkOn(t, l.conn, target)
		}
	}
	for i, conn := range idle {
		if addr, err := serverAddr(conn); err != nil || addr != target.addr {
			t.Errorf("idle session %d after the switchover: on %q, error %v (SQLSTATE %q); want it working on %s",
				i, addr, err, sqlstate(err), target.addr)
		}
	}
	sum, err := queryOn[int64](t, target, "SELECT sum(n)::bigint FROM sess_sw")
	if err != nil {
		t.Fatal(err)
	}
	if !t.Failed() && sum != total {
		t.Errorf("sum of increments on the new primary %d, want the %d acknowledged", sum, total)
	}
	t.Logf("switchover under load: %d transactions acknowledged, all present", total)
}

// --- benchmark ---

// sessBenchRun is one fault injected under the probe clients.
type sessBenchRun struct {
	WriteGapMS     float64        `json:"write_gap_ms"`
	HeartbeatGapMS float64        `json:"heartbeat_max_gap_ms"`
	Survived       int            `json:"idle_survived"`
	Idle           int            `json:"idle_sessions"`
	Errors         map[string]int `json:"errors_by_sqlstate"`
	Recovered      bool           `json:"recovered"`
}

// opRecord is one probe operation.
type opRecord struct {
	invoke, complete time.Time
	err              error
}

// sessProbe runs one statement every interval on one connection through
// the gateway, and keeps the history. A connection that dies is reopened
// (counted as "conn-lost" in the history's errors).
type sessProbe struct {
	mu      sync.Mutex
	ops     []opRecord
	stop    chan struct{}
	done    chan struct{}
	reopens int
}

func startSessProbe(t *testing.T, gw *agentProc, appName, sql string, interval time.Duration) *sessProbe {
	conn := gwConnect(t, gw, appName)
	p := &sessProbe{stop: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(func() { p.halt() })
	go func() {
		defer close(p.done)
		defer func() { conn.Close(context.Background()) }()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for n := 0; n < 1_000_000; n++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			if conn.IsClosed() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				nc, err := pgx.Connect(ctx, gatewayDSN(gw, appName))
				cancel()
				if err != nil {
					continue
				}
				p.mu.Lock()
				p.reopens++
				p.mu.Unlock()
				conn.Close(context.Background())
				conn = nc
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			start := time.Now()
			_, err := conn.Exec(ctx, sql)
			cancel()
			p.mu.Lock()
			p.ops = append(p.ops, opRecord{invoke: start, complete: time.Now(), err: err})
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *sessProbe) history() []opRecord {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.ops)
}

func (p *sessProbe) halt() []opRecord {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
	return p.history()
}

// TestSessionBench measures, through the gateway of a node that stays up,
// per fault kind: the write gap of a probe writing every 10 ms on one
// session, the longest gap of a heartbeat session (one query every 100 ms),
// how many of 20 idle sessions survive, and client errors by SQLSTATE. Runs
// only with PGBATTERY_BENCH=1 (make bench, BENCH=sessions);
// PGBATTERY_BENCH_RUNS sets the runs per kind (default 5),
// PGBATTERY_BENCH_OUT a JSON file for the results.
func TestSessionBench(t *testing.T) {
	if os.Getenv("PGBATTERY_BENCH") != "1" {
		t.Skip("set PGBATTERY_BENCH=1 to run the session benchmark")
	}
	runs := 5
	if s := os.Getenv("PGBATTERY_BENCH_RUNS"); s != "" {
		if _, err := fmt.Sscan(s, &runs); err != nil || runs < 1 || runs > 100 {
			t.Fatalf("PGBATTERY_BENCH_RUNS=%q: want 1..100", s)
		}
	}
	cg := cgroupsUsable()
	kinds := []string{"postgres-killed", "node-killed", "switchover"}
	if cg {
		kinds = []string{"postgres-killed", "node-killed", "partition", "switchover"}
	} else {
		t.Logf("no partition runs: they need root, nft and the cgroup v2 root")
	}
	if s := os.Getenv("PGBATTERY_BENCH_KINDS"); s != "" {
		kinds = strings.Split(s, ",")
		for _, k := range kinds {
			if k == "partition" && !cg {
				t.Fatalf("PGBATTERY_BENCH_KINDS: partition runs need root, nft and the cgroup v2 root")
			}
			if !slices.Contains([]string{"postgres-killed", "node-killed", "partition", "switchover"}, k) {
				t.Fatalf("PGBATTERY_BENCH_KINDS: unknown fault %q", k)
			}
		}
	}
	c := startSessionCluster(t, cg && slices.Contains(kinds, "partition"))
	const idleSessions = 20
	all := map[string][]sessBenchRun{}
	for round := 0; round < runs; round++ {
		for _, kind := range kinds {
			r := sessBenchOnce(t, c, kind, round, idleSessions)
			all[kind] = append(all[kind], r)
		}
	}

	type row struct {
		Fault             string         `json:"fault"`
		Runs              int            `json:"runs"`
		WriteGapMedianMS  float64        `json:"write_gap_median_ms"`
		WriteGapMaxMS     float64        `json:"write_gap_max_ms"`
		HeartbeatMedianMS float64        `json:"heartbeat_gap_median_ms"`
		HeartbeatMaxMS    float64        `json:"heartbeat_gap_max_ms"`
		Survived          int            `json:"idle_survived"`
		Idle              int            `json:"idle_total"`
		Errors            map[string]int `json:"errors_by_sqlstate"`
		PerRun            []sessBenchRun `json:"per_run"`
	}
	var rows []row
	var b strings.Builder
	fmt.Fprintf(&b, "%-16s %4s %12s %12s %12s %12s %9s  %s\n", "fault", "runs", "gap median", "gap max", "hb median", "hb max", "survived", "errors")
	for _, kind := range kinds {
		rs := all[kind]
		r := row{Fault: kind, Runs: len(rs), Errors: map[string]int{}, PerRun: rs}
		var gaps, hbs []float64
		for _, x := range rs {
			if x.Recovered {
				gaps = append(gaps, x.WriteGapMS)
			}
			hbs = append(hbs, x.HeartbeatGapMS)
			r.Survived += x.Survived
			r.Idle += x.Idle
			for k, v := range x.Errors {
				r.Errors[k] += v
			}
		}
		r.WriteGapMedianMS, r.WriteGapMaxMS = medianMax(gaps)
		r.HeartbeatMedianMS, r.HeartbeatMaxMS = medianMax(hbs)
		rows = append(rows, r)
		fmt.Fprintf(&b, "%-16s %4d %10.0fms %10.0fms %10.0fms %10.0fms %4d/%-4d  %s\n", kind, r.Runs,
			r.WriteGapMedianMS, r.WriteGapMaxMS, r.HeartbeatMedianMS, r.HeartbeatMaxMS, r.Survived, r.Idle, formatErrors(r.Errors))
	}
	t.Logf("sessions through the gateway (probe write every 10 ms, heartbeat every 100 ms, %d idle sessions; 3 nodes on loopback):\n%s",
		idleSessions, b.String())
	if out := os.Getenv("PGBATTERY_BENCH_OUT"); out != "" {
		js, _ := json.MarshalIndent(map[string]any{"benchmark": "session-survival", "runs_per_fault": runs, "results": rows}, "", "  ")
		if err := os.WriteFile(out, append(js, '\n'), 0o644); err != nil {
			t.Errorf("writing %s: %v", out, err)
		}
	}
	for _, kind := range kinds {
		for i, r := range all[kind] {
			if !r.Recovered {
				t.Errorf("%s run %d: writes did not resume through the gateway", kind, i+1)
			}
		}
	}
}

// sessBenchOnce injects one fault with the probes running and measures it.
func sessBenchOnce(t *testing.T, c *faultCluster, kind string, round, idleN int) sessBenchRun {
	t.Helper()
	old := c.settle(t)
	gw := c.others(old)[0]
	setup := gwConnect(t, gw, "bench_setup")
	ctx, cancel := sessCtx()
	_, err := setup.Exec(ctx, "CREATE TABLE IF NOT EXISTS bench_sess_probe (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
	cancel()
	setup.Close(context.Background())
	if err != nil {
		t.Fatalf("creating the probe table: %v", err)
	}
	// Idle sessions on both gateways that stay up.
	var idle []*pgx.Conn
	for i := 0; i < idleN; i++ {
		others := c.others(old)
		conn := gwConnect(t, others[i%len(others)], fmt.Sprintf("bench_idle%d", i))
		ctx, cancel := sessCtx()
		if _, err := conn.Exec(ctx, "SET application_name = 'bench_idle'"); err != nil {
			t.Fatalf("idle session setup: %v", err)
		}
		cancel()
		idle = append(idle, conn)
	}
	writer := startSessProbe(t, gw, "bench_writer", "INSERT INTO bench_sess_probe DEFAULT VALUES", 10*time.Millisecond)
	heart := startSessProbe(t, gw, "bench_heartbeat", "SELECT 1", 100*time.Millisecond)
	time.Sleep(1500 * time.Millisecond)

	faultAt := time.Now()
	heal := func() {}
	switch kind {
	case "postgres-killed":
		killPostgres(t, old)
	case "node-killed":
		killNode(t, old)
	case "partition":
		heal = c.partition(t, old)
	case "switchover":
		var out string
		var code int
		waitFor(t, 2*time.Minute, "a switchover the cluster accepts", func() bool {
			out, code = opCLI(t, old, 90*time.Second, "switchover", "-to", gw.name, "-wait")
			return code == 0 || !(strings.Contains(out, "409") || strings.Contains(out, "503"))
		})
		if code != 0 {
			t.Errorf("switchover run %d: exit %d: %s", round+1, code, out)
		}
	}
	effectAt := time.Now()
	recovered := false
	deadline := time.Now().Add(90 * time.Second)
	for !recovered && time.Now().Before(deadline) {
		for _, op := range writer.history() {
			if op.err == nil && op.invoke.After(effectAt) {
				recovered = true
				break
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second)
	wops := writer.halt()
	hops := heart.halt()
	heal()

	res := sessBenchRun{Idle: idleN, Errors: map[string]int{}, Recovered: recovered}
	// Write gap: the longest pause between two acknowledged writes from the
	// fault until the first write invoked after it took effect was
	// acknowledged.
	var acks []time.Time
	recovery := time.Time{}
	for _, op := range wops {
		if op.err != nil {
			res.Errors[sqlstate(op.err)]++
			continue
		}
		acks = append(acks, op.complete)
		if op.invoke.After(effectAt) && (recovery.IsZero() || op.complete.Before(recovery)) {
			recovery = op.complete
		}
	}
	sort.Slice(acks, func(i, j int) bool { return acks[i].Before(acks[j]) })
	var gap time.Duration
	for i := 1; i < len(acks) && !acks[i-1].After(recovery); i++ {
		if acks[i].After(faultAt) && !acks[i].After(recovery) {
			gap = max(gap, acks[i].Sub(acks[i-1]))
		}
	}
	res.WriteGapMS = ms(gap)
	var hgap time.Duration
	var last time.Time
	for _, op := range hops {
		if op.err != nil {
			res.Errors[sqlstate(op.err)]++
			continue
		}
		if !last.IsZero() {
			hgap = max(hgap, op.complete.Sub(last))
		}
		last = op.complete
	}
	res.HeartbeatGapMS = ms(hgap)
	for _, conn := range idle {
		_, err := serverAddr(conn)
		if err == nil {
			res.Survived++
		} else {
			res.Errors[sqlstate(err)]++
		}
	}
	if kind == "partition" {
		waitFor(t, 3*time.Minute, "the old primary to rejoin after the heal", func() bool { return role(old) == "replica" })
	}
	t.Logf("%s run %d (old primary %s, gateway %s): write gap %.0fms, heartbeat max gap %.0fms, idle survived %d/%d, errors %s, reconnects writer %d heartbeat %d",
		kind, round+1, old.name, gw.name, res.WriteGapMS, res.HeartbeatGapMS, res.Survived, idleN, formatErrors(res.Errors), writer.reopens, heart.reopens)
	for _, conn := range idle {
		conn.Close(context.Background())
	}
	if os.Getenv("PGBATTERY_BENCH_LOGS") == "1" {
		logsSince(t, c, faultAt.Add(-time.Second))
	}
	return res
}

// logsSince logs the agents' gateway and PostgreSQL lines from since on
// (PGBATTERY_BENCH_LOGS=1: to see what a run's errors came from).
func logsSince(t *testing.T, c *faultCluster, since time.Time) {
	stamp := since.UTC().Format("2006-01-02T15:04:05.000Z")
	for _, p := range c.nodes {
		var keep []string
		for _, l := range strings.Split(p.logs(), "\n") {
			if len(l) < len(stamp) || l[:len(stamp)] < stamp {
				continue
			}
			if strings.Contains(l, "agent.gateway") || strings.Contains(l, "agent.postgres") ||
				strings.Contains(l, "agent.controller") || strings.Contains(l, "[WARN]") || strings.Contains(l, "[ERROR]") {
				keep = append(keep, l)
			}
		}
		if len(keep) > 150 {
			keep = keep[:150]
		}
		t.Logf("=== %s since %s:\n%s", p.name, stamp, strings.Join(keep, "\n"))
	}
}

func medianMax(v []float64) (float64, float64) {
	if len(v) == 0 {
		return 0, 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[n-1]
}

func formatErrors(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

// cgroupsUsable reports whether startFaultCluster can put agents in cgroups
// (what the partition helper needs) without skipping the test.
func cgroupsUsable() bool {
	if !testutil.IsRoot() {
		return false
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return false
	}
	if !fileExists("/sys/fs/cgroup/cgroup.controllers") && !fileExists("/sys/fs/cgroup/unified/cgroup.controllers") {
		return false
	}
	self, _ := os.ReadFile("/proc/self/cgroup")
	return strings.Contains(string(self), "0::/\n")
}

// TestSessionPartitionedPrimary: a client whose gateway is on the primary's
// own node when that node is cut off from the others. The primary fences
// itself when its lease lapses; its gateway must then hold the client's
// statements (design.md §6: new statements wait while no primary is
// writable) instead of passing on PostgreSQL's 25006 read-only errors or
// the 57P01 of the fence, and after the heal the same session goes on, on
// the new primary.
func TestSessionPartitionedPrimary(t *testing.T) {
	if !cgroupsUsable() {
		t.Skip("partitions need root, nft and the cgroup v2 root")
	}
	c := startSessionCluster(t, true)
	old := c.settle(t)
	setup := gwConnect(t, old, "part_setup")
	ctx, cancel := sessCtx()
	_, err := setup.Exec(ctx, "CREATE TABLE IF NOT EXISTS part_probe (id bigserial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
	cancel()
	setup.Close(context.Background())
	if err != nil {
		t.Fatalf("creating part_probe: %v", err)
	}
	idle := gwConnect(t, old, "part_idle")
	conn := gwConnect(t, old, "part_writer")

	type result struct {
		at  time.Time
		err error
	}
	results := make(chan result, 10_000)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; n < 10_000; n++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			// Long enough for the partition, the heal and the move.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			_, err := conn.Exec(ctx, "INSERT INTO part_probe DEFAULT VALUES")
			cancel()
			results <- result{time.Now(), err}
			if conn.IsClosed() {
				return
			}
		}
	}()
	unknown := 0
	check := func(r result) {
		switch code := sqlstate(r.err); code {
		case "":
		case "40003":
			unknown++
		default:
			t.Errorf("write through the cut-off primary's gateway: %s: %v", code, r.err)
		}
	}
	time.Sleep(time.Second)
	heal := c.partition(t, old)
	var newPrimary *agentProc
	waitFor(t, 90*time.Second, "a new primary on the majority side", func() bool {
		for _, p := range c.others(old) {
			if role(p) == "primary" {
				newPrimary = p
				return true
			}
		}
		return false
	})
	// Let the cut-off node's gateway sit in doubt for a while.
	time.Sleep(3 * time.Second)
	heal()
	healedAt := time.Now()
	waitFor(t, 3*time.Minute, "a write through the healed node's gateway", func() bool {
		for {
			select {
			case r := <-results:
				if r.err == nil && r.at.After(healedAt) {
					return true
				}
				check(r)
				continue
			default:
			}
			return false
		}
	})
	close(stop)
	<-done
	close(results)
	for r := range results {
		check(r)
	}
	// An autocommit write in flight when the fence ended it has an unknown
	// outcome: 40003, as design.md §6 says. Only the one in flight can.
	if unknown > 1 {
		t.Errorf("%d writes answered 40003: only the one in flight at the fence may be", unknown)
	}
	// The writer's session and the idle one are still usable, on the new
	// primary.
	checkOn(t, conn, newPrimary)
	checkOn(t, idle, newPrimary)
}
