package pgctl

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// The test binary re-executes itself as a helper process when helperEnv is
// set: to be the agent that dies (Pdeathsig) or to run PostgreSQL as an
// unprivileged agent.
const (
	helperEnv     = "PGCTL_TEST_HELPER"
	helperDirEnv  = "PGCTL_TEST_DIR"
	helperAddrEnv = "PGCTL_TEST_ADDR"
)

func runHelper(mode string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	bins, err := FindBinaries(ctx, "")
	if err != nil {
		return fail(err)
	}
	inst, err := NewInstance(Config{
		NodeName:    "helper",
		Binaries:    bins,
		Dir:         os.Getenv(helperDirEnv),
		ListenAddr:  os.Getenv(helperAddrEnv),
		OSUser:      testutil.PostgresOSUser,
		Superuser:   testSuper,
		Replication: testRepl,
		Parameters:  map[string]string{"fsync": "off", "shared_buffers": "16MB"},
		Logger:      hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Info}),
	})
	if err != nil {
		return fail(err)
	}
	switch mode {
	case "pdeathsig":
		pm, err := inst.Start(ctx, StartOptions{})
		if err != nil {
			return fail(err)
		}
		// Retire OS threads the way the Go runtime does when a locked
		// goroutine ends: had the postmaster been forked from one of them,
		// Pdeathsig would kill it now.
		done := make(chan struct{})
		for range 64 {
			go func() {
				runtime.LockOSThread()
				done <- struct{}{}
			}()
		}
		for range 64 {
			<-done
		}
		time.Sleep(300 * time.Millisecond)
		if pm.Exited() {
			return fail(fmt.Errorf("postmaster died while the agent lived: %s", pm.ExitStatus()))
		}
		fmt.Printf("PID %d\n", pm.PID())
		// Wait to be killed; never outlive the test by much.
		select {
		case <-pm.Done():
			return fail(fmt.Errorf("postmaster exited while the helper lived"))
		case <-time.After(time.Minute):
			inst.Stop(context.Background(), StopImmediate)
			return 3
		}
	case "lifecycle":
		if err := inst.InitDB(ctx, InitDBOptions{NoSync: true}); err != nil {
			return fail(err)
		}
		pm, err := inst.Start(ctx, StartOptions{Fenced: true})
		if err != nil {
			return fail(err)
		}
		if err := inst.SetFenced(ctx, false); err != nil {
			return fail(err)
		}
		conn, err := inst.Connect(ctx)
		if err != nil {
			return fail(err)
		}
		if _, err := conn.Exec(ctx, "CREATE TABLE t AS SELECT 1 AS id"); err != nil {
			return fail(err)
		}
		conn.Close(ctx)
		st, err := inst.Status(ctx)
		if err != nil {
			return fail(err)
		}
		if err := inst.Stop(ctx, StopFast); err != nil {
			return fail(err)
		}
		cd, err := inst.ControlData(ctx)
		if err != nil {
			return fail(err)
		}
		fmt.Printf("OK uid=%d postmaster=%d role=%s sysid=%d state=%q\n", os.Geteuid(), pm.PID(), st.Role, cd.SystemIdentifier, cd.State)
		return 0
	}
	return fail(fmt.Errorf("unknown helper mode %q", mode))
}

// TestPdeathsig: a postmaster started by an agent dies when that agent is
// SIGKILLed, so an orphaned primary cannot stay writable.
func TestPdeathsig(t *testing.T) {
	n := newTestNode(t, "orphan", true) // prepares the data; the helper starts it
	// Become a child subreaper for the duration, so the orphaned postmaster
	// is reparented to this process and we can reap it ourselves: that
	// proves it is dead (not a zombie PostgreSQL would trip over) and shows
	// which signal ended it.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	t.Cleanup(func() { unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })

	cmd, pid := startHelperPostmaster(t, n)
	if pid == 0 || !processAlive(pid) {
		t.Fatalf("helper reported postmaster pid %d, not alive", pid)
	}
	// A safety net if the assertion below fails: never leak the postmaster.
	t.Cleanup(func() {
		if processAlive(pid) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	var ws syscall.WaitStatus
	eventually(t, 10*time.Second, "postmaster gone after its agent was killed", func() error {
		got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		if err != nil {
			return fmt.Errorf("wait4(%d): %w", pid, err)
		}
		if got != pid {
			return fmt.Errorf("postmaster %d still alive", pid)
		}
		return nil
	})
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("postmaster ended with %v, want the parent-death SIGKILL", ws)
	}
	// Its backends notice the postmaster's death and exit; reap them too
	// (they were reparented to us), so nothing holds the data directory.
	eventually(t, 10*time.Second, "orphaned backends gone", func() error {
		left := 0
		for _, c := range childrenOf(os.Getpid()) {
			if got, _ := syscall.Wait4(c, nil, syscall.WNOHANG, nil); got != c {
				left++
			}
		}
		if left > 0 {
			return fmt.Errorf("%d orphaned PostgreSQL processes left", left)
		}
		return nil
	})
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	// The data directory is usable again: start it from this process.
	startNode(t, n, StartOptions{})
}

// childrenOf lists the pids whose parent is ppid and whose command is
// postgres.
func childrenOf(ppid int) []int {
	var out []int
	for _, pid := range ChildProcesses(ppid) {
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil && strings.TrimSpace(string(comm)) == "postgres" {
			out = append(out, pid)
		}
	}
	return out
}

// startHelperPostmaster runs n's PostgreSQL from a helper agent process
// and returns the helper and the postmaster's pid.
func startHelperPostmaster(t *testing.T, n *testNode) (*exec.Cmd, int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=pdeathsig", helperDirEnv+"="+n.cfg.Dir, helperAddrEnv+"="+n.addr)
	cmd.Stderr = testWriter{t}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	pidc := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "PID "); ok {
				pid, _ := strconv.Atoi(v)
				pidc <- pid
			}
		}
		close(pidc)
	}()
	var pid int
	select {
	case pid = <-pidc:
	case <-time.After(90 * time.Second):
		t.Fatal("helper did not start PostgreSQL")
	}
	return cmd, pid
}

// TestForeignPostmaster: a postmaster on our data directory that this
// Instance did not start is detected, refuses a second start, and can be
// reloaded, queried and stopped.
func TestForeignPostmaster(t *testing.T) {
	n := newTestNode(t, "foreign", true)
	cmd, pid := startHelperPostmaster(t, n)
	ctx := testCtx(t, time.Minute)
	if got, ok := n.foreignPostmaster(); !ok || got != pid {
		t.Fatalf("foreign postmaster not found: %d %v (want %d)", got, ok, pid)
	}
	if _, err := n.Start(ctx, StartOptions{}); err == nil || !strings.Contains(err.Error(), "not started by this agent") {
		t.Fatalf("Start over a foreign postmaster: %v", err)
	}
	if err := n.RemoveData(); err == nil {
		t.Fatal("RemoveData under a running postmaster")
	}
	if st, err := n.Status(ctx); err != nil || st.Role != RolePrimary {
		t.Fatalf("Status of a foreign postmaster: %+v %v", st, err)
	}
	if err := n.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}
	cmd.Wait() // the helper notices its postmaster is gone and exits
	if processAlive(pid) {
		t.Fatal("foreign postmaster survived Stop")
	}
	if cd, err := n.ControlData(ctx); err != nil || !cd.CleanShutdown() {
		t.Fatalf("after stopping the foreign postmaster: %+v %v", cd, err)
	}
	startNode(t, n, StartOptions{})
}

// TestUnprivilegedLifecycle runs initdb, a fenced start, unfencing, a
// write, status, stop and pg_controldata from an agent process that is
// not root (the test binary re-executed as the postgres OS user): nothing
// in pgctl may assume root.
func TestUnprivilegedLifecycle(t *testing.T) {
	if !testutil.IsRoot() {
		t.Skip("needs root to switch to an unprivileged user; as non-root every test already runs unprivileged")
	}
	u, err := user.Lookup(testutil.PostgresOSUser)
	if err != nil {
		t.Skipf("no %s user: %v", testutil.PostgresOSUser, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	addr := testutil.Addr(t)
	root := testutil.TempDir(t)
	// The test binary may sit in a directory the user cannot read.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "pgctl.test")
	if err := copyFile(self, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	nodeDir := filepath.Join(root, "node")
	if err := os.Mkdir(nodeDir, 0o700); err != nil {
		t.Fatal(err)
	}
	os.Chown(nodeDir, uid, gid)

	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + nodeDir,
		helperEnv + "=lifecycle", helperDirEnv + "=" + nodeDir, helperAddrEnv + "=" + addr}
	cmd.Dir = nodeDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	t.Logf("unprivileged helper output:\n%s", out)
	if err != nil {
		t.Fatalf("unprivileged lifecycle: %v", err)
	}
	if !strings.Contains(string(out), "OK uid="+u.Uid) || !strings.Contains(string(out), `state="shut down"`) {
		t.Fatal("unprivileged lifecycle did not complete")
	}
	if strings.Contains(string(out), testSuper.Password) || strings.Contains(string(out), testRepl.Password) {
		t.Fatal("a secret appeared in the helper's output")
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
