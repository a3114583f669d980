package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
)

func TestCAIssue(t *testing.T) {
	ca := NewCA(t, "test CA")
	other := NewCA(t, "other CA")
	c := ca.Issue(t, "n1", "127.0.0.7", "node1.example")

	leaf := c.TLS.Leaf
	if leaf == nil || leaf.Subject.CommonName != "n1" {
		t.Fatalf("leaf %+v", leaf)
	}
	if len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.7")) ||
		len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "node1.example" {
		t.Fatalf("SANs: IPs %v, names %v", leaf.IPAddresses, leaf.DNSNames)
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool, DNSName: "node1.example", KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Errorf("verifying for usage %v: %v", usage, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: other.Pool}); err == nil {
		t.Error("another CA's pool verified the certificate")
	}
	if ca.Cert.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("the CA and its certificate share a serial number")
	}

	// The files load as a key pair and a CA bundle.
	dir := t.TempDir()
	certFile, keyFile := c.WriteFiles(t, filepath.Join(dir, "n1.pem"), filepath.Join(dir, "n1-key.pem"))
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Fatalf("loading the written key pair: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca.CertPEM) {
		t.Fatal("the CA PEM holds no certificate")
	}
	if path := ca.WriteFile(t, filepath.Join(dir, "ca.pem")); path != filepath.Join(dir, "ca.pem") {
		t.Fatalf("WriteFile returned %q", path)
	}
}
