package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cgroupSet is a cgroup v2 directory with one child per node. The agents
// start inside their child (so their PostgreSQL inherits it); partition
// rules match the child. Removed at cleanup, after the processes died.
type cgroupSet struct {
	dir  string // absolute path
	rel  string // relative to /sys/fs/cgroup, as nft resolves it
	name string
}

func newCgroupSet(t testing.TB) (*cgroupSet, error) {
	var base, rel string
	switch {
	case fileExists("/sys/fs/cgroup/cgroup.controllers"):
		base, rel = "/sys/fs/cgroup", ""
	case fileExists("/sys/fs/cgroup/unified/cgroup.controllers"):
		base, rel = "/sys/fs/cgroup/unified", "unified/"
	default:
		return nil, errNoCgroup
	}
	self, _ := os.ReadFile("/proc/self/cgroup")
	if !strings.Contains(string(self), "0::/\n") {
		// The rules match the cgroup at an absolute level (2), only
		// known when the test sits at the root of the hierarchy.
		return nil, fmt.Errorf("the test does not run at the cgroup v2 root (%q)", strings.TrimSpace(string(self)))
	}
	b := make([]byte, 4)
	rand.Read(b) // a name, not a random choice of the scenario
	name := "pgbc_" + hex.EncodeToString(b)
	cg := &cgroupSet{dir: filepath.Join(base, name), rel: rel + name, name: name}
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		cg.waitEmpty(15 * time.Second)
		subs, _ := filepath.Glob(filepath.Join(cg.dir, "*", "cgroup.procs"))
		for _, s := range subs {
			os.Remove(filepath.Dir(s))
		}
		if err := os.Remove(cg.dir); err != nil {
			t.Logf("removing cgroup %s: %v", cg.dir, err)
		}
	})
	return cg, nil
}

// open creates the node's cgroup if needed and opens its directory (for
// clone3's CLONE_INTO_CGROUP).
func (cg *cgroupSet) open(node string) (*os.File, error) {
	dir := filepath.Join(cg.dir, node)
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return nil, err
	}
	return os.Open(dir)
}

func (cg *cgroupSet) path(node string) string { return cg.rel + "/" + node }

// procs lists the processes in the node's cgroup.
func (cg *cgroupSet) procs(node string) []int {
	b, err := os.ReadFile(filepath.Join(cg.dir, node, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// waitEmpty waits until no node cgroup holds a process.
func (cg *cgroupSet) waitEmpty(timeout time.Duration) bool {
	return Poll(timeout, func() bool {
		subs, _ := filepath.Glob(filepath.Join(cg.dir, "*"))
		for _, s := range subs {
			if fi, err := os.Stat(s); err == nil && fi.IsDir() && len(cg.procs(filepath.Base(s))) > 0 {
				return false
			}
		}
		return true
	})
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func execLookPath(name string) (string, error) { return exec.LookPath(name) }

func nftApply(rules string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, out)
	}
	return nil
}

func nftRun(args ...string) error {
	if out, err := exec.Command("nft", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("nft %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}
