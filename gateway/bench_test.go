//go:build bench

package gateway

// The gateway benchmark (issue 5, make bench): pgbench through the gateway
// against PostgreSQL directly and PgBouncer (session pooling), alternating,
// with medians and ratios; gateway-added latency at -c 1; gateway memory at
// 500 idle sessions. Run:
//
//	go test -tags bench -run TestGatewayBench -v -timeout 90m ./gateway/
//
// Knobs (environment): PGB_BENCH_DURATION (default 15s), PGB_BENCH_ROUNDS
// (default 3), PGB_BENCH_SCALE (default 10), PGB_BENCH_CLIENTS (default
// "1,32"), PGB_BENCH_OUT (also write the report to this file).

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgbattery/pgbattery/agent/procs"
	"github.com/pgbattery/pgbattery/test/testutil"
)

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

type benchTarget struct {
	name string
	host string
	port string
}

// sizeProcsLikeAgent runs the agent's scheduler sizing (agent/procs) in
// this process, which is the gateway's, until the test ends: the benchmark
// measures the gateway as the agent runs it.
func sizeProcsLikeAgent(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); procs.New(hclog.NewNullLogger()).Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestGatewayBench(t *testing.T) {
	duration, err := time.ParseDuration(envOr("PGB_BENCH_DURATION", "15s"))
	if err != nil {
		t.Fatal(err)
	}
	rounds, _ := strconv.Atoi(envOr("PGB_BENCH_ROUNDS", "3"))
	scale := envOr("PGB_BENCH_SCALE", "10")
	var clients []int
	for _, c := range strings.Split(envOr("PGB_BENCH_CLIENTS", "1,32"), ",") {
		n, _ := strconv.Atoi(c)
		clients = append(clients, n)
	}
	pgbench := findProgram(t, "/usr/lib/postgresql/15/bin/pgbench", "/usr/bin/pgbench")
	started, loadStart := time.Now(), loadAverage()

	host := testutil.Addr(t)
	pg := startPostgres(t, host, "max_connections=700", "shared_buffers=256MB")
	g := startGateway(t, pg, host, func(c *Config) { c.ReadOnlyAddr = ""; c.Metrics = agentLikeMetrics(t) })
	sizeProcsLikeAgent(t)
	targets := []benchTarget{{"direct", host, "5433"}, {"gateway", host, "5432"}}
	if bouncer := startPgBouncer(t, pg, host); bouncer != nil {
		targets = append(targets, *bouncer)
	} else {
		t.Log("pgbouncer not installed: comparing direct and gateway only")
	}

	env := func(tg benchTarget) []string {
		return append(os.Environ(), "PGHOST="+tg.host, "PGPORT="+tg.port, "PGUSER=alice",
			"PGPASSWORD="+alicePassword, "PGDATABASE=alice", "PGSSLMODE=disable")
	}
	if out, err := runWithTimeout(t, 10*time.Minute, env(targets[0]), pgbench, "-i", "-q", "-s", scale); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}

	modes := []string{"simple", "extended", "prepared"}
	tps := map[string][]float64{} // mode/c/target → per-round tps
	lat := map[string][]float64{} // mode/target → latencies (µs) at -c 1
	logDir := t.TempDir()
	for round := 0; round < rounds; round++ {
		for _, mode := range modes {
			for _, c := range clients {
				// Rotate the order each round so no target always runs
				// first (warm caches) or last.
				order := slices.Clone(targets)
				for i := 0; i < round%len(order); i++ {
					order = append(order[1:], order[0])
				}
				for _, tg := range order {
					args := []string{"-n", "-S", "-M", mode, "-c", strconv.Itoa(c), "-j", strconv.Itoa(min(c, 2)),
						"-T", strconv.Itoa(int(duration.Seconds()))}
					prefix := filepath.Join(logDir, fmt.Sprintf("%s_%s_%d", tg.name, mode, round))
					if c == 1 {
						args = append(args, "-l", "--log-prefix="+prefix)
					}
					out, err := runWithTimeout(t, duration+2*time.Minute, env(tg), pgbench, args...)
					if err != nil {
						t.Fatalf("pgbench %v against %s: %v\n%s", args, tg.name, err, out)
					}
					v := parseTPS(out)
					key := fmt.Sprintf("%s/%d/%s", mode, c, tg.name)
					tps[key] = append(tps[key], v)
					t.Logf("round %d %-8s -c %-2d %-9s tps %.0f", round+1, mode, c, tg.name, v)
					if c == 1 {
						lat[mode+"/"+tg.name] = append(lat[mode+"/"+tg.name], readLatencies(t, prefix)...)
					}
				}
			}
		}
	}

	loadEnd := loadAverage()
	hasBouncer := len(targets) > 2
	var rep strings.Builder
	fmt.Fprintf(&rep, "pgbench -S (select-only), -s %s, -j 2 (1 at -c 1), %s per run, %d rounds alternating; median TPS\n", scale, duration, rounds)
	fmt.Fprintf(&rep, "run: %s to %s UTC; load average (1/5/15 min) at start %s, at end %s\n",
		started.UTC().Format("2006-01-02 15:04"), time.Now().UTC().Format("15:04"), loadStart, loadEnd)
	fmt.Fprintf(&rep, "machine: %d CPUs (%s), PostgreSQL 15, everything on one host over loopback\n", runtime.NumCPU(), runtime.GOARCH)
	if v, set := os.LookupEnv("GOMAXPROCS"); set {
		fmt.Fprintf(&rep, "gateway: GOMAXPROCS=%s from the environment\n\n", v)
	} else {
		fmt.Fprintf(&rep, "gateway: GOMAXPROCS sized to the load as in the agent (agent/procs)\n\n")
	}
	fmt.Fprintf(&rep, "| mode | clients |")
	for _, tg := range targets {
		fmt.Fprintf(&rep, " %s |", tg.name)
	}
	for _, tg := range targets[1:] {
		fmt.Fprintf(&rep, " %s/direct |", tg.name)
	}
	cols := 2*len(targets) - 1
	if hasBouncer {
		fmt.Fprintf(&rep, " gateway/pgbouncer |")
		cols++
	}
	fmt.Fprintf(&rep, "\n|---|---|%s\n", strings.Repeat("---|", cols))
	for _, mode := range modes {
		for _, c := range clients {
			fmt.Fprintf(&rep, "| %s | %d |", mode, c)
			med := func(name string) float64 { return median(tps[fmt.Sprintf("%s/%d/%s", mode, c, name)]) }
			for _, tg := range targets {
				fmt.Fprintf(&rep, " %.0f |", med(tg.name))
			}
			for _, tg := range targets[1:] {
				fmt.Fprintf(&rep, " %.2f |", med(tg.name)/med("direct"))
			}
			if hasBouncer {
				fmt.Fprintf(&rep, " %.2f |", med("gateway")/med("pgbouncer"))
			}
			fmt.Fprintln(&rep)
		}
	}
	fmt.Fprintf(&rep, "\nPer-round TPS (the spread shows the noise):\n\n")
	for _, mode := range modes {
		for _, c := range clients {
			for _, tg := range targets {
				v := tps[fmt.Sprintf("%s/%d/%s", mode, c, tg.name)]
				parts := make([]string, len(v))
				for i, x := range v {
					parts[i] = strconv.FormatFloat(x, 'f', 0, 64)
				}
				fmt.Fprintf(&rep, "    %-8s -c %-2d %-9s %s\n", mode, c, tg.name, strings.Join(parts, " "))
			}
		}
	}
	if slices.Contains(clients, 1) {
		fmt.Fprintf(&rep, "\nLatency at -c 1 (µs per transaction, all rounds): p50 / p99, and what the proxy adds over direct\n\n")
		fmt.Fprintf(&rep, "| mode | target | p50 | p99 | added p50 | added p99 |\n|---|---|---|---|---|---|\n")
		for _, mode := range modes {
			d := lat[mode+"/direct"]
			dp50, dp99 := percentile(d, 50), percentile(d, 99)
			for _, tg := range targets {
				l := lat[mode+"/"+tg.name]
				p50, p99 := percentile(l, 50), percentile(l, 99)
				fmt.Fprintf(&rep, "| %s | %s | %.0f | %.0f | %+.0f | %+.0f |\n", mode, tg.name, p50, p99, p50-dp50, p99-dp99)
			}
		}
	}

	_ = g
	t.Log("\n" + rep.String())
	fmt.Println(rep.String())
	if out := os.Getenv("PGB_BENCH_OUT"); out != "" {
		if err := os.WriteFile(out, []byte(rep.String()), 0o644); err != nil {
			t.Errorf("writing %s: %v", out, err)
		}
	}
}

// loadAverage is /proc/loadavg's first three fields.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func parseTPS(out string) float64 {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "tps = ") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[2], 64)
			return v
		}
	}
	return 0
}

// readLatencies reads pgbench -l logs: the third field is the latency in µs.
func readLatencies(t *testing.T, prefix string) []float64 {
	files, _ := filepath.Glob(prefix + ".*")
	var out []float64
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) >= 3 {
				if v, err := strconv.ParseFloat(fs[2], 64); err == nil {
					out = append(out, v)
				}
			}
		}
		fh.Close()
		os.Remove(f)
	}
	return out
}

func median(v []float64) float64 { return percentile(v, 50) }

func percentile(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}

// startPgBouncer runs Debian's pgbouncer in session pooling mode on
// host:6432 in front of pg, with alice's SCRAM secret in its auth file.
func startPgBouncer(t *testing.T, pg *pgServer, host string) *benchTarget {
	bin := "/usr/sbin/pgbouncer"
	if _, err := os.Stat(bin); err != nil {
		return nil
	}
	ctx := context.Background()
	admin := pg.superConn(t, ctx)
	var secret string
	if err := admin.QueryRow(ctx, "SELECT rolpassword FROM pg_authid WHERE rolname = 'alice'").Scan(&secret); err != nil {
		t.Fatal(err)
	}
	admin.Close(ctx)
	dir := testutil.TempDir(t)
	ini := fmt.Sprintf(`[databases]
alice = host=%s port=5433 dbname=alice
[pgbouncer]
listen_addr = %s
listen_port = 6432
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %s/userlist.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 100
logfile = %s/pgbouncer.log
pidfile = %s/pgbouncer.pid
`, host, host, dir, dir, dir)
	os.WriteFile(filepath.Join(dir, "pgbouncer.ini"), []byte(ini), 0o644)
	os.WriteFile(filepath.Join(dir, "userlist.txt"), []byte(fmt.Sprintf("%q %q\n", "alice", secret)), 0o644)
	for _, f := range []string{"", "pgbouncer.ini", "userlist.txt"} {
		testutil.ChownToPostgres(t, filepath.Join(dir, f))
	}
	cmd := exec.Command(bin, filepath.Join(dir, "pgbouncer.ini"))
	asPostgres(t, cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting pgbouncer: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(host, "6432"), time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("pgbouncer did not start: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return &benchTarget{"pgbouncer", host, "6432"}
}

// TestGatewayIdleMemory measures what 500 idle sessions cost the gateway
// (issue 5 goal: agent RSS under 64 MB). The gateway runs in the test
// process; the client side is 500 raw sockets.
func TestGatewayIdleMemory(t *testing.T) {
	host := testutil.Addr(t)
	pg := startPostgres(t, host, "max_connections=700")
	g := startGateway(t, pg, host, func(c *Config) { c.ReadOnlyAddr = "" })
	n, _ := strconv.Atoi(envOr("PGB_IDLE_SESSIONS", "500"))
	rep := idleMemory(t, g, n)
	t.Log(rep)
	fmt.Println(rep)
}

// idleMemory opens n idle sessions through the gateway (raw start-up, tiny
// client side) and reports the process RSS growth.
func idleMemory(t *testing.T, g *testGateway, n int) string {
	// Warm up: one session with traffic, so lazily allocated runtime
	// structures are counted in "before".
	if c, err := rawSession(g); err == nil {
		c.Close()
	}
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	before := rssKB(t)
	conns := make([]*pgxConnCloser, 0, n)
	for i := 0; i < n; i++ {
		c, err := rawSession(g)
		if err != nil {
			t.Fatalf("idle session %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	after := rssKB(t)
	if len(g.Sessions()) != n {
		t.Fatalf("%d sessions open, want %d", len(g.Sessions()), n)
	}
	for _, c := range conns {
		c.Close()
	}
	heap := int64(m1.HeapInuse+m1.StackInuse) - int64(m0.HeapInuse+m0.StackInuse)
	return fmt.Sprintf("%d idle sessions: process RSS %d MiB -> %d MiB (%+d MiB, %.0f KiB/session); Go heap+stacks in use %+d MiB (%.0f KiB/session). Gateway in the test process; client side is %d raw sockets.",
		n, before/1024, after/1024, (after-before)/1024, float64(after-before)/float64(n), heap>>20, float64(heap)/1024/float64(n), n)
}

type pgxConnCloser struct{ net.Conn }

// rawSession logs in as alice with a hand-made SCRAM exchange and leaves the
// session idle.
func rawSession(g *testGateway) (*pgxConnCloser, error) {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(g.host, "5432"), 5*time.Second)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	conn.Write(startupBytes(0, "user", "alice", "database", "alice"))
	r := bufio.NewReader(conn)
	c := &testClient{password: alicePassword, gs2: "n,,"}
	for {
		typ, body, err := readStartupReply(r)
		if err != nil {
			conn.Close()
			return nil, err
		}
		switch typ {
		case 'R':
			switch body[3] {
			case 10:
				first := c.first()
				m := append(cstr(scramMechanism), 0, 0, 0, byte(len(first)))
				conn.Write(msg('p', m, []byte(first)))
			case 11:
				conn.Write(msg('p', []byte(c.final(string(body[4:])))))
			}
		case 'E':
			conn.Close()
			return nil, fmt.Errorf("error %q", body)
		case 'Z':
			conn.SetDeadline(time.Time{})
			return &pgxConnCloser{conn}, nil
		}
	}
}

func rssKB(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			v, _ := strconv.Atoi(strings.Fields(line)[1])
			return v
		}
	}
	return 0
}

// TestGatewayHold starts PostgreSQL and a gateway and keeps them up for
// PGB_HOLD (default 60s), for poking at by hand (pgbench, strace, perf).
func TestGatewayHold(t *testing.T) {
	hold, _ := time.ParseDuration(envOr("PGB_HOLD", "60s"))
	host := testutil.Addr(t)
	pg := startPostgres(t, host, "max_connections=700")
	startGateway(t, pg, host, func(c *Config) { c.ReadOnlyAddr = "" })
	fmt.Printf("HOLD postgres %s:5433 gateway %s:5432 user alice password %q\n", host, host, alicePassword)
	time.Sleep(hold)
}
