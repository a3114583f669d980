package gateway

import (
	"bytes"
	"testing"

	"github.com/pgbattery/pgbattery/gateway/sqlclass"
)

// Capturing the transaction id right after the first write of a
// transaction block in the extended protocol (capture.go): tracker and
// forwarding, without a server. capture_extended_pg_test.go runs the same
// against PostgreSQL.

// Extended-protocol client messages, as bodies for the tracker.
func parseBody(name, sql string) []byte { return append(append(cstr(name), cstr(sql)...), 0, 0) }
func bindBody(portal, stmt string) []byte {
	return append(cstr(portal), cstr(stmt)...)
}
func executeBody(portal string, maxRows byte) []byte {
	return append(cstr(portal), 0, 0, 0, maxRows)
}

// errorBody is an ErrorResponse body with severity ERROR and code.
func errorBody(code string) []byte {
	return append(append(append([]byte{'S'}, cstr("ERROR")...), 'C'), append(cstr(code), 0)...)
}

// answerExtendedCapture feeds the answers of xidCaptureExtended to the
// tracker as serverToClient does, failing unless each is swallowed.
func answerExtendedCapture(t *testing.T, tr *tracker, row []byte) {
	t.Helper()
	for _, m := range []struct {
		typ  byte
		body []byte
	}{{'1', nil}, {'2', nil}, {'D', row}, {'C', cstr("SELECT 1")}, {'3', nil}, {'3', nil}} {
		if swallow, notice := tr.captured(m.typ, m.body); !swallow || notice {
			t.Fatalf("capture answer %c not swallowed", m.typ)
		}
	}
	if tr.capturing.Load() {
		t.Fatal("still capturing after the capture's CloseCompletes")
	}
}

// execCaptures is executeCapture's answer as flags.
func execCaptures(tr *tracker, body []byte) (before, after bool) {
	b, a := tr.executeCapture(body)
	return b != nil, a != nil
}

// serverAnswer passes a client-bound message through the tracker as
// serverToClient does, failing if the capture would swallow it.
func serverAnswer(t *testing.T, tr *tracker, typ byte, body []byte) {
	t.Helper()
	if tr.capturing.Load() {
		if swallow, _ := tr.captured(typ, body); swallow {
			t.Fatalf("the client's %c was swallowed", typ)
		}
	}
	tr.server(typ, body)
}

func inTransaction() *tracker {
	tr := newTracker()
	tr.resolveCommits, tr.txStatus = true, 'T'
	return tr
}

func TestCaptureAfterWriteExtended(t *testing.T) {
	tr := inTransaction()
	tr.parse(parseBody("", "INSERT INTO t VALUES ($1)"))
	tr.bind(bindBody("", ""))
	if before, after := execCaptures(tr, executeBody("", 0)); before || !after {
		t.Fatalf("first write of a transaction block: capture before %v, after %v", before, after)
	}
	tr.sync()
	serverAnswer(t, tr, '1', nil)
	serverAnswer(t, tr, '2', nil)
	serverAnswer(t, tr, 'C', cstr("INSERT 0 1"))
	if w := tr.inFlightWork(); w.xidState != xidNone || w.commit {
		t.Fatalf("capture under way: %+v", w)
	}
	answerExtendedCapture(t, tr, xidRow("4711", false))
	serverAnswer(t, tr, 'Z', []byte{'T'})
	if tr.xidState != xidValue || tr.xid != 4711 || tr.lost || !tr.queueEmpty() {
		t.Fatalf("after the write: xid state %d, xid %d, lost %v", tr.xidState, tr.xid, tr.lost)
	}

	// A second write: the id is known, no capture.
	tr.parse(parseBody("", "UPDATE t SET a = 2"))
	tr.bind(bindBody("", ""))
	if before, after := execCaptures(tr, executeBody("", 0)); before || after {
		t.Fatal("captured again although the id is known")
	}
	tr.sync()
	for _, m := range []byte{'1', '2'} {
		serverAnswer(t, tr, m, nil)
	}
	serverAnswer(t, tr, 'C', cstr("UPDATE 1"))
	serverAnswer(t, tr, 'Z', []byte{'T'})

	// The COMMIT is not captured again, and can be resolved with the id.
	tr.parse(parseBody("", "COMMIT"))
	tr.bind(bindBody("", ""))
	if before, after := execCaptures(tr, executeBody("", 0)); before || after {
		t.Fatal("COMMIT captured although the id is known")
	}
	tr.sync()
	serverAnswer(t, tr, '1', nil)
	serverAnswer(t, tr, '2', nil)
	if w := tr.inFlightWork(); !w.commitOnly || w.xidState != xidValue || w.xid != 4711 {
		t.Fatalf("COMMIT in flight: %+v", w)
	}
	if !tr.commitCaptured() {
		t.Fatal("commitCaptured false for a lone COMMIT with a known id")
	}
	serverAnswer(t, tr, 'C', cstr("COMMIT"))
	serverAnswer(t, tr, 'Z', []byte{'I'})
	if tr.xidState != xidNone || !tr.quiet() {
		t.Fatal("the id outlived its transaction")
	}
}

// queueEmpty reports whether no answer is expected (test helper).
func (t *tracker) queueEmpty() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.head == len(t.queue)
}

// TestCaptureAfterWriteExtendedFails: the write fails, so the server skips
// the capture up to the Sync: it answers nothing, and nothing of the
// client's answers is lost or swallowed.
func TestCaptureAfterWriteExtendedFails(t *testing.T) {
	tr := inTransaction()
	tr.parse(parseBody("", "INSERT INTO t VALUES (1)"))
	tr.bind(bindBody("", ""))
	if _, after := execCaptures(tr, executeBody("", 0)); !after {
		t.Fatal("no capture after the first write")
	}
	// More of the client's batch behind the capture.
	tr.parse(parseBody("", "SELECT 1"))
	tr.bind(bindBody("", ""))
	execCaptures(tr, executeBody("", 0))
	tr.sync()
	serverAnswer(t, tr, '1', nil)
	serverAnswer(t, tr, '2', nil)
	serverAnswer(t, tr, 'E', errorBody("23505"))
	if tr.capturing.Load() {
		t.Fatal("still capturing after the batch failed")
	}
	serverAnswer(t, tr, 'Z', []byte{'E'})
	if tr.lost || tr.xidState != xidNone || !tr.queueEmpty() {
		t.Fatalf("after the failed write: lost %v, xid state %d", tr.lost, tr.xidState)
	}
	// Nothing is captured in the failed transaction; ROLLBACK ends it.
	tr.parse(parseBody("", "INSERT INTO t VALUES (2)"))
	tr.bind(bindBody("", ""))
	if before, after := execCaptures(tr, executeBody("", 0)); before || after {
		t.Fatal("captured in a failed transaction")
	}
	tr.sync()
	serverAnswer(t, tr, 'E', errorBody("25P02"))
	serverAnswer(t, tr, 'Z', []byte{'E'})
	tr.query("ROLLBACK")
	serverAnswer(t, tr, 'C', cstr("ROLLBACK"))
	serverAnswer(t, tr, 'Z', []byte{'I'})
	if !tr.quiet() {
		t.Fatal("not quiet after ROLLBACK")
	}

	// The write succeeds and the capture itself fails (a cancel): the
	// client must see that error, since the rest of its batch is skipped.
	tr = inTransaction()
	tr.parse(parseBody("", "INSERT INTO t VALUES (1)"))
	tr.bind(bindBody("", ""))
	execCaptures(tr, executeBody("", 0))
	tr.sync()
	serverAnswer(t, tr, '1', nil)
	serverAnswer(t, tr, '2', nil)
	serverAnswer(t, tr, 'C', cstr("INSERT 0 1"))
	tr.captured('1', nil)
	if swallow, _ := tr.captured('E', errorBody("57014")); swallow {
		t.Fatal("the capture's own error, which ends the client's batch, was swallowed")
	}
	tr.server('E', errorBody("57014"))
	serverAnswer(t, tr, 'Z', []byte{'E'})
	if tr.lost || tr.capturing.Load() || !tr.queueEmpty() {
		t.Fatal("tracker out of step after a failed capture")
	}
}

// TestCaptureAfterWriteExtendedCases: which Executes are followed by a
// capture.
func TestCaptureAfterWriteExtendedCases(t *testing.T) {
	// A statement parsed once under a name (pgbench -M prepared), executed
	// in a later transaction: classified by its Parse text.
	tr := newTracker()
	tr.resolveCommits = true
	tr.parse(parseBody("P_1", "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"))
	tr.sync()
	tr.server('1', nil)
	tr.server('Z', []byte{'I'})
	tr.query("BEGIN")
	tr.server('C', cstr("BEGIN"))
	tr.server('Z', []byte{'T'})
	tr.bind(bindBody("", "P_1"))
	if _, after := execCaptures(tr, executeBody("", 0)); !after {
		t.Fatal("no capture after a named write statement")
	}

	// A portal run with a row limit: suspended, then the capture.
	tr = inTransaction()
	tr.parse(parseBody("", "INSERT INTO t SELECT g FROM generate_series(1, 10) g RETURNING a"))
	tr.bind(bindBody("c1", ""))
	if _, after := execCaptures(tr, executeBody("c1", 2)); !after {
		t.Fatal("no capture after a write run with a row limit")
	}
	tr.sync()
	serverAnswer(t, tr, '1', nil)
	serverAnswer(t, tr, '2', nil)
	serverAnswer(t, tr, 'D', xidRow("1", false))
	serverAnswer(t, tr, 'D', xidRow("2", false))
	serverAnswer(t, tr, 's', nil)
	answerExtendedCapture(t, tr, xidRow("99", false))
	serverAnswer(t, tr, 'Z', []byte{'T'})
	if tr.xidState != xidValue || tr.xid != 99 || tr.lost {
		t.Fatal("id not kept after a suspended portal")
	}

	// A write that took no id: asked again at the next write.
	tr = inTransaction()
	tr.parse(parseBody("", "UPDATE t SET a = 1 WHERE false"))
	tr.bind(bindBody("", ""))
	execCaptures(tr, executeBody("", 0))
	tr.sync()
	serverAnswer(t, tr, '1', nil)
	serverAnswer(t, tr, '2', nil)
	serverAnswer(t, tr, 'C', cstr("UPDATE 0"))
	answerExtendedCapture(t, tr, xidRow("", true))
	serverAnswer(t, tr, 'Z', []byte{'T'})
	if tr.xidState != xidNone {
		t.Fatal("a NULL id after a write was taken for 'no id at all'")
	}
	tr.parse(parseBody("", "INSERT INTO t VALUES (1)"))
	tr.bind(bindBody("", ""))
	if _, after := execCaptures(tr, executeBody("", 0)); !after {
		t.Fatal("not asked again after a write that took no id")
	}

	// Several Executes in one batch: a capture after the first write only.
	tr = inTransaction()
	tr.parse(parseBody("r", "SELECT 1"))
	tr.parse(parseBody("w", "DELETE FROM t"))
	var afters []bool
	for _, stmt := range []string{"r", "w", "w"} {
		tr.bind(bindBody("", stmt))
		_, after := execCaptures(tr, executeBody("", 0))
		afters = append(afters, after)
	}
	if afters[0] || !afters[1] || afters[2] {
		t.Fatalf("captures after SELECT, DELETE, DELETE: %v", afters)
	}

	// BEGIN in the same batch as the transaction's first write (JDBC).
	tr = newTracker()
	tr.resolveCommits = true
	tr.parse(parseBody("", "BEGIN"))
	tr.bind(bindBody("", ""))
	if _, after := execCaptures(tr, executeBody("", 0)); after {
		t.Fatal("captured after BEGIN")
	}
	tr.parse(parseBody("", "INSERT INTO t VALUES ($1)"))
	tr.bind(bindBody("", ""))
	if _, after := execCaptures(tr, executeBody("", 0)); !after {
		t.Fatal("no capture after the first write behind BEGIN in the same batch")
	}
	tr.sync()
	for _, m := range []byte{'1', '2'} {
		serverAnswer(t, tr, m, nil)
	}
	serverAnswer(t, tr, 'C', cstr("BEGIN"))
	for _, m := range []byte{'1', '2'} {
		serverAnswer(t, tr, m, nil)
	}
	serverAnswer(t, tr, 'C', cstr("INSERT 0 1"))
	answerExtendedCapture(t, tr, xidRow("123", false))
	serverAnswer(t, tr, 'Z', []byte{'T'})
	if tr.xidState != xidValue || tr.xid != 123 {
		t.Fatal("the id of a transaction begun in the batch was not kept")
	}

	// Not after COPY FROM STDIN (the client's data follows), not when the
	// batch ended the transaction block before the write, not outside a
	// transaction block, not with a request in flight, not without
	// resolveCommits.
	for name, c := range map[string]struct {
		tr    *tracker
		batch []string
	}{
		"copy":              {inTransaction(), []string{"COPY t FROM STDIN"}},
		"copy lower":        {inTransaction(), []string{"copy t (a) from stdin"}},
		"commit then":       {inTransaction(), []string{"COMMIT", "INSERT INTO t VALUES (1)"}},
		"rollback then":     {inTransaction(), []string{"ROLLBACK", "INSERT INTO t VALUES (1)"}},
		"unknown then":      {inTransaction(), []string{"FROBNICATE", "INSERT INTO t VALUES (1)"}},
		"autocommit":        {func() *tracker { tr := inTransaction(); tr.txStatus = 'I'; return tr }(), []string{"INSERT INTO t VALUES (1)"}},
		"begin, commit":     {func() *tracker { tr := inTransaction(); tr.txStatus = 'I'; return tr }(), []string{"BEGIN", "COMMIT", "INSERT INTO t VALUES (1)"}},
		"failed block":      {func() *tracker { tr := inTransaction(); tr.txStatus = 'E'; return tr }(), []string{"INSERT INTO t VALUES (1)"}},
		"read-only port":    {func() *tracker { tr := inTransaction(); tr.resolveCommits = false; return tr }(), []string{"INSERT INTO t VALUES (1)"}},
		"request in flight": {func() *tracker { tr := inTransaction(); tr.sync(); return tr }(), []string{"INSERT INTO t VALUES (1)"}},
	} {
		for i, sql := range c.batch {
			c.tr.parse(parseBody("", sql))
			c.tr.bind(bindBody("", ""))
			if _, after := execCaptures(c.tr, executeBody("", 0)); after {
				t.Errorf("%s: captured after statement %d", name, i)
			}
		}
	}
	// A COPY with a name that only starts like it is a write like others.
	if !capturableWrite(sqlclass.Classify("INSERT INTO copyright VALUES (1)"), "INSERT INTO copyright VALUES (1)") {
		t.Error("INSERT INTO copyright not capturable")
	}
	if capturableWrite(sqlclass.Classify("/* x */ COPY t FROM STDIN"), "/* x */ COPY t FROM STDIN") {
		t.Error("COPY after a comment capturable")
	}
}

// TestCaptureAfterWriteSimpleCopy: the simple protocol does not capture
// after COPY FROM STDIN either: a Query behind it would fail the COPY.
func TestCaptureAfterWriteSimpleCopy(t *testing.T) {
	tr := inTransaction()
	if _, after := tr.query("COPY t FROM STDIN"); after {
		t.Fatal("captured after COPY FROM STDIN")
	}
}

// TestTransactionEndForgetsXid: a transaction that ends without a
// ReadyForQuery 'I' in between (COMMIT; BEGIN in one Query) takes its id
// with it.
func TestTransactionEndForgetsXid(t *testing.T) {
	for _, end := range []string{"COMMIT", "ROLLBACK"} {
		tr := inTransaction()
		tr.xidState, tr.xid = xidValue, 10
		tr.query(end + "; BEGIN")
		tr.server('C', cstr(end))
		tr.server('C', cstr("BEGIN"))
		tr.server('Z', []byte{'T'})
		if tr.xidState != xidNone {
			t.Fatalf("%s; BEGIN: the old transaction's id is kept", end)
		}
	}
	tr := inTransaction()
	tr.xidState, tr.xid = xidValue, 10
	tr.query("ROLLBACK TO SAVEPOINT s")
	tr.server('C', cstr("ROLLBACK"))
	tr.server('Z', []byte{'T'})
	if tr.xidState != xidValue {
		t.Fatal("ROLLBACK TO SAVEPOINT forgot the transaction's id")
	}
}

// TestUnnamedParseReused: parsing the same unnamed text again reuses the
// statement (no allocation, no classification); another text does not.
func TestUnnamedParseReused(t *testing.T) {
	tr := newTracker()
	q := parseBody("", "SELECT abalance FROM pgbench_accounts WHERE aid = $1")
	tr.parse(q)
	first := tr.unnamed
	tr.parse(bytes.Clone(q))
	if tr.unnamed != first {
		t.Fatal("the same unnamed text was parsed anew")
	}
	tr.parse(parseBody("", "SET work_mem = '1MB'"))
	if tr.unnamed == first || tr.unnamed.class.Name != "work_mem" || tr.unnamed.query == "" {
		t.Fatalf("another text reused the statement: %+v", tr.unnamed)
	}
	tr.parse(q)
	if allocs := testing.AllocsPerRun(100, func() {
		tr.parse(q)
		tr.queue, tr.head = tr.queue[:0], 0
	}); allocs != 0 {
		t.Fatalf("%.1f allocations per repeated unnamed Parse", allocs)
	}
}

// TestForwardCaptureAfterExecute: the capture goes out right after the
// write's Execute, before the rest of the client's batch and its Sync,
// and none of its answers reaches the client.
func TestForwardCaptureAfterExecute(t *testing.T) {
	parse := msg('P', parseBody("", "INSERT INTO t VALUES ($1)"))
	bind := msg('B', cstr(""), cstr(""), []byte{0, 0, 0, 1, 0, 0, 0, 1}, []byte("7"), []byte{0, 0})
	exec := msg('E', executeBody("", 0))
	parse2 := msg('P', parseBody("", "SELECT 1"))
	bind2 := msg('B', cstr(""), cstr(""), []byte{0, 0, 0, 0, 0, 0})
	sync := msg('S')
	in := bytes.Join([][]byte{parse, bind, exec, parse2, bind2, exec, sync}, nil)
	s, be, out := newHarness(in, 1<<20)
	s.track.resolveCommits, s.track.txStatus = true, 'T'
	s.clientToServer(be)
	be.w.Flush()
	want := bytes.Join([][]byte{parse, bind, exec, xidCaptureExtended, parse2, bind2, exec, sync}, nil)
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("sent to the server:\n%q\nwant\n%q", out.Bytes(), want)
	}

	clientAnswers := [][]byte{msg('1'), msg('2'), msg('C', cstr("INSERT 0 1"))}
	captureAnswers := [][]byte{msg('1'), msg('2'), msg('D', xidRow("31337", false)), msg('C', cstr("SELECT 1")), msg('3'), msg('3')}
	rest := [][]byte{msg('1'), msg('2'), msg('D', xidRow("1", false)), msg('C', cstr("SELECT 1")), msg('Z', []byte{'T'})}
	resp := bytes.Join(append(append(append([][]byte{}, clientAnswers...), captureAnswers...), rest...), nil)
	be.r.Reset(bytes.NewReader(resp))
	out.Reset()
	s.serverToClient(be)
	s.cw.Flush()
	wantOut := bytes.Join(append(append([][]byte{}, clientAnswers...), rest...), nil)
	if !bytes.Equal(out.Bytes(), wantOut) {
		t.Fatalf("passed to the client:\n%q\nwant\n%q", out.Bytes(), wantOut)
	}
	if s.track.xidState != xidValue || s.track.xid != 31337 || s.track.lost || !s.track.queueEmpty() {
		t.Fatalf("tracker after the batch: xid %d/%d, lost %v", s.track.xidState, s.track.xid, s.track.lost)
	}
}

// TestCommitPrelude: an extended COMMIT lost before the server answered
// anything of it is resolvable, and a synthesized success first sends what
// the server owed for its Parse, Bind and Describe, when the tracker knows
// what that is.
func TestCommitPrelude(t *testing.T) {
	describeP := append([]byte{'P'}, cstr("")...)
	cases := []struct {
		name    string
		send    func(tr *tracker)
		prelude []byte // nil: not resolvable
		portal  string // executed
	}{
		{"parse bind describe", func(tr *tracker) {
			tr.parse(parseBody("", "COMMIT"))
			tr.bind(bindBody("", ""))
			tr.describe(describeP)
		}, bytes.Join([][]byte{msg('1'), msg('2'), msg('n')}, nil), ""},
		{"bind only", func(tr *tracker) {
			tr.bind(bindBody("", "c"))
		}, msg('2'), ""},
		{"named portal", func(tr *tracker) {
			tr.bind(bindBody("p", "c"))
			tr.describe(append([]byte{'P'}, cstr("p")...))
		}, bytes.Join([][]byte{msg('2'), msg('n')}, nil), "p"},
		{"describe statement", func(tr *tracker) {
			tr.parse(parseBody("", "COMMIT"))
			tr.describe(append([]byte{'S'}, cstr("")...))
			tr.bind(bindBody("", ""))
		}, nil, ""},
		{"named parse", func(tr *tracker) {
			tr.parse(parseBody("c2", "COMMIT"))
			tr.bind(bindBody("", "c2"))
		}, bytes.Join([][]byte{msg('1'), msg('2')}, nil), ""},
		{"close", func(tr *tracker) {
			tr.closeMsg(append([]byte{'S'}, cstr("sel")...))
			tr.bind(bindBody("", "c"))
		}, bytes.Join([][]byte{msg('3'), msg('2')}, nil), ""},
		{"describe of another portal", func(tr *tracker) {
			tr.bind(bindBody("q", "sel"))
			tr.bind(bindBody("", "c"))
			tr.describe(append([]byte{'P'}, cstr("q")...))
		}, nil, ""},
		{"describe with nothing unanswered", func(tr *tracker) {
			tr.describe(describeP)
		}, nil, ""},
	}
	for _, c := range cases {
		tr := inTransaction()
		tr.xidState, tr.xid = xidValue, 55
		tr.prepared["c"] = &stmtInfo{query: "COMMIT", class: sqlclass.Classify("COMMIT"), resolvable: true}
		tr.prepared["sel"] = &stmtInfo{query: "SELECT 1", class: sqlclass.Classify("SELECT 1")}
		if c.name == "describe with nothing unanswered" {
			tr.bind(bindBody("", "c"))
			tr.server('2', nil)
		}
		c.send(tr)
		if before, after := execCaptures(tr, executeBody(c.portal, 0)); before || after {
			t.Fatalf("%s: captured although the id is known", c.name)
		}
		tr.sync()
		w := tr.inFlightWork()
		if c.prelude == nil {
			if w.commitOnly && w.xidState != xidNone {
				t.Errorf("%s: resolvable, with prelude %q", c.name, w.commitPrelude)
			}
			continue
		}
		if !w.commitOnly || w.xidState != xidValue || w.xid != 55 || !bytes.Equal(w.commitPrelude, c.prelude) {
			t.Errorf("%s: commitOnly %v, xid %d/%d, prelude %q, want %q", c.name, w.commitOnly, w.xidState, w.xid, w.commitPrelude, c.prelude)
		}
		// Answered with success, what those messages did holds.
		tr.finishLost('I', true)
		switch st := tr.State(); c.name {
		case "named parse":
			if st.Prepared["c2"].Query != "COMMIT" {
				t.Errorf("%s: the statement the client was told of is not kept: %+v", c.name, st.Prepared)
			}
		case "close":
			if _, ok := st.Prepared["sel"]; ok {
				t.Errorf("%s: the statement the client closed is kept", c.name)
			}
		}
	}

	// In a failed transaction (the COMMIT answers ROLLBACK) a named Parse
	// cannot be answered that way.
	tr := inTransaction()
	tr.txStatus = 'E'
	tr.parse(parseBody("c2", "COMMIT"))
	tr.bind(bindBody("", "c2"))
	execCaptures(tr, executeBody("", 0))
	tr.sync()
	if w := tr.inFlightWork(); w.commitOnly {
		t.Fatalf("named Parse with a COMMIT of a failed transaction resolvable: %+v", w)
	}
	tr.finishLost('I', false)
	if _, ok := tr.State().Prepared["c2"]; ok {
		t.Fatal("a statement of a request answered with an error is kept")
	}

	// Once the server has answered Parse and Bind, nothing is owed before
	// the CommandComplete.
	tr = inTransaction()
	tr.xidState, tr.xid = xidValue, 56
	tr.parse(parseBody("", "COMMIT"))
	tr.bind(bindBody("", ""))
	tr.describe(describeP)
	execCaptures(tr, executeBody("", 0))
	tr.sync()
	tr.server('1', nil)
	tr.server('2', nil)
	if w := tr.inFlightWork(); !w.commitOnly || len(w.commitPrelude) != 0 {
		t.Fatalf("after ParseComplete and BindComplete: commitOnly %v, prelude %q", w.commitOnly, w.commitPrelude)
	}
}

// TestCaptureExtendedDirty: after an extended capture failed (it may have
// left its statement or portal), the next one closes them first, and all
// four CloseCompletes are swallowed.
func TestCaptureExtendedDirty(t *testing.T) {
	tr := inTransaction()
	tr.parse(parseBody("", "COMMIT"))
	tr.bind(bindBody("", ""))
	before, _ := tr.executeCapture(executeBody("", 0))
	if !bytes.Equal(before, xidCaptureExtended) {
		t.Fatal("no plain capture before the COMMIT")
	}
	tr.sync()
	serverAnswer(t, tr, '1', nil)
	serverAnswer(t, tr, '2', nil)
	tr.captured('1', nil)
	if swallow, _ := tr.captured('E', errorBody("57014")); swallow {
		t.Fatal("the capture's error was swallowed")
	}
	tr.server('E', errorBody("57014"))
	tr.server('Z', []byte{'E'})
	tr.query("ROLLBACK")
	tr.server('C', cstr("ROLLBACK"))
	tr.server('Z', []byte{'I'})

	tr.txStatus = 'T'
	tr.parse(parseBody("", "INSERT INTO t VALUES (1)"))
	tr.bind(bindBody("", ""))
	_, after := tr.executeCapture(executeBody("", 0))
	if !bytes.Equal(after, xidCaptureExtendedClean) {
		t.Fatal("the capture after a failed one does not clean up first")
	}
	tr.sync()
	serverAnswer(t, tr, '1', nil)
	serverAnswer(t, tr, '2', nil)
	serverAnswer(t, tr, 'C', cstr("INSERT 0 1"))
	for _, m := range []struct {
		typ  byte
		body []byte
	}{{'3', nil}, {'3', nil}, {'1', nil}, {'2', nil}, {'D', xidRow("8", false)}, {'C', cstr("SELECT 1")}, {'3', nil}, {'3', nil}} {
		if swallow, _ := tr.captured(m.typ, m.body); !swallow {
			t.Fatalf("clean capture answer %c not swallowed", m.typ)
		}
	}
	serverAnswer(t, tr, 'Z', []byte{'T'})
	if tr.xidDirty || tr.xidState != xidValue || tr.xid != 8 || tr.lost {
		t.Fatalf("after the clean capture: dirty %v, xid %d/%d", tr.xidDirty, tr.xidState, tr.xid)
	}
}
