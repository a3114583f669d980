package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// connectAgentRole connects to the node's PostgreSQL as the agent's control
// role, with the password the agent generated under data_dir/secrets.
func connectAgentRole(t *testing.T, p *agentProc) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, agentDSN(t, p))
	if err != nil {
		t.Fatalf("connecting to %s's PostgreSQL: %v", p.name, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// agentDSN connects to a node's PostgreSQL directly as the agent's control
// role, with the password under data_dir/secrets.
func agentDSN(t *testing.T, p *agentProc) string {
	t.Helper()
	pw, err := os.ReadFile(filepath.Join(p.dataDir(), "secrets", "superuser"))
	if err != nil {
		t.Fatalf("reading the agent's secret: %v", err)
	}
	return fmt.Sprintf("host=%s port=5433 user=pgbattery dbname=postgres sslmode=disable connect_timeout=5 password=%s", p.addr, strings.TrimSpace(string(pw)))
}

// testSingleNode runs the issue-2 lifecycle against one agent: initdb on
// first start, readiness, a SIGKILLed postmaster restarted, data kept, a
// clean stop on SIGTERM that leaves no postmaster behind.
func testSingleNode(t *testing.T, o nodeOpts) {
	o.postgres = true
	p := newNode(t, "solo", o)
	p.start()
	waitFor(t, 3*time.Minute, "PostgreSQL to be ready", func() bool { return p.get("/v1/health/readiness", nil) == 200 })

	conn := connectAgentRole(t, p)
	ctx := context.Background()
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)"); err != nil {
		t.Fatalf("writing: %v", err)
	}
	var checksums string
	if err := conn.QueryRow(ctx, "SHOW data_checksums").Scan(&checksums); err != nil || checksums != "on" {
		t.Errorf("data_checksums = %q (%v), want on", checksums, err)
	}
	conn.Close(ctx)

	// Crash: the agent restarts the postmaster by itself.
	pid := postmasterPID(p.dataDir())
	if pid == 0 {
		t.Fatal("no postmaster.pid")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("killing postmaster %d: %v", pid, err)
	}
	waitFor(t, 60*time.Second, "a new postmaster", func() bool {
		np := postmasterPID(p.dataDir())
		return np != 0 && np != pid && processAlive(np) && p.get("/v1/health/readiness", nil) == 200
	})
	if !strings.Contains(p.logs(), "PostgreSQL died") {
		t.Errorf("the agent did not log the crash")
	}
	conn = connectAgentRole(t, p)
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != 42 {
		t.Fatalf("after the restart: v=%d err=%v, want 42", v, err)
	}
	conn.Close(ctx)

	// SIGHUP reloads without restarting PostgreSQL.
	pid = postmasterPID(p.dataDir())
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, 10*time.Second, "the reload to be logged", func() bool { return strings.Contains(p.logs(), "reloaded") })
	if np := postmasterPID(p.dataDir()); np != pid {
		t.Errorf("SIGHUP restarted PostgreSQL (pid %d -> %d)", pid, np)
	}

	// SIGTERM: clean stop, exit 0, no postmaster left.
	if code := p.stop(syscall.SIGTERM, 60*time.Second); code != 0 {
		t.Errorf("agent exited %d on SIGTERM", code)
	}
	if processAlive(pid) {
		t.Errorf("postmaster %d outlived the agent", pid)
	}

	// A second start finds the data and keeps it.
	p.start()
	waitFor(t, 2*time.Minute, "PostgreSQL to be ready again", func() bool { return p.get("/v1/health/readiness", nil) == 200 })
	conn = connectAgentRole(t, p)
	if err := conn.QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != 42 {
		t.Fatalf("after a restart of the agent: v=%d err=%v, want 42", v, err)
	}

	// kill -9 of the agent: PostgreSQL must not outlive it.
	pid = postmasterPID(p.dataDir())
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
	waitFor(t, 20*time.Second, "the postmaster to follow its dead agent", func() bool { return !processAlive(pid) })
}

func TestSingleNode(t *testing.T) {
	testSingleNode(t, nodeOpts{})
}

// TestSingleNodeUnprivileged runs the agent as an ordinary OS user: then it
// runs PostgreSQL as itself.
func TestSingleNodeUnprivileged(t *testing.T) {
	if !testutil.IsRoot() {
		t.Skip("already covered by TestSingleNode when not root")
	}
	testSingleNode(t, nodeOpts{asUser: testutil.PostgresOSUser})
}

func TestValidate(t *testing.T) {
	dir := testutil.TempDir(t)
	good := filepath.Join(dir, "good.hcl")
	os.WriteFile(good, []byte(fmt.Sprintf("node_name = \"a\"\ndata_dir = %q\nbind_addr = \"127.0.0.1\"\n", dir)), 0o644)
	bad := filepath.Join(dir, "bad.hcl")
	os.WriteFile(bad, []byte(fmt.Sprintf("node_name = \"a\"\ndata_dir = %q\nports {\n  postgres = 70000\n}\nbogus = 1\n", dir)), 0o644)

	out, code := runBinary(t, "agent", "-config-file="+good, "-validate")
	if code != 0 || !strings.Contains(out, "valid") {
		t.Errorf("validate good config: exit %d, output %q", code, out)
	}
	out, code = runBinary(t, "agent", "-config-file="+bad, "-validate")
	if code != 1 {
		t.Errorf("validate bad config: exit %d, want 1", code)
	}
	for _, want := range []string{"bad.hcl:4", "ports.postgres", "bad.hcl:6", "bogus"} {
		if !strings.Contains(out, want) {
			t.Errorf("validate output lacks %q:\n%s", want, out)
		}
	}
}

func runBinary(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := execCommand(ctx, args...).CombinedOutput()
	code := 0
	if ee, ok := err.(interface{ ExitCode() int }); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running pgbattery %v: %v", args, err)
	}
	return string(out), code
}
