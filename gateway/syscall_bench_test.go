//go:build bench

package gateway

// System calls and context switches per pgbench transaction, directly,
// through the gateway and through PgBouncer: numbers that do not depend on
// how loaded the machine is, unlike TPS (TestGatewayBench). Run:
//
//	go test -tags bench -run TestGatewaySyscalls -v ./gateway/
//
// Needs perf (linux-perf) and permission to read syscall tracepoints (root).
// Each count is the difference between a long and a short pgbench run of
// one client, divided by the difference in transactions, so connection
// set-up drops out. Knobs: PGB_SYSCALL_TX (default 5000).

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// syscallEvents are the perf events counted per process.
var syscallEvents = []string{
	"context-switches", "raw_syscalls:sys_enter",
	"syscalls:sys_enter_read", "syscalls:sys_enter_write",
	"syscalls:sys_enter_recvfrom", "syscalls:sys_enter_sendto",
	"syscalls:sys_enter_futex", "syscalls:sys_enter_epoll_pwait", "syscalls:sys_enter_epoll_wait",
	"syscalls:sys_enter_nanosleep",
}

func TestGatewaySyscalls(t *testing.T) {
	perf, err := exec.LookPath("perf")
	if err != nil {
		t.Skip("perf not installed")
	}
	pgbench := findProgram(t, "/usr/lib/postgresql/15/bin/pgbench", "/usr/bin/pgbench")
	txs, _ := strconv.Atoi(envOr("PGB_SYSCALL_TX", "5000"))
	short := txs / 5

	host := testutil.Addr(t)
	pg := startPostgres(t, host)
	startGateway(t, pg, host, func(c *Config) { c.ReadOnlyAddr = ""; c.Metrics = agentLikeMetrics(t) })
	sizeProcsLikeAgent(t)
	targets := []benchTarget{{"direct", host, "5433"}, {"gateway", host, "5432"}}
	pids := map[string]int{"gateway": os.Getpid()}
	if bouncer := startPgBouncer(t, pg, host); bouncer != nil {
		targets = append(targets, *bouncer)
		pids["pgbouncer"] = readPidFile(t, filepath.Join(filepath.Dir(findPgBouncerIni(t)), "pgbouncer.pid"))
	}
	postmaster := readPidFile(t, filepath.Join(pg.dir, "data", "postmaster.pid"))
	env := func(tg benchTarget) []string {
		return append(os.Environ(), "PGHOST="+tg.host, "PGPORT="+tg.port, "PGUSER=alice",
			"PGPASSWORD="+alicePassword, "PGDATABASE=alice", "PGSSLMODE=disable")
	}
	if out, err := runWithTimeout(t, 5*time.Minute, env(targets[0]), pgbench, "-i", "-q", "-s", "1"); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	if hold := os.Getenv("PGB_SYSCALL_HOLD"); hold != "" {
		// Keep everything up for measuring by hand, until the file named
		// by PGB_SYSCALL_HOLD exists.
		fmt.Printf("holding until %s exists: host %s, gateway pid %d, pgbouncer pid %d, postmaster %d\n", hold, host, os.Getpid(), pids["pgbouncer"], postmaster)
		for deadline := time.Now().Add(time.Hour); time.Now().Before(deadline); time.Sleep(time.Second) {
			if _, err := os.Stat(hold); err == nil {
				break
			}
		}
		return
	}

	// run counts events of the proxy, the server and pgbench itself during
	// one pgbench run of n transactions.
	run := func(tg benchTarget, mode string, n int) map[string]map[string]float64 {
		dir := t.TempDir()
		// The server: the postmaster (its new back ends inherit the
		// counters) and the back ends it already has (PgBouncer's pool).
		watch := map[string]string{"server": strings.Join(append([]string{strconv.Itoa(postmaster)}, childPids(postmaster)...), ",")}
		if pid, ok := pids[tg.name]; ok {
			watch["proxy"] = strconv.Itoa(pid)
		}
		type watcher struct {
			cmd *exec.Cmd
			out string
		}
		ws := map[string]watcher{}
		for name, pid := range watch {
			out := filepath.Join(dir, name)
			args := []string{"stat", "-x", ",", "-o", out, "-e", strings.Join(syscallEvents, ","), "-p", pid}
			if name == "proxy" && pid == strconv.Itoa(os.Getpid()) {
				// The gateway is this process, and pgbench its child:
				// count this process's own threads only.
				args = append(args, "--no-inherit")
			}
			cmd := exec.Command(perf, args...)
			if err := cmd.Start(); err != nil {
				t.Fatalf("perf: %v", err)
			}
			ws[name] = watcher{cmd, out}
		}
		time.Sleep(500 * time.Millisecond) // let perf attach
		clientOut := filepath.Join(dir, "client")
		args := []string{"stat", "-x", ",", "-o", clientOut, "-e", strings.Join(syscallEvents, ","), "--",
			pgbench, "-n", "-S", "-M", mode, "-c", "1", "-t", strconv.Itoa(n)}
		if out, err := runWithTimeout(t, 5*time.Minute, env(tg), perf, args...); err != nil {
			t.Fatalf("pgbench against %s: %v\n%s", tg.name, err, out)
		}
		res := map[string]map[string]float64{"client": parsePerfStat(t, clientOut)}
		for name, w := range ws {
			w.cmd.Process.Signal(syscall.SIGINT)
			w.cmd.Wait()
			res[name] = parsePerfStat(t, w.out)
		}
		return res
	}

	var rep strings.Builder
	fmt.Fprintf(&rep, "Per transaction (pgbench -S -c 1, (%d tx run - %d tx run) / %d):\n\n", txs, short, txs-short)
	fmt.Fprintf(&rep, "| mode | target | process | ctx switches | syscalls | read | write | recvfrom | sendto | futex | epoll_pwait | epoll_wait | nanosleep |\n")
	fmt.Fprintf(&rep, "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, mode := range []string{"simple", "extended", "prepared"} {
		for _, tg := range targets {
			run(tg, mode, short) // warm up
			a := run(tg, mode, short)
			b := run(tg, mode, txs)
			for _, proc := range []string{"client", "proxy", "server"} {
				if _, ok := b[proc]; !ok {
					continue
				}
				fmt.Fprintf(&rep, "| %s | %s | %s |", mode, tg.name, proc)
				for _, ev := range syscallEvents {
					fmt.Fprintf(&rep, " %.2f |", (b[proc][ev]-a[proc][ev])/float64(txs-short))
				}
				fmt.Fprintln(&rep)
			}
		}
	}
	t.Log("\n" + rep.String())
	fmt.Println(rep.String())
}

// childPids lists the processes whose parent is pid.
func childPids(pid int) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, e.Name())
		}
	}
	return out
}

func readPidFile(t *testing.T, path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pid
}

// findPgBouncerIni finds the ini startPgBouncer wrote, from the process
// table (it does not return its directory).
func findPgBouncerIni(t *testing.T) string {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) == 2 && strings.HasSuffix(args[0], "pgbouncer") && os.Getppid() != pid {
			if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
				// Only ours: its parent is this process.
				f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
				if len(f) > 1 && f[1] == strconv.Itoa(os.Getpid()) {
					return args[1]
				}
			}
		}
	}
	t.Fatal("pgbouncer process not found")
	return ""
}

// parsePerfStat reads perf stat -x , output: value,unit,event,...
func parsePerfStat(t *testing.T, path string) map[string]float64 {
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("perf output: %v", err)
	}
	defer f.Close()
	res := map[string]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), ",")
		if len(fs) < 3 {
			continue
		}
		v, err := strconv.ParseFloat(fs[0], 64)
		if err != nil {
			continue
		}
		res[fs[2]] = v
	}
	return res
}
