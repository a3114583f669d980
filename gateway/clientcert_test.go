package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// testCA is a certificate authority made up for a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// client issues a client certificate with the given CN.
func (ca *testCA) client(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestClientCertificates: tls.gateway.client_cert in front of a real
// PostgreSQL. verify-full wants a certificate from the client CA whose CN is
// the user, and the password as well; verify-ca any certificate from the
// CA; neither lets a client in without one, nor over plaintext. With trust
// (a back end that trusts the gateway) the certificate alone logs in.
func TestClientCertificates(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	host := testutil.Addr(t)
	pg := startPostgres(t, host)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ca := newTestCA(t, "pgbattery test client CA")
	rogue := newTestCA(t, "some other CA")
	aliceCert := ca.client(t, "alice")
	bobCert := ca.client(t, "bob")
	trustyCert := ca.client(t, "trusty")
	rogueAlice := rogue.client(t, "alice")

	start := func(mode, auth string) *testGateway {
		gwHost := testutil.Addr(t)
		serverTLS, _ := selfSignedTLS(t, gwHost)
		serverTLS.ClientCAs, serverTLS.ClientAuth = ca.pool, tls.VerifyClientCertIfGiven
		return startGateway(t, pg, gwHost, func(c *Config) {
			c.TLS = func() *tls.Config { return serverTLS }
			c.ClientCert = mode
			if auth == AuthTrust {
				c.AuthMode, c.Verifiers = AuthTrust, nil
			}
		})
	}
	// connect logs in through g as user with password, presenting cert
	// (nil: none), over TLS unless plaintext.
	connect := func(g *testGateway, user, password, db string, cert *tls.Certificate, plaintext bool) (string, error) {
		mode := "sslmode=require"
		if plaintext {
			mode = "sslmode=disable"
		}
		cfg, err := pgx.ParseConfig(g.dsn(user, password, db, mode))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.TLSConfig != nil && cert != nil {
			cfg.TLSConfig.Certificates = []tls.Certificate{*cert}
		}
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return "", err
		}
		defer conn.Close(context.Background())
		var who string
		err = conn.QueryRow(ctx, "SELECT current_user").Scan(&who)
		return who, err
	}
	wantRefused := func(what string, err error, code, text string) {
		t.Helper()
		if sqlstate(err) != code || !strings.Contains(err.Error(), text) {
			t.Errorf("%s: got %v, want %s %q", what, err, code, text)
		}
	}

	t.Run("verify-full", func(t *testing.T) {
		g := start(ClientCertVerifyFull, AuthSCRAM)
		if who, err := connect(g, "alice", alicePassword, "alice", &aliceCert, false); err != nil || who != "alice" {
			t.Fatalf("alice with her certificate and password: %q %v", who, err)
		}
		_, err := connect(g, "alice", "wrong", "alice", &aliceCert, false)
		wantRefused("right certificate, wrong password", err, "28P01", "password authentication failed")
		_, err = connect(g, "alice", alicePassword, "alice", nil, false)
		wantRefused("no certificate", err, "28000", "requires a valid client certificate")
		_, err = connect(g, "alice", alicePassword, "alice", nil, true)
		wantRefused("plaintext", err, "28000", "requires a valid client certificate")
		_, err = connect(g, "alice", alicePassword, "alice", &bobCert, false)
		wantRefused("bob's certificate for alice", err, "28000", "CN is not the user name")
		// A certificate from another CA fails the TLS handshake.
		if _, err := connect(g, "alice", alicePassword, "alice", &rogueAlice, false); err == nil {
			t.Errorf("a certificate from an unknown CA was accepted")
		}
	})

	t.Run("verify-ca", func(t *testing.T) {
		g := start(ClientCertVerifyCA, AuthSCRAM)
		if who, err := connect(g, "alice", alicePassword, "alice", &bobCert, false); err != nil || who != "alice" {
			t.Fatalf("alice with a certificate of the CA: %q %v", who, err)
		}
		_, err := connect(g, "alice", alicePassword, "alice", nil, false)
		wantRefused("no certificate", err, "28000", "requires a valid client certificate")
		_, err = connect(g, "alice", "wrong", "alice", &aliceCert, false)
		wantRefused("wrong password", err, "28P01", "password authentication failed")
	})

	t.Run("trust-verify-full", func(t *testing.T) {
		// The back end trusts the gateway for "trusty" (fixture pg_hba):
		// the certificate is the only credential.
		g := start(ClientCertVerifyFull, AuthTrust)
		if who, err := connect(g, "trusty", "", "postgres", &trustyCert, false); err != nil || who != "trusty" {
			t.Fatalf("trusty with its certificate: %q %v", who, err)
		}
		_, err := connect(g, "trusty", "", "postgres", &aliceCert, false)
		wantRefused("alice's certificate for trusty", err, "28000", "CN is not the user name")
		_, err = connect(g, "trusty", "", "postgres", nil, false)
		wantRefused("no certificate", err, "28000", "requires a valid client certificate")
	})

	t.Run("config", func(t *testing.T) {
		_, err := Config{ReadWriteAddr: "127.0.0.1:0", AuthMode: AuthTrust, ClientCert: ClientCertVerifyFull}.withDefaults()
		if err == nil || !strings.Contains(err.Error(), "need a TLS configuration") {
			t.Errorf("client certificates without TLS: %v", err)
		}
		_, err = Config{ReadWriteAddr: "127.0.0.1:0", AuthMode: AuthTrust, ClientCert: "verify-some"}.withDefaults()
		if err == nil || !strings.Contains(err.Error(), "verify-some") {
			t.Errorf("unknown client certificate mode: %v", err)
		}
	})
}
