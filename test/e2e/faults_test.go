package e2e

// Fault-injection helpers for the issue-4 acceptance tests: a 3-node
// cluster whose agents may each run in their own cgroup (so nftables can
// partition them on loopback), kills of a whole node or of PostgreSQL only,
// clients that follow the writable primary, and the cluster's state as the
// agents report it.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/agent/api"
	"github.com/pgbattery/pgbattery/pgctl"
	"github.com/pgbattery/pgbattery/test/checker"
	"github.com/pgbattery/pgbattery/test/testutil"
	"github.com/pgbattery/pgbattery/test/workload"
)

// faultCluster is a 3-node cluster under fault injection.
type faultCluster struct {
	t     *testing.T
	nodes []*agentProc
	cg    *cgroupSet // nil when the agents are not in cgroups
}

// startFaultCluster starts n agents with PostgreSQL like startPGCluster; with
// cgroups (root only) every agent, and so its PostgreSQL, runs in a cgroup of
// its own, which the partition rules match on.
func startFaultCluster(t *testing.T, n int, cgroups bool) *faultCluster {
	t.Helper()
	c := &faultCluster{t: t}
	if cgroups {
		cg, err := newCgroupSet(t)
		if err != nil {
			t.Skipf("partitions need cgroup v2 to tell the agents apart on loopback: %v", err)
		}
		c.cg = cg
	}
	c.nodes = make([]*agentProc, n)
	for i := range c.nodes {
		c.nodes[i] = newNode(t, fmt.Sprintf("n%d", i+1), nodeOpts{postgres: true, expect: n})
	}
	c.start(c.nodes[0])
	waitFor(t, 30*time.Second, "first agent's API", func() bool { return c.nodes[0].get("/v1/agent/self", nil) == 200 })
	for _, p := range c.nodes[1:] {
		c.start(p, "-join="+c.nodes[0].serfAddr())
	}
	waitFor(t, 5*time.Minute, "every node ready", func() bool {
		for _, p := range c.nodes {
			if p.get("/v1/health/readiness", nil) != 200 {
				return false
			}
		}
		return true
	})
	return c
}

// start starts (or restarts) a node's agent, in its cgroup if any, so
// every socket it opens and its PostgreSQL belong to that cgroup.
func (c *faultCluster) start(p *agentProc, flags ...string) {
	c.t.Helper()
	if c.cg == nil {
		p.start(flags...)
		return
	}
	dir, err := c.cg.open(p)
	if err != nil {
		c.t.Fatalf("opening agent %s's cgroup: %v", p.name, err)
	}
	defer dir.Close()
	p.startIn(dir, flags...)
}

// restart starts a stopped node, joining it to the running ones.
func (c *faultCluster) restart(p *agentProc) {
	c.t.Helper()
	var flags []string
	for _, o := range c.nodes {
		if o != p && o.cmd != nil {
			flags = append(flags, "-join="+o.serfAddr())
			break
		}
	}
	c.start(p, flags...)
}

func (c *faultCluster) running() []*agentProc {
	var out []*agentProc
	for _, p := range c.nodes {
		if p.cmd != nil {
			out = append(out, p)
		}
	}
	return out
}

func (c *faultCluster) others(p *agentProc) []*agentProc {
	var out []*agentProc
	for _, o := range c.nodes {
		if o != p {
			out = append(out, o)
		}
	}
	return out
}

func (c *faultCluster) byName(name string) *agentProc {
	for _, p := range c.nodes {
		if p.name == name {
			return p
		}
	}
	return nil
}

// settle brings the cluster back to its steady state whatever an earlier
// scenario left: every agent running, one writable primary, the others
// ready replicas, and both replicas in the synchronous set.
func (c *faultCluster) settle(t *testing.T) *agentProc {
	t.Helper()
	for _, p := range c.nodes {
		if p.cmd == nil || p.exited() {
			p.cmd = nil
			c.restart(p)
		}
	}
	var primary *agentProc
	waitFor(t, 3*time.Minute, "one primary and ready replicas", func() bool {
		primary = nil
		replicas := 0
		for _, p := range c.nodes {
			switch role(p) {
			case "primary":
				if primary != nil {
					return false
				}
				primary = p
			case "replica":
				replicas++
			}
		}
		return primary != nil && replicas == len(c.nodes)-1
	})
	// Steady: the same primary and epoch, writable, with every replica
	// synchronous, for a few lease lengths in a row (a loaded machine can
	// make a fresh cluster flap), and a write goes through.
	var steadySince time.Time
	var last statusJSON
	waitFor(t, 3*time.Minute, "a steady primary with every replica in the synchronous set", func() bool {
		st, ok := clusterStatus(primary)
		good := ok && st.Primary == primary.name && st.Writable && len(st.Sync.Standbys) == len(c.nodes)-1 && role(primary) == "primary"
		if !good {
			steadySince = time.Time{}
			return false
		}
		if steadySince.IsZero() || st.Epoch != last.Epoch {
			last, steadySince = st, time.Now()
			return false
		}
		if time.Since(steadySince) < 3*time.Second {
			return false
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return execOn(ctx, t, primary, "CREATE TABLE IF NOT EXISTS settle_probe (at timestamptz); INSERT INTO settle_probe VALUES (now())") == nil
	})
	return primary
}

// clusterStatus asks p for the cluster status (forwarded to the raft leader).
func clusterStatus(p *agentProc) (statusJSON, bool) {
	var st statusJSON
	return st, p.cmd != nil && p.get("/v1/status", &st) == 200
}

// history asks p for the failover/switchover history.
func history(t *testing.T, p *agentProc) []api.Transition {
	t.Helper()
	var h []api.Transition
	waitFor(t, 30*time.Second, "the history from "+p.name, func() bool { return p.get("/v1/history", &h) == 200 })
	return h
}

// dsn is a libpq multi-host DSN over every node with
// target_session_attrs=read-write: a client that loses its connection
// reconnects to whichever node is the writable primary, as a client of a
// cluster without a gateway would.
func (c *faultCluster) dsn(t *testing.T) string {
	t.Helper()
	var pw string
	for _, p := range c.nodes {
		b, err := os.ReadFile(filepath.Join(p.dataDir(), "secrets", "superuser"))
		if err != nil {
			t.Fatalf("reading %s's secret: %v", p.name, err)
		}
		if pw != "" && strings.TrimSpace(string(b)) != pw {
			t.Fatalf("the agents' role has different passwords on different nodes; a multi-host DSN cannot serve them")
		}
		pw = strings.TrimSpace(string(b))
	}
	hosts := make([]string, len(c.nodes))
	ports := make([]string, len(c.nodes))
	for i, p := range c.nodes {
		hosts[i], ports[i] = p.addr, "5433"
	}
	return fmt.Sprintf("host=%s port=%s user=pgbattery password=%s dbname=postgres sslmode=disable connect_timeout=2 target_session_attrs=read-write",
		strings.Join(hosts, ","), strings.Join(ports, ","), pw)
}

// exec runs one statement on p's PostgreSQL as the agent's role.
func execOn(ctx context.Context, t *testing.T, p *agentProc, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, agentDSN(t, p))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// queryOn reads one value from p's PostgreSQL.
func queryOn[T any](t *testing.T, p *agentProc, sql string, args ...any) (T, error) {
	var v T
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, agentDSN(t, p))
	if err != nil {
		return v, err
	}
	defer conn.Close(context.Background())
	err = conn.QueryRow(ctx, sql, args...).Scan(&v)
	return v, err
}

// timelineOf is the timeline p's PostgreSQL is on: the current WAL file's
// timeline on a primary, the received timeline on a standby.
func timelineOf(t *testing.T, p *agentProc) (int64, error) {
	return queryOn[int64](t, p, `SELECT CASE WHEN pg_is_in_recovery()
		THEN (SELECT coalesce(max(received_tli), 0) FROM pg_stat_wal_receiver)::bigint
		ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint END`)
}

// killPostgres SIGKILLs p's postmaster and every one of its children
// (backends setsid(), so the process group is not enough). The postmaster is
// stopped first so that it cannot restart children in between.
func killPostgres(t testing.TB, p *agentProc) {
	t.Helper()
	pm := postmasterPID(p.dataDir())
	if !processAlive(pm) {
		t.Fatalf("%s has no running postmaster to kill", p.name)
	}
	syscall.Kill(pm, syscall.SIGSTOP)
	for _, child := range childrenOf(pm) {
		syscall.Kill(child, syscall.SIGKILL)
	}
	syscall.Kill(pm, syscall.SIGKILL)
	// The fault must have taken effect before the test goes on: the
	// postmaster is gone or a zombie for its agent to reap.
	waitFor(t, 10*time.Second, "the postmaster of "+p.name+" to die", func() bool { return !processRunning(pm) })
}

// killNode SIGKILLs p's PostgreSQL (all of it) and its agent at once.
func killNode(t testing.TB, p *agentProc) {
	t.Helper()
	pm := postmasterPID(p.dataDir())
	if pm > 0 {
		syscall.Kill(pm, syscall.SIGSTOP)
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	if pm > 0 {
		for _, child := range childrenOf(pm) {
			syscall.Kill(child, syscall.SIGKILL)
		}
		syscall.Kill(pm, syscall.SIGKILL)
	}
	select {
	case <-p.waitErr:
	case <-time.After(10 * time.Second):
		t.Fatalf("agent %s did not die after SIGKILL", p.name)
	}
	p.cmd = nil
	if pm > 0 {
		waitFor(t, 10*time.Second, "the postmaster of "+p.name+" to die", func() bool { return !processRunning(pm) })
	}
}

// childrenOf lists pid's children (PostgreSQL's processes, given the
// postmaster).
func childrenOf(pid int) []int { return pgctl.ChildProcesses(pid) }

// processRunning is processAlive that counts a zombie as dead.
func processRunning(pid int) bool {
	if !processAlive(pid) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}

// waitNewPrimary waits until a running node other than old is the primary,
// and returns it.
func (c *faultCluster) waitNewPrimary(t *testing.T, old *agentProc, timeout time.Duration) *agentProc {
	t.Helper()
	var found *agentProc
	waitFor(t, timeout, "a new primary other than "+old.name, func() bool {
		found = nil
		for _, p := range c.running() {
			if p != old && role(p) == "primary" {
				found = p
			}
		}
		return found != nil
	})
	return found
}

// waitWritable waits until a client following the writable primary (the
// multi-host DSN) gets a write acknowledged, then a little longer so that a
// workload running alongside gets its own acknowledged after the fault.
func (c *faultCluster) waitWritable(t *testing.T, timeout time.Duration) {
	t.Helper()
	dsn := c.dsn(t)
	var err error
	waitFor(t, timeout, "a write acknowledged by the cluster", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var conn *pgx.Conn
		if conn, err = pgx.Connect(ctx, dsn); err != nil {
			return false
		}
		defer conn.Close(context.Background())
		_, err = conn.Exec(ctx, "CREATE TABLE IF NOT EXISTS settle_probe (at timestamptz); INSERT INTO settle_probe VALUES (now())")
		return err == nil
	})
	time.Sleep(2 * time.Second)
}

// appendRun is an append workload through the multi-host DSN, stopped by
// the test.
type appendRun struct {
	cfg    workload.AppendConfig
	cancel context.CancelFunc
	done   chan struct{}
	ops    []checker.AppendOp
	err    error
}

func startAppend(t *testing.T, c *faultCluster, table string) *appendRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &appendRun{cancel: cancel, done: make(chan struct{})}
	r.cfg = workload.AppendConfig{Config: workload.Config{
		DSN:       c.dsn(t),
		Clients:   4,
		Duration:  10 * time.Minute,
		MaxOps:    200000,
		OpTimeout: 5 * time.Second,
		Table:     table,
		Clock:     checker.NewClock(),
		Logger:    hclog.NewNullLogger(),
		// Simple protocol: a reconnect to another node has no prepared
		// statements to lose.
		ExecMode: pgx.QueryExecModeSimpleProtocol,
	}}
	go func() {
		defer close(r.done)
		r.ops, _, r.err = workload.RunAppend(ctx, r.cfg)
	}()
	t.Cleanup(r.stopNow)
	return r
}

func (r *appendRun) stopNow() {
	r.cancel()
	<-r.done
}

// acksAfter counts the appends acknowledged after d on the run's clock.
func (r *appendRun) acksAfter(d time.Duration) int {
	// Only valid once stopped; while running use waitAcks.
	n := 0
	for _, op := range r.ops {
		if op.Outcome == checker.OutcomeOK && op.Complete > d {
			n++
		}
	}
	return n
}

// finish stops the workload, reads the log back from the writable primary
// and checks that no acknowledged append was lost or duplicated; it
// requires acknowledged appends after the fault (writes resumed).
func (r *appendRun) finish(t *testing.T, faultAt time.Duration) checker.Result {
	t.Helper()
	r.stopNow()
	if r.err != nil {
		t.Fatalf("append workload: %v", r.err)
	}
	final := workload.ReadAppendLog(context.Background(), r.cfg.Config)
	res := checker.CheckAppend(r.ops, final)
	t.Logf("append: %s", res.String())
	if !res.OK {
		t.Errorf("append check failed: %v", res.Problems)
	}
	if res.Stats.Values["acknowledged"] == 0 {
		t.Errorf("the append workload had no acknowledged write at all")
	}
	if n := r.acksAfter(faultAt); n == 0 {
		t.Errorf("no append was acknowledged after the fault: writes did not resume")
	}
	return res
}

// checkAcksOn checks that every append the run had acknowledged is on p
// (read directly, e.g. from a standby once it caught up).
func (r *appendRun) checkAcksOn(t *testing.T, p *agentProc) {
	t.Helper()
	want := map[int64]bool{}
	for _, op := range r.ops {
		if op.Outcome == checker.OutcomeOK {
			want[op.ID] = true
		}
	}
	var missing int
	waitFor(t, 60*time.Second, "every acknowledged append on "+p.name, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, agentDSN(t, p))
		if err != nil {
			return false
		}
		defer conn.Close(context.Background())
		rows, err := conn.Query(ctx, "SELECT id FROM "+pgx.Identifier{r.cfg.Table}.Sanitize())
		if err != nil {
			return false
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return false
		}
		have := make(map[int64]bool, len(ids))
		for _, id := range ids {
			have[id] = true
		}
		missing = 0
		for id := range want {
			if !have[id] {
				missing++
			}
		}
		return missing == 0
	})
}

// cgroupSet is a cgroup v2 directory with one child per agent, removed at
// cleanup (after the agents, whose cleanups run first, are dead).
type cgroupSet struct {
	dir  string // absolute path of the set's directory
	rel  string // the same, relative to /sys/fs/cgroup, as nft wants it
	name string
}

func newCgroupSet(t *testing.T) (*cgroupSet, error) {
	if !testutil.IsRoot() {
		return nil, errors.New("not root")
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return nil, errors.New("nft is not installed")
	}
	var base, rel string
	switch {
	case fileExists("/sys/fs/cgroup/cgroup.controllers"):
		base, rel = "/sys/fs/cgroup", ""
	case fileExists("/sys/fs/cgroup/unified/cgroup.controllers"):
		base, rel = "/sys/fs/cgroup/unified", "unified/"
	default:
		return nil, errors.New("no cgroup v2 hierarchy under /sys/fs/cgroup")
	}
	self, _ := os.ReadFile("/proc/self/cgroup")
	if !strings.Contains(string(self), "0::/\n") {
		// The partition rules match on the absolute cgroup level, which
		// is only known when we sit at the hierarchy's root.
		return nil, fmt.Errorf("the test does not run at the cgroup v2 root (%q)", strings.TrimSpace(string(self)))
	}
	name := "pgbt_" + randomHex(4)
	cg := &cgroupSet{dir: filepath.Join(base, name), rel: rel + name, name: name}
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		// Every agent and postmaster has been killed by now; their
		// backends die shortly after.
		deadline := time.Now().Add(15 * time.Second)
		for {
			subs, _ := filepath.Glob(filepath.Join(cg.dir, "*", "cgroup.procs"))
			for _, s := range subs {
				os.Remove(filepath.Dir(s))
			}
			if os.Remove(cg.dir) == nil || time.Now().After(deadline) {
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	return cg, nil
}

// open creates the agent's cgroup if needed and opens its directory (for
// clone3's CLONE_INTO_CGROUP).
func (cg *cgroupSet) open(p *agentProc) (*os.File, error) {
	dir := filepath.Join(cg.dir, p.name)
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return nil, err
	}
	return os.Open(dir)
}

func (cg *cgroupSet) path(p *agentProc) string { return cg.rel + "/" + p.name }

// partition cuts isolated off from the other nodes with nftables rules in
// a table of its own, matched on the sending agent's cgroup (on loopback
// the source address does not tell who sends: many dialers do not bind) and
// the destination address. The test client (outside the cgroups) still
// reaches every node. Packets of connections the others opened to isolated
// mark the connection, so isolated's answers on them are dropped too. heal
// deletes the table; it also runs at cleanup.
func (c *faultCluster) partition(t *testing.T, isolated *agentProc) (heal func()) {
	t.Helper()
	if c.cg == nil {
		t.Fatalf("partition needs a cluster started with cgroups")
	}
	table := "pgbt_" + randomHex(4)
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n chain out {\n  type filter hook output priority 0; policy accept;\n", table)
	for _, o := range c.others(isolated) {
		fmt.Fprintf(&b, "  socket cgroupv2 level 2 %q ip daddr %s drop\n", c.cg.path(isolated), o.addr)
		fmt.Fprintf(&b, "  socket cgroupv2 level 2 %q ip daddr %s ct mark set 0x7062 drop\n", c.cg.path(o), isolated.addr)
	}
	fmt.Fprintf(&b, "  socket cgroupv2 level 2 %q ct mark 0x7062 drop\n", c.cg.path(isolated))
	b.WriteString(" }\n}\n")
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s\nrules:\n%s", err, out, b.String())
	}
	healed := false
	heal = func() {
		if healed {
			return
		}
		healed = true
		if out, err := exec.Command("nft", "delete", "table", "inet", table).CombinedOutput(); err != nil {
			t.Errorf("deleting nft table %s: %v: %s", table, err, out)
		}
	}
	t.Cleanup(heal)
	return heal
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
