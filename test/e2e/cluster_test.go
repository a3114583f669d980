package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// startPGCluster starts n agents with PostgreSQL, bootstrap_expect = n,
// joined to the first, and waits until one is a writable primary and the
// others are streaming standbys.
func startPGCluster(t *testing.T, n int) []*agentProc {
	t.Helper()
	nodes := make([]*agentProc, n)
	for i := range nodes {
		nodes[i] = newNode(t, fmt.Sprintf("n%d", i+1), nodeOpts{postgres: true, expect: n})
	}
	nodes[0].start()
	waitFor(t, 30*time.Second, "first agent's API", func() bool { return nodes[0].get("/v1/agent/self", nil) == 200 })
	for _, p := range nodes[1:] {
		p.start("-join=" + nodes[0].serfAddr())
	}
	waitFor(t, 3*time.Minute, "every node ready", func() bool {
		for _, p := range nodes {
			if p.get("/v1/health/readiness", nil) != 200 {
				return false
			}
		}
		return true
	})
	return nodes
}

// role asks a node's readiness endpoint for its role ("" when not ready).
func role(p *agentProc) string {
	var out map[string]string
	if p.get("/v1/health/readiness", &out) != 200 {
		return ""
	}
	return out["role"]
}

func primaryOf(t *testing.T, nodes []*agentProc) *agentProc {
	t.Helper()
	var found *agentProc
	waitFor(t, 30*time.Second, "exactly one primary", func() bool {
		found = nil
		n := 0
		for _, p := range nodes {
			if p.cmd != nil && role(p) == "primary" {
				found = p
				n++
			}
		}
		return n == 1
	})
	return found
}

func TestClusterFailoverKillPrimaryNode(t *testing.T) {
	nodes := startPGCluster(t, 3)
	primary := primaryOf(t, nodes)
	ctx := context.Background()

	conn := connectAgentRole(t, primary)
	if _, err := conn.Exec(ctx, "CREATE TABLE acked (id int primary key)"); err != nil {
		t.Fatalf("create: %v", err)
	}
	for i := 1; i <= 100; i++ {
		if _, err := conn.Exec(ctx, "INSERT INTO acked VALUES ($1)", i); err != nil {
			t.Fatalf("insert %d: %v", i, err)
		}
	}
	conn.Close(ctx)

	// Kill the primary's agent and postmaster together.
	pid := postmasterPID(primary.dataDir())
	syscall.Kill(-primary.cmd.Process.Pid, syscall.SIGKILL)
	syscall.Kill(pid, syscall.SIGKILL)
	start := time.Now()
	<-primary.waitErr
	primary.cmd = nil

	var survivors []*agentProc
	for _, p := range nodes {
		if p != primary {
			survivors = append(survivors, p)
		}
	}
	newPrimary := primaryOf(t, survivors)
	var writeErr error
	waitFor(t, 60*time.Second, "a write on the new primary", func() bool {
		c, err := pgx.Connect(ctx, agentDSN(t, newPrimary))
		if err != nil {
			writeErr = err
			return false
		}
		defer c.Close(ctx)
		_, writeErr = c.Exec(ctx, "INSERT INTO acked VALUES (1000)")
		return writeErr == nil
	})
	t.Logf("writes back on %s %s after the kill", newPrimary.name, time.Since(start))

	c := connectAgentRole(t, newPrimary)
	var count int
	if err := c.QueryRow(ctx, "SELECT count(*) FROM acked WHERE id <= 100").Scan(&count); err != nil || count != 100 {
		t.Fatalf("acknowledged rows on the new primary: %d (%v), want 100", count, err)
	}

	// The old primary, restarted, rejoins as a standby of the new timeline.
	primary.start()
	waitFor(t, 3*time.Minute, "the old primary to rejoin as a standby", func() bool { return role(primary) == "replica" })
	waitFor(t, 60*time.Second, "the new row to reach the old primary", func() bool {
		c, err := pgx.Connect(ctx, agentDSN(t, primary))
		if err != nil {
			return false
		}
		defer c.Close(ctx)
		var n int
		return c.QueryRow(ctx, "SELECT count(*) FROM acked WHERE id = 1000").Scan(&n) == nil && n == 1
	})
	if !strings.Contains(primary.logs(), "rewind") {
		t.Logf("note: the old primary rejoined without pg_rewind")
	}
}
