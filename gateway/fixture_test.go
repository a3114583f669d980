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
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/pgbattery/pgbattery/test/testutil"
)

// The gateway's tests run against a real PostgreSQL 15. pgctl (the project's
// PostgreSQL control package) was being written at the same time, so this
// fixture drives initdb/postgres directly; it is test-only.

const pgBin = "/usr/lib/postgresql/15/bin"

const (
	superPassword = "super-secret"
	alicePassword = "alice pässword"
)

// pgServer is a PostgreSQL instance for tests.
type pgServer struct {
	addr string // host:port
	host string
	dir  string
}

// startPostgres initdbs and starts PostgreSQL 15 on host:5433 with SCRAM
// authentication, a superuser "postgres" (superPassword), a login role
// "alice" (alicePassword) and a role "trusty" that pg_hba trusts. It is
// stopped by t.Cleanup.
func startPostgres(t testing.TB, host string, settings ...string) *pgServer {
	t.Helper()
	if _, err := os.Stat(filepath.Join(pgBin, "postgres")); err != nil {
		t.Skipf("PostgreSQL 15 binaries not found at %s", pgBin)
	}
	dir := testutil.TempDir(t)
	data := filepath.Join(dir, "data")
	pwfile := filepath.Join(dir, "pw")
	if err := os.WriteFile(pwfile, []byte(superPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.ChownToPostgres(t, dir)
	testutil.ChownToPostgres(t, pwfile)

	run := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join(pgBin, name), args...)
		asPostgres(t, cmd)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	run("initdb", "-D", data, "-U", "postgres", "--pwfile", pwfile, "--auth=scram-sha-256", "-E", "UTF8", "--no-sync")
	hba := "local all all scram-sha-256\n" +
		"host all trusty 127.0.0.0/8 trust\n" +
		"host all all 127.0.0.0/8 scram-sha-256\n" +
		"host replication all 127.0.0.0/8 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(data, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.ChownToPostgres(t, filepath.Join(data, "pg_hba.conf"))

	cmd := exec.Command(filepath.Join(pgBin, "postgres"), "-D", data,
		"-c", "listen_addresses="+host, "-c", "port=5433",
		"-c", "unix_socket_directories="+dir, "-c", "fsync=off", "-c", "max_connections=200",
		"-c", "shared_buffers=32MB", "-c", "logging_collector=off")
	for _, kv := range settings {
		cmd.Args = append(cmd.Args, "-c", kv)
	}
	asPostgres(t, cmd)
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting postgres: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logf.Close()
	})

	srv := &pgServer{addr: net.JoinHostPort(host, "5433"), host: host, dir: dir}
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := srv.connect(context.Background(), "postgres", superPassword, "postgres")
		if err == nil {
			for _, q := range []string{
				"SET password_encryption = 'scram-sha-256'",
				"CREATE ROLE alice LOGIN PASSWORD '" + alicePassword + "'",
				"CREATE ROLE trusty LOGIN",
				"CREATE ROLE nologin PASSWORD 'x'",
				"CREATE DATABASE alice OWNER alice",
			} {
				if _, err = conn.Exec(context.Background(), q); err != nil {
					break
				}
			}
			conn.Close(context.Background())
			if err != nil {
				t.Fatalf("creating roles: %v", err)
			}
			return srv
		}
		select {
		case <-exited:
			out, _ := os.ReadFile(filepath.Join(dir, "postgres.log"))
			t.Fatalf("postgres exited during start-up:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres did not accept connections: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
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
