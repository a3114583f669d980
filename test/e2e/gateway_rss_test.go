package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestGatewayAgentRSS measures a real agent's resident memory with 500 idle
// client sessions open through its gateway (issue 5's goal: under 64 MB).
// One node, its own PostgreSQL behind the gateway; the clients live in the
// test process. Runs only with PGBATTERY_BENCH=1 (make bench);
// PGB_IDLE_SESSIONS changes the number, PGB_RSS_OUT names a file for the
// one-line report.
func TestGatewayAgentRSS(t *testing.T) {
	if os.Getenv("PGBATTERY_BENCH") != "1" {
		t.Skip("set PGBATTERY_BENCH=1 to run the agent memory benchmark")
	}
	n := 500
	if s := os.Getenv("PGB_IDLE_SESSIONS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > 5000 {
			t.Fatalf("PGB_IDLE_SESSIONS=%q: want 1..5000", s)
		}
		n = v
	}
	p := newNode(t, "rss", nodeOpts{postgres: true, extraHCL: fmt.Sprintf(`
postgres {
  parameters = {
    max_connections = %d
  }
}
gateway {
  max_connections = %d
}
`, n+50, n+50)})
	p.start()
	waitFor(t, 3*time.Minute, "the agent ready", func() bool { return p.get("/v1/health/readiness", nil) == 200 })
	pw, err := os.ReadFile(filepath.Join(p.dataDir(), "secrets", "superuser"))
	if err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("host=%s port=5432 user=pgbattery dbname=postgres sslmode=disable connect_timeout=10 password=%s", p.addr, strings.TrimSpace(string(pw)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// Warm up: a few sessions with traffic, so lazily built structures
	// (verifier cache, metrics, goroutine stacks) count as the baseline.
	for i := 0; i < 5; i++ {
		var conn *pgx.Conn
		waitFor(t, time.Minute, "a session through the gateway", func() bool {
			conn, err = pgx.Connect(ctx, dsn)
			return err == nil
		})
		conn.Exec(ctx, "SELECT 1")
		conn.Close(ctx)
	}
	time.Sleep(2 * time.Second)
	pid := p.cmd.Process.Pid
	before := rssKiB(t, pid)

	conns := make([]*pgx.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close(context.Background())
		}
	})
	for i := 0; i < n; i++ {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatalf("idle session %d of %d: %v", i+1, n, err)
		}
		if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
			t.Fatalf("session %d: %v", i+1, err)
		}
		conns = append(conns, c)
	}
	// Let the Go runtime settle (the scavenger returns what start-up
	// bursts allocated) and take the steadier of a few readings.
	time.Sleep(5 * time.Second)
	after := rssKiB(t, pid)
	for i := 0; i < 4; i++ {
		time.Sleep(time.Second)
		after = min(after, rssKiB(t, pid))
	}
	report := fmt.Sprintf("agent RSS with %d idle gateway sessions: %.1f MiB (before: %.1f MiB with no session; %+.1f MiB, %.1f KiB per session); goal < 64 MiB",
		n, float64(after)/1024, float64(before)/1024, float64(after-before)/1024, float64(after-before)/float64(n))
	t.Log(report)
	fmt.Println(report)
	if out := os.Getenv("PGB_RSS_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(report+"\n"), 0o644); err != nil {
			t.Errorf("writing %s: %v", out, err)
		}
	}
}

// rssKiB reads a process's VmRSS.
func rssKiB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			if f := strings.Fields(line); len(f) >= 2 {
				v, _ := strconv.Atoi(f[1])
				return v
			}
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
