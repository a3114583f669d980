package gateway

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Commit resolution (issue 6): the back end was lost while a COMMIT was in
// flight, and capture.go captured the transaction's id. The outcome is
// decided on the new primary, before the session's state is replayed
// there:
//
//   - the transaction had failed already (status E): COMMIT is a ROLLBACK
//     wherever it runs; the client gets "ROLLBACK", as from PostgreSQL.
//   - no transaction id was assigned: the transaction wrote nothing (every
//     change of data or schema, nextval() and NOTIFY take an id), so
//     whether its COMMIT ran makes no difference to the database; the
//     client gets "COMMIT". Its commit-time session effects (SET, LISTEN)
//     are applied to the new back end by the replay. (A SERIALIZABLE
//     read-only transaction that would have failed its commit check is
//     reported committed; its reads were what they were.)
//   - the id is at or above the fence of an epoch after the session's: it
//     was assigned on the old timeline after the new primary's history
//     forked, so it did not commit there (and the same number may since
//     have been given to another transaction on the new primary: the xid
//     reuse hazard). The client gets 40001.
//   - otherwise pg_xact_status on the new primary: "committed" → the
//     client gets CommandComplete "COMMIT" and ReadyForQuery 'I', exactly
//     what PostgreSQL sends; "aborted" → 40001; anything else (in
//     progress, NULL for an id too old, an error), a primary of the same
//     epoch (a restart without failover records no fence, so the id may
//     have been reused), or no fence known → 08007.
//
// In every case the transaction is over (ReadyForQuery 'I') and the
// session goes on, on the new primary: 08007 does not close it.

// Commit outcomes, the label of gateway.commits_resolved.
const (
	outcomeCommitted = "committed"
	outcomeAborted   = "aborted"
	outcomeUnknown   = "unknown"
)

// commitResultHook, when set (tests only), is called when a CommandComplete
// arrives for a COMMIT whose transaction id was captured; returning true
// drops the message and treats the back end as lost at that moment, as if
// the primary had died with the result on the wire.
type commitResultHook = atomic.Pointer[func() bool]

// resolveCommit answers the lost COMMIT of w as the package comment above
// says, moving the session to the new primary. It reports whether the
// session goes on.
func (s *session) resolveCommit(old *backend, w inFlightWork) bool {
	g := s.g
	var outcome, tag, why string
	switch {
	case w.txStatus == 'E':
		outcome, tag, why = outcomeAborted, "ROLLBACK", "the transaction had failed"
	case w.xidState == xidNull:
		outcome, tag, why = outcomeCommitted, "COMMIT", "no transaction id was assigned"
	}
	if outcome != "" {
		s.track.finishLost('I', outcome == outcomeCommitted)
	}
	prepare := func(be *backend) {
		if outcome != "" {
			return // decided (by an earlier attempt, or without asking)
		}
		outcome, why = s.commitStatus(old.target.Epoch, be, w.xid)
		s.track.finishLost('I', outcome == outcomeCommitted)
	}
	if err := s.reattachWith(old, nil, prepare); err != nil {
		s.reattachFailed(err)
		return false
	}
	var code, msg string
	switch outcome {
	case outcomeCommitted:
		g.stats.commitCommitted.Add(1)
		if tag == "" {
			tag = "COMMIT"
		}
	case outcomeAborted:
		g.stats.commitAborted.Add(1)
		if tag == "" {
			code, msg = codeSerializationFailure,
				"the primary was lost during COMMIT and the transaction did not commit; retry it (pgbattery failover)"
		}
	default:
		g.stats.commitUnknown.Add(1)
		code, msg = codeTransactionResolutionUnknown,
			"the connection to the primary was lost while COMMIT was in flight and whether the transaction committed could not be determined: "+why+" (pgbattery failover)"
	}
	g.cfg.Metrics.IncrCounterWithLabels([]string{"gateway", "commits_resolved"}, 1,
		append(s.l.labels[:len(s.l.labels):len(s.l.labels)], metricsLabel("outcome", outcome)))
	s.logger.Debug("resolved a COMMIT in flight at a failover", "outcome", outcome, "xid", w.xid, "reason", why)
	if code != "" {
		writeMessages(s.cw, errorMessage("ERROR", code, msg))
	} else {
		s.cw.Write(w.commitPrelude) // what the server still owed before the COMMIT's answer
		writeMessages(s.cw, &pgproto3.CommandComplete{CommandTag: []byte(tag)})
	}
	writeMessages(s.cw, &pgproto3.ReadyForQuery{TxStatus: 'I'})
	return s.cw.Flush() == nil
}

// commitStatus decides the outcome of transaction xid of a session that was
// on a primary of epoch oldEpoch, on be, the new primary. why explains it.
func (s *session) commitStatus(oldEpoch uint64, be *backend, xid uint64) (outcome, why string) {
	newEpoch := be.target.Epoch
	if newEpoch <= oldEpoch {
		return outcomeUnknown, fmt.Sprintf("the primary's epoch (%d) did not change, so no fence guards against a reused transaction id", newEpoch)
	}
	fence, ok := s.g.router.Fence(newEpoch)
	if !ok {
		return outcomeUnknown, fmt.Sprintf("no fence transaction id is known for epoch %d", newEpoch)
	}
	// Every primary that took office since the session's epoch forked the
	// history at its fence; the lowest bounds what the old primary's
	// transactions can have committed on the new timeline.
	for e := oldEpoch + 1; e < newEpoch; e++ {
		if f, ok := s.g.router.Fence(e); ok && f < fence {
			fence = f
		}
	}
	if xid >= fence {
		return outcomeAborted, fmt.Sprintf("transaction id %d is at or above the fence %d of the new timeline", xid, fence)
	}
	status, err := queryOneValue(s.g.ctx, be, s.g.cfg.DialTimeout, "SELECT pg_xact_status('"+strconv.FormatUint(xid, 10)+"'::xid8)")
	switch {
	case err != nil:
		return outcomeUnknown, fmt.Sprintf("asking the new primary for the status of transaction %d: %v", xid, err)
	case status == "committed":
		return outcomeCommitted, fmt.Sprintf("transaction %d is committed on the new primary", xid)
	case status == "aborted":
		return outcomeAborted, fmt.Sprintf("transaction %d is aborted on the new primary", xid)
	case status == "":
		return outcomeUnknown, fmt.Sprintf("the new primary no longer knows the status of transaction %d", xid)
	}
	return outcomeUnknown, fmt.Sprintf("transaction %d is %q on the new primary", xid, status)
}

// queryOneValue runs a simple query on a back end that is not forwarding
// yet and returns the first column of its first row ("" for NULL or no
// row).
func queryOneValue(ctx context.Context, be *backend, timeout time.Duration, sql string) (string, error) {
	be.conn.SetDeadline(time.Now().Add(timeout))
	defer be.conn.SetDeadline(noDeadline)
	stop := context.AfterFunc(ctx, func() { be.conn.SetDeadline(aLongTimeAgo) })
	defer stop()
	if _, err := be.conn.Write(queryMsg(sql)); err != nil {
		return "", err
	}
	var value string
	var qerr error
	rows := 0
	for {
		typ, body, err := readStartupReply(be.r)
		if err != nil {
			return "", err
		}
		switch typ {
		case 'D':
			rows++
			if rows == 1 {
				var d pgproto3.DataRow
				if err := d.Decode(body); err != nil {
					return "", fmt.Errorf("decoding a row: %w", err)
				}
				if len(d.Values) > 0 && d.Values[0] != nil {
					value = string(d.Values[0])
				}
			}
		case 'E':
			var m pgproto3.ErrorResponse
			if err := m.Decode(body); err != nil {
				return "", fmt.Errorf("decoding an error: %w", err)
			}
			qerr = fmt.Errorf("%s %s: %s", m.Severity, m.Code, m.Message)
		case 'S':
			name, rest, ok := cutCStringBytes(body)
			v, _, ok2 := cutCStringBytes(rest)
			if ok && ok2 {
				be.params[string(name)] = string(v)
			}
		case 'Z':
			return value, qerr
		}
	}
}
