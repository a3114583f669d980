// Package workload runs pgbattery's fault-injection workloads against a
// PostgreSQL-protocol address (a gateway, or PostgreSQL itself) and records
// histories for the checkers in test/checker:
//
//   - RunRegister: read / write / compare-and-set on a few keys, checked
//     for linearizability.
//   - RunBank: transfers between accounts and snapshot reads of the total.
//   - RunAppend: inserts of unique ids, read back at the end.
//   - StartProber: probes every node's PostgreSQL directly for
//     writability, for the split-brain checker.
//   - StartWriteGap: one client writing every 10 ms, for failover write-gap
//     measurements.
//
// Every workload runs for a bounded time and a bounded number of operations
// and stops early when its context is cancelled. Each client holds one
// connection; when the connection is lost it reconnects, and the operation
// that was in flight is recorded with the outcome its error allows
// (checker.Classify).
package workload

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/test/checker"
)

// Config is what the client workloads (register, bank, append) share.
type Config struct {
	// DSN is where clients connect: a libpq keyword/value string or URL.
	DSN string
	// Clients is the number of concurrent clients, one connection each.
	// Default 4, at most MaxClients.
	Clients int
	// Duration bounds how long clients issue operations. Required, at most
	// MaxDuration.
	Duration time.Duration
	// MaxOps bounds the operations of all clients together. Default 20000.
	MaxOps int
	// OpTimeout bounds one operation (all its statements). Default 10s: an
	// operation may be held by the gateway while no primary is writable.
	OpTimeout time.Duration
	// ConnectTimeout bounds one connection attempt. Default 2s.
	ConnectTimeout time.Duration
	// SetupTimeout bounds creating and resetting the workload's table,
	// retried until it succeeds. Default 30s.
	SetupTimeout time.Duration
	// FinalTimeout bounds the final read that some workloads do after their
	// clients stop, retried until it succeeds. Default 30s.
	FinalTimeout time.Duration
	// Table is the table the workload owns (created if missing, reset at
	// setup). Default per workload.
	Table string
	// Seed makes the operation mix reproducible (timing is not).
	Seed uint64
	// Clock stamps every operation. Share it with the harness that records
	// fault times. Default: a new clock.
	Clock *checker.Clock
	// ExecMode is pgx's query exec mode. Zero keeps pgx's default (cached
	// prepared statements, which exercises the gateway's replay of named
	// prepared statements after a move).
	ExecMode pgx.QueryExecMode
	Logger   hclog.Logger
}

// Limits on configuration, so a typo can't start an unbounded run.
const (
	MaxClients  = 256
	MaxDuration = 24 * time.Hour
	MaxOpsLimit = 10_000_000
)

var identRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func (c *Config) fill(defaultTable string) error {
	if c.DSN == "" {
		return errors.New("workload config: DSN is empty")
	}
	if c.Duration <= 0 || c.Duration > MaxDuration {
		return fmt.Errorf("workload config: duration %v must be in (0, %v]", c.Duration, MaxDuration)
	}
	if c.Clients == 0 {
		c.Clients = 4
	}
	if c.Clients < 0 || c.Clients > MaxClients {
		return fmt.Errorf("workload config: %d clients, want 1..%d", c.Clients, MaxClients)
	}
	if c.MaxOps == 0 {
		c.MaxOps = 20000
	}
	if c.MaxOps < 0 || c.MaxOps > MaxOpsLimit {
		return fmt.Errorf("workload config: max ops %d, want 1..%d", c.MaxOps, MaxOpsLimit)
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 10 * time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 2 * time.Second
	}
	if c.SetupTimeout <= 0 {
		c.SetupTimeout = 30 * time.Second
	}
	if c.FinalTimeout <= 0 {
		c.FinalTimeout = 30 * time.Second
	}
	if c.Table == "" {
		c.Table = defaultTable
	}
	if !identRE.MatchString(c.Table) {
		return fmt.Errorf("workload config: table name %q must match %s", c.Table, identRE)
	}
	if c.Clock == nil {
		c.Clock = checker.NewClock()
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	_, err := c.connConfig()
	return err
}

func (c *Config) connConfig() (*pgx.ConnConfig, error) {
	cc, err := pgx.ParseConfig(c.DSN)
	if err != nil {
		// The DSN may carry a password; don't echo it.
		return nil, errors.New("workload config: cannot parse DSN")
	}
	cc.ConnectTimeout = c.ConnectTimeout
	if c.ExecMode != 0 {
		cc.DefaultQueryExecMode = c.ExecMode
	}
	return cc, nil
}

// session is one client's connection, re-opened when lost.
type session struct {
	cfg     *pgx.ConnConfig
	timeout time.Duration
	conn    *pgx.Conn
	log     hclog.Logger
}

// get returns an open connection, connecting if there is none.
func (s *session) get(ctx context.Context) (*pgx.Conn, error) {
	if s.conn != nil && !s.conn.IsClosed() {
		return s.conn, nil
	}
	s.drop()
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(cctx, s.cfg)
	if err != nil {
		return nil, err
	}
	s.conn = conn
	return conn, nil
}

// settle brings the connection back to idle after an operation that may
// have left a transaction open, or drops it if it can't: the next operation
// then starts on a fresh connection.
func (s *session) settle(ctx context.Context) {
	if s.conn == nil {
		return
	}
	if s.conn.IsClosed() {
		s.drop()
		return
	}
	if s.conn.PgConn().TxStatus() == 'I' {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if _, err := s.conn.Exec(rctx, "ROLLBACK"); err != nil || s.conn.PgConn().TxStatus() != 'I' {
		s.log.Debug("dropping connection that did not return to idle", "error", err)
		s.drop()
	}
}

func (s *session) drop() {
	if s.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	s.conn.Close(ctx)
	s.conn = nil
}

// budget hands out the bounded number of operations.
type budget struct{ left atomic.Int64 }

func newBudget(n int) *budget {
	b := &budget{}
	b.left.Store(int64(n))
	return b
}

func (b *budget) take() bool { return b.left.Add(-1) >= 0 }

// clientFunc runs one client's operations until stop is done or the budget
// runs out; it returns what it recorded. Operations run under ctx (each
// bounded by OpTimeout), so the one in flight when the run's time is up
// still completes and gets its true outcome.
type clientFunc[T any] func(stop, ctx context.Context, id int, s *session, rng *rand.Rand, b *budget) []T

// runClients runs cfg.Clients clients for cfg.Duration and gathers their
// histories. It returns when all clients have stopped.
func runClients[T any](ctx context.Context, cfg *Config, fn clientFunc[T]) ([]T, error) {
	cc, err := cfg.connConfig()
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	b := newBudget(cfg.MaxOps)
	results := make([][]T, cfg.Clients)
	var wg sync.WaitGroup
	for i := 0; i < cfg.Clients; i++ {
		wg.Add(1)
		go func(id int) {
			defer wg.Done()
			s := &session{cfg: cc.Copy(), timeout: cfg.ConnectTimeout, log: cfg.Logger.With("client", id)}
			defer s.drop()
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(id)+1))
			results[id] = fn(runCtx, ctx, id, s, rng, b)
		}(i)
	}
	wg.Wait()
	var out []T
	for _, r := range results {
		out = append(out, r...)
	}
	return out, nil
}

// backoff pauses after a failed connection attempt so that an outage does
// not spin; bounded by ctx.
func backoff(ctx context.Context, rng *rand.Rand) {
	d := 10*time.Millisecond + time.Duration(rng.Int64N(int64(20*time.Millisecond)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// retry runs fn until it succeeds or timeout passes, pausing between
// attempts; for setup and final reads, which must happen once.
func retry(ctx context.Context, timeout time.Duration, what string, log hclog.Logger, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for attempt := 1; ; attempt++ {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		last = err
		log.Debug("retrying", "what", what, "attempt", attempt, "error", err)
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: gave up after %d attempts: %w", what, attempt, last)
		case <-t.C:
		}
	}
}

// withConn connects once for fn (setup, final reads).
func withConn(ctx context.Context, cfg *Config, fn func(ctx context.Context, conn *pgx.Conn) error) error {
	cc, err := cfg.connConfig()
	if err != nil {
		return err
	}
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		conn.Close(cctx)
	}()
	return fn(ctx, conn)
}

// setupTable creates the workload's table if missing and resets it, retried
// within cfg.SetupTimeout.
func setupTable(ctx context.Context, cfg *Config, statements ...string) error {
	return retry(ctx, cfg.SetupTimeout, "setting up table "+cfg.Table, cfg.Logger, func(ctx context.Context) error {
		return withConn(ctx, cfg, func(ctx context.Context, conn *pgx.Conn) error {
			tx, err := conn.Begin(ctx)
			if err != nil {
				return err
			}
			defer tx.Rollback(ctx)
			for _, stmt := range statements {
				if _, err := tx.Exec(ctx, stmt); err != nil {
					return fmt.Errorf("running %q: %w", stmt, err)
				}
			}
			return tx.Commit(ctx)
		})
	})
}

// opCtx bounds one operation.
func opCtx(ctx context.Context, cfg *Config) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, cfg.OpTimeout)
}

// begin opens a client's operation: it takes one from the budget, and
// connects. It reports false when the client should stop; a failed
// connection attempt is returned as err (the operation then certainly did
// nothing).
func begin(stop, ctx context.Context, s *session, b *budget) (conn *pgx.Conn, more bool, err error) {
	if stop.Err() != nil || !b.take() {
		return nil, false, nil
	}
	conn, err = s.get(ctx)
	return conn, true, err
}
