package agent

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgbattery/pgbattery/agent/config"
	"github.com/pgbattery/pgbattery/test/testutil"
)

// writeCA writes a CA and a node certificate it issued.
func writeCA(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	c := testutil.NewCA(t, "pgbattery test CA")
	cert, key = c.Issue(t, "n1").WriteFiles(t, filepath.Join(dir, "n1.pem"), filepath.Join(dir, "n1-key.pem"))
	return c.WriteFile(t, filepath.Join(dir, "ca.pem")), cert, key
}

func TestClusterTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeCA(t, dir)

	if c, err := clusterTLS(config.TLSConfig{}); c != nil || err != nil {
		t.Fatalf("no tls block: %v %v, want plain TCP", c, err)
	}
	c, err := clusterTLS(config.TLSConfig{CAFile: ca, CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	if c.ClientAuth != tls.RequireAndVerifyClientCert || len(c.Certificates) != 1 || c.RootCAs == nil || c.ClientCAs == nil {
		t.Errorf("raft TLS is not mutual: %+v", c)
	}

	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not a certificate"), 0o644)
	for name, tc := range map[string]struct {
		cfg  config.TLSConfig
		want string
	}{
		"CA without PEM": {config.TLSConfig{CAFile: bad, CertFile: cert, KeyFile: key}, "holds no PEM certificate"},
		"missing CA":     {config.TLSConfig{CAFile: filepath.Join(dir, "nope.pem"), CertFile: cert, KeyFile: key}, "reading the cluster CA"},
		"bad key pair":   {config.TLSConfig{CAFile: ca, CertFile: cert, KeyFile: bad}, "loading the agent's TLS certificate"},
	} {
		if _, err := clusterTLS(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
}
