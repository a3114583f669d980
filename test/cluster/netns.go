package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// NetnsEnv marks a test binary that already runs inside the private network
// (and mount) namespace ReexecInPrivateNetns made for it.
const NetnsEnv = "PGBATTERY_TEST_NETNS"

// InPrivateNetns reports whether this process runs inside the namespaces
// ReexecInPrivateNetns created.
func InPrivateNetns() bool { return os.Getenv(NetnsEnv) == "1" }

// ReexecInPrivateNetns is for a test binary's TestMain. As root, and not yet
// inside its own namespaces, it re-runs the test binary with the same
// arguments under `unshare --net --mount --fork --kill-child`, waits for it
// and returns (its exit code, true): TestMain then exits with that code.
// Inside the new namespaces (or when that is not possible) it returns
// (0, false) and the tests run here; inside, it first brings lo up.
//
// In the private network namespace the agents, PostgreSQL, the test's
// clients and the nftables tables of partitions see nothing of the
// machine's other tests: addresses cannot collide and a partition rule
// cannot cut anyone else. The private mount namespace lets a scenario mount
// a small tmpfs under a node (disk full) without touching the machine.
// When the namespaces cannot be made (not root, no unshare), tests run on
// the machine's loopback with testutil's address allocator and partition
// faults skip.
func ReexecInPrivateNetns() (int, bool) {
	if InPrivateNetns() {
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "bringing lo up in the test's network namespace: %v: %s\n", err, out)
			return 1, true
		}
		return 0, false
	}
	if !testutil.IsRoot() || os.Getenv("PGBATTERY_TEST_NO_NETNS") != "" {
		return 0, false
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		return 0, false
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return 0, false
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "finding the test binary: %v\n", err)
		return 1, true
	}
	args := append([]string{"--net", "--mount", "--propagation", "private", "--fork", "--kill-child=SIGKILL", self}, os.Args[1:]...)
	cmd := exec.Command(unshare, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), NetnsEnv+"=1")
	// If this process dies (go test's timeout kills it), unshare dies, and
	// with --kill-child so does the test binary inside; every agent it
	// started carries a parent-death signal too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "re-running the tests under unshare: %v\n", err)
		return 1, true
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				cmd.Process.Signal(s)
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	close(done)
	signal.Stop(sigs)
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), true
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "waiting for the tests under unshare: %v\n", err)
		return 1, true
	}
	return 0, true
}
