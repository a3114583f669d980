package gateway

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

// recordAll reads the messages of in as clientToServer does for Query,
// Parse, Execute and Close, and records them.
func recordAll(t testing.TB, s *session, in []byte) {
	t.Helper()
	r := bufio.NewReaderSize(bytes.NewReader(in), clientReadBuffer)
	w := bufio.NewWriter(io.Discard)
	for {
		hdr, err := r.Peek(5)
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		total := 1 + int(binary.BigEndian.Uint32(hdr[1:]))
		m, err := readMessage(r, w, total, &s.scratch)
		if err != nil {
			t.Fatal(err)
		}
		s.record(m)
	}
}

func bigQuery(fill byte, n int) []byte {
	return msg('Q', cstr("SELECT '"+strings.Repeat(string(fill), n)+"'"))
}

// TestRecordKeepsLargeMessagesWithoutCopying checks that a request mixing
// messages that fit the read buffer and larger ones is recorded whole and
// in order, that the first large message is kept in place rather than
// copied, and that a later large message of the same request does not
// overwrite it.
func TestRecordKeepsLargeMessagesWithoutCopying(t *testing.T) {
	s := &session{}
	for round := 0; round < 4; round++ {
		req := bytes.Join([][]byte{
			msg('P', cstr(""), cstr("SELECT 1"), []byte{0, 0}),
			bigQuery(byte('a'+round), 10<<10),
			msg('E', cstr(""), []byte{0, 0, 0, 0}),
			bigQuery(byte('k'+round), 12<<10),
			msg('C', []byte{'S'}, cstr("")),
		}, nil)
		s.resetRecord()
		recordAll(t, s, req)
		if !s.recOK {
			t.Fatalf("round %d: request of %d bytes not recorded", round, len(req))
		}
		if got := s.recorded(); !bytes.Equal(got, req) {
			t.Fatalf("round %d: recorded %d bytes, not the request's %d", round, len(got), len(req))
		}
		if s.recBig == nil {
			t.Fatalf("round %d: the first large message was copied", round)
		}
		if len(s.rec) >= 10<<10+12<<10 {
			t.Fatalf("round %d: %d bytes copied, want only one large message", round, len(s.rec))
		}
	}

	// Requests of one large message cost no allocation and no copy once
	// the two buffers exist.
	reqs := [][]byte{bigQuery('x', 9<<10), bigQuery('y', 9<<10)}
	br := bytes.NewReader(nil)
	r := bufio.NewReaderSize(br, clientReadBuffer)
	w := bufio.NewWriter(io.Discard)
	i := 0
	allocs := testing.AllocsPerRun(50, func() {
		br.Reset(reqs[i%2])
		r.Reset(br)
		s.resetRecord()
		m, err := readMessage(r, w, len(reqs[i%2]), &s.scratch)
		if err != nil {
			panic(err)
		}
		s.record(m)
		i++
	})
	if allocs != 0 {
		t.Errorf("%.0f allocations per large request, want 0", allocs)
	}
	if len(s.rec) != 0 || !bytes.Equal(s.recorded(), reqs[(i-1)%2]) {
		t.Error("large request not recorded in place")
	}
}

// TestRecordLimit checks that a request larger than maxRerunRequest is
// not recorded (it will not be re-run), large message or not.
func TestRecordLimit(t *testing.T) {
	s := &session{}
	s.resetRecord()
	recordAll(t, s, bytes.Join([][]byte{bigQuery('a', 40<<10), bigQuery('b', 30<<10)}, nil))
	if s.recOK {
		t.Fatal("request over maxRerunRequest recorded")
	}
	s.resetRecord()
	recordAll(t, s, bigQuery('c', 20<<10))
	if !s.recOK || !bytes.Equal(s.recorded(), bigQuery('c', 20<<10)) {
		t.Fatal("request after an unrecorded one not recorded")
	}
	// A set-aside buffer above maxRetainedScratch is not kept.
	s.resetRecord()
	if cap(s.spare) > maxRetainedScratch {
		t.Errorf("session keeps a spare buffer of %d bytes, above maxRetainedScratch", cap(s.spare))
	}
}

// TestRecordThroughForwarding drives clientToServer with a pipelined
// request of two large Queries and checks what a re-run would send.
func TestRecordThroughForwarding(t *testing.T) {
	q1, q2 := bigQuery('a', 6<<10), bigQuery('b', 7<<10)
	in := append(append([]byte(nil), q1...), q2...)
	s, be, out := newHarness(in, 1<<20)
	if err := s.clientToServer(be); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	be.w.Flush()
	if !bytes.Equal(out.Bytes(), in) {
		t.Fatal("forwarded bytes differ from the client's")
	}
	if !s.recOK || !bytes.Equal(s.recorded(), in) {
		t.Fatalf("recorded %d bytes, want the %d sent", len(s.recorded()), len(in))
	}
	if got := lastRequest(s.recorded()); !bytes.Equal(got, q2) {
		t.Fatalf("last request is %d bytes, want the second Query (%d)", len(got), len(q2))
	}
}

// TestHiddenShutdownKeepsRerun: a back end's shutdown FATAL that the client
// does not see is not counted as part of the answer, so the read-only
// request it interrupted can still be re-run (recoverLost wants nothing of
// the answer forwarded).
func TestHiddenShutdownKeepsRerun(t *testing.T) {
	fatal, err := errorMessage("FATAL", codeCrashShutdown, "terminating connection because of crash of another server process").Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, be, out := newHarness(fatal, 1<<20)
	s.stopping.Store(false)
	_, serr := s.serverToClient(be)
	if !errors.Is(serr, errBackendShutdown) {
		t.Fatalf("serverToClient: %v, want errBackendShutdown", serr)
	}
	if out.Len() != 0 {
		t.Fatalf("the client got %d bytes of the hidden FATAL", out.Len())
	}
	if s.sinceReady != 0 {
		t.Fatalf("sinceReady = %d after a hidden FATAL, want 0", s.sinceReady)
	}
}
