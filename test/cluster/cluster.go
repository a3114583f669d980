// Package cluster starts clusters of real pgbattery agents (each with its
// real PostgreSQL) for fault-injection tests, and injects faults into them.
//
// Every node runs `pgbattery agent` on its own loopback address 127.0.0.N
// with the default ports. As root, run the test binary inside a private
// network and mount namespace (ReexecInPrivateNetns from TestMain): the
// nodes then get fixed addresses, and each agent is started inside a cgroup
// v2 of its own, which its PostgreSQL inherits, so nftables rules can tell
// the nodes' traffic apart on loopback (see Partition). Without root,
// addresses come from testutil's allocator and faults that need privileges
// (partitions, disk full) skip the test.
//
// Every fault returns once it has taken effect (a killed process is gone, a
// paused one is stopped, a partition's rules are loaded) and records an
// event on the cluster's clock, which the workloads share, so checkers can
// annotate histories with it. Everything the cluster started is stopped at
// t.Cleanup, also when the test fails; a failed test logs the tail of every
// node's logs and copies them to Options.ArtifactsDir.
//
// Every random choice a test makes about a cluster comes from Cluster.Rand,
// seeded from Options.Seed, so a scenario's fault schedule is reproducible
// from its seed (timing is not).
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/agent/api"
	"github.com/pgbattery/pgbattery/test/checker"
	"github.com/pgbattery/pgbattery/test/testutil"
)

// The role clients use through the gateway (SCRAM, as in production).
const (
	ClientUser     = "chaos"
	ClientPassword = "chaos-client-password"
)

// Default ports of a node (each node has an address of its own).
const (
	GatewayPort  = 5432
	PostgresPort = 5433
	HTTPPort     = 8432
	SerfPort     = 8301
)

// Options shape a cluster.
type Options struct {
	// Nodes is the number of agents, every one a raft voter with
	// PostgreSQL. 3 or 5; default 3.
	Nodes int
	// Binary is the pgbattery binary. Default: $PGBATTERY_BINARY, else
	// bin/pgbattery at the module root (make build).
	Binary string
	// Seed seeds Cluster.Rand.
	Seed int64
	// ExtraHCL is appended to every node's configuration.
	ExtraHCL string
	// NodeHCL, if set, returns configuration appended for node i (0-based).
	NodeHCL func(i int) string
	// DataTmpfs, if positive, mounts a tmpfs of that many bytes as each
	// node's data_dir, so FillDisk can make the node's disk full. Needs the
	// private mount namespace (the test skips otherwise).
	DataTmpfs int64
	// ArtifactsDir, if set, receives every node's agent and PostgreSQL log
	// when the test fails.
	ArtifactsDir string
	// ReadyTimeout bounds the cluster's start. Default 5 minutes.
	ReadyTimeout time.Duration
	// Clock stamps fault events. Default: a new clock.
	Clock *checker.Clock
}

// Cluster is a running cluster of agents.
type Cluster struct {
	t      testing.TB
	opts   Options
	binary string
	Nodes  []*Node
	// Rand drives every random choice about this cluster; seeded from
	// Options.Seed. Use it from the test's goroutine only.
	Rand  *rand.Rand
	Clock *checker.Clock

	cg  *cgroupSet // nil without cgroups
	nft *nftState  // nil without cgroups

	mu     sync.Mutex
	events []checker.Event
}

// Start starts opts.Nodes agents, waits until the cluster has a writable
// primary with every standby synchronous, and creates the client role.
// Everything is stopped at t.Cleanup.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Nodes < 1 || opts.Nodes > 9 {
		t.Fatalf("cluster: %d nodes, want 1..9", opts.Nodes)
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 5 * time.Minute
	}
	if opts.Clock == nil {
		opts.Clock = checker.NewClock()
	}
	bin, err := FindBinary(opts.Binary)
	if err != nil {
		t.Fatalf("cluster: %v", err)
	}
	if opts.DataTmpfs > 0 && (!InPrivateNetns() || !testutil.IsRoot()) {
		t.Skip("a tmpfs per node needs root and the private mount namespace (ReexecInPrivateNetns)")
	}
	c := &Cluster{t: t, opts: opts, binary: bin, Rand: rand.New(rand.NewSource(opts.Seed)), Clock: opts.Clock}
	if testutil.IsRoot() {
		cg, err := newCgroupSet(t)
		if err != nil {
			t.Logf("cluster: no cgroups, so no partitions: %v", err)
		} else {
			c.cg = cg
		}
	}
	addrs := c.addresses(t, opts.Nodes)
	for i := 0; i < opts.Nodes; i++ {
		n := &Node{c: c, Index: i, Name: fmt.Sprintf("n%d", i+1), Addr: addrs[i], Dir: testutil.TempDir(t)}
		n.logPath = filepath.Join(n.Dir, "agent.log")
		c.Nodes = append(c.Nodes, n)
	}
	for _, n := range c.Nodes {
		n.writeConfig(t)
		if opts.DataTmpfs > 0 {
			n.mountTmpfs(t, opts.DataTmpfs)
		}
	}
	if c.cg != nil {
		for _, n := range c.Nodes {
			f, err := c.cg.open(n.Name)
			if err != nil {
				t.Fatalf("creating %s's cgroup: %v", n.Name, err)
			}
			f.Close()
		}
		nft, err := newNFT(t, c)
		if err != nil {
			t.Logf("cluster: nftables unusable, so no partitions: %v", err)
		} else {
			c.nft = nft
		}
	}
	// Stop everything at cleanup (registered after the directories' own
	// cleanups, so it runs before them).
	t.Cleanup(c.teardown)
	for _, n := range c.Nodes {
		n.start(t)
	}
	c.waitReady(t, opts.ReadyTimeout)
	c.createClientRole(t)
	c.Settle(t)
	return c
}

// addresses returns n node addresses: fixed ones inside the private network
// namespace (reproducible), else reserved with testutil.
func (c *Cluster) addresses(t testing.TB, n int) []string {
	if InPrivateNetns() {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("127.0.0.%d", 11+i)
		}
		return out
	}
	return testutil.Addrs(t, n)
}

// FindBinary resolves the pgbattery binary: explicit, else
// $PGBATTERY_BINARY, else bin/pgbattery at the module root.
func FindBinary(explicit string) (string, error) {
	p := explicit
	if p == "" {
		p = os.Getenv("PGBATTERY_BINARY")
	}
	if p == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", err
		}
		p = filepath.Join(root, "bin", "pgbattery")
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("pgbattery binary %s: %v (run `make build`, or set PGBATTERY_BINARY)", p, err)
	}
	return filepath.Abs(p)
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// CanPartition reports whether partition faults work here (root, cgroup v2
// at the root of the hierarchy, nftables).
func (c *Cluster) CanPartition() bool { return c.nft != nil }

// Event records something that happened (a fault, a heal) at the clock's
// now, and returns it.
func (c *Cluster) Event(name, details string) checker.Event {
	ev := checker.Event{Name: name, Details: details, Start: c.Clock.Now()}
	c.mu.Lock()
	c.events = append(c.events, ev)
	c.mu.Unlock()
	c.t.Logf("[%8.3fs] %s %s", ev.Start.Seconds(), name, details)
	return ev
}

// Events returns the events recorded at or after since.
func (c *Cluster) Events(since time.Duration) []checker.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []checker.Event
	for _, ev := range c.events {
		if ev.Start >= since {
			out = append(out, ev)
		}
	}
	return out
}

// Node is one agent with its PostgreSQL.
type Node struct {
	c     *Cluster
	Index int
	Name  string
	Addr  string
	Dir   string // config, logs; data_dir is Dir/data

	logPath string
	mu      sync.Mutex
	cmd     *exec.Cmd
	waitErr chan error
	paused  []int
	tmpfs   bool
}

func (n *Node) DataDir() string     { return filepath.Join(n.Dir, "data") }
func (n *Node) PGData() string      { return filepath.Join(n.DataDir(), "postgres", "data") }
func (n *Node) ConfigFile() string  { return filepath.Join(n.Dir, n.Name+".hcl") }
func (n *Node) HTTPAddr() string    { return net.JoinHostPort(n.Addr, strconv.Itoa(HTTPPort)) }
func (n *Node) SerfAddr() string    { return net.JoinHostPort(n.Addr, strconv.Itoa(SerfPort)) }
func (n *Node) GatewayAddr() string { return net.JoinHostPort(n.Addr, strconv.Itoa(GatewayPort)) }
func (n *Node) String() string      { return n.Name }

func (n *Node) writeConfig(t testing.TB) {
	var join []string
	for _, o := range n.c.Nodes {
		if o != n {
			join = append(join, strconv.Quote(o.SerfAddr()))
		}
	}
	extra := n.c.opts.ExtraHCL
	if n.c.opts.NodeHCL != nil {
		extra += "\n" + n.c.opts.NodeHCL(n.Index)
	}
	hcl := fmt.Sprintf(`
node_name        = %q
data_dir         = %q
bind_addr        = %q
server           = true
bootstrap_expect = %d
retry_join       = [%s]
retry_interval   = "1s"
log_level        = "debug"
postgres {
  hba = ["host all %s 127.0.0.0/8 scram-sha-256"]
}
# JumpClock's endpoint (fault tests only).
debug {
  clock_control = true
}
%s
`, n.Name, n.DataDir(), n.Addr, len(n.c.Nodes), strings.Join(join, ", "), ClientUser, extra)
	if err := os.WriteFile(n.ConfigFile(), []byte(hcl), 0o644); err != nil {
		t.Fatalf("writing %s's config: %v", n.Name, err)
	}
}

// Running reports whether the node's agent process is running (it may be
// paused).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return false
	}
	select {
	case err := <-n.waitErr:
		n.waitErr <- err
		return false
	default:
		return true
	}
}

// AgentPID is the agent's process id, 0 when it is not running.
func (n *Node) AgentPID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// PostmasterPID reads postmaster.pid; 0 when there is none or the process
// is not running.
func (n *Node) PostmasterPID() int {
	b, err := os.ReadFile(filepath.Join(n.PGData(), "postmaster.pid"))
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(first))
	if !processRunning(pid) {
		return 0
	}
	return pid
}

// start runs the agent; it must not be running.
func (n *Node) start(t testing.TB) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		select {
		case err := <-n.waitErr:
			n.waitErr <- err
		default:
			t.Fatalf("starting %s: its agent is still running", n.Name)
		}
	}
	logf, err := os.OpenFile(n.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatalf("opening %s's log: %v", n.Name, err)
	}
	fmt.Fprintf(logf, "==== chaos harness: starting agent %s at %s\n", n.Name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(n.c.binary, "agent", "-config-file="+n.ConfigFile())
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group (so a kill reaches the agent's helpers), and
	// a parent-death signal so a crashed test leaves no agent behind.
	attr := &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var cgfd *os.File
	if n.c.cg != nil {
		// Start the agent inside its cgroup (clone3 CLONE_INTO_CGROUP), so
		// all it and its PostgreSQL ever send is matched by the partition
		// rules from the first packet.
		cgfd, err = n.c.cg.open(n.Name)
		if err != nil {
			logf.Close()
			t.Fatalf("opening %s's cgroup: %v", n.Name, err)
		}
		attr.UseCgroupFD, attr.CgroupFD = true, int(cgfd.Fd())
	}
	cmd.SysProcAttr = attr
	err = cmd.Start()
	if cgfd != nil {
		cgfd.Close()
	}
	logf.Close()
	if err != nil {
		t.Fatalf("starting agent %s: %v", n.Name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	n.cmd, n.waitErr, n.paused = cmd, done, nil
}

// waitExit waits for the agent process to exit; false on timeout.
func (n *Node) waitExit(timeout time.Duration) bool {
	n.mu.Lock()
	ch := n.waitErr
	n.mu.Unlock()
	if ch == nil {
		return true
	}
	select {
	case err := <-ch:
		ch <- err
		return true
	case <-time.After(timeout):
		return false
	}
}

// Logs returns the agent's log so far (every run of it).
func (n *Node) Logs() string {
	b, _ := os.ReadFile(n.logPath)
	return string(b)
}

// LogTail returns the last lines of the agent's log.
func (n *Node) LogTail(lines int) string { return lastLines(n.Logs(), lines) }

// API returns a client of the node's HTTP API (2 s per request).
func (n *Node) API() *api.Client {
	cl, err := api.NewClient(api.Config{Address: n.HTTPAddr(), Timeout: 2 * time.Second})
	if err != nil {
		panic(fmt.Sprintf("api client for %s: %v", n.HTTPAddr(), err)) // the address is ours: cannot happen
	}
	return cl
}

// Role is what the node's readiness endpoint says it is ("primary",
// "replica", …), "" when it is not ready or does not answer.
func (n *Node) Role() string {
	if !n.Running() {
		return ""
	}
	var out struct {
		Role string `json:"role"`
	}
	if getJSON(n.HTTPAddr(), "/v1/health/readiness", &out) != 200 {
		return ""
	}
	return out.Role
}

// Status asks the node for the cluster status (forwarded to the leader).
func (n *Node) Status() (*api.ClusterStatus, error) {
	if !n.Running() {
		return nil, fmt.Errorf("%s is not running", n.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	return n.API().Status(ctx)
}

// PostgresDSN is a DSN for the node's PostgreSQL itself, as the agent's
// superuser role (for probes and checks, never for workloads).
func (n *Node) PostgresDSN() (string, error) {
	pw, err := os.ReadFile(filepath.Join(n.DataDir(), "secrets", "superuser"))
	if err != nil {
		return "", fmt.Errorf("reading %s's secret: %w", n.Name, err)
	}
	return fmt.Sprintf("host=%s port=%d user=pgbattery dbname=postgres sslmode=disable connect_timeout=2 password=%s",
		n.Addr, PostgresPort, strings.TrimSpace(string(pw))), nil
}

// GatewayDSN is a DSN through the gateways of the given nodes (every node
// when none is given), tried in order, as the client role.
func (c *Cluster) GatewayDSN(nodes ...*Node) string {
	if len(nodes) == 0 {
		nodes = c.Nodes
	}
	hosts := make([]string, len(nodes))
	ports := make([]string, len(nodes))
	for i, n := range nodes {
		hosts[i], ports[i] = n.Addr, strconv.Itoa(GatewayPort)
	}
	return fmt.Sprintf("host=%s port=%s user=%s password=%s dbname=postgres sslmode=disable connect_timeout=2",
		strings.Join(hosts, ","), strings.Join(ports, ","), ClientUser, ClientPassword)
}

// RotatedGatewayDSN lists every gateway starting at node i mod n, so that
// clients spread over the gateways.
func (c *Cluster) RotatedGatewayDSN(i int) string {
	k := i % len(c.Nodes)
	return c.GatewayDSN(append(append([]*Node(nil), c.Nodes[k:]...), c.Nodes[:k]...)...)
}

// Running lists the nodes whose agents run.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// Others lists every node except those given.
func (c *Cluster) Others(except ...*Node) []*Node {
	var out []*Node
outer:
	for _, n := range c.Nodes {
		for _, e := range except {
			if n == e {
				continue outer
			}
		}
		out = append(out, n)
	}
	return out
}

// ByName finds a node; nil if none has that name.
func (c *Cluster) ByName(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Status asks the running nodes in turn for the cluster status and
// returns the first answer that came from the raft leader (else any).
func (c *Cluster) Status() (*api.ClusterStatus, error) {
	var any *api.ClusterStatus
	var last error = errors.New("no node is running")
	for _, n := range c.Running() {
		if n.isPaused() {
			continue
		}
		st, err := n.Status()
		if err != nil {
			last = err
			continue
		}
		if st.FromLeader {
			return st, nil
		}
		if any == nil {
			any = st
		}
	}
	if any != nil {
		return any, nil
	}
	return nil, last
}

// Primary is the node that serves as primary: the only running node whose
// readiness says "primary" (it asks each node itself, which stays fast
// while another node hangs), else the one the cluster state names. Nil if
// none is known.
func (c *Cluster) Primary() *Node {
	var found []*Node
	for _, n := range c.Running() {
		if !n.isPaused() && n.Role() == "primary" {
			found = append(found, n)
		}
	}
	if len(found) == 1 {
		return found[0]
	}
	st, err := c.Status()
	if err != nil || st.Primary == "" {
		return nil
	}
	return c.ByName(st.Primary)
}

// RaftLeader is the node whose raft says it leads (each running node is
// asked for its own raft state); nil if none does.
func (c *Cluster) RaftLeader() *Node {
	for _, n := range c.Running() {
		if n.isPaused() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		p, err := n.API().RaftProgress(ctx)
		cancel()
		if err == nil && p.State == "Leader" {
			return n
		}
	}
	return nil
}

// History returns the failover/switchover history.
func (c *Cluster) History() ([]api.Transition, error) {
	var last error = errors.New("no node is running")
	for _, n := range c.Running() {
		if n.isPaused() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		h, err := n.API().History(ctx)
		cancel()
		if err == nil {
			return h, nil
		}
		last = err
	}
	return nil, last
}

func (c *Cluster) waitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	WaitFor(t, timeout, "every node ready", func() bool {
		for _, n := range c.Nodes {
			if !n.Running() {
				t.Fatalf("agent %s exited during start; log tail:\n%s", n.Name, n.LogTail(40))
			}
			if getJSON(n.HTTPAddr(), "/v1/health/readiness", nil) != 200 {
				return false
			}
		}
		return true
	})
}

// createClientRole creates the gateway clients' role on the primary, with
// a SCRAM verifier, and lets it create tables.
func (c *Cluster) createClientRole(t testing.TB) {
	t.Helper()
	var last error
	WaitFor(t, 2*time.Minute, "the client role created on the primary", func() bool {
		p := c.Primary()
		if p == nil {
			last = errors.New("no primary")
			return false
		}
		last = c.ExecDirect(p, fmt.Sprintf(`DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%[1]s') THEN
    SET LOCAL password_encryption = 'scram-sha-256';
    CREATE ROLE %[1]s LOGIN PASSWORD '%[2]s';
  END IF;
END $$; GRANT CREATE ON SCHEMA public TO %[1]s`, ClientUser, ClientPassword))
		return last == nil
	}, func() string { return fmt.Sprint(last) })
}

// ExecDirect runs SQL on the node's PostgreSQL as the agent's role.
func (c *Cluster) ExecDirect(n *Node, sql string, args ...any) error {
	dsn, err := n.PostgresDSN()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// QueryDirect reads one value from the node's PostgreSQL.
func QueryDirect[T any](n *Node, sql string, args ...any) (T, error) {
	var v T
	dsn, err := n.PostgresDSN()
	if err != nil {
		return v, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return v, err
	}
	defer conn.Close(context.Background())
	err = conn.QueryRow(ctx, sql, args...).Scan(&v)
	return v, err
}

// GatewayWrite writes once through the gateways as the client role.
func (c *Cluster) GatewayWrite(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.GatewayDSN())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS chaos_settle (at timestamptz); INSERT INTO chaos_settle VALUES (now())")
	return err
}

// Settle brings the cluster back to its steady state whatever a fault left:
// it heals every partition, resumes paused processes, frees filled disks,
// restarts stopped agents, then waits for one writable primary with every
// other node a replica in the synchronous set, the same for 3 s in a row,
// and a write through the gateways. It returns the primary.
func (c *Cluster) Settle(t testing.TB) *Node {
	t.Helper()
	if c.nft != nil {
		c.nft.set(t, nil)
	}
	for _, n := range c.Nodes {
		n.resumeAll(t)
		n.FreeDisk(t)
		if !n.Running() {
			n.start(t)
		}
	}
	var primary *Node
	var why string
	var steadySince time.Time
	var lastEpoch uint64
	WaitFor(t, 5*time.Minute, "a steady writable primary with every replica synchronous", func() bool {
		primary = nil
		replicas := 0
		for _, n := range c.Nodes {
			if !n.Running() {
				// Restart an agent that exited on its own (it should
				// not, but the cluster must come back to steady).
				t.Logf("settle: agent %s had exited; restarting it. Log tail:\n%s", n.Name, n.LogTail(30))
				n.start(t)
				why = n.Name + " restarted"
				return false
			}
			switch n.Role() {
			case "primary":
				primary = n
			case "replica":
				replicas++
			}
		}
		if primary == nil || replicas != len(c.Nodes)-1 {
			why = fmt.Sprintf("primary %v, %d ready replicas", primary, replicas)
			steadySince = time.Time{}
			return false
		}
		st, err := primary.Status()
		if err != nil || st.Primary != primary.Name || !st.Writable || len(st.Sync.Standbys) != len(c.Nodes)-1 {
			why = fmt.Sprintf("status %+v, error %v", st, err)
			steadySince = time.Time{}
			return false
		}
		if steadySince.IsZero() || st.Epoch != lastEpoch {
			steadySince, lastEpoch = time.Now(), st.Epoch
			return false
		}
		if time.Since(steadySince) < 3*time.Second {
			return false
		}
		if err := c.GatewayWrite(context.Background()); err != nil {
			why = "gateway write: " + err.Error()
			return false
		}
		return true
	}, func() string { return why })
	return primary
}

// WaitNewPrimary waits until a running node other than old serves as the
// primary (its readiness says so), and returns it. It asks every node
// itself rather than the cluster status, which probes every member and is
// slow while one hangs.
func (c *Cluster) WaitNewPrimary(t testing.TB, old *Node, timeout time.Duration) *Node {
	t.Helper()
	var found *Node
	WaitFor(t, timeout, "a primary other than "+old.Name, func() bool {
		for _, n := range c.Running() {
			if n != old && !n.isPaused() && n.Role() == "primary" {
				found = n
				return true
			}
		}
		return false
	})
	return found
}

// WaitWritable waits until a write through the gateways is acknowledged.
func (c *Cluster) WaitWritable(t testing.TB, timeout time.Duration) {
	t.Helper()
	var last error
	WaitFor(t, timeout, "a write acknowledged through the gateways", func() bool {
		last = c.GatewayWrite(context.Background())
		return last == nil
	}, func() string { return fmt.Sprint(last) })
}

// teardown kills every agent and PostgreSQL, heals the network, and on
// failure saves and prints the logs.
func (c *Cluster) teardown() {
	for _, n := range c.Nodes {
		n.resumeAll(c.t)
	}
	for _, n := range c.Nodes {
		n.killHard()
	}
	if c.cg != nil {
		c.cg.waitEmpty(15 * time.Second)
	}
	if c.t.Failed() {
		for _, n := range c.Nodes {
			c.t.Logf("---- tail of agent %s's log:\n%s", n.Name, n.LogTail(60))
		}
		c.saveArtifacts()
	}
	for _, n := range c.Nodes {
		n.unmountTmpfs()
	}
}

func (c *Cluster) saveArtifacts() {
	if c.opts.ArtifactsDir == "" {
		return
	}
	dir := filepath.Join(c.opts.ArtifactsDir, sanitize(c.t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Logf("saving logs: %v", err)
		return
	}
	for _, n := range c.Nodes {
		copyFile(n.logPath, filepath.Join(dir, n.Name+"-agent.log"))
		copyFile(filepath.Join(n.DataDir(), "postgres", "postgresql.log"), filepath.Join(dir, n.Name+"-postgresql.log"))
	}
	c.t.Logf("node logs saved in %s", dir)
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' {
			return '_'
		}
		return r
	}, s)
}

func copyFile(from, to string) {
	in, err := os.Open(from)
	if err != nil {
		return
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return
	}
	defer out.Close()
	io.Copy(out, in)
}

// WaitFor polls cond every 50 ms until it is true or timeout passes; then
// the test fails, with the last word of why (if given).
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool, why ...func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("timed out after %s waiting for %s", timeout, what)
			if len(why) > 0 {
				msg += " (last: " + why[0]() + ")"
			}
			t.Fatal(msg)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Poll is WaitFor without failing: it reports whether cond became true.
func Poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
