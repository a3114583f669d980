package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/test/checker"
	"github.com/pgbattery/pgbattery/test/cluster"
	"github.com/pgbattery/pgbattery/test/workload"
)

// load is every workload of a round running at once: register, bank and
// append clients through the gateways, the write-gap probe through the
// gateways, and the writable-primary prober on every node's PostgreSQL.
type load struct {
	c      *cluster.Cluster
	cancel context.CancelFunc
	wg     sync.WaitGroup

	regCfg  workload.RegisterConfig
	bankCfg workload.BankConfig
	appCfg  workload.AppendConfig

	regOps  []checker.RegisterOp
	bankOps []checker.BankOp
	bankOpt checker.BankOptions
	appOps  []checker.AppendOp
	errs    []error
	mu      sync.Mutex

	prober *workload.Prober
	gap    gapProbe
}

// loadConfig returns a workload config on gateway DSN i.
func loadConfig(c *cluster.Cluster, i int, table string, seed uint64) workload.Config {
	return workload.Config{
		DSN:       c.RotatedGatewayDSN(i),
		Clients:   3,
		Duration:  time.Hour, // stopped by the round
		MaxOps:    1_000_000,
		OpTimeout: 10 * time.Second,
		Table:     table,
		Seed:      seed,
		Clock:     c.Clock,
		Logger:    hclog.NewNullLogger(),
	}
}

// startLoad starts every workload; it fails the round if one cannot set
// up (the cluster was settled and writable just before).
func startLoad(r *round) *load {
	c := r.c
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{c: c, cancel: cancel}
	seed := c.Rand.Uint64()

	nodes := map[string]string{}
	for _, n := range c.Nodes {
		dsn, err := n.PostgresDSN()
		if err != nil {
			r.t.Fatalf("prober DSN: %v", err)
		}
		nodes[n.Name] = dsn
	}
	var err error
	l.prober, err = workload.StartProber(ctx, workload.ProberConfig{
		Nodes:        nodes,
		Interval:     20 * time.Millisecond,
		ProbeTimeout: 300 * time.Millisecond,
		Table:        "chaos_probe",
		Clock:        c.Clock,
	})
	if err != nil {
		r.t.Fatalf("starting the prober: %v", err)
	}
	gp, err := workload.StartWriteGap(ctx, workload.WriteGapConfig{
		DSN:       c.RotatedGatewayDSN(r.round),
		Interval:  10 * time.Millisecond,
		OpTimeout: 10 * time.Second,
		Table:     "chaos_writegap",
		Clock:     c.Clock,
	})
	if err != nil {
		l.prober.Stop()
		r.t.Fatalf("starting the write-gap probe: %v", err)
	}
	l.gap = gapProbe{gp}

	l.regCfg = workload.RegisterConfig{Config: loadConfig(c, r.round+1, "chaos_register", seed), Keys: 8}
	l.bankCfg = workload.BankConfig{Config: loadConfig(c, r.round+2, "chaos_bank", seed+1)}
	l.appCfg = workload.AppendConfig{Config: loadConfig(c, r.round, "chaos_append", seed+2)}
	// Append clients use the simple protocol: the gateway's replay of
	// prepared statements is exercised by the other two.
	l.appCfg.ExecMode = pgx.QueryExecModeSimpleProtocol

	l.wg.Add(3)
	go func() {
		defer l.wg.Done()
		ops, err := workload.RunRegister(ctx, l.regCfg)
		l.mu.Lock()
		l.regOps = ops
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("register: %w", err))
		}
		l.mu.Unlock()
	}()
	go func() {
		defer l.wg.Done()
		ops, opt, err := workload.RunBank(ctx, l.bankCfg)
		l.mu.Lock()
		l.bankOps, l.bankOpt = ops, opt
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("bank: %w", err))
		}
		l.mu.Unlock()
	}()
	go func() {
		defer l.wg.Done()
		ops, _, err := workload.RunAppend(ctx, l.appCfg)
		l.mu.Lock()
		l.appOps = ops
		if err != nil {
			l.errs = append(l.errs, fmt.Errorf("append: %w", err))
		}
		l.mu.Unlock()
	}()
	r.t.Cleanup(l.stopNow)
	return l
}

func (l *load) stopNow() {
	if l.cancel == nil {
		return
	}
	l.cancel()
	l.wg.Wait()
	l.prober.Stop()
	l.gap.Stop()
	l.cancel = nil
}

// gapProbe is the write-gap probe with a question the round asks.
type gapProbe struct{ *workload.WriteGapProbe }

// AckedAfter reports whether the probe had a write acknowledged after at.
func (g gapProbe) AckedAfter(at time.Duration) bool {
	h := g.History()
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Outcome == checker.OutcomeOK && h[i].Complete > at {
			return true
		}
	}
	return false
}

// loadResult is what a round's load recorded, once stopped.
type loadResult struct {
	register []checker.RegisterOp
	bank     []checker.BankOp
	bankOpt  checker.BankOptions
	appends  []checker.AppendOp
	appFinal checker.AppendFinal
	samples  []checker.ProbeSample
	gapOps   []checker.Op
	errs     []error
}

// stop ends every workload and makes the final reads through the
// gateways (the workloads' own final reads end with the cancelled run).
func (l *load) stop() loadResult {
	l.cancel()
	l.wg.Wait()
	res := loadResult{samples: l.prober.Stop(), gapOps: l.gap.Stop()}
	l.cancel = nil
	res.register, res.appends, res.errs = l.regOps, l.appOps, l.errs
	res.bankOpt = l.bankOpt

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	final := l.appCfg.Config
	final.FinalTimeout = time.Minute
	res.appFinal = workload.ReadAppendLog(ctx, final)

	// The bank: drop the failed final read of the cancelled run and read
	// the balances again.
	for _, op := range l.bankOps {
		if op.Kind != checker.BankFinalRead {
			res.bank = append(res.bank, op)
		}
	}
	fr := checker.BankOp{Op: checker.Op{Client: 1000, Kind: checker.BankFinalRead, Invoke: l.c.Clock.Now()}}
	var err error
	for attempt := 0; attempt < 60; attempt++ {
		fr.Balances, err = readBalances(ctx, l.bankCfg.Config)
		if err == nil {
			break
		}
		time.Sleep(time.Second)
	}
	fr.Finish(l.c.Clock.Now(), err, checker.StageRead)
	res.bank = append(res.bank, fr)
	return res
}

func readBalances(ctx context.Context, cfg workload.Config) (map[int]int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, cfg.DSN)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, "SELECT id, balance FROM "+pgx.Identifier{cfg.Table}.Sanitize())
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	var id int
	var bal int64
	_, err = pgx.ForEachRow(rows, []any{&id, &bal}, func() error {
		out[id] = bal
		return nil
	})
	return out, err
}

// withGateway connects once through the gateways as the client role.
func withGateway(ctx context.Context, c *cluster.Cluster, fn func(exec func(sql string) error) error) error {
	conn, err := pgx.Connect(ctx, c.GatewayDSN())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return fn(func(sql string) error {
		_, err := conn.Exec(ctx, sql)
		return err
	})
}
