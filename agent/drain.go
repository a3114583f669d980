package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"
	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/agent/fsm"
)

// Planned switchover drain (issue 6).
//
// While a switchover of the current epoch is pending, every gateway holds
// new transactions at their first statement (the router reports the
// primary as Draining) and lets the ones in progress run. The old primary's
// agent, before it fences and releases its lease (ActStepDown), waits until
// no client backend of its PostgreSQL is inside a transaction, for at most
// switchover.drain_timeout. Whatever still runs then is ended by the fence
// (the gateways answer it as a failover does: 40001 in a transaction,
// 40003 for an autocommit write).

// defaultSwitchoverTimeout is the controller's bound on each phase of a
// switchover when the drain leaves room for it.
const defaultSwitchoverTimeout = 10 * time.Second

// switchoverStepDownMargin is how much longer than the drain the controller
// waits for the old primary to step down: fencing, reading the final WAL
// position and releasing the lease through Raft.
const switchoverStepDownMargin = 5 * time.Second

// switchoverTimeout is the controller's switchover timeout for a drain
// timeout: it always exceeds the drain by switchoverStepDownMargin, so a
// full-length drain does not make the controller cancel the switchover.
func switchoverTimeout(drain time.Duration) time.Duration {
	return max(defaultSwitchoverTimeout, drain+switchoverStepDownMargin)
}

// drainPoll paces the drain's look at pg_stat_activity (one cheap query on
// the control connection; the switchover's write gap waits on it).
const drainPoll = 10 * time.Millisecond

// drainSettle is the least a drain waits before it trusts an empty
// pg_stat_activity: the gateways learn of the switchover from their own
// copy of the Raft log, a few milliseconds after this node, and a new
// transaction one of them let through meanwhile must be seen.
const drainSettle = 50 * time.Millisecond

// drainFilter selects client backends inside a transaction (an autocommit
// statement counts while it runs), other than the asking one.
const drainFilter = `FROM pg_stat_activity
WHERE backend_type = 'client backend' AND xact_start IS NOT NULL AND pid <> pg_backend_pid()`

const drainQuery = `SELECT count(*) ` + drainFilter

// drainHoldersQuery names what a timed-out drain left running, for the log.
const drainHoldersQuery = `SELECT string_agg(format('pid %s (%s%s, %s for %s): %s', pid,
	coalesce(nullif(application_name, ''), 'no application_name'),
	coalesce(' from ' || host(client_addr), ''), state,
	date_trunc('milliseconds', clock_timestamp() - xact_start), left(query, 60)), '; ') ` + drainFilter

// withConn runs fn on a connection to the local PostgreSQL
// (pgctl.Instance.WithConn: the agent's control connection).
type withConn func(context.Context, func(*pgx.Conn) error) error

// drainTransactions waits until no client backend is in a transaction, or
// timeout. It returns how many still were when it stopped waiting and, then,
// who they are.
func drainTransactions(ctx context.Context, with withConn, timeout time.Duration) (int, string, error) {
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	settle := min(drainSettle, timeout/4)
	n := -1
	for {
		err := with(dctx, func(conn *pgx.Conn) error { return conn.QueryRow(dctx, drainQuery).Scan(&n) })
		if err != nil {
			if dctx.Err() != nil {
				return n, drainHolders(ctx, with), nil // out of time
			}
			return n, "", fmt.Errorf("counting transactions: %w", err)
		}
		if n == 0 && time.Since(start) >= settle {
			return 0, "", nil
		}
		select {
		case <-dctx.Done():
			return n, drainHolders(ctx, with), nil
		case <-time.After(drainPoll):
		}
	}
}

// drainHolders describes the transactions a drain gave up on (best effort:
// an empty string when it cannot tell).
func drainHolders(ctx context.Context, with withConn) string {
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var who *string
	if err := with(qctx, func(conn *pgx.Conn) error { return conn.QueryRow(qctx, drainHoldersQuery).Scan(&who) }); err != nil || who == nil {
		return ""
	}
	return *who
}

// drainForSwitchover is the first step of ActStepDown for a pending
// switchover of this epoch: let the transactions in progress finish.
func (r *reconciler) drainForSwitchover(ctx context.Context, st *fsm.State, epoch uint64) {
	op := st.Pending
	timeout := r.cfg.Switchover.DrainTimeout
	inst := r.instance()
	if op == nil || op.Kind != fsm.OpSwitchover || op.Epoch != epoch || timeout <= 0 || inst == nil || !inst.Running() || inst.Fenced() {
		return
	}
	start := time.Now()
	left, who, err := drainTransactions(ctx, inst.WithConn, timeout)
	took := time.Since(start)
	metrics.AddSample([]string{"postgres", "switchover_drain_ms"}, float32(took)/1e6)
	logDrain(r.logger, op, left, who, took, err)
}

func logDrain(logger hclog.Logger, op *fsm.Operation, left int, who string, took time.Duration, err error) {
	switch {
	case err != nil:
		logger.Warn("switchover drain: could not watch transactions; stepping down", "target", op.Target, "error", err, "took", took.Round(time.Millisecond))
	case left == 0:
		logger.Info("switchover drain: no transaction in progress; stepping down", "target", op.Target, "took", took.Round(time.Millisecond))
	default:
		logger.Warn("switchover drain timed out; the fence ends the transactions still running", "target", op.Target,
			"transactions", left, "running", who, "took", took.Round(time.Millisecond))
	}
}
