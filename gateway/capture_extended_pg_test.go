package gateway

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgbattery/pgbattery/test/testutil"
)

// The extended-protocol capture after a transaction's first write
// (capture.go) against real PostgreSQL: invisible to clients, and what
// resolves a COMMIT whose back end died before answering anything.

// rawConn is a protocol-level client: a pgconn connection taken over after
// authentication.
type rawConn struct {
	conn net.Conn
	fe   *pgproto3.Frontend
	pid  uint32
}

func connectRaw(t *testing.T, ctx context.Context, dsn string) *rawConn {
	t.Helper()
	pc, err := pgconn.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connecting %q: %v", dsn, err)
	}
	hj, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hj.Conn.Close() })
	return &rawConn{conn: hj.Conn, fe: hj.Frontend, pid: hj.PID}
}

// run sends msgs and returns a transcript of every answer up to the
// syncs-th ReadyForQuery: message types with what does not depend on the
// server's process (tags, SQLSTATEs, rows, transaction status).
func (c *rawConn) run(t *testing.T, syncs int, msgs ...pgproto3.FrontendMessage) []string {
	t.Helper()
	out, err := c.exchange(30*time.Second, syncs, msgs...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// exchange is run that returns its error, waiting up to timeout.
func (c *rawConn) exchange(timeout time.Duration, syncs int, msgs ...pgproto3.FrontendMessage) ([]string, error) {
	for _, m := range msgs {
		c.fe.Send(m)
	}
	if err := c.fe.Flush(); err != nil {
		return nil, err
	}
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	defer c.conn.SetReadDeadline(time.Time{})
	var out []string
	for syncs > 0 {
		m, err := c.fe.Receive()
		if err != nil {
			return out, fmt.Errorf("reading answers (so far %q): %w", out, err)
		}
		var s string
		switch m := m.(type) {
		case *pgproto3.CommandComplete:
			s = "CommandComplete " + string(m.CommandTag)
		case *pgproto3.ErrorResponse:
			s = "ErrorResponse " + m.Severity + " " + m.Code
		case *pgproto3.NoticeResponse:
			s = "NoticeResponse " + m.Severity + " " + m.Code
		case *pgproto3.DataRow:
			var vals []string
			for _, v := range m.Values {
				vals = append(vals, string(v))
			}
			s = "DataRow " + strings.Join(vals, ",")
		case *pgproto3.RowDescription:
			var names []string
			for _, f := range m.Fields {
				names = append(names, string(f.Name))
			}
			s = "RowDescription " + strings.Join(names, ",")
		case *pgproto3.ReadyForQuery:
			s = "ReadyForQuery " + string(m.TxStatus)
			syncs--
		default:
			s = fmt.Sprintf("%T", m)
		}
		out = append(out, s)
	}
	return out, nil
}

// TestCaptureExtendedTransparent runs the same extended-protocol
// conversation directly against PostgreSQL and through the gateway: the
// answers must be the same, message for message, although the gateway adds
// its capture after the first write of each transaction block.
func TestCaptureExtendedTransparent(t *testing.T) {
	t.Parallel()
	pg := startPostgres(t, testutil.Addr(t))
	g := startGateway(t, pg, testutil.Addr(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var commits atomic.Int64
	hook := func() bool { commits.Add(1); return false }
	g.commitHook.Store(&hook)
	setup := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	mustExec(t, ctx, setup, "CREATE TABLE tx_direct (id int PRIMARY KEY, v text)")
	mustExec(t, ctx, setup, "CREATE TABLE tx_gw (id int PRIMARY KEY, v text)")

	conversation := func(c *rawConn, table string) (out []string) {
		q := func(sql string) string { return strings.ReplaceAll(sql, "TBL", table) }
		step := func(syncs int, msgs ...pgproto3.FrontendMessage) {
			out = append(out, "--")
			out = append(out, c.run(t, syncs, msgs...)...)
		}
		text := func(vals ...string) [][]byte {
			var b [][]byte
			for _, v := range vals {
				b = append(b, []byte(v))
			}
			return b
		}
		query := func(sql string) { step(1, &pgproto3.Query{String: q(sql)}) }
		extendedCommit := []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "COMMIT"}, &pgproto3.Bind{},
			&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}}

		// A named statement parsed once, outside any transaction, run in
		// the transactions below (pgbench -M prepared).
		step(1, &pgproto3.Parse{Name: "ins", Query: q("INSERT INTO TBL VALUES ($1, $2)")}, &pgproto3.Sync{})

		// Several writes and reads in one batch, a portal run with a row
		// limit, then an extended COMMIT.
		query("BEGIN")
		step(1,
			&pgproto3.Bind{PreparedStatement: "ins", Parameters: text("1", "a")}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: q("UPDATE TBL SET v = v || 'x' WHERE id = $1 RETURNING v")},
			&pgproto3.Bind{Parameters: text("1")}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{},
			&pgproto3.Bind{PreparedStatement: "ins", Parameters: text("2", "b")}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: q("INSERT INTO TBL SELECT g, 'g' FROM generate_series(10, 14) g RETURNING id")},
			&pgproto3.Bind{DestinationPortal: "c1"}, &pgproto3.Describe{ObjectType: 'P', Name: "c1"},
			&pgproto3.Execute{Portal: "c1", MaxRows: 2}, &pgproto3.Execute{Portal: "c1", MaxRows: 2}, &pgproto3.Execute{Portal: "c1"},
			&pgproto3.Close{ObjectType: 'P', Name: "c1"},
			&pgproto3.Sync{})
		query("SELECT pg_current_xact_id_if_assigned() IS NOT NULL AS has_xid")
		step(1, extendedCommit...)

		// A read first, the write last in the batch; two Syncs in flight.
		query("BEGIN")
		step(2,
			&pgproto3.Parse{Query: "SELECT 1 AS one"}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Bind{PreparedStatement: "ins", Parameters: text("3", "c")}, &pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.Bind{PreparedStatement: "ins", Parameters: text("4", "d")}, &pgproto3.Execute{}, &pgproto3.Sync{})
		step(1, extendedCommit...)

		// The first write fails: the client sees its error, and only its.
		query("BEGIN")
		step(1,
			&pgproto3.Bind{PreparedStatement: "ins", Parameters: text("1", "dup")}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: "SELECT 2"}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Sync{})
		step(1, &pgproto3.Parse{Query: "SELECT 3"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		step(1, extendedCommit...) // answers ROLLBACK

		// A write that takes no transaction id, then one that does.
		query("BEGIN")
		step(1, &pgproto3.Parse{Query: q("UPDATE TBL SET v = 'n' WHERE false")}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{})
		step(1, &pgproto3.Bind{PreparedStatement: "ins", Parameters: text("5", "e")}, &pgproto3.Execute{}, &pgproto3.Sync{})
		query("COMMIT")

		// COPY FROM STDIN as the first write, in both protocols, with the
		// data right behind the request.
		query("BEGIN")
		step(1, &pgproto3.Parse{Query: q("COPY TBL FROM STDIN")}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.CopyData{Data: []byte("20\tcopy\n")}, &pgproto3.CopyDone{}, &pgproto3.Sync{})
		step(1, extendedCommit...)
		query("BEGIN")
		step(1, &pgproto3.Query{String: q("COPY TBL FROM STDIN")}, &pgproto3.CopyData{Data: []byte("21\tcopy\n")}, &pgproto3.CopyDone{})
		query("COMMIT")

		// BEGIN in the batch of the first write (JDBC).
		step(1,
			&pgproto3.Parse{Query: "BEGIN"}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: q("INSERT INTO TBL VALUES ($1, 'j')")}, &pgproto3.Bind{Parameters: text("30")},
			&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
		step(1, extendedCommit...)

		// A write whose Execute is all the batch has (pgx, JDBC), a
		// failing one inside a savepoint, and a COMMIT in the same batch
		// as a write.
		query("BEGIN")
		step(1, &pgproto3.Parse{Query: q("DELETE FROM TBL WHERE id = $1")}, &pgproto3.Bind{Parameters: text("2")}, &pgproto3.Execute{}, &pgproto3.Sync{})
		query("SAVEPOINT s")
		step(1, &pgproto3.Bind{PreparedStatement: "ins", Parameters: text("3", "dup")}, &pgproto3.Execute{}, &pgproto3.Sync{})
		query("ROLLBACK TO SAVEPOINT s")
		step(1,
			&pgproto3.Bind{PreparedStatement: "ins", Parameters: text("6", "f")}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: "COMMIT"}, &pgproto3.Bind{}, &pgproto3.Execute{},
			&pgproto3.Sync{})

		query("SELECT id, v FROM TBL ORDER BY id")
		query("SELECT count(*) FROM pg_prepared_statements")
		return out
	}

	direct := conversation(connectRaw(t, ctx, fmt.Sprintf("host=%s port=5433 user=alice password='%s' dbname=alice sslmode=disable", pg.host, alicePassword)), "tx_direct")
	viaGateway := conversation(connectRaw(t, ctx, g.dsn("alice", alicePassword, "alice", "sslmode=disable")), "tx_gw")
	if strings.Join(direct, "\n") != strings.Join(viaGateway, "\n") {
		t.Fatalf("answers differ.\ndirect:\n%s\n\nthrough the gateway:\n%s", strings.Join(direct, "\n"), strings.Join(viaGateway, "\n"))
	}
	for _, want := range []string{"DataRow t", "ErrorResponse ERROR 23505", "ErrorResponse ERROR 25P02", "CommandComplete ROLLBACK",
		"PortalSuspended", "CommandComplete COPY 1", "DataRow 21,copy", "DataRow 6,f", "DataRow 30,j"} {
		if !strings.Contains(strings.Join(direct, "\n"), want) {
			t.Errorf("the conversation has no %q: it does not test what it should", want)
		}
	}
	// Every COMMIT of a transaction that wrote had its id known when its
	// answer came (the one behind a write in the last batch too, its
	// write answered by then); not the failed transaction's.
	if n := commits.Load(); n != 7 {
		t.Errorf("%d COMMITs answered with a known transaction id, want 7", n)
	}
	for _, si := range g.Sessions() {
		if si.State.Pins != 0 || si.State.TxStatus != 'I' || si.State.InFlight != 0 {
			t.Fatalf("session state after the conversation: %+v", si.State)
		}
	}
}

// sessionOf returns the gateway session of a client connection.
func sessionOf(t *testing.T, g *testGateway, conn *pgx.Conn) *session {
	t.Helper()
	s := g.cancels.lookupPID(conn.PgConn().PID())
	if s == nil {
		t.Fatalf("no session for pid %d", conn.PgConn().PID())
	}
	return s
}

// trackedXid is what the gateway knows of a session's transaction id.
func trackedXid(s *session) (uint8, uint64) {
	s.track.mu.Lock()
	defer s.track.mu.Unlock()
	return s.track.xidState, s.track.xid
}

// TestCaptureExtendedPGX: pgx in its default (cached prepared statements)
// and exec (unnamed statements) modes. The id captured after the first
// write is the transaction's; a failing write shows the client exactly its
// own error, and the session is fine after ROLLBACK.
func TestCaptureExtendedPGX(t *testing.T) {
	t.Parallel()
	pg := startPostgres(t, testutil.Addr(t))
	g := startGateway(t, pg, testutil.Addr(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	conn := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	s := sessionOf(t, g, conn)
	mustExec(t, ctx, conn, "CREATE TABLE px (id int PRIMARY KEY)")

	for i, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec, pgx.QueryExecModeDescribeExec} {
		for round := 0; round < 3; round++ { // the statement is prepared in the first round, reused after
			id := 100*i + 10*round
			mustExec(t, ctx, conn, "BEGIN")
			if _, err := conn.Exec(ctx, "SELECT $1::int", mode, id); err != nil {
				t.Fatal(err)
			}
			if st, _ := trackedXid(s); st != xidNone {
				t.Fatalf("mode %v: an id is known after a read", mode)
			}
			if _, err := conn.Exec(ctx, "INSERT INTO px VALUES ($1)", mode, id); err != nil {
				t.Fatal(err)
			}
			var xid uint64
			if err := conn.QueryRow(ctx, "SELECT pg_current_xact_id_if_assigned()::text::bigint", mode).Scan(&xid); err != nil {
				t.Fatal(err)
			}
			if st, got := trackedXid(s); st != xidValue || got != xid {
				t.Fatalf("mode %v: the gateway has transaction id %d (state %d), the transaction is %d", mode, got, st, xid)
			}
			if _, err := conn.Exec(ctx, "INSERT INTO px VALUES ($1)", mode, id+1); err != nil {
				t.Fatal(err)
			}
			if tag, err := conn.PgConn().ExecParams(ctx, "COMMIT", nil, nil, nil, nil).Close(); err != nil || tag.String() != "COMMIT" {
				t.Fatalf("COMMIT: %q, %v", tag, err)
			}
			if st, _ := trackedXid(s); st != xidNone {
				t.Fatal("the id outlived its transaction")
			}
		}

		// The first write fails.
		mustExec(t, ctx, conn, "BEGIN")
		_, err := conn.Exec(ctx, "INSERT INTO px VALUES ($1)", mode, 100*i)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "23505" || !strings.Contains(pe.Message, "duplicate key") {
			t.Fatalf("mode %v: failing write: %v", mode, err)
		}
		if conn.PgConn().TxStatus() != 'E' {
			t.Fatalf("status %c after the failed write", conn.PgConn().TxStatus())
		}
		var one int
		wantCode(t, "statement in the failed transaction", conn.QueryRow(ctx, "SELECT $1::int", mode, 1).Scan(&one), "25P02")
		if tag, err := conn.Exec(ctx, "ROLLBACK"); err != nil || tag.String() != "ROLLBACK" {
			t.Fatalf("ROLLBACK: %q, %v", tag, err)
		}
		if err := conn.QueryRow(ctx, "SELECT $1::int", mode, 7).Scan(&one); err != nil || one != 7 {
			t.Fatalf("after ROLLBACK: %d, %v", one, err)
		}
	}

	// A batch with several writes, pgx's way (one Sync).
	mustExec(t, ctx, conn, "BEGIN")
	batch := &pgx.Batch{}
	batch.Queue("SELECT count(*) FROM px")
	for id := 1000; id < 1005; id++ {
		batch.Queue("INSERT INTO px VALUES ($1)", id)
	}
	batch.Queue("SELECT count(*) FROM px")
	br := conn.SendBatch(ctx, batch)
	var before, after int
	if err := br.QueryRow().Scan(&before); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		if tag, err := br.Exec(); err != nil || tag.String() != "INSERT 0 1" {
			t.Fatalf("batch insert %d: %q, %v", i, tag, err)
		}
	}
	if err := br.QueryRow().Scan(&after); err != nil || after != before+5 {
		t.Fatalf("batch count %d after %d: %v", after, before, err)
	}
	if err := br.Close(); err != nil {
		t.Fatal(err)
	}
	if st, _ := trackedXid(s); st != xidValue {
		t.Fatal("no id after a batch of writes")
	}
	// COPY (simple protocol, pgx's CopyFrom) in a transaction, its first
	// write, then more.
	mustExec(t, ctx, conn, "COMMIT")
	mustExec(t, ctx, conn, "BEGIN")
	if n, err := conn.CopyFrom(ctx, pgx.Identifier{"px"}, []string{"id"}, pgx.CopyFromRows([][]any{{2000}, {2001}})); err != nil || n != 2 {
		t.Fatalf("COPY in a transaction: %d, %v", n, err)
	}
	mustExec(t, ctx, conn, "INSERT INTO px VALUES (2002)")
	mustExec(t, ctx, conn, "COMMIT")
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM px").Scan(&n); err != nil || n != 3*3*2+5+3 {
		t.Fatalf("rows: %d, %v", n, err)
	}
	if st := s.track.State(); st.Pins != 0 || st.TxStatus != 'I' {
		t.Fatalf("session state: %+v", st)
	}

	// A function of the same name ahead of pg_catalog in the search_path
	// does not fool the capture.
	mustExec(t, ctx, conn, "CREATE SCHEMA fake")
	mustExec(t, ctx, conn, "CREATE FUNCTION fake.pg_current_xact_id_if_assigned() RETURNS xid8 LANGUAGE sql AS $$SELECT '1'::xid8$$")
	mustExec(t, ctx, conn, "SET search_path = fake, pg_catalog, public")
	mustExec(t, ctx, conn, "BEGIN")
	if _, err := conn.Exec(ctx, "INSERT INTO px VALUES ($1)", 3000); err != nil {
		t.Fatal(err)
	}
	var xid uint64
	if err := conn.QueryRow(ctx, "SELECT pg_catalog.pg_current_xact_id_if_assigned()::text::bigint").Scan(&xid); err != nil {
		t.Fatal(err)
	}
	if st, got := trackedXid(s); st != xidValue || got != xid || xid == 1 {
		t.Fatalf("with a shadowing function: the gateway has %d (state %d), the transaction is %d", got, st, xid)
	}
	mustExec(t, ctx, conn, "COMMIT")
}

// cutProxy is a TCP proxy in front of a PostgreSQL server that can stop
// passing the server's bytes on (as if the server had stopped answering)
// and cut every connection (as if the server had died).
type cutProxy struct {
	ln     net.Listener
	target string
	mute   atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func startCutProxy(t *testing.T, host, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "5433"))
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) addr() string { return p.ln.Addr().String() }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			io.Copy(u, c)
			u.Close()
		}()
		go func() {
			defer p.wg.Done()
			defer c.Close()
			buf := make([]byte, 32<<10)
			for {
				n, err := u.Read(buf)
				if n > 0 && !p.mute.Load() {
					if _, werr := c.Write(buf[:n]); werr != nil {
						return
					}
				}
				if err != nil {
					return
				}
			}
		}()
	}
}

// cut closes every connection through the proxy.
func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// jdbcCommitProbe is a JDBC client (autocommit off: BEGIN goes in the batch
// of the first statement, COMMIT in the extended protocol) that inserts a
// row, says "ready", waits for a line on its stdin, commits, and reports
// what its commit got and whether the row is there.
type jdbcCommitProbe struct {
	stdin io.WriteCloser
	lines chan string
}

const jdbcCommitProbeSource = `
import java.sql.*;
import java.io.*;

public class CommitProbe {
    public static void main(String[] args) throws Exception {
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        try (Connection c = DriverManager.getConnection(args[0], "alice", args[1])) {
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO t VALUES (?)")) {
                ps.setInt(1, Integer.parseInt(args[2]));
                ps.executeUpdate();
            }
            System.out.println("ready");
            in.readLine();
            try {
                c.commit();
                System.out.println("committed");
            } catch (SQLException e) {
                System.out.println("error " + e.getSQLState() + " " + e.getMessage());
            }
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT count(*) FROM t WHERE id = " + args[2])) {
                rs.next();
                System.out.println("rows " + rs.getInt(1));
            }
            c.commit();
            System.out.println("done");
        }
    }
}
`

// startJDBCCommitProbe compiles and starts the probe against the gateway,
// or returns nil when Java or the JDBC driver is not installed.
func startJDBCCommitProbe(t *testing.T, g *testGateway, id int) *jdbcCommitProbe {
	t.Helper()
	const jar, javac, java = "/usr/share/java/postgresql.jar", "/usr/bin/javac", "/usr/bin/java"
	for _, f := range []string{jar, javac, java} {
		if _, err := os.Stat(f); err != nil {
			t.Logf("no JDBC client in this test: %s is not installed", f)
			return nil
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "CommitProbe.java"), []byte(jdbcCommitProbeSource), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runWithTimeout(t, 120*time.Second, os.Environ(), javac, "-cp", jar, "-d", dir, filepath.Join(dir, "CommitProbe.java")); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	url := fmt.Sprintf("jdbc:postgresql://%s:5432/alice?sslmode=disable&connectTimeout=5", g.host)
	cmd := exec.CommandContext(ctx, java, "-cp", jar+":"+dir, "CommitProbe", url, alicePassword, strconv.Itoa(id))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &jdbcCommitProbe{stdin: stdin, lines: make(chan string, 16)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		cmd.Wait()
	})
	return p
}

// next returns the probe's next line of output.
func (p *jdbcCommitProbe) next(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			t.Fatal("the JDBC probe ended")
		}
		return l
	case <-time.After(timeout):
		t.Fatal("no output from the JDBC probe")
	}
	return ""
}

// TestCommitResolutionLostBeforeAnswer: the primary commits, with the
// commit on the synchronous standby, but the gateway gets no answer at all
// for the COMMIT (nor for anything sent with it) before the primary dies.
// The transactions' ids were captured after their first writes (extended
// protocol: pgx's cached prepared statements, and unnamed statements), so
// each COMMIT (extended with Parse, Bind and Describe; simple; a prepared
// statement's Bind, Describe and Execute) is resolved on the new primary as
// committed: the clients see success with every answer they wait for, the
// rows are there, and the sessions go on.
func TestCommitResolutionLostBeforeAnswer(t *testing.T) {
	t.Parallel()
	primary, standby := startPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	super := primary.superConn(t, ctx)
	defer super.Close(context.Background())
	makeStandbySynchronous(t, ctx, super)

	// The gateway reaches the primary through the proxy.
	proxy := startCutProxy(t, testutil.Addr(t), primary.addr)
	g := startGateway(t, &pgServer{addr: proxy.addr(), host: primary.host}, testutil.Addr(t),
		func(c *Config) { c.HoldTimeout = 60 * time.Second })
	dsn := g.dsn("alice", alicePassword, "alice", "sslmode=disable")
	cached, unnamed, prepared := connectPGX(t, dsn), connectPGX(t, dsn), connectPGX(t, dsn)
	all := []*pgx.Conn{cached, unnamed, prepared}
	for _, c := range all {
		if h := serverHost(t, ctx, c); h != primary.host {
			t.Fatalf("session on %s, want the primary %s", h, primary.host)
		}
	}
	// cached: the INSERT is prepared in an earlier transaction and only
	// bound and executed in the one that is lost; its COMMIT is extended.
	// unnamed: Parse, Bind, Execute each time; its COMMIT is simple.
	mustExec(t, ctx, cached, "BEGIN")
	if _, err := cached.Exec(ctx, "INSERT INTO t VALUES ($1)", 1); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, cached, "COMMIT")
	mustExec(t, ctx, cached, "BEGIN")
	if _, err := cached.Exec(ctx, "INSERT INTO t VALUES ($1)", 2); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, unnamed, "BEGIN")
	if _, err := unnamed.Exec(ctx, "INSERT INTO t VALUES ($1)", pgx.QueryExecModeExec, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := unnamed.Exec(ctx, "INSERT INTO t VALUES ($1)", pgx.QueryExecModeExec, 4); err != nil {
		t.Fatal(err)
	}
	// prepared: its COMMIT is a named statement prepared beforehand (JDBC
	// after prepareThreshold, pgbench -M prepared).
	if _, err := prepared.PgConn().Prepare(ctx, "commit_stmt", "COMMIT", nil); err != nil {
		t.Fatal(err)
	}
	mustExec(t, ctx, prepared, "BEGIN")
	if _, err := prepared.Exec(ctx, "INSERT INTO t VALUES ($1)", 6); err != nil {
		t.Fatal(err)
	}
	for _, c := range all {
		if st, _ := trackedXid(sessionOf(t, g, c)); st != xidValue {
			t.Fatal("no transaction id captured after the first write")
		}
	}
	// jdbc: JDBC, when installed.
	jdbc := startJDBCCommitProbe(t, g, 8)
	wantRows := []int{2, 3, 4, 6, 7}
	if jdbc != nil {
		if l := jdbc.next(t, 60*time.Second); l != "ready" {
			t.Fatalf("JDBC probe: %q", l)
		}
		wantRows = append(wantRows, 8)
	}
	// raw: a protocol-level client, to see every message of the answer. It
	// begins its transaction in the batch of its first write, as JDBC does.
	raw := connectRaw(t, ctx, dsn)
	raw.run(t, 1, &pgproto3.Parse{Query: "BEGIN"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Parse{Query: "INSERT INTO t VALUES (7)"}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{},
		&pgproto3.Sync{})

	// From now on the primary's answers are lost.
	proxy.mute.Store(true)
	type res struct {
		what, tag string
		err       error
	}
	results := make(chan res, 3)
	go func() {
		tag, err := cached.PgConn().ExecParams(ctx, "COMMIT", nil, nil, nil, nil).Close()
		results <- res{"extended COMMIT", tag.String(), err}
	}()
	go func() {
		tag, err := unnamed.Exec(ctx, "COMMIT")
		results <- res{"simple COMMIT", tag.String(), err}
	}()
	go func() {
		tag, err := prepared.PgConn().ExecPrepared(ctx, "commit_stmt", nil, nil, nil).Close()
		results <- res{"prepared COMMIT", tag.String(), err}
	}()
	rawRes := make(chan res, 1)
	go func() {
		out, err := raw.exchange(90*time.Second, 1, &pgproto3.Parse{Query: "COMMIT"}, &pgproto3.Bind{},
			&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{})
		rawRes <- res{"raw COMMIT", strings.Join(out, "; "), err}
	}()
	if jdbc != nil {
		if _, err := io.WriteString(jdbc.stdin, "commit\n"); err != nil {
			t.Fatal(err)
		}
	}
	// All commit on the primary (and so on the synchronous standby).
	deadline := time.Now().Add(30 * time.Second)
	aliceDirect, err := primary.connect(ctx, "alice", alicePassword, "alice")
	if err != nil {
		t.Fatal(err)
	}
	for {
		var n int
		if err := aliceDirect.QueryRow(ctx, "SELECT count(*) FROM t WHERE id = ANY($1)", wantRows).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == len(wantRows) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d rows committed on the primary", n, len(wantRows))
		}
		time.Sleep(20 * time.Millisecond)
	}
	aliceDirect.Close(ctx)
	select {
	case r := <-results:
		t.Fatalf("%s answered while the primary's answers were lost: %q, %v", r.what, r.tag, r.err)
	default:
	}

	// The primary dies; the standby takes over.
	g.router.set(g.router.primary, false, nil)
	primary.kill(t)
	proxy.cut()
	standby.promote(t)
	g.router.setFence(2, fenceOf(t, ctx, standby))
	g.router.set(Target{Epoch: 2, Node: "n2", Addr: standby.addr}, true, nil)

	for i := 0; i < 3; i++ {
		select {
		case r := <-results:
			if r.err != nil || r.tag != "COMMIT" {
				t.Fatalf("%s lost before any answer: %q, %v", r.what, r.tag, r.err)
			}
		case <-ctx.Done():
			t.Fatal("no answer to the COMMITs after the failover")
		}
	}
	select {
	case r := <-rawRes:
		want := "*pgproto3.ParseComplete; *pgproto3.BindComplete; *pgproto3.NoData; CommandComplete COMMIT; ReadyForQuery I"
		if r.err != nil || r.tag != want {
			t.Fatalf("raw extended COMMIT lost before any answer: %q, %v; want %q", r.tag, r.err, want)
		}
	case <-ctx.Done():
		t.Fatal("no answer to the raw COMMIT after the failover")
	}
	if jdbc != nil {
		if l := jdbc.next(t, 90*time.Second); l != "committed" {
			t.Fatalf("JDBC commit lost before any answer: %q", l)
		}
		// Its COMMIT is a named statement parsed with the lost one: it
		// must exist on the new primary.
		for _, want := range []string{"rows 1", "done"} {
			if l := jdbc.next(t, 30*time.Second); l != want {
				t.Fatalf("JDBC after the failover: %q, want %q", l, want)
			}
		}
	}
	if out := raw.run(t, 1, &pgproto3.Query{String: "SELECT count(*) FROM t WHERE id = 7"}); strings.Join(out, "; ") !=
		"RowDescription count; DataRow 1; CommandComplete SELECT 1; ReadyForQuery I" {
		t.Fatalf("the raw session after the failover: %q", out)
	}
	for _, c := range all {
		if h := serverHost(t, ctx, c); h != standby.host {
			t.Fatalf("session on %s after the failover, want %s", h, standby.host)
		}
	}
	var n int
	if err := cached.QueryRow(ctx, "SELECT count(*) FROM t WHERE id IN (1, 2, 3, 4, 6)").Scan(&n); err != nil || n != 5 {
		t.Fatalf("rows on the new primary: %d, %v", n, err)
	}
	if _, err := unnamed.Exec(ctx, "INSERT INTO t VALUES ($1)", pgx.QueryExecModeExec, 5); err != nil {
		t.Fatalf("the session after the failover: %v", err)
	}
	if _, err := prepared.PgConn().ExecPrepared(ctx, "commit_stmt", nil, nil, nil).Close(); err != nil || prepared.PgConn().TxStatus() != 'I' {
		t.Fatalf("the prepared COMMIT after the failover: %v", err)
	}
	if st := g.MigrationStats(); st.CommitCommitted != int64(len(wantRows)-1) || st.CommitUnknown != 0 || st.CommitAborted != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestCaptureExtendedFailures: a capture that fails. (1) Its name is in
// use (a client took the reserved name): the client's batch gets the
// error, once; the next capture closes the leftovers first and works. (2)
// The capture cannot run at all (an administrator revoked the function):
// the session stops capturing instead of failing every transaction.
func TestCaptureExtendedFailures(t *testing.T) {
	t.Parallel()
	pg := startPostgres(t, testutil.Addr(t))
	g := startGateway(t, pg, testutil.Addr(t), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dsn := g.dsn("alice", alicePassword, "alice", "sslmode=disable")
	setup := connectPGX(t, dsn)
	mustExec(t, ctx, setup, "CREATE TABLE cf (id int PRIMARY KEY)")

	raw := connectRaw(t, ctx, dsn)
	rawSession := g.cancels.lookupPID(raw.pid)
	if rawSession == nil {
		t.Fatal("no session for the raw client")
	}
	insert := func(id string) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "INSERT INTO cf VALUES ($1)"},
			&pgproto3.Bind{Parameters: [][]byte{[]byte(id)}}, &pgproto3.Execute{}, &pgproto3.Sync{}}
	}
	join := func(out []string) string { return strings.Join(out, "; ") }
	raw.run(t, 1, &pgproto3.Parse{Name: xidStatement, Query: "SELECT 1"}, &pgproto3.Sync{})
	raw.run(t, 1, &pgproto3.Query{String: "BEGIN"})
	if out := join(raw.run(t, 1, insert("1")...)); out !=
		"*pgproto3.ParseComplete; *pgproto3.BindComplete; CommandComplete INSERT 0 1; ErrorResponse ERROR 42P05; ReadyForQuery E" {
		t.Fatalf("capture under a name in use: %q", out)
	}
	raw.run(t, 1, &pgproto3.Query{String: "ROLLBACK"})
	raw.run(t, 1, &pgproto3.Query{String: "BEGIN"})
	if out := join(raw.run(t, 1, insert("2")...)); out != "*pgproto3.ParseComplete; *pgproto3.BindComplete; CommandComplete INSERT 0 1; ReadyForQuery T" {
		t.Fatalf("the capture after a failed one: %q", out)
	}
	if st, _ := trackedXid(rawSession); st != xidValue {
		t.Fatal("no transaction id after the clean-up capture")
	}
	rawSession.track.mu.Lock()
	dirty := rawSession.track.xidDirty
	rawSession.track.mu.Unlock()
	if dirty {
		t.Fatal("still dirty after a clean-up capture")
	}
	if out := join(raw.run(t, 1, &pgproto3.Query{String: "COMMIT"})); out != "CommandComplete COMMIT; ReadyForQuery I" {
		t.Fatalf("COMMIT: %q", out)
	}

	// The capture cannot run: one failure, then no more captures.
	super, err := pg.connect(ctx, "postgres", superPassword, "alice")
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(context.Background())
	mustExec(t, ctx, super, "REVOKE EXECUTE ON FUNCTION pg_catalog.pg_current_xact_id_if_assigned() FROM PUBLIC")
	ext := connectPGX(t, dsn)
	notices := make(chan *pgconn.Notice, 8)
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) { notices <- n }
	simple, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer simple.Close(context.Background())
	mustExec(t, ctx, ext, "BEGIN")
	_, err = ext.Exec(ctx, "INSERT INTO cf VALUES ($1)", 3)
	wantCode(t, "extended write whose capture cannot run", err, "42501")
	mustExec(t, ctx, ext, "ROLLBACK")
	// Simple protocol: the failed capture aborted the transaction; the
	// client is told by a notice, and its COMMIT answers ROLLBACK.
	mustExec(t, ctx, simple, "BEGIN")
	mustExec(t, ctx, simple, "INSERT INTO cf VALUES (103)")
	if tag, err := simple.Exec(ctx, "COMMIT"); err != nil || tag.String() != "ROLLBACK" {
		t.Fatalf("simple COMMIT after a failed capture: %q, %v", tag, err)
	}
	select {
	case n := <-notices:
		if n.Code != "42501" {
			t.Fatalf("notice %s %s, want the capture's 42501", n.Code, n.Message)
		}
	default:
		t.Fatal("no notice of the failed capture")
	}
	for id := 4; id < 7; id++ {
		mustExec(t, ctx, ext, "BEGIN")
		if _, err := ext.Exec(ctx, "INSERT INTO cf VALUES ($1)", id); err != nil {
			t.Fatalf("extended write after the capture was given up: %v", err)
		}
		if _, err := ext.PgConn().ExecParams(ctx, "COMMIT", nil, nil, nil, nil).Close(); err != nil {
			t.Fatalf("extended COMMIT after the capture was given up: %v", err)
		}
		// Simple protocol: the failed capture is swallowed, the session
		// gives up capturing, the client sees nothing.
		mustExec(t, ctx, simple, "BEGIN")
		mustExec(t, ctx, simple, fmt.Sprintf("INSERT INTO cf VALUES (%d)", 100+id))
		if tag, err := simple.Exec(ctx, "COMMIT"); err != nil || tag.String() != "COMMIT" {
			t.Fatalf("simple COMMIT: %q, %v", tag, err)
		}
	}
	var n int
	if err := setup.QueryRow(ctx, "SELECT count(*) FROM cf").Scan(&n); err != nil || n != 1+3+3 {
		t.Fatalf("rows: %d, %v", n, err)
	}
	for _, c := range []*pgx.Conn{ext, simple} {
		s := sessionOf(t, g, c)
		s.track.mu.Lock()
		on := s.track.resolveCommits
		s.track.mu.Unlock()
		if on {
			t.Fatal("a session still captures although its captures cannot run")
		}
	}
}
