package workload

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/pgctl"
	"github.com/pgbattery/pgbattery/test/checker"
	"github.com/pgbattery/pgbattery/test/testutil"
)

var testSuper = pgctl.Credentials{User: pgctl.DefaultSuperuser, Password: "workload-test-superuser-0123456789abcdef"}
var testRepl = pgctl.Credentials{User: pgctl.DefaultReplicationUser, Password: "workload-test-replication-0123456789abc"}

// testPG is one real PostgreSQL 15 on its own loopback address.
type testPG struct {
	*pgctl.Instance
	name string
	dsn  string
}

// startPostgres initdbs and starts a PostgreSQL on its own loopback
// address; it is stopped (immediate) when the test ends.
func startPostgres(t *testing.T, name string) *testPG {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bins, err := pgctl.FindBinaries(ctx, "")
	if err != nil {
		t.Fatalf("finding PostgreSQL binaries: %v", err)
	}
	addr := testutil.Addr(t)
	inst, err := pgctl.NewInstance(pgctl.Config{
		NodeName:    name,
		Binaries:    bins,
		Dir:         filepath.Join(testutil.TempDir(t), name),
		ListenAddr:  addr,
		Port:        pgctl.DefaultPort,
		OSUser:      testutil.PostgresOSUser,
		Superuser:   testSuper,
		Replication: testRepl,
		Parameters: map[string]string{
			"fsync":            "off",
			"shared_buffers":   "16MB",
			"max_connections":  "40",
			"log_min_messages": "warning",
		},
		Logger:    hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Warn, Output: testLogWriter{t}}),
		StopGrace: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("configuring PostgreSQL %s: %v", name, err)
	}
	if err := inst.InitDB(ctx, pgctl.InitDBOptions{NoSync: true}); err != nil {
		t.Fatalf("initdb %s: %v", name, err)
	}
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := inst.Stop(sctx, pgctl.StopImmediate); err != nil {
			t.Errorf("stopping PostgreSQL %s: %v", name, err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(inst.Config().LogFile)
			s := string(b)
			if len(s) > 4000 {
				s = s[len(s)-4000:]
			}
			t.Logf("PostgreSQL log of %s:\n%s", name, s)
		}
	})
	if _, err := inst.Start(ctx, pgctl.StartOptions{}); err != nil {
		t.Fatalf("starting PostgreSQL %s: %v", name, err)
	}
	dsn := pgctl.PeerConnString(pgctl.Peer{Host: addr, Port: pgctl.DefaultPort}, testSuper, "postgres", 2*time.Second)
	return &testPG{Instance: inst, name: name, dsn: dsn}
}

// exec runs SQL on pg behind the workload's back. It may be called from
// any goroutine (it reports with t.Errorf).
func (pg *testPG) exec(t *testing.T, sql string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.dsn)
	if err != nil {
		t.Errorf("connecting to %s: %v", pg.name, err)
		return 0
	}
	defer conn.Close(ctx)
	tag, err := conn.Exec(ctx, sql, args...)
	if err != nil {
		t.Errorf("running %q on %s: %v", sql, pg.name, err)
	}
	return tag.RowsAffected()
}

type testLogWriter struct{ t *testing.T }

func (w testLogWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

func testConfig(t *testing.T, dsn string, d time.Duration) Config {
	return Config{
		DSN:      dsn,
		Clients:  4,
		Duration: d,
		MaxOps:   20000,
		Seed:     42,
		Clock:    checker.NewClock(),
		Logger:   hclog.New(&hclog.LoggerOptions{Name: t.Name(), Level: hclog.Warn, Output: testLogWriter{t}}),
	}
}

func requireOK(t *testing.T, r checker.Result) {
	t.Helper()
	t.Logf("%s", r)
	if !r.OK {
		t.Fatalf("checker rejected a history from a healthy PostgreSQL")
	}
}

func requireProblem(t *testing.T, r checker.Result, contains string) {
	t.Helper()
	t.Logf("%s", r)
	if r.OK {
		t.Fatalf("checker accepted a history with an injected fault")
	}
	for _, p := range r.Problems {
		if contains == "" || strings.Contains(p, contains) {
			return
		}
	}
	t.Fatalf("no problem mentions %q", contains)
}

// kill is kill -9 of a whole PostgreSQL: the postmaster and every child.
// PostgreSQL's children call setsid(), so signalling the postmaster's process
// group does not reach them; instead the postmaster is stopped (so it can't
// fork), its children are found in /proc and killed, then the postmaster.
func (pg *testPG) kill(t *testing.T) {
	t.Helper()
	pm := pg.Postmaster()
	if pm == nil {
		t.Fatalf("%s is not running", pg.name)
	}
	pid := pm.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatalf("stopping %s (pid %d): %v", pg.name, pid, err)
	}
	for _, child := range childrenOf(t, pid) {
		syscall.Kill(child, syscall.SIGKILL)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("killing %s (pid %d): %v", pg.name, pid, err)
	}
	select {
	case <-pm.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not exit after SIGKILL", pg.name)
	}
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("listing /proc: %v", err)
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // exited meanwhile
		}
		// pid (comm) state ppid ...; comm may contain spaces and parens.
		s := string(b)
		j := strings.LastIndexByte(s, ')')
		if j < 0 {
			continue
		}
		fields := strings.Fields(s[j+1:])
		if len(fields) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(fields[1]); err == nil && ppid == pid {
			out = append(out, child)
		}
	}
	return out
}

// queryCount runs a count query behind the workload's back; errors (the
// table may not exist yet) count as zero.
func (pg *testPG) queryCount(sql string) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.dsn)
	if err != nil {
		return 0
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
		return 0
	}
	return n
}

// waitForRows polls sql (a count) until it is positive or timeout passes;
// tamper goroutines use it to act only once the workload has really
// started (its setup resets the table).
func (pg *testPG) waitForRows(t *testing.T, timeout time.Duration, sql string) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if pg.queryCount(sql) > 0 {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("timed out waiting for %q to count rows", sql)
	return false
}
