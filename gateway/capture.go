package gateway

import (
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/pgbattery/pgbattery/gateway/sqlclass"
)

// Capturing the transaction id of a COMMIT (commit resolution, issue 6).
//
// When a session in a transaction block ('T') sends COMMIT, the gateway
// sends its own request for the transaction's id just before it, in the same
// write, so it costs no round trip:
//
//   - simple protocol: a Query "SELECT pg_current_xact_id_if_assigned()"
//     ahead of the client's Query. Being a request of its own it ends with
//     ReadyForQuery, where PostgreSQL flushes its output, so the id reaches
//     the gateway before the COMMIT starts (a statement of a multi-statement
//     Query would sit in the server's buffer until the COMMIT finished,
//     which is exactly when the gateway may lose the server).
//   - extended protocol: Parse/Bind/Execute of the same SELECT under a name
//     no client uses, Close of its portal and statement, then Flush,
//     inserted before the COMMIT portal's Execute (within the client's
//     batch: the client's unnamed statement and portal are left alone).
//
// The responses (RowDescription, DataRow, CommandComplete, ReadyForQuery,
// or ParseComplete, BindComplete, DataRow, CommandComplete, CloseComplete
// twice) are consumed by the gateway; the client and the tracker never see
// them. If the back end is lost before the COMMIT's answer, recoverLost
// resolves the outcome on the new primary with the captured id
// (resolveCommit).
//
// A COMMIT whose back end died before it answered anything, the capture
// included, would still be unknown (08007). So the id is also asked for
// right after the first write of a transaction block (UPDATE, INSERT,
// DELETE, MERGE, …: it has an id from then on; not COPY FROM STDIN, whose
// data the server reads next), and kept until the transaction ends (a
// COMMIT or ROLLBACK completes); a COMMIT whose id is already known is not
// captured again. A write that took no id (an UPDATE that matched nothing)
// leaves it unknown: the next write or the COMMIT asks again.
//
//   - simple protocol: the Query above, right behind the client's Query of
//     one write statement. It answers after the client's ReadyForQuery; if
//     the write failed it fails too, and its error is swallowed.
//   - extended protocol: the messages above, right behind the Execute of
//     the first write of the batch (classified by the Parse text of the
//     portal's statement, named or unnamed: pgbench -M prepared parses once
//     and executes many times), before the rest of the client's batch and
//     its Sync. A portal run with a row limit is captured after its first
//     Execute (PortalSuspended, then the capture's answers). If the write,
//     or anything before it in the batch, fails, the server skips
//     everything up to the Sync, the capture included: it answers nothing,
//     and the ErrorResponse drops it from the tracker's queue with the rest
//     of the batch. If the capture itself fails (a cancel), the rest of the
//     client's batch is skipped, so that error goes to the client; the next
//     capture closes whatever the failed one left (xidCaptureExtendedClean).
//
// An extended COMMIT lost before the server answered its Parse, Bind,
// Close or Describe is resolved too: inFlightWork lists the answers still
// owed (commitPrelude: ParseComplete, BindComplete, CloseComplete, NoData
// for a Describe of the COMMIT's portal, which tracker.describe notes), and
// a synthesized success sends them first; what a named Parse or Close among
// them does to the session's statements is applied to the new back end
// (finishLost), so a JDBC COMMIT parsed under a name with the lost batch
// exists there. Not when a Describe the gateway cannot answer exactly is
// among them, nor a named Parse or Close in a failed transaction (its
// COMMIT answers ROLLBACK, decided without finishLost's committed).
//
// A capture that cannot run in the session at all (captureCannotRun: its
// function revoked, say) turns capturing off for the session, rather than
// cost the client every transaction; the simple protocol's capture after a
// write, if it fails for any reason but the write's own failure, aborts
// the client's transaction and tells it so with a notice.
//
// Cost: only COMMIT and write statements are looked at (the tracker
// classifies every statement anyway; a Parse of the same unnamed text as
// the last one is not classified again); the response path checks one
// atomic flag per message. pgbench's TPC-B script sends one capture per
// transaction either way.

// Capture kinds (expect.capture).
const (
	captureSimple   byte = 'Q'
	captureExtended byte = 'P'
	// captureAfterWrite: the simple-protocol query sent right after the
	// first lone write of a transaction block. It answers after the
	// client's ReadyForQuery; in a transaction that the write made fail it
	// fails too, and that error is nobody's business (any other error of
	// it goes to the client as a notice).
	captureAfterWrite byte = 'W'
	// captureAfterWriteExtended: the extended-protocol capture sent right
	// after the Execute of the first write of a transaction block, within
	// the client's batch (before its Sync). If the write (or anything
	// before it in the batch) fails, the server skips the capture up to the
	// Sync: it answers nothing, and the ErrorResponse drops it from the
	// queue like the rest of the batch.
	captureAfterWriteExtended byte = 'w'
)

// What a capture read.
const (
	xidNone  uint8 = iota // nothing (yet)
	xidNull               // no transaction id assigned: the transaction wrote nothing
	xidValue              // tracker.xid holds it
)

// xidStatement is the gateway's prepared-statement and portal name for the
// extended-protocol capture. It contains a control character so that no
// client's name can collide with it.
const xidStatement = "pgbattery\x1fxid"

// xidSQL names the function's schema: a session's search_path may put a
// function of the same name ahead of pg_catalog.
const xidSQL = "SELECT pg_catalog.pg_current_xact_id_if_assigned()"

// xidQuerySimple and xidCaptureExtended are the encoded capture requests.
// xidCaptureExtendedClean first closes the capture's portal and statement,
// in case a capture that failed half-way (a cancel, say) left them behind:
// a Parse or Bind under a name in use fails, and would fail every capture
// of the session after it. Closing what does not exist is not an error.
var (
	xidQuerySimple     = encodeMessages(queryMsg(xidSQL))
	xidCaptureExtended = encodeMessages(
		encodeMsg('P', cString(xidStatement), cString(xidSQL), []byte{0, 0}),                   // Parse, no parameter types
		encodeMsg('B', cString(xidStatement), cString(xidStatement), []byte{0, 0, 0, 0, 0, 0}), // Bind: no formats, parameters or result formats
		encodeMsg('E', cString(xidStatement), []byte{0, 0, 0, 0}),                              // Execute, all rows
		xidClosePortal, // in a transaction block a portal outlives its statement's Close
		xidCloseStatement,
		encodeMsg('H'), // Flush: send the answers now
	)
	xidCaptureExtendedClean = encodeMessages(xidClosePortal, xidCloseStatement, xidCaptureExtended)
	xidClosePortal          = encodeMsg('C', []byte{'P'}, cString(xidStatement))
	xidCloseStatement       = encodeMsg('C', []byte{'S'}, cString(xidStatement))
)

func cString(s string) []byte { return append([]byte(s), 0) }

func queryMsg(sql string) []byte { return encodeMsg('Q', cString(sql)) }

// encodeMsg encodes one protocol message.
func encodeMsg(typ byte, parts ...[]byte) []byte {
	n := 4
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 5, 1+n)
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], uint32(n))
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

func encodeMessages(msgs ...[]byte) []byte {
	var out []byte
	for _, m := range msgs {
		out = append(out, m...)
	}
	return out
}

// mentionsChain reports whether a COMMIT statement's text says AND CHAIN
// (or AND NO CHAIN: either way the gateway does not capture; after COMMIT
// AND CHAIN a new transaction is open, which a synthesized answer could not
// reproduce). It does not allocate.
func mentionsChain(text string) bool {
	for i := 0; i+5 <= len(text); i++ {
		if strings.EqualFold(text[i:i+5], "chain") {
			return true
		}
	}
	return false
}

// canCapture reports whether the tracker knows the session is in a
// transaction block with nothing in flight, so the next COMMIT may be
// captured. Called with t.mu held.
func (t *tracker) canCapture() bool {
	if t.txStatus != 'T' || t.inFlight != 0 || t.lost || t.copy || t.capturing.Load() {
		return false
	}
	for i := t.head; i < len(t.queue); i++ {
		if k := t.queue[i].kind; k != expParse && k != expBind && k != expClose {
			return false
		}
	}
	return true
}

// canCaptureAfterExecute reports whether the write being executed runs in
// a transaction block, so the id asked for right after it is that
// transaction's and outlives the batch: no request is in flight, and the
// session is in the block the last ReadyForQuery reported, or was idle and
// the batch began one (JDBC sends BEGIN in the same batch as the
// transaction's first statement); nothing executed in the batch before the
// write can have ended the block, or is unknown. Called with t.mu held.
func (t *tracker) canCaptureAfterExecute() bool {
	if t.inFlight != 0 || t.lost || t.copy || t.capturing.Load() {
		return false
	}
	inBlock := t.txStatus == 'T'
	if !inBlock && t.txStatus != 'I' {
		return false
	}
	for i := t.head; i < len(t.queue); i++ {
		e := &t.queue[i]
		switch e.kind {
		case expParse, expBind, expClose:
		case expExecute:
			if e.stmt == nil {
				return false
			}
			switch e.stmt.class.Kind {
			case sqlclass.Begin:
				inBlock = true
			case sqlclass.Commit, sqlclass.Rollback, sqlclass.TwoPhase, sqlclass.Other:
				return false
			}
		default:
			return false
		}
	}
	return inBlock
}

// capturableWrite reports whether st, a statement of src, is a write after
// which the transaction's id can be asked for. Not COPY: after COPY FROM
// STDIN the server reads nothing but the client's data until it ends, and
// a request of the gateway's in between would fail the COPY.
func capturableWrite(st sqlclass.Statement, src string) bool {
	if st.Kind != sqlclass.Write {
		return false
	}
	text := st.Text(src)
	return len(text) < 4 || !strings.EqualFold(text[:4], "copy") || len(text) > 4 && isIdentChar(text[4])
}

// isIdentChar reports whether c can continue an SQL keyword or identifier.
func isIdentChar(c byte) bool {
	return c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80
}

// extendedCapture queues the expectation of an extended-protocol capture
// of the given kind and returns the messages to send. Called with t.mu
// held.
func (t *tracker) extendedCapture(kind byte) []byte {
	msgs, closes := xidCaptureExtended, uint8(2)
	if t.xidDirty {
		msgs, closes = xidCaptureExtendedClean, 4
	}
	t.push(expect{kind: expXid, capture: kind, closes: closes})
	if !t.lost {
		t.capturing.Store(true)
	}
	return msgs
}

// startCapture queues the capture's expectation. Called with t.mu held.
func (t *tracker) startCapture(kind byte) {
	t.xidState = xidNone
	t.push(expect{kind: expXid, capture: kind})
	if !t.lost {
		t.capturing.Store(true)
	}
}

// captured handles a back-end message while a capture is queued. It
// reports whether the message belongs to the capture (and is kept from the
// client), and whether it is an ErrorResponse of the capture that must be
// passed on as a NoticeResponse instead.
func (t *tracker) captured(typ byte, body []byte) (swallow, asNotice bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.front()
	if e == nil || e.kind != expXid {
		return false, false
	}
	switch typ {
	case 'T', '1', '2':
		return true, false
	case 'D':
		t.xidState, t.xid = parseXidRow(body)
		if t.xidState == xidNull && (e.capture == captureAfterWrite || e.capture == captureAfterWriteExtended) {
			// The write took no id (an UPDATE that matched no row, say):
			// the transaction may still write, so nothing is known yet.
			// The next write or the COMMIT asks again.
			t.xidState = xidNone
		}
		return true, false
	case 'C':
		return true, false
	case '3':
		if e.capture == captureExtended || e.capture == captureAfterWriteExtended {
			if e.closes--; e.closes == 0 {
				t.xidDirty = false
				t.pop()
			}
			return true, false
		}
	case 'Z':
		if e.capture == captureSimple || e.capture == captureAfterWrite {
			if len(body) == 0 || body[0] != 'T' {
				t.xidState = xidNone
			}
			t.pop()
			return true, false
		}
	case 'E':
		if captureCannotRun(body) {
			// Every capture of this session would fail the same way, and
			// cost the client its transaction each time: no more. Its
			// COMMITs lost with a back end get 08007.
			t.resolveCommits = false
		}
		if e.capture == captureAfterWrite && !errorIsFatal(body) {
			// Mostly a write that failed, and the capture with it (25P02):
			// nobody's business. Otherwise the capture itself failed (a
			// late cancel, a REVOKE) and took the client's transaction
			// with it: the client learns why from a notice.
			t.xidState = xidNone
			return true, string(errorField(body, 'C')) != "25P02"
		}
		if e.capture == captureSimple && !errorIsFatal(body) {
			// The capture failed (a cancel, say): the transaction is
			// aborted and the client's COMMIT will answer ROLLBACK. The
			// client learns why from a notice; its request gets exactly
			// one ReadyForQuery.
			t.xidState = xidNone
			return true, true
		}
		// Extended (before a COMMIT or after a write): the capture itself
		// failed (a cancel, say), and the server skips the rest of the
		// client's batch: the client must see why. The tracker skips to
		// its Sync as usual (dropping the capture). Its statement or
		// portal may be left: the next capture closes them first.
		if e.capture == captureExtended || e.capture == captureAfterWriteExtended {
			t.xidDirty = true
		}
	}
	return false, false
}

// commitCaptured reports that the CommandComplete about to be handled is a
// lone COMMIT's (the statement answering is a COMMIT, and only its
// ReadyForQuery follows) whose transaction id is known: one the gateway
// could resolve if the back end were lost now (for the test hook).
func (t *tracker) commitCaptured() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.xidState == xidNone || len(t.queue)-t.head != 2 || t.queue[t.head+1].kind != expSync {
		return false
	}
	switch e := &t.queue[t.head]; e.kind {
	case expStmt:
		return e.st.Kind == sqlclass.Commit
	case expExecute:
		return e.stmt != nil && e.stmt.class.Kind == sqlclass.Commit
	}
	return false
}

// parseXidRow reads the one-column DataRow of the capture.
func parseXidRow(body []byte) (uint8, uint64) {
	if len(body) < 6 || binary.BigEndian.Uint16(body) != 1 {
		return xidNone, 0
	}
	n := int32(binary.BigEndian.Uint32(body[2:]))
	if n < 0 {
		return xidNull, 0
	}
	if int(n) != len(body)-6 {
		return xidNone, 0
	}
	v, err := strconv.ParseUint(unsafeString(body[6:]), 10, 64)
	if err != nil {
		return xidNone, 0
	}
	return xidValue, v
}

// captureCannotRun reports an ErrorResponse of the capture that says it
// cannot run in the session at all: SQLSTATE class 42 (the function not
// found, or not executable by the session's role: an administrator's
// REVOKE), but not a statement or portal of a failed capture left under the
// capture's name (42P05, 42P03), which the next capture closes first.
func captureCannotRun(body []byte) bool {
	code := errorField(body, 'C')
	return len(code) == 5 && code[0] == '4' && code[1] == '2' && string(code) != "42P05" && string(code) != "42P03"
}

// errorField returns a field of an ErrorResponse body, or nil.
func errorField(body []byte, field byte) []byte {
	for len(body) > 0 && body[0] != 0 {
		f := body[0]
		v, rest, ok := cutCStringBytes(body[1:])
		if !ok {
			return nil
		}
		if f == field {
			return v
		}
		body = rest
	}
	return nil
}

// errorIsFatal reports an ErrorResponse of severity FATAL or PANIC.
func errorIsFatal(body []byte) bool {
	for len(body) > 0 && body[0] != 0 {
		field := body[0]
		v, rest, ok := cutCStringBytes(body[1:])
		if !ok {
			return true
		}
		if field == 'S' || field == 'V' {
			return string(v) == "FATAL" || string(v) == "PANIC"
		}
		body = rest
	}
	return false
}
