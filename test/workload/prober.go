package workload

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgbattery/pgbattery/test/checker"
)

// ProberConfig configures StartProber.
type ProberConfig struct {
	// Nodes maps each node's name to a DSN of its PostgreSQL, direct (not
	// through a gateway). The role must be able to create and insert into
	// Table.
	Nodes map[string]string
	// Interval is the time between the starts of two probes of one node.
	// Default 20ms, at most MaxProbeInterval. A probe that takes longer
	// delays the next one of that node only.
	Interval time.Duration
	// ProbeTimeout bounds one probe (one round trip, plus a ROLLBACK if
	// needed) and one connection attempt. A node that doesn't answer in
	// time is sampled unreachable, never writable. Default 200ms, at most
	// MaxProbeTimeout. Keep it below the cluster's lease: the split-brain
	// checker's reasoning needs that (see checker.CheckSplitBrain).
	ProbeTimeout time.Duration
	// Table is the probe table (created where missing, written only in
	// rolled-back transactions). Default "pgbattery_probe".
	Table string
	// MaxSamples caps the samples kept per node; later probes still run
	// but are counted in Dropped only. Default 200000 (over an hour at
	// 20ms).
	MaxSamples int
	Clock      *checker.Clock
	Logger     hclog.Logger
}

// Bounds on the prober's timing, per issue 8: every node is probed at least
// every 50 ms while it answers.
const (
	MaxProbeInterval = 50 * time.Millisecond
	MaxProbeTimeout  = 2 * time.Second
)

// Prober probes every node's writability until stopped.
type Prober struct {
	cfg    ProberConfig
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	samples map[string][]checker.ProbeSample
	dropped int
}

// StartProber validates cfg and starts one probing goroutine per node. Stop
// it with Stop; cancelling ctx stops the probing too (Stop must still be
// called to collect the samples).
func StartProber(ctx context.Context, cfg ProberConfig) (*Prober, error) {
	if len(cfg.Nodes) == 0 {
		return nil, errors.New("prober config: no nodes")
	}
	if cfg.Interval == 0 {
		cfg.Interval = 20 * time.Millisecond
	}
	if cfg.Interval < 0 || cfg.Interval > MaxProbeInterval {
		return nil, fmt.Errorf("prober config: interval %v must be in (0, %v]", cfg.Interval, MaxProbeInterval)
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = 200 * time.Millisecond
	}
	if cfg.ProbeTimeout < 0 || cfg.ProbeTimeout > MaxProbeTimeout {
		return nil, fmt.Errorf("prober config: probe timeout %v must be in (0, %v]", cfg.ProbeTimeout, MaxProbeTimeout)
	}
	if cfg.Table == "" {
		cfg.Table = "pgbattery_probe"
	}
	if !identRE.MatchString(cfg.Table) {
		return nil, fmt.Errorf("prober config: table name %q must match %s", cfg.Table, identRE)
	}
	if cfg.MaxSamples <= 0 {
		cfg.MaxSamples = 200000
	}
	if cfg.Clock == nil {
		cfg.Clock = checker.NewClock()
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	conns := map[string]*pgx.ConnConfig{}
	for name, dsn := range cfg.Nodes {
		if name == "" {
			return nil, errors.New("prober config: a node has an empty name")
		}
		cc, err := pgx.ParseConfig(dsn)
		if err != nil {
			return nil, fmt.Errorf("prober config: cannot parse the DSN of node %q", name)
		}
		cc.ConnectTimeout = cfg.ProbeTimeout
		// One round trip per probe: no prepared statements.
		cc.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
		conns[name] = cc
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &Prober{cfg: cfg, cancel: cancel, samples: map[string][]checker.ProbeSample{}}
	for name, cc := range conns {
		np := &nodeProber{p: p, name: name, connCfg: cc, log: cfg.Logger.With("node", name)}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			np.run(ctx)
		}()
	}
	return p, nil
}

// Stop ends probing, waits for the probing goroutines, and returns every
// sample, ordered by start time.
func (p *Prober) Stop() []checker.ProbeSample {
	p.cancel()
	p.wg.Wait()
	return p.Samples()
}

// Samples returns the samples so far, ordered by start time.
func (p *Prober) Samples() []checker.ProbeSample {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []checker.ProbeSample
	for _, ss := range p.samples {
		out = append(out, ss...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out
}

// Dropped is the number of samples not kept because of MaxSamples.
func (p *Prober) Dropped() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

func (p *Prober) record(s checker.ProbeSample) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.samples[s.Node]) >= p.cfg.MaxSamples {
		p.dropped++
		return
	}
	p.samples[s.Node] = append(p.samples[s.Node], s)
}

type nodeProber struct {
	p       *Prober
	name    string
	connCfg *pgx.ConnConfig
	conn    *pgx.Conn
	log     hclog.Logger
}

func (np *nodeProber) run(ctx context.Context) {
	defer np.closeConn()
	interval := np.p.cfg.Interval
	next := time.Now()
	for {
		if ctx.Err() != nil {
			return
		}
		s := np.probe(ctx)
		if ctx.Err() != nil {
			// Stopping cut the probe short; it proves nothing.
			return
		}
		np.p.record(s)
		next = next.Add(interval)
		if now := time.Now(); next.Before(now) {
			next = now // fell behind (a slow node): probe again at once
		}
		t := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (np *nodeProber) closeConn() {
	if np.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), np.p.cfg.ProbeTimeout)
		np.conn.Close(ctx)
		cancel()
		np.conn = nil
	}
}

// probe takes one sample. The whole check is one simple-protocol round
// trip, so the instant the node accepted the write lies within the sample's
// [Start, End]:
//
//	BEGIN;
//	SELECT pg_is_in_recovery(), current_setting('transaction_read_only');
//	INSERT INTO probe_table DEFAULT VALUES;
//	ROLLBACK
func (np *nodeProber) probe(ctx context.Context) checker.ProbeSample {
	clock := np.p.cfg.Clock
	timeout := np.p.cfg.ProbeTimeout
	s := checker.ProbeSample{Node: np.name, Start: clock.Now()}
	unreachable := func(err error) checker.ProbeSample {
		s.End = clock.Now()
		s.State = checker.ProbeUnreachable
		s.Error, s.SQLState = err.Error(), checker.ErrorCode(err)
		np.closeConn()
		return s
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if np.conn == nil || np.conn.IsClosed() {
		np.closeConn()
		conn, err := pgx.ConnectConfig(pctx, np.connCfg)
		if err != nil {
			return unreachable(err)
		}
		np.conn = conn
		// A fresh connection gets a fresh timeout for the probe itself,
		// and the sample starts now: the connecting proves nothing.
		cancel()
		pctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
		s.Start = clock.Now()
	}
	table := pgx.Identifier{np.p.cfg.Table}.Sanitize()
	results, err := np.conn.PgConn().Exec(pctx,
		"BEGIN; SELECT pg_is_in_recovery()::text, current_setting('transaction_read_only'); INSERT INTO "+table+" DEFAULT VALUES; ROLLBACK").ReadAll()
	s.End = clock.Now()
	if len(results) >= 2 && results[1].Err == nil && len(results[1].Rows) == 1 && len(results[1].Rows[0]) == 2 {
		s.InRecovery = string(results[1].Rows[0][0]) == "true"
		s.ReadOnly = string(results[1].Rows[0][1]) == "on"
	}
	if err == nil {
		if s.InRecovery || s.ReadOnly {
			// Can't happen: the INSERT succeeded. Don't trust the sample.
			s.State = checker.ProbeNotWritable
			s.Error = "write accepted although the node reports itself read-only"
			return s
		}
		s.State = checker.ProbeWritable
		return s
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.SeverityUnlocalized == "FATAL" || pgErr.SeverityUnlocalized == "PANIC" || np.conn.IsClosed() {
		return unreachable(err)
	}
	// The node answered and refused: read-only transaction (25006) or
	// recovery; or the probe table is missing (42P01).
	s.State = checker.ProbeNotWritable
	s.Error, s.SQLState = pgErr.Error(), pgErr.Code
	np.rollback(pctx)
	if pgErr.Code == "42P01" && !s.InRecovery && !s.ReadOnly {
		np.createTable(pctx, table)
	}
	return s
}

// rollback ends the failed probe transaction, or drops the connection.
func (np *nodeProber) rollback(ctx context.Context) {
	if np.conn == nil || np.conn.IsClosed() || np.conn.PgConn().TxStatus() == 'I' {
		return
	}
	if _, err := np.conn.PgConn().Exec(ctx, "ROLLBACK").ReadAll(); err != nil {
		np.closeConn()
	}
}

// createTable creates the probe table on a node that says it is writable
// but lacks it (a fresh cluster). The next probe then tests a real write;
// this one stays "not writable", which is the safe side.
func (np *nodeProber) createTable(ctx context.Context, table string) {
	if _, err := np.conn.PgConn().Exec(ctx, "CREATE TABLE IF NOT EXISTS "+table+" (at timestamptz DEFAULT clock_timestamp())").ReadAll(); err != nil {
		np.log.Debug("creating the probe table", "error", err)
		np.rollback(ctx)
	}
}
