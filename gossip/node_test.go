package gossip

// Test nodes run as real OS processes: the test binary re-executes itself
// with PGBT_GOSSIP_NODE set to a JSON nodeSpec, runs one Gossip, prints
// what happens as JSON lines on stdout and takes commands on stdin. Tests
// kill -9 it, SIGSTOP it, or run it inside a network namespace.
//
// Timestamps: every line carries "mono", CLOCK_MONOTONIC in nanoseconds.
// That clock is one per host (not per process), so a test on the same
// machine can subtract the moment it sent kill -9 from the moment a peer
// saw Suspect without any clock skew; network namespaces share it too.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

const (
	envNode  = "PGBT_GOSSIP_NODE"
	envBurn  = "PGBT_GOSSIP_BURN"
	envStall = "PGBT_GOSSIP_STALL"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(envNode); spec != "" {
		os.Exit(runNode(spec))
	}
	if os.Getenv(envBurn) != "" {
		burnCPU()
		return
	}
	if os.Getenv(envStall) != "" {
		stallMeter()
		return
	}
	os.Exit(m.Run())
}

// monoNow is CLOCK_MONOTONIC, comparable across processes on this host.
func monoNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

type nodeSpec struct {
	Name     string            `json:"name"`
	Bind     string            `json:"bind"`
	Key      []byte            `json:"key,omitempty"`
	Profile  string            `json:"profile,omitempty"`
	Snapshot string            `json:"snapshot,omitempty"`
	Rejoin   bool              `json:"rejoin,omitempty"`
	Join     []string          `json:"join,omitempty"`
	Primary  string            `json:"primary,omitempty"`
	Tags     map[string]string `json:"tags,omitempty"`
	LogLevel string            `json:"log_level,omitempty"`
	Timing   Timing            `json:"timing"`
}

// nodeLine is one line a node process prints.
type nodeLine struct {
	Kind    string   `json:"kind"` // ready, joined, event, members, tags, left, error
	Mono    int64    `json:"mono"`
	Event   *Event   `json:"event,omitempty"`
	Members []Member `json:"members,omitempty"`
	N       int      `json:"n,omitempty"`
	Err     string   `json:"err,omitempty"`
}

func runNode(specJSON string) int {
	var spec nodeSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "bad node spec:", err)
		return 2
	}
	var outMu sync.Mutex
	enc := json.NewEncoder(os.Stdout)
	emit := func(l nodeLine) {
		if l.Mono == 0 {
			l.Mono = monoNow()
		}
		outMu.Lock()
		defer outMu.Unlock()
		enc.Encode(l) //nolint:errcheck
	}
	level := hclog.Warn
	if spec.LogLevel != "" {
		level = hclog.LevelFromString(spec.LogLevel)
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: spec.Name, Level: level, Output: os.Stderr})
	g, err := New(Config{
		NodeName:         spec.Name,
		BindAddr:         spec.Bind,
		EncryptKey:       spec.Key,
		Profile:          spec.Profile,
		Timing:           spec.Timing,
		SnapshotPath:     spec.Snapshot,
		RejoinAfterLeave: spec.Rejoin,
		Primary:          spec.Primary,
		Tags:             spec.Tags,
		Logger:           logger,
	})
	if err != nil {
		emit(nodeLine{Kind: "error", Err: err.Error()})
		return 1
	}
	evDone := make(chan struct{})
	go func() {
		defer close(evDone)
		for ev := range g.Events() {
			ev := ev
			// Stamp with the host clock at the moment the library saw it.
			emit(nodeLine{Kind: "event", Mono: monoNow() - time.Since(ev.At).Nanoseconds(), Event: &ev})
		}
	}()
	emit(nodeLine{Kind: "ready"})
	if len(spec.Join) > 0 {
		n, err := g.Join(spec.Join, true)
		l := nodeLine{Kind: "joined", N: n}
		if err != nil {
			l.Err = err.Error()
		}
		emit(l)
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		switch cmd {
		case "members":
			emit(nodeLine{Kind: "members", Members: g.Members()})
		case "primary":
			g.SetPrimary(arg)
		case "tags":
			changes := map[string]string{}
			for _, kv := range strings.Split(arg, ",") {
				k, v, _ := strings.Cut(kv, "=")
				changes[k] = v
			}
			l := nodeLine{Kind: "tags"}
			if err := g.UpdateTags(changes); err != nil {
				l.Err = err.Error()
			}
			emit(l)
		case "join":
			n, err := g.Join(strings.Fields(arg), true)
			l := nodeLine{Kind: "joined", N: n}
			if err != nil {
				l.Err = err.Error()
			}
			emit(l)
		case "leave":
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := g.Leave(ctx)
			cancel()
			g.Shutdown()
			<-evDone
			l := nodeLine{Kind: "left"}
			if err != nil {
				l.Err = err.Error()
			}
			emit(l)
			return 0
		case "quit":
			g.Shutdown()
			<-evDone
			return 0
		}
	}
	// stdin closed: the test is gone.
	g.Shutdown()
	<-evDone
	return 0
}

// burnCPU keeps every CPU busy until killed (or for at most an hour).
func burnCPU() {
	deadline := time.Now().Add(time.Hour)
	for i := 0; i < runtime.GOMAXPROCS(0); i++ {
		go func() {
			x := 0
			for time.Now().Before(deadline) {
				for j := 0; j < 1_000_000; j++ {
					x += j ^ (x >> 3)
				}
			}
			_ = x
		}()
	}
	time.Sleep(time.Until(deadline))
}

// stallMeter sleeps 10ms at a time and prints, as "<mono> <lateness ns>",
// every wake-up more than 100ms late: how long the machine left a
// process that wanted to run without a CPU.
func stallMeter() {
	deadline := time.Now().Add(time.Hour)
	for time.Now().Before(deadline) {
		t := time.Now()
		time.Sleep(10 * time.Millisecond)
		if late := time.Since(t) - 10*time.Millisecond; late > 100*time.Millisecond {
			fmt.Printf("%d %d\n", monoNow(), late.Nanoseconds())
		}
	}
}

// startStallMeter runs stallMeter in a process and returns a function that
// reports the stalls it saw so far.
type stall struct {
	mono int64
	late time.Duration
}

func startStallMeter(t testing.TB) func() []stall {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envStall+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting stall meter: %v", err)
	}
	var mu sync.Mutex
	var stalls []stall
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var mono, late int64
			if _, err := fmt.Sscan(sc.Text(), &mono, &late); err == nil {
				mu.Lock()
				stalls = append(stalls, stall{mono, time.Duration(late)})
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		cmd.Wait()
	})
	return func() []stall {
		mu.Lock()
		defer mu.Unlock()
		return append([]stall(nil), stalls...)
	}
}

// startBurners runs n CPU-burning processes for the rest of the test.
func startBurners(t testing.TB, n int) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), envBurn+"=1")
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting CPU burner: %v", err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
}

// testNode is the test's handle on a node process.
type testNode struct {
	t      testing.TB
	spec   nodeSpec
	ns     string // network namespace, "" for the host's
	nice   int    // scheduling niceness of the node process
	rtPrio int    // SCHED_RR priority of the node process, 0 for none

	cmd     *exec.Cmd
	stdin   io.WriteCloser
	exited  chan struct{}
	replies chan nodeLine

	mu      sync.Mutex
	lines   []nodeLine // events, in order
	logFile string     // the node's stderr, across restarts
}

func startNode(t testing.TB, spec nodeSpec, ns string) *testNode {
	t.Helper()
	n := &testNode{t: t, spec: spec, ns: ns}
	n.start()
	return n
}

func (n *testNode) start() {
	t := n.t
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	specJSON, _ := json.Marshal(n.spec)
	args := []string{exe, "-test.run=^$"}
	if n.rtPrio > 0 {
		// chrt(1) execs the node too: round-robin real-time priority,
		// as corosync gives its failure detector.
		args = append([]string{"chrt", "-r", fmt.Sprint(n.rtPrio)}, args...)
	}
	if n.nice != 0 {
		// nice(1) execs the node: the PID stays the node's.
		args = append([]string{"nice", "-n", fmt.Sprint(n.nice)}, args...)
	}
	if n.ns != "" {
		args = append([]string{"ip", "netns", "exec", n.ns}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), envNode+"="+string(specJSON))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	// stderr goes to a file, not a pipe: a node must never block on its
	// logs because the test process is slow to read them.
	if n.logFile == "" {
		n.logFile = filepath.Join(t.TempDir(), n.spec.Name+".log")
	}
	logf, err := os.OpenFile(n.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting node %s: %v", n.spec.Name, err)
	}
	n.cmd, n.stdin = cmd, stdin
	n.exited = make(chan struct{})
	n.replies = make(chan nodeLine, 64)
	ready := make(chan nodeLine, 1)
	go func(replies chan nodeLine, exited chan struct{}) {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l nodeLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				continue
			}
			switch l.Kind {
			case "event":
				n.mu.Lock()
				n.lines = append(n.lines, l)
				n.mu.Unlock()
			case "ready", "error":
				select {
				case ready <- l:
				default:
				}
			default:
				select {
				case replies <- l:
				default:
				}
			}
		}
		cmd.Wait()
		close(exited)
	}(n.replies, n.exited)
	t.Cleanup(func() { n.kill() })
	select {
	case l := <-ready:
		if l.Kind == "error" {
			t.Fatalf("node %s failed to start: %s", n.spec.Name, l.Err)
		}
	case <-n.exited:
		t.Fatalf("node %s exited at start: %s", n.spec.Name, n.stderrText())
	case <-time.After(30 * time.Second):
		t.Fatalf("node %s not ready after 30s: %s", n.spec.Name, n.stderrText())
	}
}

func (n *testNode) stderrText() string {
	b, err := os.ReadFile(n.logFile)
	if err != nil {
		return fmt.Sprintf("(reading %s: %v)", n.logFile, err)
	}
	if len(b) > 256<<10 {
		b = b[len(b)-256<<10:]
	}
	return string(b)
}

func (n *testNode) send(cmd string) {
	fmt.Fprintln(n.stdin, cmd)
}

// reply sends a command and waits for the node's answer of that kind.
func (n *testNode) reply(cmd, kind string) nodeLine {
	n.t.Helper()
	n.send(cmd)
	deadline := time.After(20 * time.Second)
	for {
		select {
		case l := <-n.replies:
			if l.Kind == kind {
				return l
			}
		case <-n.exited:
			n.t.Fatalf("node %s exited waiting for %q: %s", n.spec.Name, kind, n.stderrText())
		case <-deadline:
			n.t.Fatalf("node %s: no %q reply after 20s", n.spec.Name, kind)
		}
	}
}

func (n *testNode) join(addrs ...string) nodeLine {
	return n.reply("join "+strings.Join(addrs, " "), "joined")
}

func (n *testNode) members() []Member {
	return n.reply("members", "members").Members
}

// signal sends sig to the node process and returns the host monotonic
// time just before it was sent.
func (n *testNode) signal(sig syscall.Signal) int64 {
	at := monoNow()
	if err := n.cmd.Process.Signal(sig); err != nil {
		n.t.Fatalf("signalling node %s: %v", n.spec.Name, err)
	}
	return at
}

// kill -9s the node and waits for it to be gone.
func (n *testNode) kill() int64 {
	select {
	case <-n.exited:
		return 0
	default:
	}
	n.cmd.Process.Signal(syscall.SIGCONT)
	at := monoNow()
	n.cmd.Process.Kill()
	select {
	case <-n.exited:
	case <-time.After(10 * time.Second):
	}
	return at
}

// events returns a copy of the events the node has printed.
func (n *testNode) events() []nodeLine {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]nodeLine(nil), n.lines...)
}

// firstEvent returns the first event of type typ about node after mono
// time since, if any.
func (n *testNode) firstEvent(typ EventType, node string, since int64) (nodeLine, bool) {
	for _, l := range n.events() {
		if l.Mono >= since && l.Event.Type == typ && l.Event.Node == node {
			return l, true
		}
	}
	return nodeLine{}, false
}

// waitEvent waits for the first event of type typ about node at or after
// since, for at most timeout.
func (n *testNode) waitEvent(typ EventType, node string, since int64, timeout time.Duration) (nodeLine, bool) {
	deadline := time.Now().Add(timeout)
	for {
		if l, ok := n.firstEvent(typ, node, since); ok {
			return l, true
		}
		if time.Now().After(deadline) {
			return nodeLine{}, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (n *testNode) mustEvent(typ EventType, node string, since int64, timeout time.Duration) nodeLine {
	n.t.Helper()
	l, ok := n.waitEvent(typ, node, since, timeout)
	if !ok {
		if n.spec.LogLevel != "" {
			n.t.Logf("node %s stderr:\n%s", n.spec.Name, n.stderrText())
		}
		n.t.Fatalf("node %s: no %s event for %s within %s; events: %s", n.spec.Name, typ, node, timeout, n.eventSummary())
	}
	return l
}

func (n *testNode) eventSummary() string {
	var b strings.Builder
	for _, l := range n.events() {
		fmt.Fprintf(&b, "\n  %d %s %s", l.Mono/1e6, l.Event.Type, l.Event.Node)
	}
	return b.String()
}

// waitMembers waits until the node sees want live members (itself
// included): alive, or suspect (a doubt about a member, not its absence;
// on a starved CI machine pings time out all the time).
func (n *testNode) waitMembers(want int, timeout time.Duration) []Member {
	n.t.Helper()
	deadline := time.Now().Add(timeout)
	var ms []Member
	for {
		ms = n.members()
		alive := 0
		for _, m := range ms {
			if m.Status == StatusAlive || m.Status == StatusSuspect {
				alive++
			}
		}
		if alive == want {
			return ms
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("node %s sees %d live members, want %d: %v", n.spec.Name, alive, want, ms)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *testNode) addr() string { return n.spec.Bind }
