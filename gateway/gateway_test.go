package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/pgbattery/pgbattery/gateway/sqlclass"
	"github.com/pgbattery/pgbattery/test/testutil"
)

// TestGateway runs every test that needs PostgreSQL against one instance:
// starting PostgreSQL takes longer than most of the tests.
func TestGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	host := testutil.Addr(t)
	pg := startPostgres(t, host)

	// Each subtest gets its own gateway on its own address.
	gw := func(t *testing.T, mod func(*Config)) *testGateway {
		return startGateway(t, pg, testutil.Addr(t), mod)
	}

	t.Run("pgx", func(t *testing.T) { testPGX(t, gw(t, nil)) })
	t.Run("auth", func(t *testing.T) { testAuth(t, gw(t, nil)) })
	t.Run("tls", func(t *testing.T) { testTLS(t, pg) })
	t.Run("trust", func(t *testing.T) { testTrust(t, pg) })
	t.Run("refusals", func(t *testing.T) { testRefusals(t, gw(t, func(c *Config) { c.MaxConnections = 2 })) })
	t.Run("garbage", func(t *testing.T) { testGarbage(t, gw(t, func(c *Config) { c.MaxMessageSize = 64 << 10 })) })
	t.Run("tracking", func(t *testing.T) { testTracking(t, gw(t, nil)) })
	t.Run("readonly", func(t *testing.T) { testReadOnly(t, pg) })
	t.Run("extra", func(t *testing.T) { testExtra(t, pg) })
	t.Run("clients", func(t *testing.T) { testClients(t, gw(t, nil)) })
}

func connectPGX(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting %q: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func sqlstate(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func testPGX(t *testing.T, g *testGateway) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))

	// Simple protocol.
	var user string
	if err := conn.QueryRow(ctx, "SELECT current_user", pgx.QueryExecModeSimpleProtocol).Scan(&user); err != nil {
		t.Fatalf("simple query: %v", err)
	}
	if user != "alice" {
		t.Fatalf("current_user = %q through the gateway, want alice", user)
	}
	// Extended protocol with parameters, cached prepared statements.
	for i := 0; i < 5; i++ {
		var n int
		if err := conn.QueryRow(ctx, "SELECT $1::int + 1", i).Scan(&n); err != nil || n != i+1 {
			t.Fatalf("extended query: %d, %v", n, err)
		}
	}
	if _, err := conn.Prepare(ctx, "addone", "SELECT $1::int + 1"); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "addone", 41).Scan(&n); err != nil || n != 42 {
		t.Fatalf("prepared statement: %d, %v", n, err)
	}

	// Schema, batch, COPY FROM.
	if _, err := conn.Exec(ctx, "DROP TABLE IF EXISTS items; CREATE TABLE items (id int PRIMARY KEY, name text)"); err != nil {
		t.Fatalf("create: %v", err)
	}
	batch := &pgx.Batch{}
	for i := 0; i < 100; i++ {
		batch.Queue("INSERT INTO items VALUES ($1, $2)", i, fmt.Sprintf("item %d", i))
	}
	batch.Queue("SELECT count(*) FROM items")
	br := conn.SendBatch(ctx, batch)
	for i := 0; i < 100; i++ {
		if _, err := br.Exec(); err != nil {
			t.Fatalf("batch insert %d: %v", i, err)
		}
	}
	if err := br.QueryRow().Scan(&n); err != nil || n != 100 {
		t.Fatalf("batch count: %d, %v", n, err)
	}
	if err := br.Close(); err != nil {
		t.Fatalf("batch close: %v", err)
	}
	rows := make([][]any, 5000)
	for i := range rows {
		rows[i] = []any{1000 + i, strings.Repeat("x", i%200)}
	}
	copied, err := conn.CopyFrom(ctx, pgx.Identifier{"items"}, []string{"id", "name"}, pgx.CopyFromRows(rows))
	if err != nil || copied != 5000 {
		t.Fatalf("COPY FROM: %d, %v", copied, err)
	}
	// A large result set streams through.
	var total int64
	if err := conn.QueryRow(ctx, "SELECT sum(length(name)) FROM items").Scan(&total); err != nil || total == 0 {
		t.Fatalf("sum: %d, %v", total, err)
	}
	r, err := conn.Query(ctx, "SELECT id, name FROM items ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for r.Next() {
		count++
	}
	if r.Err() != nil || count != 5100 {
		t.Fatalf("read %d rows, err %v", count, r.Err())
	}
	// A big value in both directions (larger than the gateway's buffers).
	big := strings.Repeat("y", 1<<20)
	var back string
	if err := conn.QueryRow(ctx, "SELECT $1::text", big).Scan(&back); err != nil || back != big {
		t.Fatalf("1 MiB round trip: len %d, %v", len(back), err)
	}
	if err := conn.QueryRow(ctx, "SELECT '"+big+"'", pgx.QueryExecModeSimpleProtocol).Scan(&back); err != nil || back != big {
		t.Fatalf("1 MiB simple query: len %d, %v", len(back), err)
	}

	// Errors keep the session usable.
	if _, err := conn.Exec(ctx, "SELECT 1/0"); sqlstate(err) != "22012" {
		t.Fatalf("division by zero: %v", err)
	}
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Fatalf("after error: %v", err)
	}

	// LISTEN/NOTIFY between two sessions through the gateway.
	other := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	if _, err := conn.Exec(ctx, "LISTEN gwtest"); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "SELECT pg_notify('gwtest', 'hello')"); err != nil {
		t.Fatal(err)
	}
	nctx, ncancel := context.WithTimeout(ctx, 5*time.Second)
	note, err := conn.WaitForNotification(nctx)
	ncancel()
	if err != nil || note.Channel != "gwtest" || note.Payload != "hello" {
		t.Fatalf("notification: %+v, %v", note, err)
	}

	// The tracker followed all of that (batches, COPY, large messages,
	// errors) without losing track: nothing pins the session.
	if st := findSession(t, g, conn.PgConn().PID()).State; st.Pins != 0 || st.InFlight != 0 || st.TxStatus != 'I' ||
		len(st.Listen) != 1 || st.Listen[0] != "gwtest" {
		t.Fatalf("session state after the workload: %+v", st)
	}

	// Cancel through the gateway's own key: pgx sends a CancelRequest
	// when the context ends.
	qctx, qcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	start := time.Now()
	_, err = conn.Exec(qctx, "SELECT pg_sleep(30)")
	qcancel()
	if err == nil || time.Since(start) > 10*time.Second {
		t.Fatalf("pg_sleep was not cancelled: %v after %s", err, time.Since(start))
	}
	// pgx closes the connection on a context cancel; a fresh one works.
	conn2 := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	var c2pid uint32
	if err := conn2.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		t.Fatal(err)
	}
	// The client sees the gateway's key, not the back end's.
	c2pid = conn2.PgConn().PID()
	var realPID uint32
	if err := conn2.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&realPID); err != nil {
		t.Fatal(err)
	}
	if c2pid == realPID || keyNodeIndex(c2pid) != 0 {
		t.Fatalf("client key pid %d should be the gateway's own (back end %d)", c2pid, realPID)
	}
	// Cancel through pgconn.CancelRequest keeps the connection.
	go func() {
		time.Sleep(300 * time.Millisecond)
		cctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		conn2.PgConn().CancelRequest(cctx)
	}()
	_, err = conn2.Exec(ctx, "SELECT pg_sleep(30)")
	if sqlstate(err) != "57014" {
		t.Fatalf("cancelled query: %v, want 57014", err)
	}
	if err := conn2.QueryRow(ctx, "SELECT 2").Scan(&n); err != nil || n != 2 {
		t.Fatalf("after cancel: %v", err)
	}

	// The back end terminated by an administrator: its FATAL reaches the
	// client as is.
	conn3 := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	var pid3 uint32
	if err := conn3.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid3); err != nil {
		t.Fatal(err)
	}
	if _, err := conn2.Exec(ctx, "SELECT pg_terminate_backend($1)", pid3); err != nil {
		t.Fatal(err)
	}
	if err := conn3.Ping(ctx); sqlstate(err) != "57P01" {
		t.Fatalf("terminated back end: %v, want 57P01", err)
	}
	// The back-end connection lost without a word while the primary is
	// fine: the idle session moves to a new back end on it.
	conn4 := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	var pid4, pid4b uint32
	if err := conn4.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid4); err != nil {
		t.Fatal(err)
	}
	g.cancels.lookupPID(conn4.PgConn().PID()).be.conn.Close()
	if err := conn4.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid4b); err != nil || pid4b == pid4 {
		t.Fatalf("lost back end: %v (back end %d, before %d)", err, pid4b, pid4)
	}
}

func testAuth(t *testing.T, g *testGateway) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct {
		name, user, password, want string
	}{
		{"wrong password", "alice", "nope", "28P01"},
		{"unknown user", "mallory", "x", "28P01"},
		{"role without login", "nologin", "x", "28P01"},
		{"empty password", "alice", "", ""}, // pgx sends no SASL without a password
	} {
		_, err := pgx.Connect(ctx, g.dsn(c.user, c.password, "postgres", "sslmode=disable"))
		if err == nil {
			t.Errorf("%s: connected", c.name)
			continue
		}
		if c.want != "" && sqlstate(err) != c.want {
			t.Errorf("%s: %v, want SQLSTATE %s", c.name, err, c.want)
		}
		if c.want == "28P01" && !strings.Contains(err.Error(), `password authentication failed for user "`+c.user+`"`) {
			t.Errorf("%s: message %v", c.name, err)
		}
	}
	// The right password, and the database's own verdict is passed on.
	conn := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	var who string
	if err := conn.QueryRow(ctx, "SELECT session_user").Scan(&who); err != nil || who != "alice" {
		t.Fatalf("session_user = %q, %v", who, err)
	}
	_, err := pgx.Connect(ctx, g.dsn("alice", alicePassword, "nosuchdb", "sslmode=disable"))
	if sqlstate(err) != "3D000" {
		t.Fatalf("unknown database: %v, want 3D000", err)
	}
	// A password change: new sessions need the new password once the
	// verifier cache expires (1s in tests).
	admin := connectPGX(t, g.dsn("postgres", superPassword, "postgres", "sslmode=disable"))
	if _, err := admin.Exec(ctx, "ALTER ROLE alice PASSWORD 'changed'"); err != nil {
		t.Fatal(err)
	}
	defer admin.Exec(context.Background(), "ALTER ROLE alice PASSWORD '"+alicePassword+"'")
	time.Sleep(1100 * time.Millisecond)
	if _, err := pgx.Connect(ctx, g.dsn("alice", alicePassword, "alice", "sslmode=disable")); sqlstate(err) != "28P01" {
		t.Fatalf("old password after change: %v", err)
	}
	c2 := connectPGX(t, g.dsn("alice", "changed", "alice", "sslmode=disable"))
	if err := c2.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	// The session opened before the change carries on.
	if err := conn.Ping(ctx); err != nil {
		t.Fatalf("existing session after password change: %v", err)
	}
}

func testTLS(t *testing.T, pg *pgServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host := testutil.Addr(t)
	serverTLS, pool := selfSignedTLS(t, host)
	g := startGateway(t, pg, host, func(c *Config) { c.TLS = func() *tls.Config { return serverTLS } })

	check := func(conn *pgx.Conn, wantTLS bool) {
		t.Helper()
		_, isTLS := conn.PgConn().Conn().(*tls.Conn)
		if isTLS != wantTLS {
			t.Fatalf("TLS = %v, want %v", isTLS, wantTLS)
		}
		var n int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	// sslmode=require (pgx does not do channel binding; psql's test does).
	check(connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=require")), true)
	// Verified certificate.
	cfg, err := pgx.ParseConfig(g.dsn("alice", alicePassword, "alice", "sslmode=verify-full"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.TLSConfig.RootCAs = pool
	vconn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("verify-full: %v", err)
	}
	check(vconn, true)
	vconn.Close(ctx)
	// Direct TLS (PostgreSQL 17 style, ALPN "postgresql").
	check(connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=require sslnegotiation=direct")), true)
	// Plaintext still allowed when not required; wrong password over TLS.
	check(connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable")), false)
	if _, err := pgx.Connect(ctx, g.dsn("alice", "wrong", "alice", "sslmode=require")); sqlstate(err) != "28P01" {
		t.Fatalf("wrong password over TLS: %v", err)
	}

	// tls.gateway.required: plaintext is refused with 28000.
	h2 := testutil.Addr(t)
	req := startGateway(t, pg, h2, func(c *Config) {
		c.TLS = func() *tls.Config { return serverTLS }
		c.TLSRequired = true
	})
	_, err = pgx.Connect(ctx, req.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	if sqlstate(err) != "28000" || !strings.Contains(err.Error(), "TLS is required") {
		t.Fatalf("plaintext against TLS-required gateway: %v", err)
	}
	check(connectPGX(t, req.dsn("alice", alicePassword, "alice", "sslmode=require")), true)

	// sslmode=require against a gateway without TLS fails clearly;
	// sslmode=prefer falls back to plaintext.
	h3 := testutil.Addr(t)
	plain := startGateway(t, pg, h3, nil)
	check(connectPGX(t, plain.dsn("alice", alicePassword, "alice", "sslmode=prefer")), false)
	_, err = pgx.Connect(ctx, plain.dsn("alice", alicePassword, "alice", "sslmode=require"))
	if err == nil || !strings.Contains(err.Error(), "server refused TLS connection") {
		t.Fatalf("sslmode=require against plaintext gateway: %v", err)
	}
}

func testTrust(t *testing.T, pg *pgServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g := startGateway(t, pg, testutil.Addr(t), func(c *Config) { c.AuthMode = AuthTrust; c.Verifiers = nil })
	conn := connectPGX(t, g.dsn("trusty", "", "postgres", "sslmode=disable"))
	var who string
	if err := conn.QueryRow(ctx, "SELECT current_user").Scan(&who); err != nil || who != "trusty" {
		t.Fatalf("trust: %q %v", who, err)
	}
	// The gateway never logs a trust client in with a password it lacks:
	// a role the node does not trust fails.
	_, err := pgx.Connect(ctx, g.dsn("alice", "", "alice", "sslmode=disable"))
	if err == nil || !strings.Contains(err.Error(), "trust mode") {
		t.Fatalf("trust mode against a scram back end: %v", err)
	}
}

func testRefusals(t *testing.T, g *testGateway) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := pgx.Connect(ctx, g.dsn("alice", alicePassword, "alice", "sslmode=disable replication=database"))
	if sqlstate(err) != "0A000" || !strings.Contains(err.Error(), "replication connections are not supported") {
		t.Fatalf("replication connection: %v", err)
	}
	// No fresh primary: 57P03 rather than a hang (HoldTimeout is 0).
	primary := g.router.primary
	g.router.set(primary, false, nil)
	_, err = pgx.Connect(ctx, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	if sqlstate(err) != "57P03" {
		t.Fatalf("no fresh primary: %v", err)
	}
	g.router.set(primary, true, nil)

	// max connections (2 in this gateway).
	connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	_, err = pgx.Connect(ctx, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	if sqlstate(err) != "53300" || !strings.Contains(err.Error(), "too many connections") {
		t.Fatalf("third connection: %v", err)
	}
}

func testGarbage(t *testing.T, g *testGateway) {
	addr := net.JoinHostPort(g.host, "5432")
	send := func(name string, payload []byte) []byte {
		t.Helper()
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		conn.Write(payload)
		out, _ := io.ReadAll(conn)
		return out
	}
	for name, payload := range map[string][]byte{
		"http":          []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"huge length":   {0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0},
		"tiny length":   {0, 0, 0, 2},
		"v2 protocol":   {0, 0, 0, 9, 0, 2, 0, 0, 0},
		"no terminator": {0, 0, 0, 13, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0},
		"no user":       {0, 0, 0, 9, 0, 3, 0, 0, 0},
	} {
		out := send(name, payload)
		if len(out) == 0 || out[0] != 'E' || !strings.Contains(string(out), "08P01") {
			t.Errorf("%s: got %q, want an 08P01 error", name, out)
		}
	}
	// A message beyond MaxMessageSize (64 KiB here) after start-up.
	conn := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	_, err := conn.Exec(context.Background(), "SELECT '"+strings.Repeat("z", 100<<10)+"'", pgx.QueryExecModeSimpleProtocol)
	if sqlstate(err) != "08P01" {
		t.Fatalf("oversized message: %v", err)
	}
	// The gateway still serves.
	c2 := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	if err := c2.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func findSession(t *testing.T, g *testGateway, pid uint32) SessionInfo {
	t.Helper()
	for _, s := range g.Sessions() {
		if g.cancels.lookupPID(pid) != nil && g.cancels.lookupPID(pid).id == s.ID {
			return s
		}
	}
	t.Fatalf("no session for pid %d", pid)
	return SessionInfo{}
}

func testTracking(t *testing.T, g *testGateway) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable application_name=tracker"))
	exec := func(sql string) {
		t.Helper()
		if _, err := conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	state := func() SessionState { return findSession(t, g, conn.PgConn().PID()).State }

	exec("SET search_path TO public, pg_catalog")
	exec("SET statement_timeout = '5s'; SET work_mem = '8MB'")
	exec("BEGIN; SET lock_timeout = '1s'; ROLLBACK")
	exec("BEGIN; SET idle_in_transaction_session_timeout = '1min'; COMMIT")
	exec("RESET work_mem")
	exec("LISTEN chan_a; LISTEN \"Chan B\"")
	exec("BEGIN; LISTEN chan_c; ROLLBACK")
	exec("PREPARE p1 (int) AS SELECT $1")
	if _, err := conn.Prepare(ctx, "named1", "SELECT $1::int4, $2::text"); err != nil {
		t.Fatal(err)
	}
	exec("BEGIN")
	st := state()
	if st.TxStatus != 'T' {
		t.Errorf("TxStatus %q, want T", st.TxStatus)
	}
	exec("COMMIT")
	st = state()
	if st.TxStatus != 'I' || st.InFlight != 0 {
		t.Errorf("TxStatus %q inflight %d", st.TxStatus, st.InFlight)
	}
	wantSettings := map[string]string{
		"search_path":                         "SET search_path TO public, pg_catalog",
		"statement_timeout":                   "SET statement_timeout = '5s'",
		"idle_in_transaction_session_timeout": "SET idle_in_transaction_session_timeout = '1min'",
	}
	if fmt.Sprint(st.Settings) != fmt.Sprint(wantSettings) {
		t.Errorf("settings %v\nwant %v", st.Settings, wantSettings)
	}
	if fmt.Sprint(st.Listen) != "[Chan B chan_a]" {
		t.Errorf("listen %v", st.Listen)
	}
	if st.SQLPrepared["p1"] != "PREPARE p1 (int) AS SELECT $1" {
		t.Errorf("SQL prepared %v", st.SQLPrepared)
	}
	if ps, ok := st.Prepared["named1"]; !ok || ps.Query != "SELECT $1::int4, $2::text" || len(ps.ParamOIDs) != 0 {
		t.Errorf("prepared %+v", st.Prepared)
	}
	if st.Reported["application_name"] != "tracker" {
		t.Errorf("reported %v", st.Reported)
	}
	if st.Pins != 0 {
		t.Errorf("pins %v before any pinning statement", st.Pins)
	}
	// An error inside a multi-statement query rolls back its SETs.
	conn.Exec(ctx, "SET work_mem = '9MB'; SELECT 1/0", pgx.QueryExecModeSimpleProtocol)
	if _, ok := state().Settings["work_mem"]; ok {
		t.Errorf("SET of a failed implicit transaction was kept")
	}
	// Closing the protocol-level statement forgets it.
	if err := conn.Deallocate(ctx, "named1"); err != nil {
		t.Fatal(err)
	}
	if _, ok := state().Prepared["named1"]; ok {
		t.Errorf("deallocated statement still tracked")
	}

	// Pins.
	exec("CREATE TEMP TABLE tt (a int)")
	if state().Pins&sqlclass.PinTemp == 0 {
		t.Errorf("temp table did not pin")
	}
	exec("DISCARD TEMP")
	if state().Pins&sqlclass.PinTemp != 0 {
		t.Errorf("DISCARD TEMP did not unpin")
	}
	exec("SELECT pg_advisory_lock(42)")
	if state().Pins&sqlclass.PinAdvisoryLock == 0 {
		t.Errorf("advisory lock did not pin")
	}
	exec("SELECT pg_advisory_unlock_all()")
	exec("BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1; COMMIT")
	if p := state().Pins; p != sqlclass.PinHoldCursor {
		t.Errorf("pins %v, want WITH HOLD cursors only", p)
	}
	exec("DISCARD ALL")
	st = state()
	if st.Pins != 0 || len(st.Settings) != 0 || len(st.Listen) != 0 || len(st.SQLPrepared) != 0 {
		t.Errorf("after DISCARD ALL: %+v", st)
	}
	// Extended-protocol SET through pgx's default mode.
	if _, err := conn.Exec(ctx, "SET work_mem = '7MB'"); err != nil {
		t.Fatal(err)
	}
	if got := state().Settings["work_mem"]; got != "SET work_mem = '7MB'" {
		t.Errorf("extended SET tracked as %q", got)
	}
}

func testReadOnly(t *testing.T, pg *pgServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	host := testutil.Addr(t)
	g := startGateway(t, pg, host, nil)
	dsn := fmt.Sprintf("host=%s port=5434 user=alice password='%s' dbname=alice sslmode=disable", host, alicePassword)
	// No standbys: the read-only port falls back to the primary.
	conn := connectPGX(t, dsn)
	if err := conn.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if s := findSession(t, g, conn.PgConn().PID()); s.Listener != "ro" || s.Backend.Node != "n1" {
		t.Fatalf("read-only session %+v", s)
	}
	// A standby that is down is skipped; a live one is used, round robin.
	dead := Target{Epoch: 1, Node: "dead", Addr: net.JoinHostPort(host, "1")}
	live := Target{Epoch: 1, Node: "standby", Addr: pg.addr}
	g.router.set(g.router.primary, true, []Target{dead, live})
	nodes := map[string]int{}
	for i := 0; i < 4; i++ {
		c := connectPGX(t, dsn)
		nodes[findSession(t, g, c.PgConn().PID()).Backend.Node]++
		c.Close(ctx)
	}
	if nodes["standby"] != 4 {
		t.Fatalf("read-only sessions went to %v, want all on the live standby", nodes)
	}
}
