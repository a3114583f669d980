package workload

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/test/checker"
)

// RegisterConfig configures RunRegister.
type RegisterConfig struct {
	Config
	// Keys is the number of registers. Default 5, at most 10000.
	Keys int
	// TxnFraction is the share of operations run as small explicit
	// transactions (BEGIN; SELECT … FOR UPDATE; UPDATE; COMMIT) rather than
	// single autocommit statements. Default 0.3; negative means none.
	TxnFraction float64
}

// RegisterInitial is every key's value after setup.
const RegisterInitial = 0

// RunRegister resets the register table (Table, default
// "pgbattery_register": k int primary key, v bigint) to RegisterInitial for
// every key, then runs clients doing reads (40 %), writes (30 %) and
// compare-and-sets (30 %) on random keys until Duration passes, MaxOps
// operations were issued, or ctx is cancelled. Writes use values unique to
// the history; a compare-and-set expects the value its client last saw for
// the key. Check the history with checker.CheckRegister and
// checker.RegisterOptions{Initial: RegisterInitial}.
//
// The error is only for invalid configuration or a setup that could not be
// done within SetupTimeout; operations that fail are part of the history.
func RunRegister(ctx context.Context, cfg RegisterConfig) ([]checker.RegisterOp, error) {
	if err := cfg.fill("pgbattery_register"); err != nil {
		return nil, err
	}
	if cfg.Keys == 0 {
		cfg.Keys = 5
	}
	if cfg.Keys < 0 || cfg.Keys > 10000 {
		return nil, fmt.Errorf("register config: %d keys, want 1..10000", cfg.Keys)
	}
	if cfg.TxnFraction == 0 {
		cfg.TxnFraction = 0.3
	}
	t := pgx.Identifier{cfg.Table}.Sanitize()
	err := setupTable(ctx, &cfg.Config,
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (k int PRIMARY KEY, v bigint NOT NULL)", t),
		fmt.Sprintf("DELETE FROM %s", t),
		fmt.Sprintf("INSERT INTO %s (k, v) SELECT g, %d FROM generate_series(0, %d) g", t, RegisterInitial, cfg.Keys-1),
	)
	if err != nil {
		return nil, err
	}
	r := &registerClient{cfg: &cfg, table: t}
	return runClients(ctx, &cfg.Config, r.run)
}

type registerClient struct {
	cfg   *RegisterConfig
	table string
}

func (r *registerClient) run(stop, ctx context.Context, id int, s *session, rng *rand.Rand, b *budget) []checker.RegisterOp {
	var ops []checker.RegisterOp
	clock := r.cfg.Clock
	lastSeen := map[int]int64{}
	var seq int64
	for {
		op := checker.RegisterOp{Op: checker.Op{Client: id}, Key: rng.IntN(r.cfg.Keys)}
		switch p := rng.Float64(); {
		case p < 0.4:
			op.Kind = checker.RegisterRead
		case p < 0.7:
			op.Kind = checker.RegisterWrite
			seq++
			op.Value = int64(id+1)*1_000_000_000 + seq
		default:
			op.Kind = checker.RegisterCAS
			seq++
			op.Value = int64(id+1)*1_000_000_000 + seq
			op.Expect = lastSeen[op.Key]
		}
		inTxn := rng.Float64() < r.cfg.TxnFraction
		op.Invoke = clock.Now()
		conn, more, err := begin(stop, ctx, s, b)
		if !more {
			return ops
		}
		if err != nil {
			op.Finish(clock.Now(), err, checker.StageRead) // nothing was sent
			ops = append(ops, op)
			backoff(stop, rng)
			continue
		}
		octx, cancel := opCtx(ctx, &r.cfg.Config)
		if inTxn {
			r.txn(octx, conn, &op)
		} else {
			r.autocommit(octx, conn, &op)
		}
		cancel()
		s.settle(ctx)
		if op.Outcome == checker.OutcomeOK {
			switch op.Kind {
			case checker.RegisterRead:
				if op.Found {
					lastSeen[op.Key] = op.Value
				}
			case checker.RegisterWrite:
				lastSeen[op.Key] = op.Value
			case checker.RegisterCAS:
				if op.Found {
					lastSeen[op.Key] = op.Value
				}
			}
		}
		ops = append(ops, op)
	}
}

func (r *registerClient) autocommit(ctx context.Context, conn *pgx.Conn, op *checker.RegisterOp) {
	clock := r.cfg.Clock
	switch op.Kind {
	case checker.RegisterRead:
		var v int64
		err := conn.QueryRow(ctx, "SELECT v FROM "+r.table+" WHERE k = $1", op.Key).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			op.Finish(clock.Now(), nil, checker.StageRead)
			return
		}
		op.Value, op.Found = v, err == nil
		op.Finish(clock.Now(), err, checker.StageRead)
	case checker.RegisterWrite:
		_, err := conn.Exec(ctx, "INSERT INTO "+r.table+" (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v", op.Key, op.Value)
		op.Finish(clock.Now(), err, checker.StageCommit)
	case checker.RegisterCAS:
		tag, err := conn.Exec(ctx, "UPDATE "+r.table+" SET v = $3 WHERE k = $1 AND v = $2", op.Key, op.Expect, op.Value)
		op.Found = err == nil && tag.RowsAffected() == 1
		op.Finish(clock.Now(), err, checker.StageCommit)
	}
}

// txn runs the operation as an explicit transaction that reads the row
// FOR UPDATE first. Errors before COMMIT mean the transaction did not
// commit; a COMMIT's error is classified as such.
func (r *registerClient) txn(ctx context.Context, conn *pgx.Conn, op *checker.RegisterOp) {
	clock := r.cfg.Clock
	tx, err := conn.Begin(ctx)
	if err != nil {
		op.Finish(clock.Now(), err, checker.StageInTransaction)
		return
	}
	var v int64
	err = tx.QueryRow(ctx, "SELECT v FROM "+r.table+" WHERE k = $1 FOR UPDATE", op.Key).Scan(&v)
	found := err == nil
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	if err != nil {
		op.Finish(clock.Now(), err, checker.StageInTransaction)
		return
	}
	switch op.Kind {
	case checker.RegisterRead:
		// The read's answer counts only if the transaction ends cleanly.
		err = tx.Commit(ctx)
		op.Value, op.Found = v, found
		op.Finish(clock.Now(), err, checker.StageRead)
		return
	case checker.RegisterWrite:
		_, err = tx.Exec(ctx, "INSERT INTO "+r.table+" (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v", op.Key, op.Value)
	case checker.RegisterCAS:
		if !found || v != op.Expect {
			// Nothing to write: the answer is "not swapped", and only a
			// clean end of the read-only transaction confirms it.
			err = tx.Rollback(ctx)
			op.Found = false
			op.Finish(clock.Now(), err, checker.StageRead)
			return
		}
		_, err = tx.Exec(ctx, "UPDATE "+r.table+" SET v = $2 WHERE k = $1", op.Key, op.Value)
		op.Found = true
	}
	if err != nil {
		op.Found = false
		op.Finish(clock.Now(), err, checker.StageInTransaction)
		return
	}
	err = tx.Commit(ctx)
	op.Finish(clock.Now(), err, checker.StageCommit)
	if op.Outcome != checker.OutcomeOK && op.Kind == checker.RegisterCAS {
		op.Found = false
	}
}
