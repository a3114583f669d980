package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// Real client programs through the gateway: psql, pgbench, psycopg2, JDBC.

func testClients(t *testing.T, g *testGateway) {
	t.Run("psql", func(t *testing.T) { testPsql(t, g) })
	t.Run("psql-channel-binding", func(t *testing.T) { testPsqlChannelBinding(t, g) })
	t.Run("pgbench", func(t *testing.T) { testPgbench(t, g) })
	t.Run("psycopg2", func(t *testing.T) { testPsycopg2(t, g) })
	t.Run("jdbc", func(t *testing.T) { testJDBC(t, g) })
	// Every client's protocol traffic was followed exactly. Sessions end
	// asynchronously after the clients exit: wait (bounded) for them.
	deadline := time.Now().Add(10 * time.Second)
	for len(g.Sessions()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := g.untracked.Load(); n != 0 {
		t.Errorf("%d client sessions lost protocol tracking", n)
	}
}

func findProgram(t *testing.T, candidates ...string) string {
	t.Helper()
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			return c
		}
	}
	t.Skipf("none of %v is installed", candidates)
	return ""
}

// libpqEnv is the environment for libpq programs connecting to the gateway.
func (g *testGateway) libpqEnv(user, password, db string, extra ...string) []string {
	env := append(os.Environ(), "PGHOST="+g.host, "PGPORT=5432", "PGUSER="+user,
		"PGPASSWORD="+password, "PGDATABASE="+db, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=5")
	return append(env, extra...)
}

func runWithTimeout(t *testing.T, timeout time.Duration, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func testPsql(t *testing.T, g *testGateway) {
	psql := findProgram(t, "/usr/lib/postgresql/15/bin/psql", "/usr/bin/psql")
	dir := t.TempDir()
	data := filepath.Join(dir, "in.csv")
	var rows strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&rows, "%d,row %d\n", i, i)
	}
	if err := os.WriteFile(data, []byte(rows.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "script.sql")
	os.WriteFile(script, []byte(`
\set ON_ERROR_STOP on
DROP TABLE IF EXISTS psql_t;
CREATE TABLE psql_t (id int, name text);
\copy psql_t FROM '`+data+`' WITH (FORMAT csv)
SELECT count(*) AS n, max(id) AS m FROM psql_t \gset
\echo rows=:n max=:m
\copy (SELECT * FROM psql_t WHERE id < 3 ORDER BY id) TO STDOUT WITH (FORMAT csv)
SELECT current_user, current_setting('application_name');
`), 0o644)
	env := g.libpqEnv("alice", alicePassword, "alice", "PGAPPNAME=psqltest")
	out, err := runWithTimeout(t, 30*time.Second, env, psql, "-X", "-q", "-A", "-t", "-f", script)
	if err != nil {
		t.Fatalf("psql script: %v\n%s", err, out)
	}
	for _, want := range []string{"rows=1000 max=999", "0,row 0\n1,row 1\n2,row 2", "alice|psqltest"} {
		if !strings.Contains(out, want) {
			t.Errorf("psql output lacks %q:\n%s", want, out)
		}
	}

	// \watch: repeated execution on one session.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watch := filepath.Join(dir, "watch.sql")
	os.WriteFile(watch, []byte("SELECT 'tick' \\watch 0.2\n"), 0o644)
	cmd := exec.CommandContext(ctx, psql, "-X", "-A", "-t", "-f", watch)
	cmd.Env = env
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if n := strings.Count(buf.String(), "tick"); n < 3 {
		t.Errorf("\\watch printed tick %d times:\n%s", n, buf.String())
	}

	// Ctrl-C: psql sends a CancelRequest with the gateway's key.
	cmd = exec.CommandContext(ctx, psql, "-X", "-c", "SELECT pg_sleep(30)")
	cmd.Env = env
	buf.Reset()
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if !strings.Contains(buf.String(), "canceling statement due to user request") || time.Since(start) > 15*time.Second {
		t.Errorf("psql cancel after %s:\n%s", time.Since(start), buf.String())
	}

	// psql reports authentication failures as PostgreSQL would.
	out, err = runWithTimeout(t, 30*time.Second, g.libpqEnv("alice", "wrong", "alice"), psql, "-X", "-c", "SELECT 1")
	if err == nil || !strings.Contains(out, `password authentication failed for user "alice"`) {
		t.Errorf("psql with a wrong password: %v\n%s", err, out)
	}
}

func testPsqlChannelBinding(t *testing.T, g0 *testGateway) {
	psql := findProgram(t, "/usr/lib/postgresql/15/bin/psql", "/usr/bin/psql")
	host := testutil.Addr(t)
	serverTLS, _ := selfSignedTLS(t, host)
	pg := &pgServer{addr: g0.router.primary.Addr}
	g := startGateway(t, pg, host, func(c *Config) { c.TLS = func() *tls.Config { return serverTLS } })
	env := g.libpqEnv("alice", alicePassword, "alice", "PGSSLMODE=require", "PGCHANNELBINDING=require")
	out, err := runWithTimeout(t, 30*time.Second, env, psql, "-X", "-A", "-t", "-c", "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
	if err != nil {
		t.Fatalf("psql with channel_binding=require: %v\n%s", err, out)
	}
	// The gateway terminates TLS; its back-end link here is plaintext.
	if strings.TrimSpace(out) != "f" {
		t.Errorf("unexpected output %q", out)
	}
	// Without TLS, a client that insists on channel binding is refused.
	env = g.libpqEnv("alice", alicePassword, "alice", "PGSSLMODE=disable", "PGCHANNELBINDING=require")
	out, err = runWithTimeout(t, 30*time.Second, env, psql, "-X", "-c", "SELECT 1")
	if err == nil || !strings.Contains(out, "channel binding") {
		t.Errorf("channel_binding=require without TLS: %v\n%s", err, out)
	}
}

func testPgbench(t *testing.T, g *testGateway) {
	pgbench := findProgram(t, "/usr/lib/postgresql/15/bin/pgbench", "/usr/bin/pgbench")
	env := g.libpqEnv("alice", alicePassword, "alice")
	if out, err := runWithTimeout(t, 60*time.Second, env, pgbench, "-i", "-q", "-s", "1"); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	for _, mode := range []string{"simple", "extended", "prepared"} {
		out, err := runWithTimeout(t, 60*time.Second, env, pgbench, "-M", mode, "-c", "4", "-j", "2", "-T", "2", "-n")
		if err != nil {
			t.Fatalf("pgbench -M %s: %v\n%s", mode, err, out)
		}
		if !strings.Contains(out, "number of failed transactions: 0 ") || !strings.Contains(out, "tps = ") {
			t.Fatalf("pgbench -M %s:\n%s", mode, out)
		}
	}
}

func testPsycopg2(t *testing.T, g *testGateway) {
	python := findProgram(t, "/usr/bin/python3")
	if out, err := exec.Command(python, "-c", "import psycopg2").CombinedOutput(); err != nil {
		t.Skipf("python3-psycopg2 is not installed: %s", out)
	}
	script := `
import io, sys, threading, time, psycopg2, psycopg2.extensions
dsn = sys.argv[1]
conn = psycopg2.connect(dsn)
cur = conn.cursor()
cur.execute("DROP TABLE IF EXISTS py_t; CREATE TABLE py_t (id int, v text)")
cur.executemany("INSERT INTO py_t VALUES (%s, %s)", [(i, "v%d" % i) for i in range(100)])
cur.copy_from(io.StringIO("".join("%d\tc%d\n" % (i, i) for i in range(100, 600))), "py_t", columns=("id", "v"))
conn.commit()
cur.execute("SELECT count(*), sum(id) FROM py_t WHERE v LIKE %s", ("%",))
print("count", cur.fetchone())
try:
    cur.execute("SELECT 1/0")
except psycopg2.errors.DivisionByZero:
    conn.rollback()
    print("division by zero caught")
# Cancel from another thread.
def cancel():
    time.sleep(0.5)
    conn.cancel()
threading.Thread(target=cancel).start()
try:
    cur.execute("SELECT pg_sleep(30)")
except psycopg2.errors.QueryCanceled:
    conn.rollback()
    print("cancelled")
# LISTEN/NOTIFY
conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
cur.execute("LISTEN pychan")
other = psycopg2.connect(dsn)
other.autocommit = True
other.cursor().execute("NOTIFY pychan, 'hi'")
import select
deadline = time.time() + 5
while time.time() < deadline and not conn.notifies:
    select.select([conn], [], [], 0.5)
    conn.poll()
print("notify", conn.notifies[0].payload if conn.notifies else None)
`
	dsn := fmt.Sprintf("host=%s port=5432 user=alice password='%s' dbname=alice sslmode=disable connect_timeout=5", g.host, alicePassword)
	out, err := runWithTimeout(t, 60*time.Second, os.Environ(), python, "-c", script, dsn)
	if err != nil {
		t.Fatalf("psycopg2: %v\n%s", err, out)
	}
	for _, want := range []string{"count (600, 179700)", "division by zero caught", "cancelled", "notify hi"} {
		if !strings.Contains(out, want) {
			t.Errorf("psycopg2 output lacks %q:\n%s", want, out)
		}
	}
}

func testJDBC(t *testing.T, g *testGateway) {
	jar := findProgram(t, "/usr/share/java/postgresql.jar")
	javac := findProgram(t, "/usr/bin/javac")
	java := findProgram(t, "/usr/bin/java")
	dir := t.TempDir()
	src := `
import java.sql.*;
import java.io.StringReader;
import org.postgresql.PGConnection;
import org.postgresql.copy.CopyManager;

public class GatewayProbe {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], "alice", args[1])) {
            try (Statement s = c.createStatement()) {
                s.execute("DROP TABLE IF EXISTS jdbc_t");
                s.execute("CREATE TABLE jdbc_t (id int, v text)");
            }
            // Server-side prepared statements kick in after prepareThreshold (5).
            try (PreparedStatement ps = c.prepareStatement("INSERT INTO jdbc_t VALUES (?, ?)")) {
                for (int i = 0; i < 20; i++) { ps.setInt(1, i); ps.setString(2, "v" + i); ps.executeUpdate(); }
                for (int i = 20; i < 50; i++) { ps.setInt(1, i); ps.setString(2, "b" + i); ps.addBatch(); }
                ps.executeBatch();
            }
            CopyManager cm = c.unwrap(PGConnection.class).getCopyAPI();
            StringBuilder sb = new StringBuilder();
            for (int i = 50; i < 150; i++) sb.append(i).append("\tc").append(i).append("\n");
            long copied = cm.copyIn("COPY jdbc_t FROM STDIN", new StringReader(sb.toString()));
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT count(*), sum(id) FROM jdbc_t")) {
                rs.next();
                System.out.println("copied " + copied + " count " + rs.getInt(1) + " sum " + rs.getLong(2));
            }
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.execute("UPDATE jdbc_t SET v = 'x' WHERE id = 1");
                c.rollback();
            }
            c.setAutoCommit(true);
            try (Statement s = c.createStatement()) {
                s.setQueryTimeout(1);
                s.execute("SELECT pg_sleep(30)");
                System.out.println("not cancelled");
            } catch (SQLException e) {
                System.out.println("cancelled " + e.getSQLState());
            }
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("SELECT 42")) {
                rs.next();
                System.out.println("after cancel " + rs.getInt(1));
            }
        }
    }
}
`
	if err := os.WriteFile(filepath.Join(dir, "GatewayProbe.java"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runWithTimeout(t, 120*time.Second, os.Environ(), javac, "-cp", jar, "-d", dir, filepath.Join(dir, "GatewayProbe.java")); err != nil {
		t.Fatalf("javac: %v\n%s", err, out)
	}
	url := fmt.Sprintf("jdbc:postgresql://%s:5432/alice?sslmode=disable&connectTimeout=5", g.host)
	out, err := runWithTimeout(t, 120*time.Second, os.Environ(), java, "-cp", jar+":"+dir, "GatewayProbe", url, alicePassword)
	if err != nil {
		t.Fatalf("java: %v\n%s", err, out)
	}
	for _, want := range []string{"copied 100 count 150 sum 11175", "cancelled 57014", "after cancel 42"} {
		if !strings.Contains(out, want) {
			t.Errorf("JDBC output lacks %q:\n%s", want, out)
		}
	}
}
