package gateway

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/pgbattery/pgbattery/gateway/sqlclass"
)

func startupBytes(minor uint16, kv ...string) []byte {
	body := binary.BigEndian.AppendUint32(nil, uint32(3)<<16|uint32(minor))
	for _, s := range kv {
		body = append(append(body, s...), 0)
	}
	body = append(body, 0)
	return append(binary.BigEndian.AppendUint32(nil, uint32(4+len(body))), body...)
}

func TestParseStartupPacket(t *testing.T) {
	p, err := readStartupPacket(bytes.NewReader(startupBytes(2, "user", "u", "database", "d", "_pq_.opt", "1", "replication", "database")))
	if err != nil {
		t.Fatal(err)
	}
	if p.kind != startupMessage || p.minor != 2 || p.params["user"] != "u" || p.params["database"] != "d" ||
		len(p.pqOptions) != 1 || p.pqOptions[0] != "_pq_.opt" || !isReplication(p.params) {
		t.Fatalf("parsed %+v", p)
	}
	for _, v := range []string{"false", "0", "no", "off"} {
		if isReplication(map[string]string{"replication": v}) {
			t.Errorf("replication=%s treated as replication", v)
		}
	}
	// Cancel requests, 3.0 and 3.2 style.
	for _, n := range []int{4, 32} {
		b := binary.BigEndian.AppendUint32(nil, uint32(12+n))
		b = binary.BigEndian.AppendUint32(b, cancelRequestCode)
		b = binary.BigEndian.AppendUint32(b, 77)
		b = append(b, bytes.Repeat([]byte{9}, n)...)
		p, err := readStartupPacket(bytes.NewReader(b))
		if err != nil || p.kind != startupCancel || p.cancelPID != 77 || len(p.cancelSecret) != n || !bytes.Equal(p.raw, b) {
			t.Fatalf("cancel with %d-byte key: %+v %v", n, p, err)
		}
	}
	for name, b := range map[string][]byte{
		"short":      {0, 0, 0, 4},
		"long":       {0, 1, 0, 0},
		"v2":         {0, 0, 0, 8, 0, 2, 0, 0},
		"no user":    startupBytes(0, "database", "d"),
		"truncated":  startupBytes(0, "user", "u")[:12],
		"ssl extra":  {0, 0, 0, 12, 4, 210, 22, 47, 0, 0, 0, 0},
		"cancel big": append(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 12+300), cancelRequestCode), make([]byte, 304)...),
	} {
		if _, err := readStartupPacket(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

func TestNegotiateAndKeyEncoding(t *testing.T) {
	b := negotiateProtocolVersion(2, []string{"_pq_.a", "_pq_.bb"})
	if b[0] != 'v' || int(binary.BigEndian.Uint32(b[1:])) != len(b)-1 ||
		binary.BigEndian.Uint32(b[5:]) != 3<<16|2 || binary.BigEndian.Uint32(b[9:]) != 2 {
		t.Fatalf("NegotiateProtocolVersion %q", b)
	}
	k := backendKeyData(5, make([]byte, 32))
	if k[0] != 'K' || binary.BigEndian.Uint32(k[1:]) != 40 || len(k) != 41 {
		t.Fatalf("BackendKeyData %q", k)
	}
	var m pgproto3.BackendKeyData
	if err := m.Decode(backendKeyData(5, []byte{0, 0, 0, 7})[5:]); err != nil || m.ProcessID != 5 || m.SecretKey != 7 {
		t.Fatalf("3.0 key decodes as %+v %v", m, err)
	}
}

func TestCancelKeys(t *testing.T) {
	r := newCancelRegistry(200)
	s := &session{id: 1}
	k, err := r.register(s, 32)
	if err != nil {
		t.Fatal(err)
	}
	s.key = k
	if keyNodeIndex(k.pid) != 200 || k.pid>>31 != 0 {
		t.Fatalf("pid %x does not carry node index 200 in bits 30-23", k.pid)
	}
	if r.lookup(k.pid, k.secret) != s {
		t.Fatal("lookup with the right secret failed")
	}
	if r.lookup(k.pid, make([]byte, 32)) != nil || r.lookup(k.pid, k.secret[:4]) != nil {
		t.Fatal("lookup with a wrong secret succeeded")
	}
	r.unregister(k.pid)
	if r.lookup(k.pid, k.secret) != nil {
		t.Fatal("unregistered key still found")
	}
}

// msg frames a protocol message.
func msg(typ byte, body ...[]byte) []byte {
	var b []byte
	for _, p := range body {
		b = append(b, p...)
	}
	out := []byte{typ}
	out = binary.BigEndian.AppendUint32(out, uint32(4+len(b)))
	return append(out, b...)
}

func cstr(s string) []byte { return append([]byte(s), 0) }

func TestTrackerExtended(t *testing.T) {
	tr := newTracker()
	// Parse named + Bind + Execute + Sync; a second Parse that fails.
	tr.parse(append(append(cstr("s1"), cstr("SET work_mem = '1MB'")...), 0, 0))
	tr.bind(append(cstr(""), cstr("s1")...))
	tr.execute(append(cstr(""), 0, 0, 0, 0))
	tr.sync()
	tr.parse(append(append(cstr("s2"), cstr("SELEC")...), 0, 0))
	tr.bind(append(cstr(""), cstr("s2")...))
	tr.execute(append(cstr(""), 0, 0, 0, 0))
	tr.sync()
	if st := tr.State(); st.InFlight != 2 {
		t.Fatalf("in flight %d", st.InFlight)
	}
	tr.server('1', nil)
	tr.server('2', nil)
	tr.server('C', cstr("SET"))
	tr.server('Z', []byte{'I'})
	tr.server('E', nil)
	tr.server('Z', []byte{'I'})
	st := tr.State()
	if _, ok := st.Prepared["s1"]; !ok || len(st.Prepared) != 1 {
		t.Fatalf("prepared %v", st.Prepared)
	}
	if st.Settings["work_mem"] != "SET work_mem = '1MB'" || st.InFlight != 0 || st.Pins != 0 {
		t.Fatalf("state %+v", st)
	}
	// A response nobody asked for: the tracker gives up and pins.
	tr.server('2', nil)
	if tr.State().Pins&sqlclass.PinSessionState == 0 {
		t.Fatal("unexpected response did not pin the session")
	}
}

// newHarness builds a session whose client and back end are byte streams,
// to drive the forwarding loops without a network.
func newHarness(in []byte, maxMsg int) (*session, *backend, *bytes.Buffer) {
	m, _ := metrics.New(&metrics.Config{ServiceName: "t", FilterDefault: true}, &metrics.BlackholeSink{})
	out := &bytes.Buffer{}
	s := &session{g: &Gateway{cfg: Config{MaxMessageSize: maxMsg, Metrics: m}}, l: &listener{}, track: newTracker(),
		cr: bufio.NewReaderSize(bytes.NewReader(in), clientReadBuffer), cw: bufio.NewWriterSize(out, clientWriteBuffer)}
	be := &backend{r: bufio.NewReaderSize(bytes.NewReader(in), backendReadBuffer), w: bufio.NewWriterSize(out, backendWriteBuffer)}
	// The end of the input is the end of the session, not a lost back end
	// (which would add a FATAL 08006 to the output).
	s.stopping.Store(true)
	// A fresh primary in the session's epoch: requests are not held.
	s.g.view.Store(&routeView{fresh: true, changed: make(chan struct{})})
	return s, be, out
}

func TestForwardingIsTransparent(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 100<<10)
	in := bytes.Join([][]byte{
		msg('Q', cstr("SELECT 1; SET a.b = 2")),
		msg('P', cstr("st"), cstr("SELECT $1"), []byte{0, 1, 0, 0, 0, 23}),
		msg('B', cstr(""), cstr("st"), []byte{0, 0, 0, 1}, binary.BigEndian.AppendUint32(nil, uint32(len(big))), big, []byte{0, 0}),
		msg('E', cstr(""), []byte{0, 0, 0, 0}),
		msg('S'),
		msg('Q', cstr(string(big))),
		msg('d', big),
		msg('X'),
	}, nil)
	s, be, out := newHarness(in, 1<<20)
	err := s.clientToServer(be)
	be.w.Flush()
	if err != errTerminated {
		t.Fatalf("client loop ended with %v", err)
	}
	if !bytes.Equal(out.Bytes(), in) {
		t.Fatalf("forwarded %d bytes, want the %d sent, unchanged", out.Len(), len(in))
	}
	if st := s.track.State(); st.InFlight != 3 {
		t.Fatalf("in flight %d", st.InFlight)
	}

	srv := bytes.Join([][]byte{
		msg('1'), msg('2'), msg('T', big), msg('D', big), msg('C', cstr("SELECT 1")), msg('Z', []byte{'T'}),
		msg('S', cstr("application_name"), cstr("x")), msg('A', []byte{0, 0, 0, 1}, cstr("ch"), cstr("p")),
	}, nil)
	s, be, out = newHarness(srv, 1<<20)
	be.r = bufio.NewReaderSize(bytes.NewReader(srv), backendReadBuffer)
	if _, err := s.serverToClient(be); err != io.EOF {
		t.Fatalf("server loop ended with %v", err)
	}
	if !bytes.Equal(out.Bytes(), srv) {
		t.Fatalf("forwarded %d bytes, want the %d sent, unchanged", out.Len(), len(srv))
	}
	if st := s.track.State(); st.TxStatus != 'T' || st.Reported["application_name"] != "x" {
		t.Fatalf("state %+v", st)
	}
}

func TestMessageTooLarge(t *testing.T) {
	in := msg('Q', cstr(string(bytes.Repeat([]byte("a"), 10000))))
	s, be, _ := newHarness(in, 4096)
	if err := s.clientToServer(be); err != errMessageTooLarge {
		t.Fatalf("got %v", err)
	}
}

// FuzzStartupPacket: any bytes give a packet or an error, never a panic.
func FuzzStartupPacket(f *testing.F) {
	f.Add(startupBytes(0, "user", "u"))
	f.Add(startupBytes(2, "user", "u", "_pq_.x", "y", "replication", "on"))
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47})
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 48})
	f.Add([]byte{0, 0, 0, 16, 4, 210, 22, 46, 0, 0, 0, 1, 0, 0, 0, 2})
	f.Add([]byte{0x16, 3, 1, 0, 200})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := readStartupPacket(bytes.NewReader(b))
		if err == nil && p == nil {
			t.Fatal("nil packet without error")
		}
		if err == nil && p.kind == startupMessage && p.params["user"] == "" {
			t.Fatal("start-up message without user accepted")
		}
	})
}

// FuzzMessageFraming feeds arbitrary bytes to both forwarding loops: they
// must end with an error (never panic), and what they forward must be a
// prefix of what they read, unchanged.
func FuzzMessageFraming(f *testing.F) {
	f.Add(bytes.Join([][]byte{msg('Q', cstr("SELECT 1")), msg('S'), msg('X')}, nil))
	f.Add(bytes.Join([][]byte{msg('P', cstr("a"), cstr("LISTEN x"), []byte{0, 0}), msg('B', cstr("p"), cstr("a")),
		msg('E', cstr("p")), msg('C', []byte{'S'}, cstr("a")), msg('S')}, nil))
	f.Add(bytes.Join([][]byte{msg('1'), msg('2'), msg('3'), msg('C', cstr("COMMIT")), msg('E', []byte("SERROR\x00\x00")),
		msg('Z', []byte{'I'}), msg('S', cstr("a"), cstr("b")), msg('G', []byte{0, 0, 0}), msg('I'), msg('s')}, nil))
	f.Add([]byte{'Q', 0, 0, 0, 3})
	f.Add([]byte{'B', 0, 0, 0, 5, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, be, out := newHarness(b, 1<<16)
		s.clientToServer(be)
		be.w.Flush()
		if !bytes.HasPrefix(b, out.Bytes()) {
			t.Fatalf("client→server output is not a prefix of the input")
		}
		s, be, out = newHarness(b, 1<<16)
		s.serverToClient(be)
		s.cw.Flush()
		if !bytes.HasPrefix(b, out.Bytes()) {
			t.Fatalf("server→client output is not a prefix of the input")
		}
		s.track.State()
	})
}

// BenchmarkForwardPrepared measures the gateway's CPU per request for the
// messages of pgbench -M prepared -S, both directions, without a network.
func BenchmarkForwardPrepared(b *testing.B) {
	req := bytes.Join([][]byte{
		msg('B', cstr(""), cstr("P_0"), []byte{0, 0, 0, 1, 0, 0, 0, 5}, []byte("12345"), []byte{0, 1, 0, 0}),
		msg('D', []byte{'P'}, cstr("")), msg('E', cstr(""), []byte{0, 0, 0, 0}), msg('S'),
	}, nil)
	resp := bytes.Join([][]byte{
		msg('2'), msg('T', make([]byte, 30)), msg('D', make([]byte, 12)), msg('C', cstr("SELECT 1")), msg('Z', []byte{'I'}),
	}, nil)
	const batch = 1000
	in := bytes.Repeat(req, batch)
	out := bytes.Repeat(resp, batch)
	s, be, _ := newHarness(nil, 1<<20)
	s.track.prepared["P_0"] = &stmtInfo{query: "SELECT 1"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		s.cr.Reset(bytes.NewReader(in))
		be.w.Reset(io.Discard)
		s.clientToServer(be)
		be.r.Reset(bytes.NewReader(out))
		s.cw.Reset(io.Discard)
		s.serverToClient(be)
	}
}

// BenchmarkForwardSimple: the same for pgbench -M simple -S.
func BenchmarkForwardSimple(b *testing.B) {
	req := msg('Q', cstr("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;"))
	resp := bytes.Join([][]byte{
		msg('T', make([]byte, 30)), msg('D', make([]byte, 12)), msg('C', cstr("SELECT 1")), msg('Z', []byte{'I'}),
	}, nil)
	const batch = 1000
	in := bytes.Repeat(req, batch)
	out := bytes.Repeat(resp, batch)
	s, be, _ := newHarness(nil, 1<<20)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		s.cr.Reset(bytes.NewReader(in))
		be.w.Reset(io.Discard)
		s.clientToServer(be)
		be.r.Reset(bytes.NewReader(out))
		s.cw.Reset(io.Discard)
		s.serverToClient(be)
	}
}

func TestLeastLoaded(t *testing.T) {
	g := &Gateway{perBackend: map[string]int{"a:1": 3, "b:1": 1, "c:1": 2}}
	targets := []Target{{Addr: "a:1"}, {Addr: "b:1"}, {Addr: "c:1"}}
	if i := g.leastLoaded(targets); i != 1 {
		t.Fatalf("picked %d, want the standby with one session", i)
	}
	targets = append(targets, Target{Addr: "d:1"})
	if i := g.leastLoaded(targets); i != 3 {
		t.Fatalf("picked %d, want the standby with no session", i)
	}
}

func TestConfigValidation(t *testing.T) {
	ok := Config{ReadWriteAddr: "127.0.0.1:0", AuthMode: AuthTrust}
	if _, err := ok.withDefaults(); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]Config{
		"no listener":   {AuthMode: AuthTrust},
		"bad auth":      {ReadWriteAddr: "x:1", AuthMode: "md5"},
		"scram no src":  {ReadWriteAddr: "x:1"},
		"tls req no":    {ReadWriteAddr: "x:1", AuthMode: AuthTrust, TLSRequired: true},
		"bad balance":   {ReadWriteAddr: "x:1", AuthMode: AuthTrust, ReadOnlyBalance: "random"},
		"negative":      {ReadWriteAddr: "x:1", AuthMode: AuthTrust, IdleTimeout: -1},
		"tiny messages": {ReadWriteAddr: "x:1", AuthMode: AuthTrust, MaxMessageSize: 100},
	} {
		if _, err := c.withDefaults(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
