package command

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/cli"
	"github.com/jackc/pgx/v5"

	"github.com/pgbattery/pgbattery/agent/api"
	"github.com/pgbattery/pgbattery/pgctl"
)

// The demo's port plan: node i (0-based) uses the ten ports from
// base+10*i; six of them are taken (see demoPortsFor).
const (
	defaultDemoBasePort = 15432
	demoPortStride      = 10

	// demoRole and demoDatabase are what a newcomer connects as. The agent's
	// own role (pgbattery) always needs SCRAM in pg_hba.conf, so the trust
	// gateway of the demo cannot log it in; a plain role can.
	demoRole     = "demo"
	demoDatabase = "demo"
	demoTable    = "demo_probe"

	demoReadyTimeout  = 3 * time.Minute
	demoStopTimeout   = 45 * time.Second
	demoRestartDelay  = 5 * time.Second
	demoProbeInterval = 100 * time.Millisecond
	demoGapThreshold  = 500 * time.Millisecond
	demoReportTimeout = 60 * time.Second
	demoMaxQuickExits = 3
	// demoQuietAfterChange keeps a write pause around a change of primary
	// from being reported a second time as a pause without one.
	demoQuietAfterChange = 5 * time.Second
	demoQuickExitWindow  = 15 * time.Second
)

// DemoCommand runs a local cluster for a newcomer to poke at.
type DemoCommand struct {
	UI    cli.Ui
	flags *flag.FlagSet
	help  string

	dataDir       string
	keep          bool
	failoverEvery time.Duration
	nodes         int
	basePort      int

	// out receives the demo's own output (the status line included).
	out io.Writer
}

func newDemoCommand(ui cli.Ui) *DemoCommand {
	c := &DemoCommand{UI: ui, out: os.Stdout}
	c.flags = newFlagSet("demo")
	c.flags.StringVar(&c.dataDir, "data-dir", "", "Directory for the demo's configs, logs and data. Default: a new temporary directory. "+
		"An existing demo directory (from -keep) is started again.")
	c.flags.BoolVar(&c.keep, "keep", false, "Keep the data directory when the demo stops.")
	c.flags.DurationVar(&c.failoverEvery, "failover-every", 0, "Kill the primary node (agent and PostgreSQL, kill -9) at this interval, e.g. 20s, "+
		"and restart it a few seconds later so it rejoins. 0 disables.")
	c.flags.IntVar(&c.nodes, "nodes", 3, "Number of nodes, 3 to 9.")
	c.flags.IntVar(&c.basePort, "base-port", defaultDemoBasePort, "First port of the demo's port range: node i uses ports base+10*(i-1) .. +5.")
	c.help = usage(demoHelp, c.flags)
	return c
}

const demoHelp = `
Usage: pgbattery demo [options]

  Starts a real pgbattery cluster on this machine: 3 agents, each with its
  own PostgreSQL, all on 127.0.0.1 with distinct ports. It waits until one
  node is the primary and the others stream from it, then prints how to
  connect with psql through the gateway, how to see the cluster's status,
  and how to kill the primary to watch a failover.

  While it runs it shows a status line (primary, epoch, replication lag),
  writes a row every 100 ms through the gateway, and after every change of
  primary prints the old and new primary and how long writes paused.

  Ports: node i uses base+10*(i-1) as its read-write gateway, +1 read-only
  gateway, +2 PostgreSQL, +3 HTTP API, +4 gossip, +5 raft. With the default
  base 15432: node1's gateway is 15432, node2's 15442, node3's 15452.

  The gateway runs with auth = "trust" (no passwords): a demo, not a
  deployment. Connect as the role "demo" to the database "demo".

  PostgreSQL server binaries are found as the agent finds them (pg_config,
  then /usr/lib/postgresql/*/bin). When run as root, PostgreSQL runs as the
  OS user "postgres"; otherwise everything runs as the invoking user.

  Ctrl-C stops every agent gracefully and removes the data directory
  (unless -keep).
`

func (c *DemoCommand) Synopsis() string { return "Runs a local 3-node cluster to try failover" }
func (c *DemoCommand) Help() string     { return strings.TrimSpace(c.help) }

func (c *DemoCommand) Run(args []string) int {
	if !parseFlags(c.UI, c.flags, args, c.help) {
		return 1
	}
	if c.flags.NArg() > 0 {
		c.UI.Error("The demo command takes no arguments.")
		return 1
	}
	basePortSet := false
	c.flags.Visit(func(f *flag.Flag) {
		if f.Name == "base-port" {
			basePortSet = true
		}
	})
	if c.nodes < 3 || c.nodes > 9 {
		c.UI.Error(fmt.Sprintf("Invalid -nodes %d: use 3 to 9 (a failover needs a majority of the nodes left).", c.nodes))
		return 1
	}
	if c.failoverEvery < 0 || (c.failoverEvery > 0 && c.failoverEvery < 5*time.Second) {
		c.UI.Error(fmt.Sprintf("Invalid -failover-every %s: use 0 (off) or at least 5s.", c.failoverEvery))
		return 1
	}

	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()

	d := &demo{
		ui:            c.UI,
		nodes:         c.nodes,
		basePort:      c.basePort,
		failoverEvery: c.failoverEvery,
		keep:          c.keep,
		events:        make(chan demoExit, 16),
	}
	d.pr = newDemoPrinter(c.out)
	if err := d.prepare(ctx, c.dataDir, basePortSet); err != nil {
		d.cleanup()
		c.UI.Error(err.Error())
		return 1
	}
	code := d.run(ctx)
	d.cleanup()
	return code
}

// demoPorts are one node's listeners.
type demoPorts struct {
	Gateway, GatewayReadOnly, Postgres, HTTP, Serf, Raft int
}

func demoPortsFor(base, i int) demoPorts {
	b := base + demoPortStride*i
	return demoPorts{Gateway: b, GatewayReadOnly: b + 1, Postgres: b + 2, HTTP: b + 3, Serf: b + 4, Raft: b + 5}
}

func (p demoPorts) named() []struct {
	name string
	port int
} {
	return []struct {
		name string
		port int
	}{
		{"gateway", p.Gateway}, {"read-only gateway", p.GatewayReadOnly}, {"PostgreSQL", p.Postgres},
		{"HTTP API", p.HTTP}, {"gossip", p.Serf}, {"raft", p.Raft},
	}
}

// demoNode is one agent of the demo. Its process fields are owned by the
// demo's main loop.
type demoNode struct {
	name    string
	dir     string
	cfgFile string
	logFile string
	dataDir string
	ports   demoPorts

	cmd        *exec.Cmd
	startedAt  time.Time
	running    bool
	quickExits int
	restartAt  time.Time // zero: no restart scheduled
	gaveUp     bool
	// migrated is the gateway's count of sessions moved to a new primary,
	// as last reported (GET /v1/agent/self).
	migrated int64
}

func (n *demoNode) pid() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

func (n *demoNode) httpAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.ports.HTTP))
}

// demoExit reports that a node's agent process ended.
type demoExit struct {
	node *demoNode
	cmd  *exec.Cmd
	err  error
}

type demo struct {
	ui            cli.Ui
	pr            *demoPrinter
	nodes         int
	basePort      int
	failoverEvery time.Duration
	keep          bool

	dir        string
	createdDir bool // remove dir at the end (unless keep)
	exe        string
	cliName    string // how the user runs this binary: "pgbattery" or a path
	binDir     string
	list       []*demoNode
	spawn      *spawner
	events     chan demoExit
	probe      *demoProbe
	probeStop  context.CancelFunc
	probeDone  chan struct{}
	httpClient *http.Client
}

// prepare checks the machine, lays out the directory and writes the
// configs. It starts nothing.
func (d *demo) prepare(ctx context.Context, dataDir string, basePortSet bool) error {
	bins, err := pgctl.FindBinaries(ctx, "")
	if err != nil {
		return fmt.Errorf("The demo needs PostgreSQL's server binaries: %v\n\n"+
			"Install them:\n"+
			"    Debian/Ubuntu:   sudo apt-get install postgresql\n"+
			"    macOS (Homebrew): brew install postgresql@16\n"+
			"    Fedora/RHEL:     sudo dnf install postgresql-server\n"+
			"and make sure pg_config is on your PATH (or the binaries are in /usr/lib/postgresql/N/bin).", err)
	}
	d.binDir = bins.Dir
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			return errors.New("The demo runs as root, so PostgreSQL must run as the OS user \"postgres\", which does not exist here. " +
				"Create it (useradd --system postgres) or run the demo as an ordinary user.")
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the pgbattery binary to start agents with: %w", err)
	}
	d.exe = exe
	d.cliName = cliName(exe)
	d.httpClient = &http.Client{Timeout: time.Second}

	if err := d.layoutDir(dataDir, basePortSet); err != nil {
		return err
	}
	if d.basePort < 1024 || d.basePort+demoPortStride*(d.nodes-1)+5 > 65535 {
		return fmt.Errorf("Invalid -base-port %d: the demo needs ports %d..%d, which must lie within 1024..65535.",
			d.basePort, d.basePort, d.basePort+demoPortStride*(d.nodes-1)+5)
	}
	for i := 0; i < d.nodes; i++ {
		name := fmt.Sprintf("node%d", i+1)
		nd := filepath.Join(d.dir, name)
		d.list = append(d.list, &demoNode{
			name: name, dir: nd,
			cfgFile: filepath.Join(nd, "agent.hcl"),
			logFile: filepath.Join(nd, "agent.log"),
			dataDir: filepath.Join(nd, "data"),
			ports:   demoPortsFor(d.basePort, i),
		})
	}
	if err := d.checkPorts(); err != nil {
		return err
	}
	for _, n := range d.list {
		if err := os.MkdirAll(n.dir, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", n.dir, err)
		}
		// MkdirAll honours the umask; the postgres OS user must traverse.
		if err := os.Chmod(n.dir, 0o755); err != nil {
			return fmt.Errorf("making %s traversable: %w", n.dir, err)
		}
		if err := os.WriteFile(n.cfgFile, []byte(d.configFor(n)), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", n.cfgFile, err)
		}
	}
	return nil
}

// cliName is how the printed commands should call this binary: plain
// "pgbattery" when that is what PATH finds, else a path.
func cliName(exe string) string {
	if p, err := exec.LookPath("pgbattery"); err == nil {
		if a, err := filepath.EvalSymlinks(p); err == nil {
			if b, err := filepath.EvalSymlinks(exe); err == nil && a == b {
				return "pgbattery"
			}
		}
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, exe); err == nil && !strings.HasPrefix(rel, "..") {
			return "./" + rel
		}
	}
	return exe
}

const demoBasePortFile = "demo-base-port"

// layoutDir creates the demo's directory, or adopts one from an earlier
// demo run with -keep.
func (d *demo) layoutDir(dataDir string, basePortSet bool) error {
	if dataDir == "" {
		dir, err := os.MkdirTemp("", "pgbattery-demo-")
		if err != nil {
			return fmt.Errorf("creating a temporary directory: %w", err)
		}
		d.dir, d.createdDir = dir, true
	} else {
		abs, err := filepath.Abs(dataDir)
		if err != nil {
			return fmt.Errorf("-data-dir %s: %w", dataDir, err)
		}
		d.dir = abs
		entries, err := os.ReadDir(abs)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if err := os.MkdirAll(abs, 0o755); err != nil {
				return fmt.Errorf("creating -data-dir %s: %w", abs, err)
			}
			d.createdDir = true
		case err != nil:
			return fmt.Errorf("reading -data-dir %s: %w", abs, err)
		case len(entries) > 0:
			b, err := os.ReadFile(filepath.Join(abs, demoBasePortFile))
			if err != nil {
				return fmt.Errorf("-data-dir %s is not empty and is not a demo directory (no %s): choose a new or empty directory",
					abs, demoBasePortFile)
			}
			port, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				return fmt.Errorf("reading %s: %w", filepath.Join(abs, demoBasePortFile), err)
			}
			if basePortSet && port != d.basePort {
				return fmt.Errorf("-data-dir %s was created with -base-port %d; its raft peers are recorded with those ports, so start it with the same -base-port (or none)",
					abs, port)
			}
			d.basePort = port
			// A kept directory is the user's: never removed by us.
		}
	}
	// The postgres OS user (when we are root) must reach the data dirs.
	if err := os.Chmod(d.dir, 0o755); err != nil {
		return fmt.Errorf("making %s traversable: %w", d.dir, err)
	}
	if os.Geteuid() == 0 {
		for p := filepath.Dir(d.dir); p != "/" && p != "."; p = filepath.Dir(p) {
			fi, err := os.Stat(p)
			if err != nil {
				return fmt.Errorf("checking %s: %w", p, err)
			}
			if fi.Mode().Perm()&0o001 == 0 {
				return fmt.Errorf("PostgreSQL runs as the OS user postgres, which cannot enter %s (mode %#o): choose a -data-dir under a directory others can traverse, e.g. /tmp or /var/tmp",
					p, fi.Mode().Perm())
			}
		}
	}
	return os.WriteFile(filepath.Join(d.dir, demoBasePortFile), []byte(strconv.Itoa(d.basePort)+"\n"), 0o644)
}

// checkPorts makes sure every port of the plan is free on 127.0.0.1, so a
// clash is reported before anything starts, with the port's purpose.
func (d *demo) checkPorts() error {
	for _, n := range d.list {
		for _, p := range n.ports.named() {
			addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port))
			l, err := net.Listen("tcp", addr)
			if err == nil {
				l.Close()
			}
			if err == nil && p.name == "gossip" {
				var pc net.PacketConn
				if pc, err = net.ListenPacket("udp", addr); err == nil {
					pc.Close()
				}
			}
			if err != nil {
				return fmt.Errorf("Port %d on 127.0.0.1 (%s's %s) is not free: %v\n"+
					"Stop what uses it, or choose another range with -base-port (the demo uses base..base+%d).",
					p.port, n.name, p.name, err, demoPortStride*(d.nodes-1)+5)
			}
		}
	}
	return nil
}

func (d *demo) configFor(n *demoNode) string {
	var join []string
	for _, o := range d.list {
		if o != n {
			join = append(join, strconv.Quote(net.JoinHostPort("127.0.0.1", strconv.Itoa(o.ports.Serf))))
		}
	}
	return fmt.Sprintf(`# Written by "pgbattery demo": one of %d agents on 127.0.0.1. Not for production:
# the gateway and PostgreSQL trust every local connection.
node_name        = %q
data_dir         = %q
bind_addr        = "127.0.0.1"
server           = true
bootstrap_expect = %d
retry_join       = [%s]
retry_interval   = "1s"
log_level        = "info"

ports {
  gateway           = %d
  gateway_read_only = %d
  postgres          = %d
  http              = %d
  serf              = %d
  raft              = %d
}

postgres {
  bin_dir = %q
  # The demo's gateway runs without passwords, so PostgreSQL must trust it
  # (and every other local connection). The agent's own roles keep SCRAM.
  hba = ["host all all 127.0.0.1/32 trust"]
}

gossip {
  profile = "local"
}

gateway {
  auth = "trust"
}
`, d.nodes, n.name, n.dataDir, d.nodes, strings.Join(join, ", "),
		n.ports.Gateway, n.ports.GatewayReadOnly, n.ports.Postgres, n.ports.HTTP, n.ports.Serf, n.ports.Raft,
		d.binDir)
}

// spawner starts child processes from one OS thread that lives as long as
// the demo: Linux sends a child's parent-death signal when the thread that
// forked it exits, not the process, and Go may retire idle threads.
type spawner struct {
	reqs chan spawnReq
	done chan struct{}
}

type spawnReq struct {
	cmd   *exec.Cmd
	reply chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		// Never unlocked: when this goroutine returns, its thread exits,
		// and any child still alive gets its parent-death signal.
		runtime.LockOSThread()
		for r := range s.reqs {
			r.reply <- r.cmd.Start()
		}
	}()
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	reply := make(chan error, 1)
	s.reqs <- spawnReq{cmd: cmd, reply: reply}
	return <-reply
}

func (s *spawner) close() {
	close(s.reqs)
	<-s.done
}

// startNode starts a node's agent with its output appended to its log.
func (d *demo) startNode(n *demoNode) error {
	logf, err := os.OpenFile(n.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("opening %s: %w", n.logFile, err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(d.exe, "agent", "-config-file="+n.cfgFile)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = n.dir
	cmd.SysProcAttr = demoSysProcAttr()
	if err := d.spawn.start(cmd); err != nil {
		return fmt.Errorf("starting %s's agent: %w", n.name, err)
	}
	n.cmd, n.running, n.startedAt, n.restartAt = cmd, true, time.Now(), time.Time{}
	go func() {
		err := cmd.Wait()
		d.events <- demoExit{node: n, cmd: cmd, err: err}
	}()
	return nil
}

// killNode kills a node's agent and its PostgreSQL at once, as a power
// loss would.
func (d *demo) killNode(n *demoNode) {
	if pid := n.pid(); pid > 0 && n.running {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
	if pm := demoPostmasterPID(n.dataDir); pm > 0 {
		syscall.Kill(pm, syscall.SIGKILL)
	}
}

// demoPostmasterPID reads PGDATA/postmaster.pid (PGDATA is data_dir/postgres/data).
func demoPostmasterPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postgres", "data", "postmaster.pid"))
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(first))
	return pid
}

// handleExit records an agent's exit and, unless the demo is stopping,
// schedules its restart so that it rejoins.
func (d *demo) handleExit(ev demoExit) {
	n := ev.node
	if n.cmd != ev.cmd {
		return // an earlier incarnation
	}
	n.running = false
	why := "exited"
	if ev.err != nil {
		why = "exited: " + ev.err.Error()
	}
	if time.Since(n.startedAt) < demoQuickExitWindow {
		n.quickExits++
	} else {
		n.quickExits = 0
	}
	if n.quickExits >= demoMaxQuickExits {
		n.gaveUp = true
		d.pr.line(fmt.Sprintf("==> %s's agent (pid %d) %s, %d times in a row within %s of starting; not restarting it. Its log (%s) ends with:\n%s",
			n.name, n.pid(), why, n.quickExits, demoQuickExitWindow, n.logFile, indent(tailFile(n.logFile, 15))))
		return
	}
	n.restartAt = time.Now().Add(demoRestartDelay)
	d.pr.line(fmt.Sprintf("==> %s's agent (pid %d) %s; restarting it in %s so it rejoins", n.name, n.pid(), why, demoRestartDelay))
}

// readiness is one node's answer to GET /v1/health/readiness: its role, or
// "" when it is not ready or did not answer.
func (d *demo) roles(ctx context.Context) map[string]string {
	out := make(map[string]string, len(d.list))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range d.list {
		if !n.running {
			continue
		}
		wg.Add(1)
		go func(n *demoNode) {
			defer wg.Done()
			role := d.readiness(ctx, n)
			mu.Lock()
			out[n.name] = role
			mu.Unlock()
		}(n)
	}
	wg.Wait()
	return out
}

// sessionsMoved is how many gateway sessions the running agents moved to a
// new primary since the last call (a restarted agent counts from zero).
func (d *demo) sessionsMoved(ctx context.Context) int64 {
	var total int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range d.list {
		if !n.running {
			continue
		}
		wg.Add(1)
		go func(n *demoNode) {
			defer wg.Done()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.httpAddr()+"/v1/agent/self", nil)
			if err != nil {
				return
			}
			resp, err := d.httpClient.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			var self api.AgentSelf
			if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&self) != nil || self.Gateway == nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			cur := self.Gateway.Migrated
			if cur >= n.migrated {
				total += cur - n.migrated
			} else {
				total += cur
			}
			n.migrated = cur
		}(n)
	}
	wg.Wait()
	return total
}

func (d *demo) readiness(ctx context.Context, n *demoNode) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.httpAddr()+"/v1/health/readiness", nil)
	if err != nil {
		return ""
	}
	resp, err := d.httpClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ""
	}
	var body map[string]string
	if json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body) != nil {
		return ""
	}
	return body["role"]
}

// cluster summarises the roles: the single primary ("" when there is not
// exactly one) and the ready replicas.
func (d *demo) cluster(roles map[string]string) (primary string, replicas []string) {
	var primaries []string
	for _, n := range d.list {
		switch roles[n.name] {
		case "primary":
			primaries = append(primaries, n.name)
		case "replica":
			replicas = append(replicas, n.name)
		}
	}
	if len(primaries) == 1 {
		primary = primaries[0]
	}
	return primary, replicas
}

func (d *demo) node(name string) *demoNode {
	for _, n := range d.list {
		if n.name == name {
			return n
		}
	}
	return nil
}

// run starts the cluster and shows it until a signal.
func (d *demo) run(ctx context.Context) int {
	d.spawn = newSpawner()
	d.pr.line(fmt.Sprintf("==> pgbattery demo: %d nodes on 127.0.0.1, PostgreSQL from %s", d.nodes, d.binDir))
	d.pr.line(fmt.Sprintf("    Data, configs and logs: %s", d.dir))
	for _, n := range d.list {
		if err := d.startNode(n); err != nil {
			d.ui.Error(err.Error())
			return 1
		}
	}
	d.pr.line("")
	d.pr.line("    node    agent pid  gateway  read-only  postgres  http   log")
	for _, n := range d.list {
		d.pr.line(fmt.Sprintf("    %-7s %-10d %-8d %-10d %-9d %-6d %s", n.name, n.pid(), n.ports.Gateway, n.ports.GatewayReadOnly,
			n.ports.Postgres, n.ports.HTTP, n.logFile))
	}
	d.pr.line("")

	start := time.Now()
	primary, replicas, err := d.waitReady(ctx)
	if err != nil {
		d.pr.clear()
		d.ui.Error(err.Error())
		return 1
	}
	if err := d.setupDatabase(ctx, primary); err != nil {
		d.pr.clear()
		d.ui.Error(err.Error())
		return 1
	}
	d.pr.clear()
	d.pr.line(fmt.Sprintf("==> Cluster ready in %.1fs: primary %s, replicas %s", time.Since(start).Seconds(), primary, strings.Join(replicas, ", ")))
	d.printNextSteps(primary)

	probeCtx, cancel := context.WithCancel(context.Background())
	d.probe = &demoProbe{}
	d.probeStop = cancel
	d.probeDone = make(chan struct{})
	go func() {
		defer close(d.probeDone)
		d.probe.run(probeCtx, d.gatewayAddrs)
	}()

	return d.watch(ctx, primary)
}

// waitReady waits, with a progress line, until one node is primary and
// all others are ready replicas.
func (d *demo) waitReady(ctx context.Context) (string, []string, error) {
	deadline := time.Now().Add(demoReadyTimeout)
	spin := `|/-\`
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastPrinted := time.Time{}
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return "", nil, errors.New("interrupted while waiting for the cluster")
		case ev := <-d.events:
			if ev.node.cmd == ev.cmd {
				ev.node.running = false
				return "", nil, fmt.Errorf("%s's agent exited while the cluster was forming (%v). Its log (%s) ends with:\n%s",
					ev.node.name, ev.err, ev.node.logFile, indent(tailFile(ev.node.logFile, 20)))
			}
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		roles := d.roles(rctx)
		cancel()
		primary, replicas := d.cluster(roles)
		if primary != "" && len(replicas) == d.nodes-1 {
			return primary, replicas, nil
		}
		if time.Now().After(deadline) {
			return "", nil, fmt.Errorf("the cluster was not ready within %s (roles: %v); see the agents' logs under %s", demoReadyTimeout, roles, d.dir)
		}
		msg := fmt.Sprintf("%c waiting for the cluster (%ds): %s", spin[i%len(spin)], int(time.Since(deadline.Add(-demoReadyTimeout)).Seconds()), describeRoles(d.list, roles))
		if d.pr.tty || time.Since(lastPrinted) >= 5*time.Second {
			d.pr.status(msg)
			lastPrinted = time.Now()
		}
	}
}

func describeRoles(list []*demoNode, roles map[string]string) string {
	parts := make([]string, 0, len(list))
	for _, n := range list {
		r := roles[n.name]
		if r == "" {
			r = "starting"
		}
		parts = append(parts, n.name+" "+r)
	}
	return strings.Join(parts, ", ")
}

// setupDatabase creates the demo role and database on the primary (as the
// agent's control role), then the probe's table through the gateway, which
// also proves the gateway path works before we say "ready".
func (d *demo) setupDatabase(ctx context.Context, primary string) error {
	n := d.node(primary)
	secret, err := pgctl.LoadSecret(filepath.Join(n.dataDir, "secrets"), "superuser")
	if err != nil {
		return fmt.Errorf("reading the agent role's password: %w", err)
	}
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres sslmode=disable connect_timeout=5",
		n.ports.Postgres, pgctl.DefaultSuperuser))
	if err != nil {
		return err
	}
	cfg.Password = secret
	deadline := time.Now().Add(30 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		if lastErr = d.createDemoObjects(ctx, cfg); lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("interrupted while creating the demo database")
		case <-time.After(500 * time.Millisecond):
		}
	}
	return fmt.Errorf("creating the demo database: %w", lastErr)
}

func (d *demo) createDemoObjects(ctx context.Context, admin *pgx.ConnConfig) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("connecting to the primary's PostgreSQL as %s: %w", admin.User, err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", demoRole).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE ROLE "+demoRole+" LOGIN CREATEDB"); err != nil {
			return fmt.Errorf("creating role %s: %w", demoRole, err)
		}
	}
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", demoDatabase).Scan(&exists); err != nil {
		return err
	}
	if !exists {
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+demoDatabase+" OWNER "+demoRole); err != nil {
			return fmt.Errorf("creating database %s: %w", demoDatabase, err)
		}
	}
	gw, err := pgx.Connect(ctx, demoGatewayDSN(d.gatewayAddrs()[0]))
	if err != nil {
		return fmt.Errorf("connecting through the gateway: %w", err)
	}
	defer gw.Close(context.Background())
	_, err = gw.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+demoTable+
		" (id bigserial PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp())")
	if err != nil {
		return fmt.Errorf("creating table %s through the gateway: %w", demoTable, err)
	}
	return nil
}

func demoGatewayDSN(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable connect_timeout=3", host, port, demoRole, demoDatabase)
}

// gatewayAddrs lists the read-write gateways of the running nodes first.
func (d *demo) gatewayAddrs() []string {
	var up, down []string
	for _, n := range d.list {
		a := net.JoinHostPort("127.0.0.1", strconv.Itoa(n.ports.Gateway))
		if n.running {
			up = append(up, a)
		} else {
			down = append(down, a)
		}
	}
	return append(up, down...)
}

func (d *demo) printNextSteps(primary string) {
	n := d.node(primary)
	first := d.list[0]
	var b strings.Builder
	// Every node's gateway routes to the primary; listing them all lets
	// libpq skip a node that is down. The primary's own gateway comes
	// last: a psql session on another node's gateway stays connected when
	// the primary's node is killed (the gateway moves it to the new
	// primary), while one on the killed node's gateway dies with it.
	var hosts, ports []string
	for _, o := range d.list {
		if o.name != primary {
			hosts, ports = append(hosts, "127.0.0.1"), append(ports, strconv.Itoa(o.ports.Gateway))
		}
	}
	hosts, ports = append(hosts, "127.0.0.1"), append(ports, strconv.Itoa(n.ports.Gateway))
	fmt.Fprintf(&b, "\nConnect through the gateway (each node's gateway routes to the primary; psql tries them in turn,\nthe primary's own last, so your session lives through the primary's death):\n")
	fmt.Fprintf(&b, "    psql \"host=%s port=%s user=%s dbname=%s\"\n", strings.Join(hosts, ","), strings.Join(ports, ","), demoRole, demoDatabase)
	fmt.Fprintf(&b, "    (one node's gateway: port %d; read-only, routed to a replica: port %d.)  The probe writes to table %s.\n",
		first.ports.Gateway, first.ports.GatewayReadOnly, demoTable)
	fmt.Fprintf(&b, "See the cluster:\n")
	fmt.Fprintf(&b, "    %s status -http-addr=%s\n", d.cliName, first.httpAddr())
	fmt.Fprintf(&b, "    %s members -http-addr=%s\n", d.cliName, first.httpAddr())
	fmt.Fprintf(&b, "Kill the primary (%s: its agent, and its PostgreSQL with it) and watch the failover:\n", n.name)
	fmt.Fprintf(&b, "    kill -9 %d\n", n.pid())
	if d.pr.stdinTTY {
		fmt.Fprintf(&b, "    or type k and Enter here to kill whichever node is primary.\n")
	}
	fmt.Fprintf(&b, "A killed node is restarted after %s and rejoins as a replica.\n", demoRestartDelay)
	if d.keep || !d.createdDir {
		fmt.Fprintf(&b, "Ctrl-C stops every node; %s is kept.\n", d.dir)
	} else {
		fmt.Fprintf(&b, "Ctrl-C stops every node and removes %s (run with -keep to keep it).\n", d.dir)
	}
	d.pr.line(b.String())
}

// watch is the demo's main loop: status line, failover reports, the
// failover timer, restarts and the stop signal.
func (d *demo) watch(ctx context.Context, primary string) int {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var failoverC <-chan time.Time
	if d.failoverEvery > 0 {
		ft := time.NewTicker(d.failoverEvery)
		defer ft.Stop()
		failoverC = ft.C
		d.pr.line(fmt.Sprintf("==> -failover-every %s: the primary will be killed every %s", d.failoverEvery, d.failoverEvery))
	}
	keys := make(chan struct{}, 1)
	if d.pr.stdinTTY {
		// This reader blocks in read(2) on the terminal and cannot be
		// stopped; it ends with the process, a few moments after Run.
		go func() {
			sc := bufio.NewScanner(os.Stdin)
			for sc.Scan() {
				if strings.TrimSpace(sc.Text()) == "k" {
					select {
					case keys <- struct{}{}:
					default:
					}
				}
			}
		}()
	}

	// cur is the primary as last seen, curSeen when, curSince since when.
	cur, curSeen, curSince := primary, time.Now(), time.Now()
	reportedUpTo := time.Now()
	epoch := uint64(0)
	type pendingReport struct {
		from, to string
		fromSeen time.Time
		detected time.Time
	}
	var pending *pendingReport

	for {
		select {
		case <-ctx.Done():
			d.pr.clear()
			d.pr.line("==> Interrupted: stopping the cluster")
			return 0
		case ev := <-d.events:
			d.handleExit(ev)
			continue
		case <-keys:
			d.killPrimary(cur, "you typed k")
			continue
		case <-failoverC:
			d.killPrimary(cur, "-failover-every")
			continue
		case <-tick.C:
		}
		for _, n := range d.list {
			if !n.running && !n.gaveUp && !n.restartAt.IsZero() && time.Now().After(n.restartAt) {
				if err := d.startNode(n); err != nil {
					d.pr.line("==> " + err.Error())
					n.gaveUp = true
				} else {
					d.pr.line(fmt.Sprintf("==> restarted %s's agent (pid %d)", n.name, n.pid()))
				}
			}
		}

		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		roles := d.roles(rctx)
		st := d.status(rctx, cur)
		cancel()
		p, _ := d.cluster(roles)
		if st != nil {
			epoch = st.Epoch
		}
		now := time.Now()
		if p != "" && p == cur {
			curSeen = now
		} else if p != "" && p != cur {
			pending = &pendingReport{from: cur, to: p, fromSeen: curSeen, detected: now}
			cur, curSeen, curSince = p, now, now
		}
		if pending != nil {
			if rep, ok := d.probe.gapAfter(pending.fromSeen, pending.detected); ok {
				mctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				moved := d.sessionsMoved(mctx)
				cancel()
				d.pr.line(fmt.Sprintf("==> Failover: %s -> %s (epoch %d); %s; %d client sessions moved", pending.from, pending.to, epoch, rep, moved))
				pending = nil
				reportedUpTo = now
			} else if now.Sub(pending.detected) > demoReportTimeout {
				d.pr.line(fmt.Sprintf("==> Failover: %s -> %s (epoch %d); the probe has not written since (%s)", pending.from, pending.to, epoch, d.probe.lastError()))
				pending = nil
				reportedUpTo = now
			}
		} else if now.Sub(curSince) > demoQuietAfterChange {
			// Writes can pause without a change of primary (a node
			// rejoining, a change of the synchronous standbys): say so, once
			// the pause has ended and cannot belong to a failover report.
			for _, g := range d.probe.gapsEndedBetween(reportedUpTo, now.Add(-demoQuietAfterChange)) {
				d.pr.line(fmt.Sprintf("==> Writes paused %.2fs with no change of primary (last acknowledged write %s, next %s)",
					g.to.Sub(g.from).Seconds(), g.from.Format("15:04:05.000"), g.to.Format("15:04:05.000")))
				reportedUpTo = g.to
			}
		}
		d.pr.status(d.statusLine(roles, cur, p, epoch, st))
	}
}

// killPrimary kills the node that is primary now.
func (d *demo) killPrimary(cur, why string) {
	n := d.node(cur)
	if n == nil || !n.running {
		d.pr.line(fmt.Sprintf("==> %s: no running primary to kill right now", why))
		return
	}
	d.pr.line(fmt.Sprintf("==> %s: killing the primary %s (kill -9 of agent pid %d and its PostgreSQL)", why, n.name, n.pid()))
	d.killNode(n)
}

// status asks the cluster for GET /v1/status, preferring the primary's
// agent; nil when nobody answered.
func (d *demo) status(ctx context.Context, prefer string) *api.ClusterStatus {
	order := make([]*demoNode, 0, len(d.list))
	if n := d.node(prefer); n != nil && n.running {
		order = append(order, n)
	}
	for _, n := range d.list {
		if n.name != prefer && n.running {
			order = append(order, n)
		}
	}
	for _, n := range order {
		c, err := api.NewClient(api.Config{Address: n.httpAddr(), Timeout: 1500 * time.Millisecond})
		if err != nil {
			continue
		}
		if st, err := c.Status(ctx); err == nil {
			return st
		}
		if ctx.Err() != nil {
			return nil
		}
	}
	return nil
}

func (d *demo) statusLine(roles map[string]string, cur, primary string, epoch uint64, st *api.ClusterStatus) string {
	var b strings.Builder
	b.WriteString(time.Now().Format("15:04:05") + " ")
	if primary == "" {
		fmt.Fprintf(&b, "no primary (last: %s)", cur)
	} else {
		fmt.Fprintf(&b, "primary %s (pid %d)", primary, d.node(primary).pid())
	}
	if epoch > 0 {
		fmt.Fprintf(&b, " · epoch %d", epoch)
	}
	lag := map[string]string{}
	if st != nil {
		for _, m := range st.Members {
			if m.LagBytes != nil {
				lag[m.Name] = formatBytes(*m.LagBytes)
			}
		}
	}
	var others []string
	for _, n := range d.list {
		if n.name == primary {
			continue
		}
		s := n.name + " "
		switch {
		case !n.running:
			s += "down"
		case roles[n.name] == "":
			s += "starting"
		default:
			s += roles[n.name]
			if l, ok := lag[n.name]; ok {
				s += " lag " + l
			}
		}
		others = append(others, s)
	}
	fmt.Fprintf(&b, " · %s", strings.Join(others, ", "))
	acks, _ := d.probe.counts()
	fmt.Fprintf(&b, " · probe %d writes", acks)
	return b.String()
}

// cleanup stops every agent (SIGTERM, then SIGKILL after a timeout),
// makes sure no PostgreSQL is left, and removes the directory unless kept.
func (d *demo) cleanup() {
	if d.probeStop != nil {
		d.probeStop()
		<-d.probeDone
	}
	var running []*demoNode
	for _, n := range d.list {
		if n.running {
			running = append(running, n)
		}
	}
	if len(running) > 0 {
		d.pr.line(fmt.Sprintf("==> Stopping %d agents (SIGTERM; SIGKILL after %s)", len(running), demoStopTimeout))
		for _, n := range running {
			n.cmd.Process.Signal(syscall.SIGTERM)
		}
		d.waitExits(running, demoStopTimeout)
		for _, n := range running {
			if n.running {
				d.pr.line(fmt.Sprintf("==> %s's agent did not stop within %s; killing it", n.name, demoStopTimeout))
				d.killNode(n)
			}
		}
		d.waitExits(running, 10*time.Second)
	}
	// A postmaster outlives its agent only if the agent was killed and the
	// parent-death signal did not reach it; never leave one behind.
	for _, n := range d.list {
		if pm := demoPostmasterPID(n.dataDir); pm > 0 && syscall.Kill(pm, 0) == nil && isPostmasterOf(pm, n.dataDir) {
			syscall.Kill(pm, syscall.SIGKILL)
		}
	}
	if d.spawn != nil {
		d.spawn.close()
	}
	if d.dir == "" {
		return
	}
	if d.createdDir && !d.keep {
		if err := os.RemoveAll(d.dir); err != nil {
			d.ui.Error(fmt.Sprintf("removing %s: %v", d.dir, err))
			return
		}
		d.pr.line(fmt.Sprintf("==> Stopped; removed %s", d.dir))
	} else if len(d.list) > 0 {
		d.pr.line(fmt.Sprintf("==> Stopped; kept %s. Start it again with: %s demo -data-dir %s", d.dir, d.cliName, d.dir))
	}
}

// isPostmasterOf guards against PID reuse: on Linux, the process's
// command line must name the data directory. Elsewhere we trust the file,
// which the agent removes on a clean stop.
func isPostmasterOf(pid int, dataDir string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return runtime.GOOS != "linux"
	}
	return strings.Contains(string(b), dataDir)
}

func (d *demo) waitExits(nodes []*demoNode, timeout time.Duration) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		left := 0
		for _, n := range nodes {
			if n.running {
				left++
			}
		}
		if left == 0 {
			return
		}
		select {
		case ev := <-d.events:
			if ev.node.cmd == ev.cmd {
				ev.node.running = false
			}
		case <-deadline.C:
			return
		}
	}
}

// demoProbe writes a row through the gateway every 100 ms and records the
// pauses between acknowledged writes.
type demoProbe struct {
	mu      sync.Mutex
	acks    int
	fails   int
	lastAck time.Time
	lastErr string
	gaps    []demoGap // newest last, at most 32
}

type demoGap struct{ from, to time.Time }

func (p *demoProbe) run(ctx context.Context, gateways func() []string) {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	next := 0
	tick := time.NewTicker(demoProbeInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if conn == nil {
			addrs := gateways()
			addr := addrs[next%len(addrs)]
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			c, err := pgx.Connect(cctx, demoGatewayDSN(addr))
			cancel()
			if err != nil {
				p.fail(fmt.Errorf("connecting to the gateway %s: %w", addr, err))
				next++
				continue
			}
			conn = c
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := conn.Exec(wctx, "INSERT INTO "+demoTable+" DEFAULT VALUES")
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			p.fail(err)
			conn.Close(context.Background())
			conn = nil
			continue
		}
		p.ack(time.Now())
	}
}

func (p *demoProbe) ack(at time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.lastAck.IsZero() && at.Sub(p.lastAck) > demoGapThreshold {
		p.gaps = append(p.gaps, demoGap{from: p.lastAck, to: at})
		if len(p.gaps) > 32 {
			p.gaps = p.gaps[1:]
		}
	}
	p.acks++
	p.lastAck = at
}

func (p *demoProbe) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fails++
	p.lastErr = err.Error()
}

func (p *demoProbe) counts() (acks, fails int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.acks, p.fails
}

func (p *demoProbe) lastError() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastErr == "" {
		return "no error"
	}
	return "last error: " + p.lastErr
}

// gapAfter describes the write pause around a change of primary: the
// longest pause that ended after the old primary was last seen. ok is false
// until the probe has written again after the change was detected.
func (p *demoProbe) gapAfter(oldSeen, detected time.Time) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lastAck.Before(detected) {
		return "", false
	}
	var best *demoGap
	for i := range p.gaps {
		g := &p.gaps[i]
		if g.to.After(oldSeen) && (best == nil || g.to.Sub(g.from) > best.to.Sub(best.from)) {
			best = g
		}
	}
	if best == nil {
		return fmt.Sprintf("no write pause over %s seen by the probe", demoGapThreshold), true
	}
	return fmt.Sprintf("write gap %.2fs (last acknowledged write %s, next %s)",
		best.to.Sub(best.from).Seconds(), best.from.Format("15:04:05.000"), best.to.Format("15:04:05.000")), true
}

// gapsEndedBetween returns the pauses that ended in (after, before].
func (p *demoProbe) gapsEndedBetween(after, before time.Time) []demoGap {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []demoGap
	for _, g := range p.gaps {
		if g.to.After(after) && !g.to.After(before) {
			out = append(out, g)
		}
	}
	return out
}

// demoPrinter writes the demo's lines and its one status line: redrawn in
// place on a terminal, printed only when it changes otherwise.
type demoPrinter struct {
	mu         sync.Mutex
	w          io.Writer
	tty        bool
	stdinTTY   bool
	drawn      bool
	lastStatus string
}

func newDemoPrinter(w io.Writer) *demoPrinter {
	p := &demoPrinter{w: w}
	if f, ok := w.(*os.File); ok {
		p.tty = isTerminal(f)
	}
	p.stdinTTY = isTerminal(os.Stdin)
	return p
}

// isTerminal asks the terminal driver (/dev/null is a character device
// too, so the file mode alone would not do).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	return isTTY(f.Fd())
}

func (p *demoPrinter) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		io.WriteString(p.w, "\r\033[K")
		p.drawn = false
	}
	io.WriteString(p.w, s+"\n")
	if p.tty && p.lastStatus != "" {
		io.WriteString(p.w, p.lastStatus)
		p.drawn = true
	}
}

// status shows s as the status line. Off a terminal, only a change of
// everything but the clock and counters is printed, to keep logs short.
func (p *demoPrinter) status(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		io.WriteString(p.w, "\r\033[K"+s)
		p.drawn, p.lastStatus = true, s
		return
	}
	key := statusKey(s)
	if key != statusKey(p.lastStatus) {
		io.WriteString(p.w, s+"\n")
	}
	p.lastStatus = s
}

var lagRe = regexp.MustCompile(` lag [0-9.]+ [KMG]?i?B`)

// statusKey drops the time, the lag and the probe counter from a status line.
func statusKey(s string) string {
	s = lagRe.ReplaceAllString(s, "")
	if i := strings.IndexByte(s, ' '); i >= 0 && strings.Count(s[:i], ":") == 2 {
		s = s[i+1:]
	}
	if i := strings.Index(s, " · probe "); i >= 0 {
		s = s[:i]
	}
	if i := strings.Index(s, "waiting for the cluster ("); i >= 0 {
		s = s[i:]
		if j := strings.Index(s, "): "); j >= 0 {
			s = s[j:]
		}
	}
	return s
}

// clear removes the status line from a terminal and forgets it.
func (p *demoPrinter) clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		io.WriteString(p.w, "\r\033[K")
		p.drawn = false
	}
	p.lastStatus = ""
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func indent(s string) string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		lines[i] = "    " + lines[i]
	}
	return strings.Join(lines, "\n")
}
