package workload

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/test/checker"
)

// WriteGapConfig configures StartWriteGap.
type WriteGapConfig struct {
	// DSN is where the probe client connects (a gateway).
	DSN string
	// Interval between the starts of two writes. Default 10ms, at most 1s.
	Interval time.Duration
	// OpTimeout bounds one write; a gateway may hold it while no primary is
	// writable, which is part of the gap. Default 10s.
	OpTimeout time.Duration
	// ConnectTimeout bounds one connection attempt. Default 2s.
	ConnectTimeout time.Duration
	// SetupTimeout bounds creating the table. Default 30s.
	SetupTimeout time.Duration
	// Table is the table written to. Default "pgbattery_writegap".
	Table string
	// MaxOps caps the recorded writes. Default 1000000 (over 2 hours at
	// 10ms).
	MaxOps int
	Clock  *checker.Clock
	Logger hclog.Logger
}

// WriteGapProbe is one client writing at a steady pace through a gateway.
type WriteGapProbe struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu  sync.Mutex
	ops []checker.Op
}

// StartWriteGap creates the probe's table (within SetupTimeout) and starts
// writing: one autocommit INSERT every Interval on one connection, each
// recorded with its invoke and completion times and outcome. On a lost
// connection it reconnects. Stop it with Stop and judge the history with
// checker.CheckWriteGap.
func StartWriteGap(ctx context.Context, cfg WriteGapConfig) (*WriteGapProbe, error) {
	if cfg.Interval == 0 {
		cfg.Interval = 10 * time.Millisecond
	}
	if cfg.Interval < 0 || cfg.Interval > time.Second {
		return nil, fmt.Errorf("write-gap config: interval %v must be in (0, 1s]", cfg.Interval)
	}
	if cfg.MaxOps <= 0 {
		cfg.MaxOps = 1_000_000
	}
	if cfg.MaxOps > MaxOpsLimit {
		return nil, fmt.Errorf("write-gap config: max ops %d above %d", cfg.MaxOps, MaxOpsLimit)
	}
	wc := Config{
		DSN:            cfg.DSN,
		Clients:        1,
		Duration:       MaxDuration,
		MaxOps:         cfg.MaxOps,
		OpTimeout:      cfg.OpTimeout,
		ConnectTimeout: cfg.ConnectTimeout,
		SetupTimeout:   cfg.SetupTimeout,
		Table:          cfg.Table,
		Clock:          cfg.Clock,
		Logger:         cfg.Logger,
	}
	if err := wc.fill("pgbattery_writegap"); err != nil {
		return nil, err
	}
	cc, err := wc.connConfig()
	if err != nil {
		return nil, err
	}
	t := pgx.Identifier{wc.Table}.Sanitize()
	if err := setupTable(ctx, &wc, fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (seq bigint NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())", t)); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &WriteGapProbe{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.run(ctx, &wc, cc, cfg.Interval, "INSERT INTO "+t+" (seq) VALUES ($1)")
	}()
	return w, nil
}

// Stop ends the probe, waits for it and returns its history.
func (w *WriteGapProbe) Stop() []checker.Op {
	w.cancel()
	<-w.done
	return w.History()
}

// History returns the writes recorded so far.
func (w *WriteGapProbe) History() []checker.Op {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]checker.Op(nil), w.ops...)
}

func (w *WriteGapProbe) run(ctx context.Context, cfg *Config, cc *pgx.ConnConfig, interval time.Duration, insert string) {
	s := &session{cfg: cc, timeout: cfg.ConnectTimeout, log: cfg.Logger}
	defer s.drop()
	clock := cfg.Clock
	next := time.Now()
	for seq := int64(1); seq <= int64(cfg.MaxOps); seq++ {
		op := checker.Op{Client: 0, Kind: checker.GapWrite, Invoke: clock.Now()}
		conn, err := s.get(ctx)
		if err == nil {
			octx, cancel := opCtx(ctx, cfg)
			_, err = conn.Exec(octx, insert, seq)
			cancel()
			op.Finish(clock.Now(), err, checker.StageCommit)
			s.settle(ctx)
		} else {
			op.Finish(clock.Now(), err, checker.StageRead)
		}
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// Stopped in the middle: not part of the measurement.
			return
		}
		w.mu.Lock()
		w.ops = append(w.ops, op)
		w.mu.Unlock()

		next = next.Add(interval)
		if now := time.Now(); next.Before(now) {
			next = now
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
