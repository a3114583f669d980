package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgbattery/pgbattery/agent/fsm"
	"github.com/pgbattery/pgbattery/pgctl"
	"github.com/pgbattery/pgbattery/test/testutil"
)

func TestSwitchoverTimeoutExceedsDrain(t *testing.T) {
	for _, drain := range []time.Duration{0, time.Second, 5 * time.Second, 15 * time.Second, time.Minute} {
		if got := switchoverTimeout(drain); got < drain+switchoverStepDownMargin || got < defaultSwitchoverTimeout {
			t.Errorf("switchoverTimeout(%s) = %s", drain, got)
		}
	}
}

// TestDrainTransactions runs the switchover drain against a real
// PostgreSQL: it waits for a transaction in progress to commit, and gives
// up after its timeout on one that does not end.
func TestDrainTransactions(t *testing.T) {
	t.Parallel()
	const bin = "/usr/lib/postgresql/15/bin"
	if _, err := os.Stat(filepath.Join(bin, "postgres")); err != nil {
		t.Skipf("PostgreSQL 15 binaries not found at %s", bin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bins, err := pgctl.FindBinaries(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := pgctl.NewInstance(pgctl.Config{
		NodeName:    "drain",
		Binaries:    bins,
		Dir:         testutil.TempDir(t),
		ListenAddr:  testutil.Addr(t),
		Port:        5433,
		Parameters:  map[string]string{"fsync": "off", "shared_buffers": "16MB"},
		Superuser:   pgctl.Credentials{User: "postgres", Password: "drain-test-secret"},
		Replication: pgctl.Credentials{Password: "drain-test-replication"},
		Logger:      hclog.NewNullLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := inst.InitDB(ctx, pgctl.InitDBOptions{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := inst.Start(ctx, pgctl.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		inst.Stop(sctx, pgctl.StopImmediate)
	})

	// Nothing running: the drain ends after its settle time.
	if left, _, err := drainTransactions(ctx, inst.WithConn, 5*time.Second); err != nil || left != 0 {
		t.Fatalf("idle server: %d transactions, %v", left, err)
	}

	client, err := inst.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close(context.Background())
	if _, err := client.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Exec(ctx, "CREATE TABLE drained (x int)"); err != nil {
		t.Fatal(err)
	}
	committed := make(chan error, 1)
	go func() {
		time.Sleep(700 * time.Millisecond)
		_, err := client.Exec(ctx, "COMMIT")
		committed <- err
	}()
	start := time.Now()
	left, _, err := drainTransactions(ctx, inst.WithConn, 20*time.Second)
	took := time.Since(start)
	if err != nil || left != 0 || took < 500*time.Millisecond {
		t.Fatalf("drain with a transaction that commits: %d left after %s, %v", left, took, err)
	}
	if err := <-committed; err != nil {
		t.Fatal(err)
	}

	// A transaction that stays open: the drain gives up at its timeout.
	if _, err := client.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Exec(ctx, "INSERT INTO drained VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Exec(ctx, "SET application_name = 'left_open'"); err != nil {
		t.Fatal(err)
	}
	left, who, err := drainTransactions(ctx, inst.WithConn, 500*time.Millisecond)
	if err != nil || left != 1 {
		t.Fatalf("drain with a transaction left open: %d left, %v", left, err)
	}
	// The log names it, so an operator can find who held the switchover.
	if !strings.Contains(who, "left_open") || !strings.Contains(who, "idle in transaction") {
		t.Fatalf("drain's description of what it left running: %q", who)
	}
}

func TestSwitchoverPendingDrains(t *testing.T) {
	st := &fsm.State{Primary: "a", Epoch: 4}
	if switchoverPending(st) {
		t.Fatal("draining with nothing pending")
	}
	st.Pending = &fsm.Operation{Kind: fsm.OpSwitchover, Epoch: 4}
	if !switchoverPending(st) {
		t.Fatal("not draining for a pending switchover")
	}
	st.Pending = &fsm.Operation{Kind: fsm.OpFailover, Epoch: 4, Target: "b"}
	if switchoverPending(st) {
		t.Fatal("draining for a manual failover")
	}
	st.Pending = &fsm.Operation{Kind: fsm.OpSwitchover, Epoch: 3}
	if switchoverPending(st) {
		t.Fatal("draining for an old epoch's switchover")
	}
}
