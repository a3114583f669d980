package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgbattery/pgbattery/pgctl"
)

// The faults. Each returns once it has certainly taken effect and records
// an event named after it.

// KillNode SIGKILLs the node's agent and all of its PostgreSQL at once (a
// machine that loses power), and waits until none of them runs.
func (n *Node) KillNode(t testing.TB) {
	t.Helper()
	if !n.Running() {
		t.Fatalf("kill node %s: its agent is not running", n.Name)
	}
	n.killHard()
	n.c.Event("kill-node "+n.Name, "SIGKILL agent and PostgreSQL")
}

// killHard kills the agent's process group, its PostgreSQL (postmaster
// stopped first, so it cannot fork in between, then every child, since
// backends leave the process group), and everything else in its cgroup.
func (n *Node) killHard() {
	pm := n.PostmasterPID()
	if pm > 0 {
		syscall.Kill(pm, syscall.SIGSTOP)
	}
	if pid := n.AgentPID(); pid > 0 {
		syscall.Kill(-pid, syscall.SIGKILL)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if pm > 0 {
		for _, ch := range pgctl.ChildProcesses(pm) {
			syscall.Kill(ch, syscall.SIGKILL)
		}
		syscall.Kill(pm, syscall.SIGKILL)
	}
	if n.c.cg != nil {
		for _, pid := range n.c.cg.procs(n.Name) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	n.waitExit(15 * time.Second)
	if pm > 0 {
		Poll(15*time.Second, func() bool { return !processRunning(pm) })
	}
	if n.c.cg != nil {
		Poll(15*time.Second, func() bool { return len(n.c.cg.procs(n.Name)) == 0 })
	}
	n.mu.Lock()
	n.paused = nil
	n.mu.Unlock()
}

// KillAgent SIGKILLs only the agent process. Its PostgreSQL is then the
// agent's business (a postmaster must not outlive its agent as a writable
// primary); the fault is done when the agent has exited.
func (n *Node) KillAgent(t testing.TB) {
	t.Helper()
	pid := n.AgentPID()
	if pid == 0 || !n.Running() {
		t.Fatalf("kill agent %s: not running", n.Name)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	if !n.waitExit(15 * time.Second) {
		t.Fatalf("agent %s did not exit after SIGKILL", n.Name)
	}
	n.c.Event("kill-agent "+n.Name, "SIGKILL agent only")
}

// KillPostgres SIGKILLs the node's postmaster and all its children; the
// agent lives on. Done when the postmaster is gone (or a zombie for the
// agent to reap).
func (n *Node) KillPostgres(t testing.TB) {
	t.Helper()
	pm := n.PostmasterPID()
	if pm == 0 {
		t.Fatalf("kill postgres %s: no running postmaster", n.Name)
	}
	syscall.Kill(pm, syscall.SIGSTOP)
	for _, ch := range pgctl.ChildProcesses(pm) {
		syscall.Kill(ch, syscall.SIGKILL)
	}
	syscall.Kill(pm, syscall.SIGKILL)
	WaitFor(t, 15*time.Second, "the postmaster of "+n.Name+" to die", func() bool { return !processRunning(pm) })
	n.c.Event("kill-postgres "+n.Name, fmt.Sprintf("SIGKILL postmaster %d and children", pm))
}

// Stop stops the agent gracefully (SIGTERM: it leaves gossip, hands over,
// stops PostgreSQL) and waits for it to exit.
func (n *Node) Stop(t testing.TB, timeout time.Duration) {
	t.Helper()
	pid := n.AgentPID()
	if pid == 0 {
		t.Fatalf("stop %s: not running", n.Name)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	if !n.waitExit(timeout) {
		t.Fatalf("agent %s did not exit within %s of SIGTERM; log tail:\n%s", n.Name, timeout, n.LogTail(40))
	}
	if pm := n.PostmasterPID(); pm > 0 {
		WaitFor(t, 15*time.Second, "the postmaster of "+n.Name+" to stop", func() bool { return !processRunning(pm) })
	}
	n.c.Event("stop "+n.Name, "SIGTERM, agent exited")
}

// Restart starts the node's stopped agent again (it finds the others with
// retry_join) and waits until its API answers.
func (n *Node) Restart(t testing.TB) {
	t.Helper()
	n.start(t)
	n.c.Event("restart "+n.Name, "")
	WaitFor(t, time.Minute, n.Name+"'s API after restart", func() bool {
		return getJSON(n.HTTPAddr(), "/v1/health/liveness", nil) == 200
	})
}

// PauseNode SIGSTOPs every process of the node: agent, postmaster and
// backends. Done when all are stopped.
func (n *Node) PauseNode(t testing.TB) {
	t.Helper()
	pids := n.stopProcesses(t, true)
	n.c.Event("pause-node "+n.Name, fmt.Sprintf("SIGSTOP %d processes", len(pids)))
}

// PausePostgres SIGSTOPs the node's postmaster and its children; the agent
// runs on.
func (n *Node) PausePostgres(t testing.TB) {
	t.Helper()
	pids := n.stopProcesses(t, false)
	n.c.Event("pause-postgres "+n.Name, fmt.Sprintf("SIGSTOP %d processes", len(pids)))
}

// Resume SIGCONTs what PauseNode or PausePostgres stopped.
func (n *Node) Resume(t testing.TB) {
	t.Helper()
	k := n.resumeAll(t)
	n.c.Event("resume "+n.Name, fmt.Sprintf("SIGCONT %d processes", k))
}

func (n *Node) isPaused() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.paused) > 0
}

func (n *Node) stopProcesses(t testing.TB, whole bool) []int {
	t.Helper()
	pm := n.PostmasterPID()
	if !whole && pm == 0 {
		t.Fatalf("pause postgres %s: no running postmaster", n.Name)
	}
	stopped := map[int]bool{}
	stop := func(pid int) {
		if pid > 0 && !stopped[pid] {
			syscall.Kill(pid, syscall.SIGSTOP)
			stopped[pid] = true
		}
	}
	// The forking parents first, so no new child escapes; then again
	// until no new process shows up.
	stop(pm)
	if whole {
		stop(n.AgentPID())
	}
	for round := 0; round < 5; round++ {
		var all []int
		if pm > 0 {
			all = append(all, pgctl.ChildProcesses(pm)...)
		}
		if whole {
			if n.c.cg != nil {
				all = append(all, n.c.cg.procs(n.Name)...)
			} else {
				all = append(all, groupMembers(n.AgentPID())...)
			}
		}
		fresh := 0
		for _, p := range all {
			if !stopped[p] {
				stop(p)
				fresh++
			}
		}
		if fresh == 0 {
			break
		}
	}
	var pids []int
	for p := range stopped {
		pids = append(pids, p)
	}
	n.mu.Lock()
	n.paused = append(n.paused, pids...)
	n.mu.Unlock()
	WaitFor(t, 10*time.Second, "the processes of "+n.Name+" to stop", func() bool {
		for _, p := range pids {
			if st := procState(p); st != 0 && st != 'T' && st != 't' && st != 'Z' {
				return false
			}
		}
		return true
	})
	return pids
}

func (n *Node) resumeAll(t testing.TB) int {
	n.mu.Lock()
	pids := n.paused
	n.paused = nil
	n.mu.Unlock()
	// Children first, the parents last, as they were stopped in reverse.
	for i := len(pids) - 1; i >= 0; i-- {
		syscall.Kill(pids[i], syscall.SIGCONT)
	}
	return len(pids)
}

// Partitions. The cluster's nftables table holds a chain that marks every
// connection between two nodes with its (initiator, acceptor) pair, and a
// filter chain with the current blocked directions. On loopback the source
// address does not tell who sends (most dialers do not bind), so rules
// match the sending socket's cgroup (each agent, and so its PostgreSQL,
// runs in its own) and the destination address; answers on connections
// the other side opened are matched by the connection's mark. The test
// process itself is outside the nodes' cgroups, so clients and probes reach
// every node whatever the partition.

// Link is one blocked direction: From's packets to To are dropped.
type Link struct{ From, To *Node }

// Partition replaces the current partition by the blocked directions
// given (empty heals) and records an event named what.
func (c *Cluster) Partition(t testing.TB, what string, links []Link) {
	t.Helper()
	if c.nft == nil {
		t.Skip("partitions need root, cgroup v2 at the hierarchy's root, and nftables")
	}
	c.nft.set(t, links)
	c.Event(what, describeLinks(links))
}

// Heal removes every partition rule.
func (c *Cluster) Heal(t testing.TB) {
	t.Helper()
	if c.nft == nil {
		return
	}
	c.nft.set(t, nil)
	c.Event("heal", "")
}

// Cut blocks both directions between every node of a and every node of b.
func Cut(a, b []*Node) []Link {
	var out []Link
	for _, x := range a {
		for _, y := range b {
			if x != y {
				out = append(out, Link{x, y}, Link{y, x})
			}
		}
	}
	return out
}

// OneWay blocks from → to for every pair (to's packets still reach from).
func OneWay(from, to []*Node) []Link {
	var out []Link
	for _, x := range from {
		for _, y := range to {
			if x != y {
				out = append(out, Link{x, y})
			}
		}
	}
	return out
}

// Isolate cuts n off from every other node.
func (c *Cluster) Isolate(t testing.TB, n *Node) {
	t.Helper()
	c.Partition(t, "isolate "+n.Name, Cut([]*Node{n}, c.Others(n)))
}

// Split cuts side from the rest of the cluster.
func (c *Cluster) Split(t testing.TB, side []*Node) {
	t.Helper()
	c.Partition(t, "split "+names(side)+" | "+names(c.Others(side...)), Cut(side, c.Others(side...)))
}

// Bridge splits the cluster into two halves that cannot reach each other
// while bridge reaches both (Jepsen's bridge topology).
func (c *Cluster) Bridge(t testing.TB, bridge *Node, left, right []*Node) {
	t.Helper()
	c.Partition(t, fmt.Sprintf("bridge %s | %s | %s", names(left), bridge.Name, names(right)), Cut(left, right))
}

func names(ns []*Node) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = n.Name
	}
	return strings.Join(s, ",")
}

func describeLinks(links []Link) string {
	s := make([]string, len(links))
	for i, l := range links {
		s[i] = l.From.Name + "->" + l.To.Name
	}
	return "blocked " + strings.Join(s, " ")
}

type nftState struct {
	c     *Cluster
	table string
}

const markBase = 0x70620000

func linkMark(initiator, acceptor *Node) string {
	return fmt.Sprintf("0x%08x", markBase|(initiator.Index+1)<<8|(acceptor.Index+1))
}

func newNFT(t testing.TB, c *Cluster) (*nftState, error) {
	if _, err := execLookPath("nft"); err != nil {
		return nil, err
	}
	s := &nftState{c: c, table: "pgbt_" + c.cg.name}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", s.table)
	b.WriteString(" chain marker {\n  type filter hook output priority -10; policy accept;\n")
	for _, x := range c.Nodes {
		for _, y := range c.Nodes {
			if x != y {
				fmt.Fprintf(&b, "  socket cgroupv2 level 2 %q ip daddr %s ct mark set %s\n", c.cg.path(x.Name), y.Addr, linkMark(x, y))
			}
		}
	}
	b.WriteString(" }\n chain blocker {\n  type filter hook output priority 0; policy accept;\n }\n}\n")
	if err := nftApply(b.String()); err != nil {
		return nil, err
	}
	t.Cleanup(func() { nftRun("delete", "table", "inet", s.table) })
	return s, nil
}

// set replaces the filter chain's rules in one transaction.
func (s *nftState) set(t testing.TB, links []Link) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "flush chain inet %s blocker\n", s.table)
	for _, l := range links {
		// From's own traffic to To (connections From opens, UDP).
		fmt.Fprintf(&b, "add rule inet %s blocker socket cgroupv2 level 2 %q ip daddr %s drop\n", s.table, s.c.cg.path(l.From.Name), l.To.Addr)
		// From's answers on connections To opened.
		fmt.Fprintf(&b, "add rule inet %s blocker socket cgroupv2 level 2 %q ct mark %s drop\n", s.table, s.c.cg.path(l.From.Name), linkMark(l.To, l.From))
	}
	if err := nftApply(b.String()); err != nil {
		t.Fatalf("loading partition rules: %v\n%s", err, b.String())
	}
}

// Disk full.

func (n *Node) mountTmpfs(t testing.TB, size int64) {
	t.Helper()
	dir := n.DataDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		t.Skipf("mounting a tmpfs on %s: %v", dir, err)
	}
	n.tmpfs = true
}

func (n *Node) unmountTmpfs() {
	if n.tmpfs {
		unix.Unmount(n.DataDir(), unix.MNT_DETACH)
		n.tmpfs = false
	}
}

func (n *Node) ballast() string { return filepath.Join(n.DataDir(), "chaos-ballast") }

// FillDisk fills the node's data_dir file system (a tmpfs: Options.DataTmpfs)
// with a ballast file until no byte is left. PostgreSQL's next WAL write
// fails (it PANICs), and so do the agent's raft log writes.
func (n *Node) FillDisk(t testing.TB) {
	t.Helper()
	if !n.tmpfs {
		t.Skip("disk full needs Options.DataTmpfs")
	}
	f, err := os.OpenFile(n.ballast(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("creating the ballast on %s: %v", n.Name, err)
	}
	buf := make([]byte, 1<<20)
	for i := 0; i < 1<<16; i++ { // at most 64 GiB: bounded
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	// Fill the last partial block too.
	for _, sz := range []int{4096, 512, 1} {
		for {
			if _, err := f.Write(buf[:sz]); err != nil {
				break
			}
		}
	}
	f.Close()
	var st unix.Statfs_t
	if err := unix.Statfs(n.DataDir(), &st); err != nil {
		t.Fatalf("statfs %s: %v", n.DataDir(), err)
	}
	if free := st.Bavail * uint64(st.Bsize); free > 64<<10 {
		t.Fatalf("disk of %s still has %d bytes free after filling", n.Name, free)
	}
	n.c.Event("disk-full "+n.Name, "data_dir tmpfs filled")
}

// FreeDisk removes the ballast of FillDisk, if any.
func (n *Node) FreeDisk(t testing.TB) {
	t.Helper()
	if err := os.Remove(n.ballast()); err == nil {
		n.c.Event("disk-freed "+n.Name, "")
	}
}

// Processes.

// groupMembers lists the processes of process group pgid.
func groupMembers(pgid int) []int {
	if pgid <= 0 {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if g, err := syscall.Getpgid(pid); err == nil && g == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// procState is the state letter of /proc/<pid>/stat, 0 if gone.
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2]
	}
	return 0
}

// processRunning: the process exists and is not a zombie.
func processRunning(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	st := procState(pid)
	return st != 0 && st != 'Z' && st != 'X'
}

func getJSON(addr, path string, out any) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + path)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return 0
		}
	}
	return resp.StatusCode
}

var errNoCgroup = errors.New("no cgroup v2 hierarchy under /sys/fs/cgroup")
