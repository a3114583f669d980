package cluster

import (
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/pgctl"
)

func testNodes(n int) []*Node {
	c := &Cluster{}
	for i := 0; i < n; i++ {
		c.Nodes = append(c.Nodes, &Node{c: c, Index: i, Name: string(rune('a' + i))})
	}
	return c.Nodes
}

func TestCutAndOneWay(t *testing.T) {
	ns := testNodes(5)
	got := describeLinks(Cut(ns[:2], ns[2:]))
	want := "blocked a->c c->a a->d d->a a->e e->a b->c c->b b->d d->b b->e e->b"
	if got != want {
		t.Fatalf("Cut: %s, want %s", got, want)
	}
	if got, want := describeLinks(OneWay(ns[:1], ns[1:3])), "blocked a->b a->c"; got != want {
		t.Fatalf("OneWay: %s, want %s", got, want)
	}
	// A node is never cut from itself, and a full cut of a set is every
	// ordered pair once.
	if n := len(Cut(ns, ns)); n != 5*4*2 {
		t.Fatalf("Cut(all, all) has %d links", n)
	}
}

func TestLinkMarksAreDistinct(t *testing.T) {
	ns := testNodes(9)
	seen := map[string]bool{}
	for _, x := range ns {
		for _, y := range ns {
			if x == y {
				continue
			}
			m := linkMark(x, y)
			if seen[m] {
				t.Fatalf("mark %s used twice", m)
			}
			seen[m] = true
		}
	}
}

// TestProcessHelpers checks the helpers that verify faults on a real
// process tree: children are listed, a stopped process reads as 'T', a
// killed one stops counting as running.
func TestProcessHelpers(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 60 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var kids []int
	if !Poll(5*time.Second, func() bool { kids = pgctl.ChildProcesses(cmd.Process.Pid); return len(kids) == 1 }) {
		t.Fatalf("children of the shell: %v", kids)
	}
	syscall.Kill(kids[0], syscall.SIGSTOP)
	if !Poll(5*time.Second, func() bool { return procState(kids[0]) == 'T' }) {
		t.Fatalf("state after SIGSTOP: %c", procState(kids[0]))
	}
	syscall.Kill(kids[0], syscall.SIGKILL)
	if !Poll(5*time.Second, func() bool { return !processRunning(kids[0]) }) {
		t.Fatal("killed child still counts as running")
	}
	cmd.Wait()
	if processRunning(cmd.Process.Pid) {
		t.Fatal("reaped shell still counts as running")
	}
}
