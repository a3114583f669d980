package workload

import (
	"context"
	"fmt"
	"math/rand/v2"

	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/test/checker"
)

// AppendConfig configures RunAppend.
type AppendConfig struct {
	Config
	// TxnFraction is the share of appends run as BEGIN; INSERT; COMMIT
	// rather than an autocommit INSERT. Default 0.3; negative means none.
	TxnFraction float64
}

// AppendIDsPerClient spaces the id ranges of clients: client c appends
// c*AppendIDsPerClient+1, +2, …
const AppendIDsPerClient = 1_000_000_000

// RunAppend empties the log table (Table, default "pgbattery_append": id
// bigint, client int, at timestamptz; deliberately without a unique
// constraint, so duplicates show), then runs clients that each insert fresh
// ids until Duration passes, MaxOps operations were issued, or ctx is
// cancelled, and finally reads every id back (within FinalTimeout). An id is
// never retried: a retry uses a new id, so a duplicate row means the system
// applied one statement twice. Check with checker.CheckAppend.
func RunAppend(ctx context.Context, cfg AppendConfig) ([]checker.AppendOp, checker.AppendFinal, error) {
	if err := cfg.fill("pgbattery_append"); err != nil {
		return nil, checker.AppendFinal{}, err
	}
	if cfg.TxnFraction == 0 {
		cfg.TxnFraction = 0.3
	}
	t := pgx.Identifier{cfg.Table}.Sanitize()
	err := setupTable(ctx, &cfg.Config,
		fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s (id bigint NOT NULL, client int NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())", t),
		fmt.Sprintf("TRUNCATE %s", t),
	)
	if err != nil {
		return nil, checker.AppendFinal{}, err
	}
	ac := &appendClient{cfg: &cfg, table: t}
	ops, err := runClients(ctx, &cfg.Config, ac.run)
	if err != nil {
		return nil, checker.AppendFinal{}, err
	}
	final := ReadAppendLog(ctx, cfg.Config)
	return ops, final, nil
}

// ReadAppendLog reads every id of the append log (cfg.Table, default
// "pgbattery_append"), retried within cfg.FinalTimeout. RunAppend calls it
// at the end; a harness may call it again after healing the cluster.
func ReadAppendLog(ctx context.Context, cfg Config) checker.AppendFinal {
	if err := cfg.fill("pgbattery_append"); err != nil {
		return checker.AppendFinal{Error: err.Error()}
	}
	t := pgx.Identifier{cfg.Table}.Sanitize()
	var final checker.AppendFinal
	err := retry(ctx, cfg.FinalTimeout, "reading the log", cfg.Logger, func(ctx context.Context) error {
		return withConn(ctx, &cfg, func(ctx context.Context, conn *pgx.Conn) error {
			rows, err := conn.Query(ctx, "SELECT id FROM "+t)
			if err != nil {
				return err
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
			if err != nil {
				return err
			}
			final.IDs = ids
			return nil
		})
	})
	if err != nil {
		return checker.AppendFinal{Error: err.Error()}
	}
	final.OK = true
	return final
}

type appendClient struct {
	cfg   *AppendConfig
	table string
}

func (ac *appendClient) run(stop, ctx context.Context, id int, s *session, rng *rand.Rand, b *budget) []checker.AppendOp {
	var ops []checker.AppendOp
	clock := ac.cfg.Clock
	var seq int64
	insert := "INSERT INTO " + ac.table + " (id, client) VALUES ($1, $2)"
	for {
		seq++
		op := checker.AppendOp{Op: checker.Op{Client: id, Kind: checker.AppendKind}, ID: int64(id)*AppendIDsPerClient + seq}
		inTxn := rng.Float64() < ac.cfg.TxnFraction
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
		octx, cancel := opCtx(ctx, &ac.cfg.Config)
		if !inTxn {
			_, err := conn.Exec(octx, insert, op.ID, id)
			op.Finish(clock.Now(), err, checker.StageCommit)
		} else {
			tx, err := conn.Begin(octx)
			if err == nil {
				_, err = tx.Exec(octx, insert, op.ID, id)
			}
			if err != nil {
				op.Finish(clock.Now(), err, checker.StageInTransaction)
			} else {
				op.Finish(clock.Now(), tx.Commit(octx), checker.StageCommit)
			}
		}
		cancel()
		s.settle(ctx)
		ops = append(ops, op)
	}
}
