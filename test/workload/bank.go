package workload

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/test/checker"
)

// BankConfig configures RunBank.
type BankConfig struct {
	Config
	// Accounts is the number of accounts. Default 5, at most 10000.
	Accounts int
	// InitialBalance is every account's balance after setup. Default 100.
	InitialBalance int64
	// MaxTransfer bounds one transfer's amount. Default 20.
	MaxTransfer int64
	// ReadFraction is the share of operations that read every balance.
	// Default 0.3; negative means none (the final read still happens).
	ReadFraction float64
}

// RunBank resets the bank table (Table, default "pgbattery_bank": id int
// primary key, balance bigint) to Accounts accounts of InitialBalance, then
// runs clients doing transfers and snapshot reads until Duration passes,
// MaxOps operations were issued, or ctx is cancelled, and finally reads
// every balance once more (within FinalTimeout). A transfer is one
// transaction: lock both rows in id order, refuse (and roll back) if the
// source holds too little, move the amount, commit. A read is one
// autocommit SELECT, so one snapshot.
//
// It returns the history and the options to check it with
// checker.CheckBank.
func RunBank(ctx context.Context, cfg BankConfig) ([]checker.BankOp, checker.BankOptions, error) {
	if err := cfg.fill("pgbattery_bank"); err != nil {
		return nil, checker.BankOptions{}, err
	}
	if cfg.Accounts == 0 {
		cfg.Accounts = 5
	}
	if cfg.Accounts < 2 || cfg.Accounts > 10000 {
		return nil, checker.BankOptions{}, fmt.Errorf("bank config: %d accounts, want 2..10000", cfg.Accounts)
	}
	if cfg.InitialBalance == 0 {
		cfg.InitialBalance = 100
	}
	if cfg.MaxTransfer == 0 {
		cfg.MaxTransfer = 20
	}
	if cfg.InitialBalance < 0 || cfg.MaxTransfer < 0 {
		return nil, checker.BankOptions{}, fmt.Errorf("bank config: negative balance %d or transfer %d", cfg.InitialBalance, cfg.MaxTransfer)
	}
	if cfg.ReadFraction == 0 {
		cfg.ReadFraction = 0.3
	}
	opts := checker.BankOptions{Accounts: cfg.Accounts, Total: int64(cfg.Accounts) * cfg.InitialBalance, RequireFinal: true}
	t := pgx.Identifier{cfg.Table}.Sanitize()
	err := setupTable(ctx, &cfg.Config,
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (id int PRIMARY KEY, balance bigint NOT NULL)", t),
		fmt.Sprintf("DELETE FROM %s", t),
		fmt.Sprintf("INSERT INTO %s (id, balance) SELECT g, %d FROM generate_series(0, %d) g", t, cfg.InitialBalance, cfg.Accounts-1),
	)
	if err != nil {
		return nil, opts, err
	}
	bc := &bankClient{cfg: &cfg, table: t}
	ops, err := runClients(ctx, &cfg.Config, bc.run)
	if err != nil {
		return nil, opts, err
	}

	final := checker.BankOp{Op: checker.Op{Client: cfg.Clients, Kind: checker.BankFinalRead, Invoke: cfg.Clock.Now()}}
	err = retry(ctx, cfg.FinalTimeout, "reading the final balances", cfg.Logger, func(ctx context.Context) error {
		return withConn(ctx, &cfg.Config, func(ctx context.Context, conn *pgx.Conn) error {
			var err error
			final.Balances, err = bc.readAll(ctx, conn)
			return err
		})
	})
	final.Finish(cfg.Clock.Now(), err, checker.StageRead)
	return append(ops, final), opts, nil
}

type bankClient struct {
	cfg   *BankConfig
	table string
}

func (bc *bankClient) run(stop, ctx context.Context, id int, s *session, rng *rand.Rand, b *budget) []checker.BankOp {
	var ops []checker.BankOp
	clock := bc.cfg.Clock
	for {
		op := checker.BankOp{Op: checker.Op{Client: id}}
		if rng.Float64() < bc.cfg.ReadFraction {
			op.Kind = checker.BankRead
		} else {
			op.Kind = checker.BankTransfer
			op.From = rng.IntN(bc.cfg.Accounts)
			op.To = (op.From + 1 + rng.IntN(bc.cfg.Accounts-1)) % bc.cfg.Accounts
			op.Amount = 1 + rng.Int64N(max(bc.cfg.MaxTransfer, 1))
		}
		op.Invoke = clock.Now()
		conn, more, err := begin(stop, ctx, s, b)
		if !more {
			return ops
		}
		if err != nil {
			op.Finish(clock.Now(), err, checker.StageRead)
			ops = append(ops, op)
			backoff(stop, rng)
			continue
		}
		octx, cancel := opCtx(ctx, &bc.cfg.Config)
		if op.Kind == checker.BankRead {
			bal, err := bc.readAll(octx, conn)
			op.Balances = bal
			op.Finish(clock.Now(), err, checker.StageRead)
		} else {
			bc.transfer(octx, conn, &op)
		}
		cancel()
		s.settle(ctx)
		ops = append(ops, op)
	}
}

func (bc *bankClient) readAll(ctx context.Context, conn *pgx.Conn) (map[int]int64, error) {
	rows, err := conn.Query(ctx, "SELECT id, balance FROM "+bc.table)
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	var id int
	var bal int64
	_, err = pgx.ForEachRow(rows, []any{&id, &bal}, func() error {
		if _, dup := out[id]; dup {
			// Two rows for one account: make the drift visible.
			out[id] += bal
			return nil
		}
		out[id] = bal
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (bc *bankClient) transfer(ctx context.Context, conn *pgx.Conn, op *checker.BankOp) {
	clock := bc.cfg.Clock
	tx, err := conn.Begin(ctx)
	if err != nil {
		op.Finish(clock.Now(), err, checker.StageInTransaction)
		return
	}
	// Lock both rows in id order so that transfers never deadlock.
	rows, err := tx.Query(ctx, "SELECT id, balance FROM "+bc.table+" WHERE id IN ($1, $2) ORDER BY id FOR UPDATE", op.From, op.To)
	balances := map[int]int64{}
	if err == nil {
		var id int
		var bal int64
		_, err = pgx.ForEachRow(rows, []any{&id, &bal}, func() error { balances[id] = bal; return nil })
	}
	if err == nil && len(balances) != 2 {
		err = fmt.Errorf("transfer from %d to %d: found %d of the 2 accounts", op.From, op.To, len(balances))
	}
	if err != nil {
		op.Finish(clock.Now(), err, checker.StageInTransaction)
		return
	}
	if balances[op.From] < op.Amount {
		op.Insufficient = true
		err = tx.Rollback(ctx)
		op.Finish(clock.Now(), err, checker.StageInTransaction)
		return
	}
	if _, err = tx.Exec(ctx, "UPDATE "+bc.table+" SET balance = balance - $2 WHERE id = $1", op.From, op.Amount); err == nil {
		_, err = tx.Exec(ctx, "UPDATE "+bc.table+" SET balance = balance + $2 WHERE id = $1", op.To, op.Amount)
	}
	if err != nil {
		op.Finish(clock.Now(), err, checker.StageInTransaction)
		return
	}
	err = tx.Commit(ctx)
	op.Finish(clock.Now(), err, checker.StageCommit)
}
