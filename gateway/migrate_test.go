package gateway

import (
	"bytes"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func TestLastRequest(t *testing.T) {
	parse := msg('P', cstr("s1"), cstr("SELECT 1"), []byte{0, 0})
	bind := msg('B', cstr(""), cstr("s1"), []byte{0, 0, 0, 0, 0, 0})
	exec := msg('E', cstr(""), []byte{0, 0, 0, 0})
	sync := msg('S')
	q := msg('Q', cstr("SELECT 2"))
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	for _, c := range []struct {
		name string
		rec  []byte
		want []byte
	}{
		{"one query", q, q},
		{"extended", cat(bind, exec, sync), cat(bind, exec, sync)},
		{"prepare, then run", cat(parse, sync, bind, exec, sync), cat(bind, exec, sync)},
		{"query after query", cat(q, q), q},
		{"unfinished", cat(parse, sync, bind), nil},
		{"no request", cat(parse), nil},
		{"truncated", q[:len(q)-1], nil},
		{"empty", nil, nil},
	} {
		if got := lastRequest(c.rec); !bytes.Equal(got, c.want) {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}

func TestIsShutdownFatal(t *testing.T) {
	enc := func(sev, code, text string) []byte {
		b, _ := (&pgproto3.ErrorResponse{Severity: sev, SeverityUnlocalized: sev, Code: code, Message: text}).Encode(nil)
		return b[5:]
	}
	for _, c := range []struct {
		body                     []byte
		shutdown, maybeTerminate bool
	}{
		{enc("FATAL", "57P01", "terminating connection due to administrator command"), true, true},
		{enc("FATAL", "57P01", "terminating connection due to unexpected postmaster exit"), true, false},
		{enc("FATAL", "57P02", "terminating connection because of crash of another server process"), true, false},
		{enc("ERROR", "57P01", "terminating connection due to administrator command"), false, false},
		{enc("FATAL", "25P03", "terminating connection due to idle-in-transaction timeout"), false, false},
		{[]byte{'C', '5', '7'}, false, false}, // malformed
	} {
		s, m := isShutdownFatal(c.body)
		if s != c.shutdown || m != c.maybeTerminate {
			t.Errorf("%q: got %v %v, want %v %v", c.body, s, m, c.shutdown, c.maybeTerminate)
		}
	}
}

func TestInFlightWork(t *testing.T) {
	tr := newTracker()
	tr.query("SELECT 1")
	if w := tr.inFlightWork(); w.requests != 1 || !w.readOnly || w.commit || w.partial {
		t.Fatalf("read: %+v", w)
	}
	tr = newTracker()
	tr.query("COMMIT")
	if w := tr.inFlightWork(); !w.commit || w.readOnly {
		t.Fatalf("commit: %+v", w)
	}
	tr = newTracker()
	tr.parse(append(append(cstr(""), cstr("INSERT INTO t VALUES (1)")...), 0, 0))
	if w := tr.inFlightWork(); !w.partial || w.requests != 0 {
		t.Fatalf("partial: %+v", w)
	}
	tr.resetAfterLoss('E')
	if w := tr.inFlightWork(); w.partial || w.requests != 0 || w.txStatus != 'E' || tr.quiet() {
		t.Fatalf("after reset: %+v", w)
	}
}
