package gateway

import (
	"encoding/binary"
	"strconv"
	"strings"
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
//   - extended protocol: Parse/Bind/Execute/Close of the same SELECT under a
//     name no client uses, then Flush, inserted before the COMMIT portal's
//     Execute (within the client's batch: the client's unnamed statement
//     and portal are left alone).
//
// The responses (RowDescription, DataRow, CommandComplete, ReadyForQuery,
// or ParseComplete, BindComplete, DataRow, CommandComplete, CloseComplete)
// are consumed by the gateway; the client and the tracker never see them.
// If the back end is lost before the COMMIT's answer, recoverLost resolves
// the outcome on the new primary with the captured id (resolveCommit).
//
// A COMMIT whose back end died before it answered anything, the capture
// included, would still be unknown (08007). So in the simple protocol the
// id is also asked for right after the first lone write statement of a
// transaction block (UPDATE, INSERT, DELETE, …: it has an id from then on),
// and kept until the transaction ends; a COMMIT whose id is already known
// is not captured again. pgbench's TPC-B script sends one capture per
// transaction either way.
//
// Cost: only COMMIT and write statements are looked at (the tracker
// classifies every statement anyway); the response path checks one atomic
// flag per message.

// Capture kinds (expect.capture).
const (
	captureSimple   byte = 'Q'
	captureExtended byte = 'P'
	// captureAfterWrite: the simple-protocol query sent right after the
	// first lone write of a transaction block. It answers after the
	// client's ReadyForQuery; in a transaction that the write made fail it
	// fails too, and that error is nobody's business.
	captureAfterWrite byte = 'W'
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

const xidSQL = "SELECT pg_current_xact_id_if_assigned()"

// xidQuerySimple and xidCaptureExtended are the encoded capture requests.
var (
	xidQuerySimple     = encodeMessages(queryMsg(xidSQL))
	xidCaptureExtended = encodeMessages(
		encodeMsg('P', cString(xidStatement), cString(xidSQL), []byte{0, 0}),                   // Parse, no parameter types
		encodeMsg('B', cString(xidStatement), cString(xidStatement), []byte{0, 0, 0, 0, 0, 0}), // Bind: no formats, parameters or result formats
		encodeMsg('E', cString(xidStatement), []byte{0, 0, 0, 0}),                              // Execute, all rows
		encodeMsg('C', []byte{'S'}, cString(xidStatement)),                                     // Close the statement (and so its portal)
		encodeMsg('H'), // Flush: send the answers now
	)
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
		return true, false
	case 'C':
		return true, false
	case '3':
		if e.capture == captureExtended {
			t.pop()
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
		if e.capture == captureAfterWrite && !errorIsFatal(body) {
			t.xidState = xidNone
			return true, false
		}
		if e.capture == captureSimple && !errorIsFatal(body) {
			// The capture failed (a cancel, say): the transaction is
			// aborted and the client's COMMIT will answer ROLLBACK. The
			// client learns why from a notice; its request gets exactly
			// one ReadyForQuery.
			t.xidState = xidNone
			return true, true
		}
		// Extended: the client's batch failed here; the tracker skips to
		// its Sync as usual (dropping the capture).
	}
	return false, false
}

// commitCaptured reports that the transaction id of the COMMIT in flight
// was captured (for the test hook).
func (t *tracker) commitCaptured() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.xidState != xidNone
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
