package pgctl

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// controlConn is one long-lived connection to the local PostgreSQL for the
// queries the agent runs all the time (Status on every reconcile step and
// every probe from the controller) and on the failover path (Promote).
// Opening a connection costs a backend fork and an authentication exchange,
// tens of milliseconds on a loaded machine, and a failover takes several
// steps in a row; reusing one connection takes that off the path.
//
// The connection belongs to one postmaster: a restart, a failed query or a
// fence that terminated every client backend drops it, and the next use
// opens a new one.
type controlConn struct {
	mu   sync.Mutex // held for the whole of one use: one query at a time
	conn *pgx.Conn
	pid  int // the postmaster it was opened against
}

// withControl runs fn on the control connection. A cached connection that
// turns out to be dead (the server closed it: fence, restart) is replaced
// and fn is run once more on a fresh one; fn must therefore be safe to run
// twice (read-only queries, or idempotent functions such as pg_promote).
func (i *Instance) withControl(ctx context.Context, fn func(*pgx.Conn) error) error {
	c := &i.control
	c.mu.Lock()
	defer c.mu.Unlock()
	pid := 0
	if pm := i.Postmaster(); pm != nil {
		pid = pm.pid
	}
	if c.conn != nil && (c.conn.IsClosed() || c.pid != pid) {
		c.closeLocked()
	}
	cached := c.conn != nil
	for {
		if c.conn == nil {
			conn, err := i.Connect(ctx)
			if err != nil {
				return err
			}
			c.conn, c.pid = conn, pid
		}
		err := fn(c.conn)
		if err == nil {
			return nil
		}
		if !connectionLost(c.conn, err) {
			if c.conn.PgConn().TxStatus() != 'I' {
				// Never leave the shared connection inside a failed
				// transaction.
				c.closeLocked()
			}
			return err
		}
		c.closeLocked()
		if !cached || ctx.Err() != nil {
			return err
		}
		cached = false
	}
}

// WithConn runs fn on the instance's long-lived control connection (see
// controlConn), for a caller's own queries on the failover path. fn may be
// run twice when the cached connection turns out to be dead, and must
// leave the connection outside a transaction.
func (i *Instance) WithConn(ctx context.Context, fn func(*pgx.Conn) error) error {
	return i.withControl(ctx, fn)
}

// closeControlIfIdle drops the control connection unless a query is using
// it (the postmaster is stopping; waiting for a query that may hang would
// hold the stop up).
func (i *Instance) closeControlIfIdle() {
	c := &i.control
	if !c.mu.TryLock() {
		return
	}
	defer c.mu.Unlock()
	c.closeLocked()
}

func (c *controlConn) closeLocked() {
	if c.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), defaultConnectTimeout)
		c.conn.Close(ctx)
		cancel()
	}
	c.conn, c.pid = nil, 0
}

// connectionLost tells a broken connection (closed by the server, reset,
// administrator shutdown) from an error in the query itself.
func connectionLost(conn *pgx.Conn, err error) bool {
	if conn.IsClosed() {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 57: operator intervention (57P01 admin shutdown, 57P02
		// crash shutdown, …); class 08: connection exception.
		return len(pgErr.Code) == 5 && (pgErr.Code[:2] == "57" || pgErr.Code[:2] == "08")
	}
	var netErr net.Error
	return errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}
