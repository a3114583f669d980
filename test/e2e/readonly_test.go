package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestReadOnlyPort: the gateway's read-only port sends sessions to
// standbys that stream from the primary within gateway.read_only_max_lag,
// round robin; a standby whose replay is paused while the primary writes
// drops out, and comes back once it has caught up; with no standby
// qualifying, sessions go to the primary.
func TestReadOnlyPort(t *testing.T) {
	const n = 3
	nodes := make([]*agentProc, n)
	for i := range nodes {
		nodes[i] = newNode(t, fmt.Sprintf("n%d", i+1), nodeOpts{postgres: true, expect: n,
			extraHCL: "gateway {\n  read_only_max_lag = \"1MB\"\n}\n"})
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
	primary := primaryOf(t, nodes)
	var standbys []*agentProc
	byAddr := map[string]*agentProc{}
	for _, p := range nodes {
		byAddr[p.addr] = p
		if p != primary {
			standbys = append(standbys, p)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	const password = "reader pass"
	waitFor(t, time.Minute, "the reader role on the primary", func() bool {
		return execOn(ctx, t, primary, "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reader') THEN "+
			"CREATE ROLE reader LOGIN PASSWORD '"+password+"'; END IF; END$$") == nil
	})
	t.Cleanup(func() {
		// Leave no standby paused for the cluster's shutdown.
		for _, s := range standbys {
			execOn(context.Background(), t, s, "SELECT pg_wal_replay_resume()")
		}
	})

	// Every gateway serves the read-only port; ask the first one that is
	// not the primary's, and the primary's own.
	gateways := []*agentProc{standbys[0], primary}
	// roSession opens one session through gw's read-only port and returns
	// the node it landed on and whether that server is in recovery.
	roSession := func(gw *agentProc) (*agentProc, bool, error) {
		cctx, ccancel := context.WithTimeout(ctx, 20*time.Second)
		defer ccancel()
		dsn := fmt.Sprintf("host=%s port=5434 user=reader password='%s' dbname=postgres sslmode=disable connect_timeout=10",
			gw.addr, password)
		conn, err := pgx.Connect(cctx, dsn)
		if err != nil {
			return nil, false, err
		}
		defer conn.Close(context.Background())
		var inRecovery bool
		var addr string
		if err := conn.QueryRow(cctx, "SELECT pg_is_in_recovery(), host(inet_server_addr())").Scan(&inRecovery, &addr); err != nil {
			return nil, false, err
		}
		p := byAddr[addr]
		if p == nil {
			return nil, false, fmt.Errorf("session landed on %s, which is no node of the cluster", addr)
		}
		return p, inRecovery, nil
	}
	// landings opens k sessions through each gateway and counts where they
	// land.
	landings := func(k int) (map[*agentProc]int, error) {
		got := map[*agentProc]int{}
		for _, gw := range gateways {
			for i := 0; i < k; i++ {
				p, inRecovery, err := roSession(gw)
				if err != nil {
					t.Logf("read-only session through %s: %v", gw.name, err)
					return nil, err
				}
				if inRecovery != (p != primary) {
					return nil, fmt.Errorf("session on %s: pg_is_in_recovery() = %t", p.name, inRecovery)
				}
				got[p]++
			}
		}
		return got, nil
	}
	describe := func(m map[*agentProc]int) string {
		var parts []string
		for _, p := range nodes {
			parts = append(parts, fmt.Sprintf("%s=%d", p.name, m[p]))
		}
		return strings.Join(parts, " ")
	}

	// 1. Both standbys qualify: sessions land on standbys only, on both.
	var last map[*agentProc]int
	var lastErr error
	waitFor(t, 2*time.Minute, "read-only sessions spread over both standbys", func() bool {
		last, lastErr = landings(4)
		return lastErr == nil && last[primary] == 0 && last[standbys[0]] > 0 && last[standbys[1]] > 0
	})
	t.Logf("both standbys streaming: %s", describe(last))

	// 2. Pause replay on one standby and write a few MB on the primary: it
	// falls more than 1MB behind and drops out.
	lagging, other := standbys[0], standbys[1]
	if err := execOn(ctx, t, lagging, "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatalf("pausing replay on %s: %v", lagging.name, err)
	}
	if err := execOn(ctx, t, primary, "CREATE TABLE ro_lag AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 40000) g"); err != nil {
		t.Fatalf("writing on the primary: %v", err)
	}
	lagBytes := func() int64 {
		v, err := queryOn[int64](t, primary, "SELECT coalesce((SELECT (pg_current_wal_flush_lsn() - replay_lsn)::bigint FROM pg_stat_replication WHERE application_name = $1), -1)", lagging.name)
		if err != nil {
			return -1
		}
		return v
	}
	waitFor(t, 2*time.Minute, "sessions to avoid the lagging standby", func() bool {
		last, lastErr = landings(3)
		return lastErr == nil && last[lagging] == 0 && last[primary] == 0 && last[other] > 0
	})
	t.Logf("%s paused %d bytes behind: %s", lagging.name, lagBytes(), describe(last))
	// And it stays out while it lags.
	for round := 0; round < 3; round++ {
		got, err := landings(3)
		if err != nil {
			t.Fatalf("read-only sessions while %s lags: %v", lagging.name, err)
		}
		if got[lagging] > 0 || got[primary] > 0 {
			t.Fatalf("read-only sessions while %s lags %d bytes: %s; want all on %s", lagging.name, lagBytes(), describe(got), other.name)
		}
	}

	// 3. Pause the other one too: no standby qualifies once the primary
	// writes past it, and sessions go to the primary.
	if err := execOn(ctx, t, other, "SELECT pg_wal_replay_pause()"); err != nil {
		t.Fatalf("pausing replay on %s: %v", other.name, err)
	}
	if err := execOn(ctx, t, primary, "INSERT INTO ro_lag SELECT g, repeat('y', 200) FROM generate_series(1, 40000) g"); err != nil {
		t.Fatalf("writing on the primary: %v", err)
	}
	waitFor(t, 2*time.Minute, "sessions to fall back to the primary", func() bool {
		last, lastErr = landings(2)
		return lastErr == nil && last[primary] == 2*len(gateways)
	})
	t.Logf("both standbys paused: %s", describe(last))

	// 4. Resume both: they catch up and qualify again.
	for _, s := range standbys {
		if err := execOn(ctx, t, s, "SELECT pg_wal_replay_resume()"); err != nil {
			t.Fatalf("resuming replay on %s: %v", s.name, err)
		}
	}
	// A caught-up standby reports its replay position with its next
	// status message; a small write makes that immediate.
	waitFor(t, 2*time.Minute, "both standbys back in rotation", func() bool {
		execOn(ctx, t, primary, "INSERT INTO ro_lag VALUES (0, 'nudge')")
		last, lastErr = landings(4)
		return lastErr == nil && last[primary] == 0 && last[standbys[0]] > 0 && last[standbys[1]] > 0
	})
	t.Logf("both resumed: %s", describe(last))
	if lastErr != nil {
		t.Logf("last error: %v", lastErr)
	}
}
