package checker

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Stage says where in a transaction's life an error struck; the same error
// means different things for whether the operation took effect.
type Stage int

const (
	// StageRead is a read-only statement (autocommit or in a transaction
	// that only reads). It has no effect whatever happens, so every error
	// classifies as OutcomeFailed: the read tells us nothing.
	StageRead Stage = iota
	// StageInTransaction is a statement inside an explicit transaction,
	// before COMMIT was sent. Whatever the error (40001 from the gateway at
	// failover, a constraint violation, a lost connection), the client never
	// sends COMMIT for this transaction (it rolls back or its connection is
	// gone), so the transaction certainly does not commit: OutcomeFailed.
	StageInTransaction
	// StageCommit is a COMMIT, or a single autocommit statement that
	// writes. Only errors that prove the transaction rolled back classify
	// as OutcomeFailed (see CertainlyNotApplied); all others are
	// OutcomeUnknown.
	StageCommit
)

// Classify returns the outcome of an operation that ended with err at stage.
// A nil err is OutcomeOK.
func Classify(err error, stage Stage) Outcome {
	switch {
	case err == nil:
		return OutcomeOK
	case stage == StageRead, stage == StageInTransaction:
		return OutcomeFailed
	case CertainlyNotApplied(err):
		return OutcomeFailed
	default:
		return OutcomeUnknown
	}
}

// definiteClasses are the SQLSTATE classes whose ERROR-severity errors prove
// that the statement (and, for a COMMIT or an autocommit statement, its
// transaction) was rolled back. PostgreSQL raises ERROR before a
// transaction's commit record is written; a failure while writing or after
// it is a PANIC or FATAL (the connection dies), never an ERROR with one of
// these codes. The gateway's synthetic answers follow design.md §6: 40001
// means the transaction certainly did not commit.
var definiteClasses = map[string]bool{
	"0A": true, // feature not supported
	"21": true, // cardinality violation
	"22": true, // data exception
	"23": true, // integrity constraint violation
	"25": true, // invalid transaction state, incl. 25006 read-only transaction
	"26": true, // invalid SQL statement name
	"28": true, // invalid authorization (at connect: nothing ran)
	"2B": true, // dependent privilege descriptors still exist
	"2D": true, // invalid transaction termination
	"3D": true, // invalid catalog name (at connect)
	"3F": true, // invalid schema name
	"40": true, // transaction rollback: 40001, 40002, 40P01, but not 40003 (below)
	"42": true, // syntax error or access rule violation
	"44": true, // WITH CHECK OPTION violation
	"53": true, // insufficient resources (an ERROR here aborts the transaction)
	"54": true, // program limit exceeded
	"55": true, // object not in prerequisite state, lock not available
}

// unknownCodes are codes inside definite classes that do not prove anything.
var unknownCodes = map[string]bool{
	"40003": true, // statement_completion_unknown: the gateway's "autocommit write in flight at failover"
}

// CertainlyNotApplied reports whether err proves that the statement it came
// from had no effect:
//
//   - errors pgconn marks safe to retry (nothing was sent to the server) and
//     failed connection attempts;
//   - a COMMIT the server answered with ROLLBACK (pgx.ErrTxCommitRollback);
//   - PostgreSQL errors of severity ERROR in the classes of definiteClasses,
//     except 40003.
//
// Everything else is not proof: class 08 (connection exception, including the
// gateway's 08007 transaction_resolution_unknown), 57 (operator intervention:
// 57P01 admin_shutdown and 57014 query_canceled can arrive after a commit
// record was written, e.g. while waiting for a synchronous standby), 58 and
// XX, any FATAL or PANIC, timeouts, cancelled contexts, lost connections.
func CertainlyNotApplied(err error) bool {
	if err == nil {
		return false
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) || pgconn.SafeToRetry(err) {
		return true
	}
	// The server answered COMMIT with ROLLBACK: the transaction had failed.
	if errors.Is(err, pgx.ErrTxCommitRollback) {
		return true
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	severity := pgErr.SeverityUnlocalized
	if severity == "" {
		severity = pgErr.Severity
	}
	if severity != "ERROR" || len(pgErr.Code) != 5 || unknownCodes[pgErr.Code] {
		return false
	}
	return definiteClasses[pgErr.Code[:2]]
}

// Pseudo-codes ErrorCode returns for errors that carry no SQLSTATE.
const (
	CodeTimeout    = "timeout"
	CodeCanceled   = "canceled"
	CodeConnect    = "connect"
	CodeConnection = "connection"
	CodeOther      = "other"
)

// ErrorCode returns the SQLSTATE of a PostgreSQL error, or a pseudo-code
// naming the kind of error for errors without one. Use it to count errors by
// SQLSTATE. A nil error has no code ("").
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err):
		return CodeTimeout
	case errors.Is(err, context.Canceled):
		return CodeCanceled
	case errors.As(err, &connectErr):
		return CodeConnect
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), errors.As(err, &netErr):
		return CodeConnection
	case strings.Contains(err.Error(), "conn closed"), strings.Contains(err.Error(), "connection reset"):
		return CodeConnection
	}
	return CodeOther
}

// Finish records the end of op at time now: OutcomeOK for a nil err,
// otherwise the outcome Classify gives for err at stage, with the error text
// and its code.
func (op *Op) Finish(now time.Duration, err error, stage Stage) {
	op.Complete = now
	op.Outcome = Classify(err, stage)
	op.Error, op.SQLState = "", ""
	if err != nil {
		op.Error = err.Error()
		op.SQLState = ErrorCode(err)
	}
}
