package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/pgbattery/pgbattery/pgctl"
	"github.com/pgbattery/pgbattery/test/testutil"
)

// The gateway's tests run against a real PostgreSQL 15, run by pgctl.

const pgBin = "/usr/lib/postgresql/15/bin"

const (
	superPassword = "super-secret-control-role"
	alicePassword = "alice pässword"
)

// pgServer is a PostgreSQL instance for tests.
type pgServer struct {
	addr string // host:port
	host string
	dir  string
	inst *pgctl.Instance
}

// startPostgres initdbs and starts PostgreSQL 15 on host:5433 with pgctl:
// SCRAM authentication, the control superuser "postgres" (superPassword), a
// login role "alice" (alicePassword) with its own database, and a role
// "trusty" that pg_hba trusts. settings are extra name=value parameters. It
// is stopped by t.Cleanup.
func startPostgres(t testing.TB, host string, settings ...string) *pgServer {
	t.Helper()
	if _, err := os.Stat(filepath.Join(pgBin, "postgres")); err != nil {
		t.Skipf("PostgreSQL 15 binaries not found at %s", pgBin)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bins, err := pgctl.FindBinaries(ctx, pgBin)
	if err != nil {
		t.Fatalf("finding PostgreSQL binaries: %v", err)
	}
	dir := testutil.TempDir(t)
	params := map[string]string{"fsync": "off", "max_connections": "200", "shared_buffers": "32MB"}
	for _, kv := range settings {
		k, v, _ := strings.Cut(kv, "=")
		params[k] = v
	}
	inst, err := pgctl.NewInstance(pgctl.Config{
		NodeName:    "gwtest",
		Binaries:    bins,
		Dir:         dir,
		ListenAddr:  host,
		Port:        5433,
		Parameters:  params,
		HBA:         []string{"host all trusty 127.0.0.0/8 trust", "host all all 127.0.0.0/8 scram-sha-256"},
		Superuser:   pgctl.Credentials{User: "postgres", Password: superPassword},
		Replication: pgctl.Credentials{Password: "replication-secret-for-tests"},
		Logger:      hclog.NewNullLogger(),
	})
	if err != nil {
		t.Fatalf("pgctl: %v", err)
	}
	if err := inst.InitDB(ctx, pgctl.InitDBOptions{NoSync: true}); err != nil {
		t.Fatalf("initdb: %v", err)
	}
	if _, err := inst.Start(ctx, pgctl.StartOptions{}); err != nil {
		t.Fatalf("starting PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer scancel()
		if err := inst.Stop(sctx, pgctl.StopFast); err != nil {
			t.Errorf("stopping PostgreSQL: %v", err)
		}
	})

	srv := &pgServer{addr: net.JoinHostPort(host, "5433"), host: host, dir: dir, inst: inst}
	conn := srv.superConn(t, ctx)
	defer conn.Close(context.Background())
	for _, q := range []string{
		"SET password_encryption = 'scram-sha-256'",
		"CREATE ROLE alice LOGIN PASSWORD '" + alicePassword + "'",
		"CREATE ROLE trusty LOGIN",
		"CREATE ROLE nologin PASSWORD 'x'",
		"CREATE DATABASE alice OWNER alice",
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	return srv
}

// superConn connects to p directly as the superuser; the test fails if it
// cannot. The caller closes the connection.
func (p *pgServer) superConn(t testing.TB, ctx context.Context) *pgx.Conn {
	t.Helper()
	conn, err := p.connect(ctx, "postgres", superPassword, "postgres")
	if err != nil {
		t.Fatalf("connecting to PostgreSQL on %s as the superuser: %v", p.addr, err)
	}
	return conn
}

func (p *pgServer) connect(ctx context.Context, user, password, db string) (*pgx.Conn, error) {
	return pgx.Connect(ctx, fmt.Sprintf("host=%s port=5433 user=%s password='%s' dbname=%s sslmode=disable connect_timeout=5",
		p.host, user, password, db))
}

// asPostgres makes cmd run as the PostgreSQL OS user when the test runs as
// root (PostgreSQL refuses to run as root).
func asPostgres(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	if !testutil.IsRoot() {
		return
	}
	u, err := user.Lookup(testutil.PostgresOSUser)
	if err != nil {
		t.Fatalf("looking up %s: %v", testutil.PostgresOSUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	cmd.Env = append(os.Environ(), "HOME="+u.HomeDir)
}

// staticRouter routes everything to fixed targets.
type staticRouter struct {
	mu       sync.Mutex
	primary  Target
	fresh    bool
	standbys []Target
	changed  chan struct{}
	fences   map[uint64]uint64 // epoch → fence xid
}

// Fence implements Router.
func (r *staticRouter) Fence(epoch uint64) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	xid, ok := r.fences[epoch]
	return xid, ok
}

// setFence records the fence xid of an epoch, as the agent does when a
// primary takes office.
func (r *staticRouter) setFence(epoch, xid uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fences == nil {
		r.fences = map[uint64]uint64{}
	}
	r.fences[epoch] = xid
}

func newStaticRouter(primary Target) *staticRouter {
	return &staticRouter{primary: primary, fresh: true, changed: make(chan struct{})}
}

func (r *staticRouter) Primary() (Target, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.primary, r.fresh
}

func (r *staticRouter) Standbys() []Target {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Target(nil), r.standbys...)
}

func (r *staticRouter) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.changed
}

func (r *staticRouter) set(primary Target, fresh bool, standbys []Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.primary, r.fresh, r.standbys = primary, fresh, standbys
	close(r.changed)
	r.changed = make(chan struct{})
}

// testGateway is a running gateway in front of a pgServer.
type testGateway struct {
	*Gateway
	host   string
	router *staticRouter
}

// startGateway runs a gateway on host:5432 (and host:5434 read-only) in
// front of pg. mod adjusts the config.
func startGateway(t testing.TB, pg *pgServer, host string, mod func(*Config)) *testGateway {
	t.Helper()
	router := newStaticRouter(Target{Epoch: 1, Node: "n1", Addr: pg.addr})
	verifiers := NewAuthidVerifiers(router, func() Credentials {
		return Credentials{User: "postgres", Password: superPassword, Database: "postgres"}
	}, time.Second, nil)
	t.Cleanup(func() { verifiers.Close() })
	cfg := Config{
		ReadWriteAddr:  net.JoinHostPort(host, "5432"),
		ReadOnlyAddr:   net.JoinHostPort(host, "5434"),
		Verifiers:      verifiers,
		StartupTimeout: 10 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Warn, Output: os.Stderr})
	g, err := New(cfg, router, logger)
	if err != nil {
		t.Fatalf("starting gateway: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("gateway Serve: %v", err)
		}
	})
	return &testGateway{Gateway: g, host: host, router: router}
}

// dsn is a libpq connection string to the gateway's read-write port.
func (g *testGateway) dsn(user, password, db string, extra string) string {
	return fmt.Sprintf("host=%s port=5432 user=%s password='%s' dbname=%s connect_timeout=5 %s", g.host, user, password, db, extra)
}

// selfSignedTLS returns a server TLS config with a fresh self-signed ECDSA
// certificate for host, and the certificate's PEM for clients.
func selfSignedTLS(t testing.TB, host string) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: host},
		IPAddresses:  []net.IP{net.ParseIP(host)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}}}, pool
}
