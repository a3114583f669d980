package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// distDir is the repository's dist/ directory, from test/e2e.
const distDir = "../../dist"

// TestDistExampleConfigsValidate runs `pgbattery agent -validate` on every
// example configuration shipped in dist/config, as an operator would before
// copying one to /etc/pgbattery.
func TestDistExampleConfigsValidate(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(distDir, "config", "*", "*.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{
		"3-nodes/node1.hcl": true, "3-nodes/node2.hcl": true, "3-nodes/node3.hcl": true,
		"2-nodes-witness/node1.hcl": true, "2-nodes-witness/node2.hcl": true, "2-nodes-witness/witness.hcl": true,
	}
	for _, f := range files {
		rel, _ := filepath.Rel(filepath.Join(distDir, "config"), f)
		delete(want, rel)
		t.Run(rel, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, binary, "agent", "-validate", "-config-file="+f).CombinedOutput()
			if err != nil {
				t.Fatalf("pgbattery agent -validate -config-file=%s: %v\n%s", f, err, out)
			}
			if !strings.Contains(string(out), "Configuration is valid!") {
				t.Fatalf("validate of %s did not say the configuration is valid:\n%s", f, out)
			}
			if strings.Contains(strings.ToLower(string(out)), "warn") {
				t.Errorf("validate of %s printed warnings:\n%s", f, out)
			}
		})
	}
	for missing := range want {
		t.Errorf("dist/config/%s is missing", missing)
	}
}

// TestDistSystemdUnit checks dist/pgbattery.service with systemd's own
// parser: systemd-analyze verify reports unknown keys and bad values (it
// exits 0 for those, so the test reads what it prints). The binary path is
// pointed at the test's build, since verify checks that ExecStart exists.
func TestDistSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not found: this test needs systemd's tools")
	}
	b, err := os.ReadFile(filepath.Join(distDir, "pgbattery.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	if !strings.Contains(unit, "/usr/local/bin/pgbattery agent") {
		t.Fatalf("the unit does not start /usr/local/bin/pgbattery agent")
	}
	dir := testutil.TempDir(t)
	path := filepath.Join(dir, "pgbattery.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/pgbattery", binary)), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, analyze, "verify", path)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		// Lines about the unit file itself; verify may also complain about
		// the machine (no systemd as PID 1, no bus), which is not ours.
		if strings.Contains(line, "pgbattery.service") {
			t.Errorf("systemd-analyze verify: %s", line)
		}
	}
}
