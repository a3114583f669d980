package pgctl

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestChildProcesses: the direct children of a process, not its
// grandchildren; none for a process without children or a pid that does
// not exist.
func TestChildProcesses(t *testing.T) {
	// sh starts two sleeps, one of which starts its own child.
	cmd := exec.Command("sh", "-c", "sleep 60 & sh -c 'sleep 60 & wait' & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range ChildProcesses(cmd.Process.Pid) {
			for _, g := range ChildProcesses(c) {
				syscall.Kill(g, syscall.SIGKILL)
			}
			syscall.Kill(c, syscall.SIGKILL)
		}
		cmd.Process.Kill()
		cmd.Wait()
	})
	var kids []int
	deadline := time.Now().Add(10 * time.Second)
	for kids = ChildProcesses(cmd.Process.Pid); len(kids) != 2 && time.Now().Before(deadline); kids = ChildProcesses(cmd.Process.Pid) {
		time.Sleep(20 * time.Millisecond)
	}
	if len(kids) != 2 {
		t.Fatalf("children of sh: %v, want 2", kids)
	}
	var grandchildren []int
	for ; time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		grandchildren = nil
		for _, k := range kids {
			grandchildren = append(grandchildren, ChildProcesses(k)...)
		}
		if len(grandchildren) == 1 {
			break
		}
	}
	if len(grandchildren) != 1 || slices.Contains(kids, grandchildren[0]) {
		t.Fatalf("grandchildren %v (children %v), want one that is not a child", grandchildren, kids)
	}
	if got := ChildProcesses(grandchildren[0]); len(got) != 0 {
		t.Errorf("children of a sleep: %v", got)
	}
	if got := ChildProcesses(1 << 30); len(got) != 0 { // above pid_max: no such process
		t.Errorf("children of a pid that does not exist: %v", got)
	}
}

// TestKillHungServer: a PostgreSQL whose postmaster and backends are all
// stopped (SIGSTOP) does not answer; Kill ends every one of its processes,
// and the exit is reported as unexpected, like a crash.
func TestKillHungServer(t *testing.T) {
	n := newTestNode(t, "hung", true)
	startNode(t, n, StartOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A client backend of its own, to be sure a session is among the
	// children that must die.
	conn, err := n.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	pm := n.Postmaster()
	children := ChildProcesses(pm.PID())
	if len(children) < 3 {
		t.Fatalf("postmaster %d has %d children, want the background processes and a backend", pm.PID(), len(children))
	}
	for _, pid := range append(children, pm.PID()) {
		syscall.Kill(pid, syscall.SIGSTOP)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	if _, err := n.Status(sctx); err == nil {
		t.Fatal("a stopped server answered the status query")
	}
	scancel()

	if err := n.Kill("test: hung"); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	select {
	case ex := <-n.exit:
		if ex.Expected || ex.PID != pm.PID() {
			t.Fatalf("exit reported %+v, want an unexpected exit of %d", ex, pm.PID())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the killed postmaster's exit was not reported")
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range children {
		for syscall.Kill(pid, 0) == nil && time.Now().Before(deadline) {
			if processZombieOrGone(pid) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !processZombieOrGone(pid) {
			t.Errorf("child %d of the killed postmaster still runs", pid)
		}
	}
	// The instance starts again after the kill (crash recovery).
	startNode(t, n, StartOptions{})
}

// processZombieOrGone reports whether pid has exited (reaped, or a zombie
// waiting for its new parent to reap it).
func processZombieOrGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	if k := strings.LastIndexByte(s, ')'); k >= 0 && k+2 < len(s) {
		return s[k+2] == 'Z'
	}
	return false
}
