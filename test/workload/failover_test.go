package workload

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/pgctl"
	"github.com/pgbattery/pgbattery/test/checker"
)

// A failover to a node that lacks acknowledged writes, with real processes:
// clients connect with a two-host DSN (n1, then n2), n1 is killed with
// kill -9 mid-run, the clients reconnect to n2, which holds only the
// initial data. The register history must be non-linearizable (reads and
// compare-and-sets see values from before acknowledged writes) and the
// append log must have lost acknowledged ids. It also exercises the
// workloads' reconnect path: operations succeed after the kill.
func TestFailoverToStaleNodeIsCaught(t *testing.T) {
	n1 := startPostgres(t, "n1")
	n2 := startPostgres(t, "n2")
	ctx := context.Background()
	addr := func(pg *testPG) string { return pg.Config().ListenAddr }
	dsn := fmt.Sprintf("host=%s,%s port=%d,%d user=%s password=%s dbname=postgres connect_timeout=2",
		addr(n1), addr(n2), pgctl.DefaultPort, pgctl.DefaultPort, testSuper.User, testSuper.Password)

	// n2 gets the tables in their initial state only: a stale standby.
	const keys = 10
	n2.exec(t, "CREATE TABLE stale_register (k int PRIMARY KEY, v bigint NOT NULL)")
	n2.exec(t, fmt.Sprintf("INSERT INTO stale_register SELECT g, %d FROM generate_series(0, %d) g", RegisterInitial, keys-1))
	n2.exec(t, "CREATE TABLE stale_append (id bigint NOT NULL, client int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())")

	clock := checker.NewClock()
	regCfg := RegisterConfig{Config: testConfig(t, dsn, 3*time.Second), Keys: keys}
	regCfg.Table, regCfg.Clock, regCfg.Clients = "stale_register", clock, 3
	appCfg := AppendConfig{Config: testConfig(t, dsn, 3*time.Second)}
	appCfg.Table, appCfg.Clock, appCfg.Clients = "stale_append", clock, 2

	var (
		wg       sync.WaitGroup
		regOps   []checker.RegisterOp
		appOps   []checker.AppendOp
		appFinal checker.AppendFinal
		regErr   error
		appErr   error
	)
	wg.Add(2)
	go func() { defer wg.Done(); regOps, regErr = RunRegister(ctx, regCfg) }()
	go func() { defer wg.Done(); appOps, appFinal, appErr = RunAppend(ctx, appCfg) }()
	time.Sleep(1200 * time.Millisecond)
	n1.kill(t)
	failover := checker.Event{Name: "kill -9 n1", Details: "clients fall over to stale n2", Start: clock.Now()}
	wg.Wait()
	if regErr != nil || appErr != nil {
		t.Fatalf("workloads: register %v, append %v", regErr, appErr)
	}

	okAfter := 0
	for _, op := range regOps {
		if op.Invoke > failover.Start && op.Outcome == checker.OutcomeOK {
			okAfter++
		}
	}
	if okAfter == 0 {
		t.Fatalf("no register operation succeeded after the failover: the workload did not reconnect")
	}

	r := checker.CheckRegister(regOps, checker.RegisterOptions{Initial: RegisterInitial, Events: []checker.Event{failover}})
	requireProblem(t, r, "not linearizable")
	a := checker.CheckAppend(appOps, appFinal)
	requireProblem(t, a, "lost acknowledged id")
	if a.Stats.Values["lost"] < 10 {
		t.Fatalf("only %v acknowledged ids reported lost", a.Stats.Values["lost"])
	}
}
