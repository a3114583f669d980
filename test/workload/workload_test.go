package workload

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/test/checker"
	"github.com/pgbattery/pgbattery/test/testutil"
)

// The workloads against one healthy PostgreSQL: a single node is trivially
// linearizable and loses nothing, so every checker must accept. This proves
// the workload + checker plumbing end to end; the fault subtests then
// tamper with the data behind the workloads' backs and the checkers must
// notice.
func TestWorkloadsAgainstPostgres(t *testing.T) {
	pg := startPostgres(t, "n1")
	ctx := context.Background()

	t.Run("register", func(t *testing.T) {
		cfg := RegisterConfig{Config: testConfig(t, pg.dsn, 2*time.Second)}
		ops, err := RunRegister(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		r := checker.CheckRegister(ops, checker.RegisterOptions{Initial: RegisterInitial})
		requireOK(t, r)
		kinds := map[string]int{}
		swapped := 0
		for _, op := range ops {
			if op.Outcome == checker.OutcomeOK {
				kinds[op.Kind]++
				if op.Kind == checker.RegisterCAS && op.Found {
					swapped++
				}
			}
		}
		if kinds[checker.RegisterRead] == 0 || kinds[checker.RegisterWrite] == 0 || kinds[checker.RegisterCAS] == 0 || swapped == 0 {
			t.Fatalf("workload did not exercise every operation: %v, %d cas swapped", kinds, swapped)
		}
	})

	t.Run("bank", func(t *testing.T) {
		cfg := BankConfig{Config: testConfig(t, pg.dsn, 2*time.Second)}
		ops, opts, err := RunBank(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		r := checker.CheckBank(ops, opts)
		requireOK(t, r)
		if r.Stats.Values["reads_checked"] < 2 || r.Stats.Values["transfers_ok"] == 0 {
			t.Fatalf("bank workload did too little: %v", r.Stats.Values)
		}
	})

	t.Run("append", func(t *testing.T) {
		cfg := AppendConfig{Config: testConfig(t, pg.dsn, 2*time.Second)}
		ops, final, err := RunAppend(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		r := checker.CheckAppend(ops, final)
		requireOK(t, r)
		if r.Stats.Values["acknowledged"] == 0 {
			t.Fatal("nothing was appended")
		}
	})

	t.Run("bounded op count", func(t *testing.T) {
		cfg := AppendConfig{Config: testConfig(t, pg.dsn, time.Minute)}
		cfg.Table = "bounded_append"
		cfg.MaxOps = 50
		started := time.Now()
		ops, final, err := RunAppend(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if len(ops) != 50 {
			t.Fatalf("ran %d operations, want exactly MaxOps=50", len(ops))
		}
		if time.Since(started) > 30*time.Second {
			t.Fatalf("MaxOps did not end the run early")
		}
		requireOK(t, checker.CheckAppend(ops, final))
	})

	t.Run("cancellation", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cfg := RegisterConfig{Config: testConfig(t, pg.dsn, time.Minute)}
		cfg.Table = "cancel_register"
		time.AfterFunc(500*time.Millisecond, cancel)
		started := time.Now()
		ops, err := RunRegister(cctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if time.Since(started) > 15*time.Second {
			t.Fatalf("cancelling the context did not stop the workload")
		}
		requireOK(t, checker.CheckRegister(ops, checker.RegisterOptions{Initial: RegisterInitial}))
	})

	t.Run("append detects a lost, a duplicated and a phantom row", func(t *testing.T) {
		cfg := AppendConfig{Config: testConfig(t, pg.dsn, 2*time.Second)}
		cfg.Table = "tampered_append"
		var deleted, duplicated int64
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			if !pg.waitForRows(t, 20*time.Second, "SELECT count(*) FROM tampered_append WHERE client = 1 AND id > 1000000010") ||
				!pg.waitForRows(t, 20*time.Second, "SELECT count(*) FROM tampered_append WHERE client = 0 AND id > 10") {
				return
			}
			time.Sleep(200 * time.Millisecond)
			// The oldest row of client 0 was acknowledged long ago.
			deleted = pg.queryInt(t, "DELETE FROM tampered_append WHERE id = (SELECT min(id) FROM tampered_append WHERE client = 0) RETURNING id")
			duplicated = pg.queryInt(t, "INSERT INTO tampered_append (id, client) SELECT id, client FROM tampered_append WHERE id = (SELECT min(id) FROM tampered_append WHERE client = 1) RETURNING id")
			pg.exec(t, "INSERT INTO tampered_append (id, client) VALUES (-5, 99)")
		}()
		ops, final, err := RunAppend(ctx, cfg)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		r := checker.CheckAppend(ops, final)
		requireProblem(t, r, fmt.Sprintf("lost acknowledged id %d ", deleted))
		requireProblem(t, r, fmt.Sprintf("id %d is present 2 times", duplicated))
		requireProblem(t, r, "id -5 is present but was never appended")
	})

	t.Run("register detects values nobody wrote", func(t *testing.T) {
		// One key, and a rogue write of a value no client writes, thirty
		// times: a read that sees it is not linearizable. After each, the
		// first read or write of the key is a read with probability 4/7,
		// so missing all thirty is ~(3/7)^30 ≈ 1e-11 (compare-and-sets
		// in between neither reveal nor mask it).
		cfg := RegisterConfig{Config: testConfig(t, pg.dsn, 3*time.Second), Keys: 1}
		cfg.Table = "tampered_register"
		var events []checker.Event
		var mu sync.Mutex
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Only once the clients run (setup resets the table).
			if !pg.waitForRows(t, 20*time.Second, "SELECT count(*) FROM tampered_register WHERE v <> 0") {
				return
			}
			for i := 0; i < 30; i++ {
				at := cfg.Clock.Now()
				pg.exec(t, "UPDATE tampered_register SET v = $1 WHERE k = 0", int64(-1-i))
				mu.Lock()
				events = append(events, checker.Event{Name: "rogue write", Details: fmt.Sprintf("v = %d", -1-i), Start: at, End: cfg.Clock.Now()})
				mu.Unlock()
				time.Sleep(50 * time.Millisecond)
			}
		}()
		ops, err := RunRegister(ctx, cfg)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		viz := filepath.Join(testutil.TempDir(t), "register.html")
		r := checker.CheckRegister(ops, checker.RegisterOptions{Initial: RegisterInitial, VisualizationPath: viz, Events: events})
		requireProblem(t, r, "not linearizable")
		html, err := os.ReadFile(viz)
		if err != nil {
			t.Fatalf("no visualization written: %v", err)
		}
		if !containsAll(string(html), "rogue write") {
			t.Fatalf("visualization lacks the fault annotations")
		}
	})

	t.Run("bank detects money created behind its back", func(t *testing.T) {
		cfg := BankConfig{Config: testConfig(t, pg.dsn, 2*time.Second)}
		cfg.Table = "tampered_bank"
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Only once transfers run (setup resets the table).
			if pg.waitForRows(t, 20*time.Second, "SELECT count(*) FROM tampered_bank WHERE balance <> 100") {
				pg.exec(t, "UPDATE tampered_bank SET balance = balance + 7 WHERE id = 0")
			}
		}()
		ops, opts, err := RunBank(ctx, cfg)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		r := checker.CheckBank(ops, opts)
		requireProblem(t, r, "final-read")
		requireProblem(t, r, "drift +7")
	})
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// queryInt runs a statement returning one bigint behind the workload's back.
func (pg *testPG) queryInt(t *testing.T, sql string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.dsn)
	if err != nil {
		t.Errorf("connecting to %s: %v", pg.name, err)
		return 0
	}
	defer conn.Close(ctx)
	var v int64
	if err := conn.QueryRow(ctx, sql).Scan(&v); err != nil {
		t.Errorf("running %q: %v", sql, err)
	}
	return v
}
