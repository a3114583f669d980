package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	"github.com/jackc/pgx/v5"
	"github.com/pgbattery/pgbattery/test/testutil"
)

func testExtra(t *testing.T, pg *pgServer) {
	t.Run("protocol-3.2", func(t *testing.T) { testProtocol32(t, pg) })
	t.Run("cancel-via-peer", func(t *testing.T) { testCancelViaPeer(t, pg) })
	t.Run("hold-for-primary", func(t *testing.T) { testHoldForPrimary(t, pg) })
	t.Run("tls-reload", func(t *testing.T) { testTLSReload(t, pg) })
	t.Run("idle-timeout", func(t *testing.T) { testIdleTimeout(t, pg) })
	t.Run("metrics", func(t *testing.T) { testMetrics(t, pg) })
}

// readMsg reads one backend message from r.
func readMsg(t *testing.T, r *bufio.Reader) (byte, []byte) {
	t.Helper()
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		t.Fatalf("reading message: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	return hdr[0], body
}

func testProtocol32(t *testing.T, pg *pgServer) {
	g := startGateway(t, pg, testutil.Addr(t), func(c *Config) { c.AuthMode = AuthTrust; c.Verifiers = nil })
	for _, c := range []struct {
		minor     uint16
		opts      []string
		wantV     bool
		secretLen int
	}{
		{0, nil, false, 4},
		{2, nil, false, 32},
		{2, []string{"_pq_.frobnicate", "on"}, true, 32},
		{7, nil, true, 32},
	} {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(g.host, "5432"), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(conn)
		if c.minor == 0 {
			// GSSENCRequest and SSLRequest are both declined on this
			// plaintext gateway, and the start-up continues.
			for _, code := range []uint32{gssEncRequestCode, sslRequestCode} {
				req := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 8), code)
				conn.Write(req)
				if b, err := r.ReadByte(); err != nil || b != 'N' {
					t.Fatalf("request %d answered %q, %v; want 'N'", code, b, err)
				}
			}
		}
		conn.Write(startupBytes(c.minor, append([]string{"user", "trusty", "database", "postgres"}, c.opts...)...))
		sawV, secret := false, -1
		for {
			typ, body := readMsg(t, r)
			if typ == 'v' {
				sawV = true
				if got := binary.BigEndian.Uint32(body); got != 3<<16|protocolMinorLatest {
					t.Errorf("3.%d: NegotiateProtocolVersion offers %x", c.minor, got)
				}
				if n := binary.BigEndian.Uint32(body[4:]); int(n) != len(c.opts)/2 {
					t.Errorf("3.%d: %d unsupported options reported", c.minor, n)
				}
			}
			if typ == 'K' {
				secret = len(body) - 4
			}
			if typ == 'E' {
				t.Fatalf("3.%d: error %q", c.minor, body)
			}
			if typ == 'Z' {
				break
			}
		}
		if sawV != c.wantV || secret != c.secretLen {
			t.Errorf("3.%d %v: NegotiateProtocolVersion %v, secret %d bytes; want %v, %d", c.minor, c.opts, sawV, secret, c.wantV, c.secretLen)
		}
		// The session works: a simple query.
		conn.Write(msg('Q', cstr("SELECT 1")))
		for {
			typ, _ := readMsg(t, r)
			if typ == 'Z' {
				break
			}
		}
		conn.Write(msg('X'))
		conn.Close()
	}
}

func testCancelViaPeer(t *testing.T, pg *pgServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var a, b *testGateway
	var forwarded atomic.Int32
	a = startGateway(t, pg, testutil.Addr(t), func(c *Config) { c.NodeIndex = 1 })
	b = startGateway(t, pg, testutil.Addr(t), func(c *Config) {
		c.NodeIndex = 2
		c.ForwardCancel = func(ctx context.Context, node uint8, req []byte) error {
			forwarded.Add(1)
			if node != 1 {
				t.Errorf("forwarding to node %d", node)
			}
			return a.HandleCancelRequest(ctx, req)
		}
	})
	conn := connectPGX(t, a.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	pid, secret := conn.PgConn().PID(), conn.PgConn().SecretKey()
	if keyNodeIndex(pid) != 1 {
		t.Fatalf("pid %x lacks node index 1", pid)
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		// The cancel reaches gateway b, which routes it to a.
		c, err := net.DialTimeout("tcp", net.JoinHostPort(b.host, "5432"), 5*time.Second)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		req := binary.BigEndian.AppendUint32(nil, 16)
		req = binary.BigEndian.AppendUint32(req, cancelRequestCode)
		req = binary.BigEndian.AppendUint32(req, pid)
		req = binary.BigEndian.AppendUint32(req, secret)
		c.Write(req)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Read(make([]byte, 1))
	}()
	_, err := conn.Exec(ctx, "SELECT pg_sleep(20)")
	if sqlstate(err) != "57014" || forwarded.Load() != 1 {
		t.Fatalf("cancel via peer: %v (forwarded %d)", err, forwarded.Load())
	}
}

func testHoldForPrimary(t *testing.T, pg *pgServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g := startGateway(t, pg, testutil.Addr(t), func(c *Config) { c.HoldTimeout = 10 * time.Second })
	primary := g.router.primary
	g.router.set(Target{}, false, nil)
	// Passwords are checked on a standby while no primary is named.
	g.router.set(Target{}, false, []Target{primary})
	go func() {
		time.Sleep(500 * time.Millisecond)
		g.router.set(primary, true, nil)
	}()
	start := time.Now()
	conn := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	if err := conn.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 400*time.Millisecond {
		t.Fatalf("session started after %s, before the primary was named", time.Since(start))
	}
}

func testTLSReload(t *testing.T, pg *pgServer) {
	host := testutil.Addr(t)
	first, pool1 := selfSignedTLS(t, host)
	second, pool2 := selfSignedTLS(t, host)
	var current atomic.Pointer[tls.Config]
	current.Store(first)
	g := startGateway(t, pg, host, func(c *Config) { c.TLS = func() *tls.Config { return current.Load() } })
	verify := func(pool *x509.CertPool) (*pgx.Conn, error) {
		cfg, _ := pgx.ParseConfig(g.dsn("alice", alicePassword, "alice", "sslmode=verify-full"))
		cfg.TLSConfig.RootCAs = pool
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return pgx.ConnectConfig(ctx, cfg)
	}
	c1, err := verify(pool1)
	if err != nil {
		t.Fatalf("first certificate: %v", err)
	}
	defer c1.Close(context.Background())
	current.Store(second) // what a SIGHUP handler does
	if _, err := verify(pool1); err == nil {
		t.Fatal("old certificate still served after reload")
	}
	c2, err := verify(pool2)
	if err != nil {
		t.Fatalf("new certificate: %v", err)
	}
	defer c2.Close(context.Background())
	if err := c1.Ping(context.Background()); err != nil {
		t.Fatalf("session from before the reload: %v", err)
	}
}

func testIdleTimeout(t *testing.T, pg *pgServer) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g := startGateway(t, pg, testutil.Addr(t), func(c *Config) { c.IdleTimeout = 500 * time.Millisecond })
	conn := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	// A query longer than the idle timeout is not idle time.
	if _, err := conn.Exec(ctx, "SELECT pg_sleep(1)"); err != nil {
		t.Fatalf("long query under idle timeout: %v", err)
	}
	// Inside a transaction is not idle either (PostgreSQL has its own
	// idle_in_transaction_session_timeout for that).
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(800 * time.Millisecond)
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit after a pause in a transaction: %v", err)
	}
	time.Sleep(1200 * time.Millisecond)
	err = conn.Ping(ctx)
	if err == nil || !strings.Contains(err.Error(), "idle-session timeout") && !conn.IsClosed() {
		t.Fatalf("idle session not closed: %v", err)
	}
}

func testMetrics(t *testing.T, pg *pgServer) {
	sink := metrics.NewInmemSink(time.Minute, time.Minute)
	m, _ := metrics.New(&metrics.Config{ServiceName: "pgbattery", FilterDefault: true, EnableTypePrefix: false}, sink)
	g := startGateway(t, pg, testutil.Addr(t), func(c *Config) { c.Metrics = m })
	conn := connectPGX(t, g.dsn("alice", alicePassword, "alice", "sslmode=disable"))
	for i := 0; i < 10; i++ {
		if err := conn.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	pgx.Connect(context.Background(), g.dsn("alice", "wrong", "alice", "sslmode=disable"))
	g.emitMetrics()
	data := sink.Data()
	var seen = map[string]float64{}
	for _, iv := range data {
		for k, v := range iv.Counters {
			seen["counter "+strings.SplitN(k, ";", 2)[0]] += v.Sum
		}
		for k, v := range iv.Gauges {
			seen["gauge "+strings.SplitN(k, ";", 2)[0]] += float64(v.Value)
		}
		for k, v := range iv.Samples {
			seen["sample "+strings.SplitN(k, ";", 2)[0]] += float64(v.Count)
		}
	}
	for _, want := range []string{"counter pgbattery.gateway.bytes_in", "counter pgbattery.gateway.bytes_out",
		"counter pgbattery.gateway.errors", "counter pgbattery.gateway.accepted", "gauge pgbattery.gateway.connections",
		"sample pgbattery.gateway.request_ms"} {
		if seen[want] <= 0 {
			t.Errorf("metric %s missing or zero in %v", want, seen)
		}
	}
}
