package testutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"testing"
	"time"
)

// certValidity bounds every test certificate: a day, so that the longest
// end-to-end run stays inside it, starting an hour back to absorb clock
// differences.
const certValidity = 24 * time.Hour

// CA is a throwaway certificate authority for tests (ECDSA P-256).
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// Pool holds only Cert: use it as RootCAs or ClientCAs.
	Pool *x509.CertPool
	// CertPEM is Cert, PEM-encoded.
	CertPEM []byte
}

// Cert is a certificate a CA issued, with its private key.
type Cert struct {
	// TLS is the certificate for a tls.Config (Leaf is set).
	TLS     tls.Certificate
	CertPEM []byte
	// KeyPEM is the key as an "EC PRIVATE KEY" PEM block.
	KeyPEM []byte
}

// NewCA creates a self-signed CA whose subject common name is name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generating the key of test CA %q: %v", name, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serialNumber(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("creating test CA %q: %v", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parsing test CA %q: %v", name, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{
		Cert:    cert,
		Key:     key,
		Pool:    pool,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}
}

// Issue issues a certificate for common name cn, good for both server and
// client authentication. Each host becomes a subject alternative name: an
// IP address if it parses as one, a DNS name otherwise.
func (ca *CA) Issue(t testing.TB, cn string, hosts ...string) *Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generating the key for certificate %q: %v", cn, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serialNumber(t),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatalf("issuing certificate %q: %v", cn, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parsing certificate %q: %v", cn, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatalf("encoding the key of certificate %q: %v", cn, err)
	}
	return &Cert{
		TLS:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
}

// WriteFile writes the CA certificate (PEM) to path, mode 0644, and
// returns path.
func (ca *CA) WriteFile(t testing.TB, path string) string {
	t.Helper()
	if err := os.WriteFile(path, ca.CertPEM, 0o644); err != nil {
		t.Fatalf("writing test CA certificate: %v", err)
	}
	return path
}

// WriteFiles writes the certificate (mode 0644) and its key (mode 0600) as
// PEM files and returns their paths.
func (c *Cert) WriteFiles(t testing.TB, certPath, keyPath string) (string, string) {
	t.Helper()
	if err := os.WriteFile(certPath, c.CertPEM, 0o644); err != nil {
		t.Fatalf("writing test certificate: %v", err)
	}
	if err := os.WriteFile(keyPath, c.KeyPEM, 0o600); err != nil {
		t.Fatalf("writing test certificate key: %v", err)
	}
	return certPath, keyPath
}

func serialNumber(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatalf("drawing a certificate serial number: %v", err)
	}
	return n.Add(n, big.NewInt(1)) // serial numbers must be positive
}
