package gateway

import (
	"encoding/binary"
	"testing"
)

// xidRow is the DataRow of the capture: one text column, or NULL.
func xidRow(v string, null bool) []byte {
	b := binary.BigEndian.AppendUint16(nil, 1)
	if null {
		return binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

func TestCaptureSimple(t *testing.T) {
	tr := newTracker()
	tr.resolveCommits = true
	if captureBefore(tr, "COMMIT") {
		t.Fatal("captured a COMMIT outside a transaction block")
	}
	tr.server('C', cstr("COMMIT"))
	tr.server('Z', []byte{'I'})

	tr.query("BEGIN")
	tr.server('C', cstr("BEGIN"))
	tr.server('Z', []byte{'T'})
	for _, q := range []string{"COMMIT AND CHAIN", "INSERT INTO x VALUES (1); COMMIT"} {
		tr2 := newTracker()
		tr2.resolveCommits, tr2.txStatus = true, 'T'
		if captureBefore(tr2, q) {
			t.Errorf("%q captured", q)
		}
	}
	if !captureBefore(tr, "/* done */ commit;") {
		t.Fatal("lone COMMIT in a transaction block not captured")
	}
	if !tr.capturing.Load() {
		t.Fatal("capturing not set")
	}
	for _, m := range []struct {
		typ  byte
		body []byte
	}{{'T', make([]byte, 30)}, {'D', xidRow("12345", false)}, {'C', cstr("SELECT 1")}, {'Z', []byte{'T'}}} {
		if swallow, notice := tr.captured(m.typ, m.body); !swallow || notice {
			t.Fatalf("capture response %c not swallowed", m.typ)
		}
	}
	if tr.capturing.Load() {
		t.Fatal("still capturing after the capture's ReadyForQuery")
	}
	w := tr.inFlightWork()
	if !w.commit || !w.commitOnly || w.xidState != xidValue || w.xid != 12345 || w.commitAcked {
		t.Fatalf("in flight: %+v", w)
	}
	// The COMMIT's own answer is not the capture's.
	if swallow, _ := tr.captured('C', cstr("COMMIT")); swallow {
		t.Fatal("swallowed the COMMIT's CommandComplete")
	}
	tr.server('C', cstr("COMMIT"))
	if w := tr.inFlightWork(); !w.commitAcked || w.commitOnly {
		t.Fatalf("after the COMMIT's CommandComplete: %+v", w)
	}
	tr.server('Z', []byte{'I'})
	if tr.xidState != xidNone || tr.commitAcked || !tr.quiet() {
		t.Fatal("capture state left after ReadyForQuery")
	}
}

func TestCaptureSimpleFails(t *testing.T) {
	tr := newTracker()
	tr.resolveCommits, tr.txStatus = true, 'T'
	if !captureBefore(tr, "END") {
		t.Fatal("END not captured")
	}
	errBody := append(append([]byte{'S'}, cstr("ERROR")...), append(append([]byte{'C'}, cstr("57014")...), 0)...)
	if swallow, notice := tr.captured('E', errBody); !swallow || !notice {
		t.Fatal("the capture's error is not turned into a notice")
	}
	tr.captured('Z', []byte{'E'})
	if w := tr.inFlightWork(); w.xidState != xidNone || !w.commitOnly {
		t.Fatalf("after a failed capture: %+v", w)
	}
	// The COMMIT then answers ROLLBACK.
	tr.server('C', cstr("ROLLBACK"))
	tr.server('Z', []byte{'I'})
	if !tr.quiet() {
		t.Fatal("not quiet")
	}
}

func TestCaptureExtended(t *testing.T) {
	tr := newTracker()
	tr.resolveCommits, tr.txStatus = true, 'T'
	tr.parse(append(append(cstr(""), cstr("COMMIT")...), 0, 0))
	tr.bind(append(cstr(""), cstr("")...))
	if !tr.execute(append(cstr(""), 0, 0, 0, 0)) {
		t.Fatal("extended COMMIT not captured")
	}
	tr.sync()
	tr.server('1', nil)
	tr.server('2', nil)
	for _, m := range []struct {
		typ  byte
		body []byte
	}{{'1', nil}, {'2', nil}, {'D', xidRow("", true)}, {'C', cstr("SELECT 1")}, {'3', nil}, {'3', nil}} {
		if swallow, _ := tr.captured(m.typ, m.body); !swallow {
			t.Fatalf("capture response %c not swallowed", m.typ)
		}
	}
	if w := tr.inFlightWork(); !w.commitOnly || w.xidState != xidNull {
		t.Fatalf("in flight: %+v", w)
	}
	tr.server('C', cstr("COMMIT"))
	tr.server('Z', []byte{'I'})
	if !tr.quiet() || tr.lost {
		t.Fatal("tracker out of step after an extended capture")
	}
	// A second Execute in the same batch as another statement: not
	// captured.
	tr.txStatus = 'T'
	tr.parse(append(append(cstr(""), cstr("INSERT INTO x VALUES (1)")...), 0, 0))
	tr.bind(append(cstr(""), cstr("")...))
	tr.execute(append(cstr(""), 0, 0, 0, 0))
	tr.parse(append(append(cstr("c"), cstr("COMMIT")...), 0, 0))
	tr.bind(append(cstr(""), cstr("c")...))
	if tr.execute(append(cstr(""), 0, 0, 0, 0)) {
		t.Fatal("COMMIT behind another statement captured")
	}
}

func TestCommitAckedOnlyIfLast(t *testing.T) {
	tr := newTracker()
	tr.txStatus = 'T'
	tr.query("COMMIT; BEGIN")
	tr.server('C', cstr("COMMIT"))
	if w := tr.inFlightWork(); w.commitAcked {
		t.Fatal("acked with BEGIN still to come")
	}
	tr.server('C', cstr("BEGIN"))
	if w := tr.inFlightWork(); w.commitAcked {
		t.Fatal("acked although a BEGIN followed the COMMIT")
	}
}

func TestParseXidRow(t *testing.T) {
	for _, c := range []struct {
		body  []byte
		state uint8
		xid   uint64
	}{
		{xidRow("42", false), xidValue, 42},
		{xidRow("", true), xidNull, 0},
		{xidRow("x1", false), xidNone, 0},
		{[]byte{0, 2}, xidNone, 0},
		{append(xidRow("42", false), 'x'), xidNone, 0},
	} {
		if st, x := parseXidRow(c.body); st != c.state || x != c.xid {
			t.Errorf("parseXidRow(%q) = %d, %d", c.body, st, x)
		}
	}
}

// captureBefore is query's first answer: a capture before the statement.
func captureBefore(tr *tracker, q string) bool {
	before, _ := tr.query(q)
	return before
}

// TestCaptureAfterWrite: the first lone write of a transaction block is
// followed by a capture, whose id is kept for the COMMIT (not captured
// again) and forgotten when the transaction ends; in a failed transaction
// the capture's error is swallowed without a notice.
func TestCaptureAfterWrite(t *testing.T) {
	tr := newTracker()
	tr.resolveCommits = true
	if _, after := tr.query("UPDATE t SET a = 1"); after {
		t.Fatal("captured after a write outside a transaction block")
	}
	tr.server('C', cstr("UPDATE 1"))
	tr.server('Z', []byte{'I'})
	tr.query("BEGIN")
	tr.server('C', cstr("BEGIN"))
	tr.server('Z', []byte{'T'})
	if _, after := tr.query("SELECT 1"); after {
		t.Fatal("captured after a read")
	}
	tr.server('C', cstr("SELECT 1"))
	tr.server('Z', []byte{'T'})
	if _, after := tr.query("UPDATE t SET a = 2"); !after {
		t.Fatal("no capture after the first write of a transaction block")
	}
	tr.server('C', cstr("UPDATE 1"))
	tr.server('Z', []byte{'T'})
	if w := tr.inFlightWork(); w.partial || w.requests != 0 || w.xidState != xidNone {
		t.Fatalf("while the capture is on its way: %+v", w)
	}
	for _, m := range []struct {
		typ  byte
		body []byte
	}{{'T', make([]byte, 30)}, {'D', xidRow("777", false)}, {'C', cstr("SELECT 1")}, {'Z', []byte{'T'}}} {
		if swallow, notice := tr.captured(m.typ, m.body); !swallow || notice {
			t.Fatalf("capture response %c not swallowed", m.typ)
		}
	}
	if _, after := tr.query("UPDATE t SET a = 3"); after {
		t.Fatal("captured again after the id was known")
	}
	tr.server('C', cstr("UPDATE 1"))
	tr.server('Z', []byte{'T'})
	if before, _ := tr.query("COMMIT"); before {
		t.Fatal("COMMIT captured although its transaction's id is known")
	}
	if w := tr.inFlightWork(); !w.commitOnly || w.xidState != xidValue || w.xid != 777 {
		t.Fatalf("COMMIT in flight: %+v", w)
	}
	tr.server('C', cstr("COMMIT"))
	tr.server('Z', []byte{'I'})
	if tr.xidState != xidNone {
		t.Fatal("the id outlived its transaction")
	}

	// A write that fails: the capture fails too, silently.
	tr.query("BEGIN")
	tr.server('C', cstr("BEGIN"))
	tr.server('Z', []byte{'T'})
	if _, after := tr.query("INSERT INTO t VALUES (1)"); !after {
		t.Fatal("no capture after the first write")
	}
	errBody := append(append([]byte{'S'}, cstr("ERROR")...), append(append([]byte{'C'}, cstr("23505")...), 0)...)
	tr.server('E', errBody)
	tr.server('Z', []byte{'E'})
	abortBody := append(append([]byte{'S'}, cstr("ERROR")...), append(append([]byte{'C'}, cstr("25P02")...), 0)...)
	if swallow, notice := tr.captured('E', abortBody); !swallow || notice {
		t.Fatal("the failed capture's error was not swallowed silently")
	}
	if swallow, _ := tr.captured('Z', []byte{'E'}); !swallow {
		t.Fatal("the failed capture's ReadyForQuery was not swallowed")
	}
	if tr.capturing.Load() || tr.xidState != xidNone {
		t.Fatal("capture state left after a failed capture")
	}
}

// TestLostAfterCommandComplete: a back end lost after a statement completed
// but before ReadyForQuery. An autocommit simple-protocol write has
// committed (the server commits before the last CommandComplete); an
// extended-protocol write commits only at the Sync, so its outcome is
// unknown, and it is never taken for a read.
func TestLostAfterCommandComplete(t *testing.T) {
	tr := newTracker()
	tr.txStatus = 'I'
	tr.query("INSERT INTO t VALUES (1)")
	tr.server('C', cstr("INSERT 0 1"))
	if w := tr.inFlightWork(); !w.autocommitDone || w.readOnly {
		t.Fatalf("simple autocommit write, only ReadyForQuery lost: %+v", w)
	}
	tr.resetAfterLoss('I')

	tr.query("BEGIN; INSERT INTO t VALUES (2)")
	tr.server('C', cstr("BEGIN"))
	tr.server('C', cstr("INSERT 0 1"))
	if w := tr.inFlightWork(); w.autocommitDone || w.readOnly {
		t.Fatalf("BEGIN; INSERT, only ReadyForQuery lost: %+v", w)
	}
	tr.resetAfterLoss('I')

	tr.parse(append(append(cstr(""), cstr("UPDATE t SET a = 1")...), 0, 0))
	tr.bind(append(cstr(""), cstr("")...))
	tr.execute(append(cstr(""), 0, 0, 0, 0))
	tr.sync()
	tr.server('1', nil)
	tr.server('2', nil)
	tr.server('C', cstr("UPDATE 1"))
	if w := tr.inFlightWork(); w.autocommitDone || w.readOnly {
		t.Fatalf("extended write executed, Sync unanswered: %+v", w)
	}
}
