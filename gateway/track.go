package gateway

import (
	"bytes"
	"encoding/binary"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pgbattery/pgbattery/gateway/sqlclass"
)

// PreparedStatement is a named extended-protocol prepared statement, enough
// to prepare it again on another server.
type PreparedStatement struct {
	Query     string
	ParamOIDs []uint32
}

// SessionState is what the gateway knows about a session's server-side
// state: what a migration must replay, and what forbids one.
type SessionState struct {
	// TxStatus is the last ReadyForQuery status: 'I' idle, 'T' in a
	// transaction, 'E' in a failed transaction.
	TxStatus byte
	// InFlight counts requests (Query, Sync, FunctionCall) sent to the back
	// end and not yet answered with ReadyForQuery.
	InFlight int
	// Copy is set while a COPY is in progress.
	Copy bool
	// Prepared holds the named protocol-level prepared statements.
	Prepared map[string]PreparedStatement
	// SQLPrepared holds SQL-level PREPAREs: name → the PREPARE statement.
	SQLPrepared map[string]string
	// Settings holds committed session-level SETs: parameter → the SET
	// statement that set it, to replay as is.
	Settings map[string]string
	// Reported holds the last ParameterStatus value of every reported
	// parameter.
	Reported map[string]string
	// Listen is the sorted list of channels the session listens on.
	Listen []string
	// Pins is what binds the session to its server (see sqlclass.Pin).
	// PinSessionState is also set when the gateway lost track of the
	// session's protocol state.
	Pins sqlclass.Pin
}

// expectation kinds: what response a request still waits for, in order.
type expKind uint8

const (
	expParse   expKind = iota + 1 // ParseComplete
	expBind                       // BindComplete
	expClose                      // CloseComplete
	expExecute                    // CommandComplete / EmptyQuery / PortalSuspended
	expStmt                       // one statement of a simple Query
	expSync                       // ReadyForQuery ending a Sync or Query or FunctionCall
	// expXid is the gateway's own xid query, sent just before a COMMIT (see
	// capture.go); its responses never reach the client.
	expXid
)

type expect struct {
	kind      expKind
	name      string    // Parse / Close: statement or portal name
	closeKind byte      // Close: 'S' or 'P'
	stmt      *stmtInfo // Parse: the statement; Execute: the statement run
	st        sqlclass.Statement
	text      string // expStmt: statement text, kept for session-state kinds
	capture   byte   // expXid: captureSimple, captureExtended, captureAfterWrite or captureAfterWriteExtended
	closes    uint8  // expXid, extended: CloseCompletes still to come
	// describe: the answer to a Describe the client sent right after this
	// request's message, which the server sends right after this one's:
	// 0 none, 'n' NoData (a COMMIT portal), 'x' anything else (see
	// tracker.describe).
	describe byte
}

// stmtInfo is a prepared statement as the tracker sees it.
type stmtInfo struct {
	query string
	oids  []uint32
	class sqlclass.Statement
	// resolvable: a COMMIT whose outcome the gateway can resolve after a
	// lost back end (not AND CHAIN).
	resolvable bool
	// capturesAfter: a write after whose Execute the transaction's id can
	// be asked for (see capturableWrite).
	capturesAfter bool
}

// change is a transactional session-state change, applied at commit.
type change struct {
	kind sqlclass.Kind
	name string
	text string
	all  bool
}

// maxExpectations bounds the response queue; beyond it the tracker gives up
// (and pins the session) rather than grow without limit.
const maxExpectations = 1 << 16

// tracker follows a session's protocol traffic in both directions and keeps
// the SessionState. Client-side methods are called in the order requests go
// to the back end, server-side ones in the order responses come back.
type tracker struct {
	mu sync.Mutex

	txStatus byte
	inFlight int
	copy     bool
	copyIn   bool // the COPY in progress reads from the client

	prepared    map[string]*stmtInfo
	sqlPrepared map[string]string
	settings    map[string]string
	reported    map[string]string
	listen      map[string]struct{}
	pins        sqlclass.Pin
	lost        bool

	queue []expect
	head  int

	pending      []change
	errorInCycle bool
	// describeLoose: a Describe was sent with nothing else unanswered, so
	// whether its answer came is not known; reset at ReadyForQuery.
	describeLoose bool

	// unnamed is the latest unnamed statement; portals maps named portals
	// to their statements, unnamedPortal the unnamed portal's.
	unnamed       *stmtInfo
	portals       map[string]*stmtInfo
	unnamedPortal *stmtInfo

	split []sqlclass.Statement // reused by query()

	// lastUnnamed and lastUnnamedText remember the latest unnamed Parse, so
	// a client that parses the same text again and again (pgbench -M
	// extended, JDBC, pgx's exec mode) costs neither an allocation nor a
	// classification per Parse: a stmtInfo never changes once made. Only
	// parse (the client side) uses them.
	lastUnnamed     *stmtInfo
	lastUnnamedText []byte

	// Commit resolution (capture.go). resolveCommits is set for sessions
	// that can move (the read-write port). capturing is set while an
	// expXid is queued, so serverToClient looks at responses only then;
	// xidState and xid are what the last capture read.
	resolveCommits bool
	capturing      atomic.Bool
	xidState       uint8
	// xidDirty: an extended capture failed after it may have created its
	// statement or portal (see xidCaptureExtendedClean).
	xidDirty bool
	// cycleWrote says whether a statement that is not a read has
	// completed since the last ReadyForQuery (wroteSimple, wroteExtended):
	// a back end lost after it and before ReadyForQuery leaves work whose
	// outcome matters, although nothing is left in the queue.
	cycleWrote uint8
	xid        uint64
	// commitAcked: a CommandComplete "COMMIT" was passed to the client in
	// the request in progress.
	commitAcked bool
}

func newTracker() *tracker {
	return &tracker{
		txStatus:    'I',
		prepared:    map[string]*stmtInfo{},
		sqlPrepared: map[string]string{},
		settings:    map[string]string{},
		reported:    map[string]string{},
		listen:      map[string]struct{}{},
	}
}

// State returns a deep copy of the tracked state.
func (t *tracker) State() SessionState {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := SessionState{
		TxStatus:    t.txStatus,
		InFlight:    t.inFlight,
		Copy:        t.copy,
		Prepared:    make(map[string]PreparedStatement, len(t.prepared)),
		SQLPrepared: make(map[string]string, len(t.sqlPrepared)),
		Settings:    make(map[string]string, len(t.settings)),
		Reported:    make(map[string]string, len(t.reported)),
		Pins:        t.pins,
	}
	for k, v := range t.prepared {
		st.Prepared[k] = PreparedStatement{Query: v.query, ParamOIDs: append([]uint32(nil), v.oids...)}
	}
	for k, v := range t.sqlPrepared {
		st.SQLPrepared[k] = v
	}
	for k, v := range t.settings {
		st.Settings[k] = v
	}
	for k, v := range t.reported {
		st.Reported[k] = v
	}
	for k := range t.listen {
		st.Listen = append(st.Listen, k)
	}
	sort.Strings(st.Listen)
	return st
}

func (t *tracker) push(e expect) {
	if t.lost {
		return
	}
	if len(t.queue)-t.head >= maxExpectations {
		t.loseTrack()
		return
	}
	if t.head > 0 && t.head == len(t.queue) {
		t.queue = t.queue[:0]
		t.head = 0
	}
	t.queue = append(t.queue, e)
}

func (t *tracker) front() *expect {
	if t.head >= len(t.queue) {
		return nil
	}
	return &t.queue[t.head]
}

func (t *tracker) pop() {
	if t.queue[t.head].kind == expXid {
		t.capturing.Store(false)
	}
	t.queue[t.head] = expect{}
	t.head++
	if t.head == len(t.queue) {
		t.queue = t.queue[:0]
		t.head = 0
	}
}

// loseTrack gives up following the protocol state: the session can no
// longer be moved safely.
func (t *tracker) loseTrack() {
	t.lost = true
	t.pins |= sqlclass.PinSessionState
	t.capturing.Store(false)
	t.xidState = xidNone
	for i := t.head; i < len(t.queue); i++ {
		t.queue[i] = expect{}
	}
	t.queue = t.queue[:0]
	t.head = 0
}

// sessionKinds are the statement kinds whose name and text the tracker keeps.
func keepsText(k sqlclass.Kind) bool {
	switch k {
	case sqlclass.Set, sqlclass.Reset, sqlclass.Listen, sqlclass.Unlisten, sqlclass.Prepare,
		sqlclass.Deallocate, sqlclass.Discard, sqlclass.Declare, sqlclass.CursorOp:
		return true
	}
	return false
}

// idle reports whether the session is outside a transaction with nothing in
// flight.
func (t *tracker) idle() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.txStatus == 'I' && t.inFlight == 0 && !t.copy
}

// quiet reports whether the session is at a clean boundary between
// requests: outside a transaction, nothing sent and unanswered, and its
// state tracked. Only a quiet session can be moved as it is.
func (t *tracker) quiet() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.txStatus == 'I' && t.inFlight == 0 && !t.copy && t.head == len(t.queue) && !t.lost
}

// inFlightWork describes what a session had sent and not seen answered when
// its back end was lost.
type inFlightWork struct {
	txStatus byte // the last ReadyForQuery status
	requests int  // requests (Query, Sync, FunctionCall) awaiting ReadyForQuery
	partial  bool // messages sent after the last Sync, awaiting more
	copy     bool
	copyIn   bool
	commit   bool // a COMMIT (or PREPARE TRANSACTION ...) among them
	readOnly bool // every statement among them is a read
	pins     sqlclass.Pin
	lost     bool
	// commitOnly: what is unanswered is exactly one request whose only
	// unanswered statement is a COMMIT (or END) and its ReadyForQuery.
	commitOnly bool
	// xidState and xid: what the gateway captured of the committing
	// transaction's id (xidNone if nothing, or the capture is unfinished).
	xidState uint8
	xid      uint64
	// commitAcked: the client already has the CommandComplete of a COMMIT
	// and only ReadyForQuery is missing.
	commitAcked bool
	// commitPrelude: with commitOnly, the answers the server still owed
	// ahead of the COMMIT's CommandComplete (ParseComplete, BindComplete,
	// NoData of an extended-protocol COMMIT lost before it answered them),
	// encoded; a synthesized success sends them first.
	commitPrelude []byte
	// autocommitDone: outside a transaction block, every statement of a
	// simple Query has completed and only ReadyForQuery is missing; the
	// server commits an implicit transaction before the last
	// CommandComplete, so the work is done.
	autocommitDone bool
}

// cycleWrote bits.
const (
	wroteSimple   uint8 = 1 << iota // a simple-protocol statement completed
	wroteExtended                   // an extended-protocol Execute completed
	wroteBegin                      // a simple-protocol BEGIN completed
)

// inFlight summarises the unanswered requests.
func (t *tracker) inFlightWork() inFlightWork {
	t.mu.Lock()
	defer t.mu.Unlock()
	w := inFlightWork{txStatus: t.txStatus, requests: t.inFlight, copy: t.copy, copyIn: t.copyIn,
		readOnly: true, pins: t.pins, lost: t.lost, xidState: t.xidState, xid: t.xid}
	statements, commits, others, prelude := 0, 0, 0, 0
	capturing := false
	for i := t.head; i < len(t.queue); i++ {
		e := &t.queue[i]
		if e.kind == expXid && e.capture == captureAfterWrite {
			// Not the client's: its request ended with the Sync before.
			// The id it asks for is not known yet.
			w.xidState = xidNone
			continue
		}
		w.partial = e.kind != expSync
		if e.kind != expSync && e.kind != expStmt && e.kind != expExecute {
			others++
			capturing = capturing || e.kind == expXid
			// The Parse, Bind and Close of an extended COMMIT whose
			// answers never came: a synthesized success answers them.
			// What a named Parse or a Close does to the session's
			// statements is then applied to the new back end
			// (finishLost, committed); only a COMMIT in a transaction
			// block ('T') can be answered with success that way.
			if statements == 0 && e.describe != 'x' && (e.kind == expBind ||
				(e.kind == expParse || e.kind == expClose) && (e.name == "" || t.txStatus == 'T')) {
				prelude++
				w.commitPrelude = append(w.commitPrelude, e.kind.answer(), 0, 0, 0, 4)
				if e.describe == 'n' {
					w.commitPrelude = append(w.commitPrelude, 'n', 0, 0, 0, 4)
				}
			}
		} else if e.describe != 0 {
			others++ // a Describe answered after a statement's answers
		}
		var kind sqlclass.Kind
		switch e.kind {
		case expStmt:
			kind = e.st.Kind
		case expExecute:
			kind = sqlclass.Other
			if e.stmt != nil {
				kind = e.stmt.class.Kind
			}
		default:
			continue
		}
		statements++
		switch kind {
		case sqlclass.Read, sqlclass.Begin:
			// A lost BEGIN started nothing that outlives the back end:
			// as safe to send again as a read.
		case sqlclass.Commit, sqlclass.TwoPhase:
			w.commit = true
			w.readOnly = false
			if kind == sqlclass.Commit {
				commits++
			}
		default:
			w.readOnly = false
		}
	}
	if t.cycleWrote != 0 {
		w.readOnly = false
	}
	w.autocommitDone = t.cycleWrote == wroteSimple && t.txStatus == 'I' && w.requests == 1 && !w.partial && !w.copy &&
		statements == 0 && others == 0
	w.commitOnly = w.requests == 1 && !w.partial && !w.copy && statements == 1 && commits == 1 && others == prelude &&
		!t.describeLoose
	w.commitAcked = t.commitAcked && w.requests == 1 && !w.partial && !w.copy && statements == 0 && others == 0
	if capturing || others > prelude {
		w.xidState = xidNone // the capture had not finished
	}
	if !w.commitOnly {
		w.commitPrelude = nil
	}
	return w
}

// answer is the message type the server answers an expectation's request
// with, where it is a single fixed one.
func (k expKind) answer() byte {
	switch k {
	case expParse:
		return '1'
	case expBind:
		return '2'
	case expClose:
		return '3'
	}
	return 0
}

// resetAfterLoss forgets everything in flight on a lost back end: the
// client has been answered by the gateway and the session goes on with the
// given transaction status. Transactional changes not yet committed are
// gone with the transaction.
func (t *tracker) resetAfterLoss(txStatus byte) { t.finishLost(txStatus, false) }

// finishLost is resetAfterLoss that also applies the transaction's pending
// session-state changes when its COMMIT was found committed.
func (t *tracker) finishLost(txStatus byte, committed bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := t.head; i < len(t.queue); i++ {
		if e := &t.queue[i]; committed && e.name != "" {
			// The client gets ParseComplete and CloseComplete for the
			// messages sent with its COMMIT (commitPrelude): so be it
			// on the new back end too.
			switch {
			case e.kind == expParse:
				t.prepared[e.name] = e.stmt
			case e.kind == expClose && e.closeKind == 'S':
				delete(t.prepared, e.name)
			}
		}
		t.queue[i] = expect{}
	}
	t.queue, t.head = t.queue[:0], 0
	t.txStatus, t.inFlight, t.copy, t.copyIn = txStatus, 0, false, false
	t.capturing.Store(false)
	t.xidState, t.commitAcked, t.cycleWrote = xidNone, false, 0
	if committed {
		// The gateway found the lost COMMIT committed: its SETs and
		// LISTENs now hold, and are replayed on the new back end.
		t.commitPending()
	}
	t.pending = t.pending[:0]
	t.errorInCycle, t.describeLoose = false, false
	t.unnamed, t.unnamedPortal = nil, nil
	clear(t.portals)
}

// refusableByFence reports whether a read-only refusal answering the
// request in flight could only be the server's doing, and the request be
// sent again whole (see session.hidesFenceRejection): one request (one
// Sync or Query) outside a transaction block, that may write (a refusal of
// a plain read is not worth keeping the answer's start back for), in a
// session whose client never made it read-only with SET. (The server's own
// ParameterStatus does not tell: a back end reports the fence's change at
// the end of the first command after the reload, which may have been a
// read that succeeded.)
func (t *tracker) refusableByFence() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lost || t.copy || t.txStatus != 'I' || t.inFlight != 1 {
		return false
	}
	for i := t.head; i < len(t.queue); i++ {
		write := false
		switch e := &t.queue[i]; e.kind {
		case expStmt:
			write = e.st.Kind != sqlclass.Read
		case expExecute:
			write = e.stmt == nil || e.stmt.class.Kind != sqlclass.Read
		}
		if write {
			_, dtro := t.settings["default_transaction_read_only"]
			_, chars := t.settings["session characteristics"]
			return !dtro && !chars
		}
	}
	return false
}

// --- client → server ---

// query records a simple Query. sql may alias a reused buffer: whatever is
// kept is cloned. It reports whether the gateway must send its xid query
// (xidQuerySimple) just before this one (a lone COMMIT in a transaction
// block whose id is not known yet, with nothing else in flight), or just
// after it (captureAfter: the first lone write of a transaction block; see
// capture.go).
func (t *tracker) query(sql string) (capture, captureAfter bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.split = sqlclass.Split(sql, t.split[:0])
	if t.resolveCommits && len(t.split) == 1 && t.split[0].Kind == sqlclass.Commit && t.xidState == xidNone &&
		t.canCapture() && !mentionsChain(t.split[0].Text(sql)) {
		capture = true
		t.startCapture(captureSimple)
	}
	if t.resolveCommits && len(t.split) == 1 && capturableWrite(t.split[0], sql) && t.xidState == xidNone && t.canCapture() {
		captureAfter = true
	}
	t.inFlight++
	for _, st := range t.split {
		e := expect{kind: expStmt, st: st}
		if keepsText(st.Kind) {
			e.st.Name = strings.Clone(st.Name)
			e.text = strings.Clone(st.Text(sql))
		} else {
			e.st.Name = ""
		}
		t.push(e)
	}
	t.push(expect{kind: expSync})
	if captureAfter {
		t.push(expect{kind: expXid, capture: captureAfterWrite})
		if !t.lost {
			t.capturing.Store(true)
		}
	}
	return capture, captureAfter
}

// parse records a Parse message body.
func (t *tracker) parse(body []byte) {
	name, rest, ok := cutCStringBytes(body)
	if !ok {
		return // the server will reject it; its error resyncs us
	}
	query, rest, ok := cutCStringBytes(rest)
	if !ok {
		return
	}
	var si *stmtInfo
	if len(name) == 0 && t.lastUnnamed != nil && bytes.Equal(query, t.lastUnnamedText) {
		si = t.lastUnnamed // the same text as last time: the same statement
	} else {
		si = newStmtInfo(name, query, rest)
		if len(name) == 0 && len(query) <= maxRememberedUnnamed {
			t.lastUnnamed = si
			t.lastUnnamedText = append(t.lastUnnamedText[:0], query...)
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(name) == 0 {
		t.unnamed = si
	}
	t.push(expect{kind: expParse, name: string(name), stmt: si})
}

// maxRememberedUnnamed bounds the unnamed statement text parse keeps to
// recognise the next Parse of the same text.
const maxRememberedUnnamed = 8 << 10

// newStmtInfo classifies a parsed statement; rest is what follows the query
// in the Parse message (the parameter types). Only named statements keep
// their parameter types: they are what a move prepares again.
func newStmtInfo(name, query, rest []byte) *stmtInfo {
	si := &stmtInfo{}
	if len(name) > 0 && len(rest) >= 2 {
		n := int(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
		if n > 0 && len(rest) >= 4*n {
			si.oids = make([]uint32, n)
			for i := range si.oids {
				si.oids[i] = binary.BigEndian.Uint32(rest[4*i:])
			}
		}
	}
	si.class = sqlclass.Classify(unsafeString(query))
	si.resolvable = si.class.Kind == sqlclass.Commit && !mentionsChain(unsafeString(query))
	si.capturesAfter = capturableWrite(si.class, unsafeString(query))
	if keepsText(si.class.Kind) || len(name) > 0 {
		si.query = string(query)
		si.class = sqlclass.Classify(si.query) // re-point names into the kept copy
	} else {
		si.class.Name = ""
	}
	return si
}

// bind records a Bind; prefix holds at least the portal and statement
// names (the rest of a Bind is parameter data the tracker does not need).
func (t *tracker) bind(prefix []byte) {
	portal, rest, ok := cutCStringBytes(prefix)
	var stmtName []byte
	if ok {
		stmtName, _, ok = cutCStringBytes(rest)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !ok {
		// Names longer than what we could see: give up on this session's
		// statement tracking rather than guess.
		t.loseTrack()
		return
	}
	var si *stmtInfo
	if len(stmtName) == 0 {
		si = t.unnamed
	} else {
		si = t.prepared[string(stmtName)]
		if si == nil {
			// Parsed but not yet confirmed: find it in the queue.
			for i := len(t.queue) - 1; i >= t.head; i-- {
				if e := &t.queue[i]; e.kind == expParse && e.name == string(stmtName) {
					si = e.stmt
					break
				}
			}
		}
	}
	if len(portal) == 0 {
		t.unnamedPortal = si
	} else {
		if t.portals == nil {
			t.portals = map[string]*stmtInfo{}
		}
		t.portals[string(portal)] = si
	}
	t.push(expect{kind: expBind})
}

// execute records an Execute message body; it reports whether
// executeCapture has a capture sent before it.
func (t *tracker) execute(body []byte) (capture bool) {
	before, _ := t.executeCapture(body)
	return before != nil
}

// executeCapture records an Execute message body. It returns the xid
// capture (extendedCapture) the gateway must send just before it (the
// portal runs a COMMIT in a transaction block, with nothing but Parse, Bind
// and Close unanswered), or just after it (captureAfter: the portal runs
// the first write of a transaction block; see capture.go), or nil. Either
// way only while the transaction's id is not known yet.
func (t *tracker) executeCapture(body []byte) (capture, captureAfter []byte) {
	portal, _, _ := cutCStringBytes(body)
	t.mu.Lock()
	defer t.mu.Unlock()
	var si *stmtInfo
	if len(portal) == 0 {
		si = t.unnamedPortal
	} else {
		si = t.portals[string(portal)]
	}
	after := false
	if si != nil && t.resolveCommits && t.xidState == xidNone {
		switch {
		case si.resolvable && t.canCapture():
			capture = t.extendedCapture(captureExtended)
		case si.capturesAfter && t.canCaptureAfterExecute():
			after = true
		}
	}
	t.push(expect{kind: expExecute, stmt: si})
	if after {
		captureAfter = t.extendedCapture(captureAfterWriteExtended)
	}
	return capture, captureAfter
}

// describe records a Describe message body: the answer it gets comes right
// after the answer of the last request message before it, so it is noted
// there, as NoData for the portal of a COMMIT (what a synthesized answer
// can send, see inFlightWork) or as unknown otherwise.
func (t *tracker) describe(body []byte) {
	if len(body) < 2 {
		return // the server will reject it; its error resyncs us
	}
	name, _, ok := cutCStringBytes(body[1:])
	t.mu.Lock()
	defer t.mu.Unlock()
	answer := byte('x')
	if ok && body[0] == 'P' {
		si := t.unnamedPortal
		if len(name) > 0 {
			si = t.portals[string(name)]
		}
		if si != nil && si.class.Kind == sqlclass.Commit {
			answer = 'n'
		}
	}
	if t.head == len(t.queue) {
		t.describeLoose = true
		return
	}
	if e := &t.queue[len(t.queue)-1]; e.describe == 0 {
		e.describe = answer
	} else {
		e.describe = 'x'
	}
}

// closeMsg records a Close message body.
func (t *tracker) closeMsg(body []byte) {
	if len(body) < 2 {
		return
	}
	name, _, _ := cutCStringBytes(body[1:])
	t.mu.Lock()
	defer t.mu.Unlock()
	t.push(expect{kind: expClose, closeKind: body[0], name: string(name)})
}

// sync records a Sync (or a FunctionCall, answered the same way).
func (t *tracker) sync() {
	t.mu.Lock()
	t.inFlight++
	t.push(expect{kind: expSync})
	t.mu.Unlock()
}

// copyEnded records CopyDone / CopyFail from the client.
func (t *tracker) copyEnded() {}

// --- server → client ---

// server handles a back-end message the tracker cares about.
func (t *tracker) server(typ byte, body []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch typ {
	case '1': // ParseComplete
		if e := t.front(); e != nil && e.kind == expParse {
			if e.name != "" {
				t.prepared[e.name] = e.stmt
			}
			t.pop()
		} else {
			t.mismatch()
		}
	case '2': // BindComplete
		if e := t.front(); e != nil && e.kind == expBind {
			t.pop()
		} else {
			t.mismatch()
		}
	case '3': // CloseComplete
		if e := t.front(); e != nil && e.kind == expClose {
			if e.closeKind == 'S' {
				delete(t.prepared, e.name)
			} else if e.name != "" {
				delete(t.portals, e.name)
			}
			t.pop()
		} else {
			t.mismatch()
		}
	case 'C', 'I', 's': // CommandComplete, EmptyQueryResponse, PortalSuspended
		t.copy, t.copyIn = false, false
		e := t.front()
		if e == nil {
			t.mismatch()
			return
		}
		switch e.kind {
		case expExecute:
			if typ == 'C' && e.stmt != nil {
				t.apply(e.stmt.class, e.stmt.query, body)
			} else if typ == 'C' && e.stmt == nil {
				t.apply(sqlclass.Statement{Kind: sqlclass.Other}, "", body)
			}
			if e.stmt == nil || e.stmt.class.Kind != sqlclass.Read {
				// Executed but, in an implicit transaction, committed only
				// at the Sync.
				t.cycleWrote |= wroteExtended
			}
			t.pop()
		case expStmt:
			if typ == 'C' {
				t.apply(e.st, e.text, body)
			}
			switch e.st.Kind {
			case sqlclass.Read:
			case sqlclass.Begin:
				t.cycleWrote |= wroteBegin // the work is not committed yet
			default:
				t.cycleWrote |= wroteSimple
			}
			t.pop()
		case expSync:
			// EmptyQueryResponse for an empty simple query: no statement
			// was expected.
			if typ != 'I' {
				t.mismatch()
			}
		default:
			t.mismatch()
		}
	case 'E': // ErrorResponse: the back end skips to the next Sync.
		t.copy, t.copyIn = false, false
		t.errorInCycle = true
		for e := t.front(); e != nil && e.kind != expSync; e = t.front() {
			t.pop()
		}
	case 'Z': // ReadyForQuery
		if len(body) >= 1 {
			t.txStatus = body[0]
		}
		if t.txStatus == 'I' {
			// The transaction ended: its captured id goes with it (it is
			// kept across the transaction's statements, see capture.go).
			t.xidState = xidNone
		}
		t.commitAcked, t.cycleWrote, t.describeLoose = false, 0, false
		if t.inFlight > 0 {
			t.inFlight--
		}
		for e := t.front(); e != nil; e = t.front() {
			kind := e.kind
			t.pop()
			if kind == expSync {
				break
			}
			// A response we expected never came, and no error explains it.
			t.mismatch()
		}
		switch t.txStatus {
		case 'I':
			if t.errorInCycle {
				t.pending = t.pending[:0]
			} else {
				t.commitPending()
			}
			t.unnamedPortal = nil
			clear(t.portals)
		}
		t.errorInCycle = false
	case 'S': // ParameterStatus
		name, rest, ok := cutCStringBytes(body)
		if !ok {
			return
		}
		value, _, ok := cutCStringBytes(rest)
		if !ok {
			return
		}
		if old, ok := t.reported[string(name)]; !ok || old != string(value) {
			t.reported[string(name)] = string(value)
		}
	case 'G', 'H', 'W': // CopyIn/Out/BothResponse
		t.copy = true
		t.copyIn = typ != 'H'
	}
}

func (t *tracker) mismatch() {
	if !t.lost {
		t.loseTrack()
	}
}

// apply records the effect of a completed statement; tag is the
// CommandComplete body.
func (t *tracker) apply(st sqlclass.Statement, text string, tag []byte) {
	t.pins |= st.Pin
	t.pins &^= st.Unpin
	switch st.Kind {
	case sqlclass.Set, sqlclass.Reset, sqlclass.Listen, sqlclass.Unlisten:
		t.pending = append(t.pending, change{kind: st.Kind, name: st.Name, text: text, all: st.All})
	case sqlclass.Discard:
		if st.Name == "all" {
			t.pending = append(t.pending, change{kind: sqlclass.Discard, all: true})
			clear(t.prepared)
			clear(t.sqlPrepared)
		}
	case sqlclass.Prepare:
		if st.Name != "" {
			t.sqlPrepared[st.Name] = text
		}
	case sqlclass.Deallocate:
		if st.All {
			clear(t.sqlPrepared)
			clear(t.prepared)
		} else {
			// SQL and protocol prepared statements share one namespace:
			// DEALLOCATE drops either.
			delete(t.sqlPrepared, st.Name)
			delete(t.prepared, st.Name)
		}
	case sqlclass.Other:
		// Not understood: it may have changed session state we cannot
		// replay.
		t.pins |= sqlclass.PinSessionState
	}
	// Only while the COMMIT is the last statement completed: after a
	// BEGIN that followed it, say, the client is in a new transaction.
	t.commitAcked = bytes.HasPrefix(tag, []byte("COMMIT"))
	switch {
	case bytes.HasPrefix(tag, []byte("COMMIT")), bytes.HasPrefix(tag, []byte("PREPARE TRANSACTION")):
		t.commitPending()
		// The transaction is over (even if ReadyForQuery does not say so:
		// "COMMIT; BEGIN", AND CHAIN): its id is not the next one's.
		t.xidState = xidNone
	case bytes.HasPrefix(tag, []byte("ROLLBACK")):
		if st.Kind != sqlclass.Savepoint {
			t.pending = t.pending[:0]
			t.xidState = xidNone
		}
	}
}

// commitPending applies the transactional changes of a committed
// transaction.
func (t *tracker) commitPending() {
	for _, c := range t.pending {
		switch c.kind {
		case sqlclass.Set:
			if c.name != "" {
				t.settings[c.name] = c.text
			} else {
				t.pins |= sqlclass.PinSessionState
			}
		case sqlclass.Reset:
			if c.all {
				clear(t.settings)
			} else {
				delete(t.settings, c.name)
			}
		case sqlclass.Listen:
			t.listen[c.name] = struct{}{}
		case sqlclass.Unlisten:
			if c.all {
				clear(t.listen)
			} else {
				delete(t.listen, c.name)
			}
		case sqlclass.Discard:
			clear(t.settings)
			clear(t.listen)
		}
	}
	t.pending = t.pending[:0]
}

func cutCStringBytes(b []byte) ([]byte, []byte, bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return nil, nil, false
	}
	return b[:i], b[i+1:], true
}
