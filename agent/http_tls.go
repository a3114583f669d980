package agent

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"github.com/pgbattery/pgbattery/agent/config"
)

// TLS of the HTTP API (tls { http { enabled } }): the agent serves its
// certificate, and reaches its peers' APIs over HTTPS, verifying them
// against the cluster CA.

func httpTLSEnabled(cfg *config.RuntimeConfig) bool { return cfg.TLS.HTTP.Enabled }

// httpServerTLS is the HTTP API's server configuration. Client
// certificates are asked for only with tls.verify_incoming: then every
// client (the CLI, other agents, load balancers' probes) must present one
// the cluster CA issued. Otherwise the ACL token guards the API.
func httpServerTLS(t config.TLSConfig) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the HTTP API's TLS certificate %s: %w", t.CertFile, err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if t.VerifyIncoming {
		pool, err := loadCA(t.CAFile)
		if err != nil {
			return nil, err
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

func loadCA(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster CA %s: %w", file, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("the cluster CA file %s holds no PEM certificate", file)
	}
	return pool, nil
}

// peerHTTPTLS is the client configuration for calls to other agents' APIs.
// Peers are dialled by IP and their certificates need not name it, so with
// a cluster CA the chain is checked against it instead of the host name;
// without one, Go's usual verification (system roots, the IP) applies.
func peerHTTPTLS(t config.TLSConfig) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.CertFile != "" && t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the agent's TLS certificate %s: %w", t.CertFile, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	if t.CAFile == "" {
		return c, nil
	}
	roots, err := loadCA(t.CAFile)
	if err != nil {
		return nil, err
	}
	c.RootCAs = roots
	// InsecureSkipVerify only turns Go's own check off; VerifyConnection
	// replaces it and refuses any chain the CA did not issue.
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the peer agent presented no certificate")
		}
		inter := x509.NewCertPool()
		for _, ic := range cs.PeerCertificates[1:] {
			inter.AddCert(ic)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("the peer agent's certificate %q is not from the cluster CA: %w", cs.PeerCertificates[0].Subject.CommonName, err)
		}
		return nil
	}
	return c, nil
}

// url is the address of path on a peer agent's API.
func (f *forwarder) url(addr, path string) string {
	if httpTLSEnabled(f.c.a.config()) {
		return "https://" + addr + path
	}
	return "http://" + addr + path
}
