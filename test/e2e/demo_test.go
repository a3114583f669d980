package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// TestDemo runs `pgbattery demo` the way a newcomer would, and checks what
// its output promises: the psql command connects through the gateway,
// killing the printed pid makes another node primary (the demo reports the
// failover and its write gap), the data written before the kill is there
// after it, and Ctrl-C leaves no process and no directory behind.
//
// The demo puts all its nodes on 127.0.0.1 with consecutive ports. To keep
// parallel test binaries apart, the test reserves a loopback address with
// testutil.Addr and uses its last octet N only to pick the port range
// 20000+50*N ... +49: two tests holding different addresses never share a
// range, and 20000-32749 stays below the usual ephemeral range.
//
// One psql process, connected with the printed command before the kill,
// stays connected through it: after the failover the same session writes
// and reads every row, and psql never reports a lost connection.
func TestDemo(t *testing.T) {
	psql := findPsql(t)
	addr := testutil.Addr(t)
	octet, err := strconv.Atoi(addr[strings.LastIndexByte(addr, '.')+1:])
	if err != nil {
		t.Fatalf("parsing the reserved address %s: %v", addr, err)
	}
	basePort := 20000 + 50*octet

	// The demo makes its directory under TMPDIR; point that at a test
	// directory (traversable by the postgres OS user) so that even a failed
	// run leaves nothing in the system's temp dir.
	tmp := testutil.TempDir(t)
	d := startDemo(t, tmp, "-base-port", strconv.Itoa(basePort))

	d.waitForLine(t, 3*time.Minute, "==> Cluster ready")
	// The what-to-do-next block ends with the Ctrl-C line.
	d.waitForLine(t, 10*time.Second, "Ctrl-C stops every node")
	out := d.output()
	dir := d.match(t, `Data, configs and logs: (\S+)`)
	if !strings.HasPrefix(dir, tmp) {
		t.Fatalf("demo directory %s is not under TMPDIR %s", dir, tmp)
	}
	conninfo := d.match(t, `psql "([^"]+)"`)
	if want := strconv.Itoa(basePort); !regexp.MustCompile(`port=(\d+,)*` + want + `\b`).MatchString(conninfo) {
		t.Fatalf("printed psql command %q does not list the first gateway (port %s)", conninfo, want)
	}
	if d.match(t, `kill -9 (\d+)`) == "" {
		t.Fatalf("no pid to kill in the demo's output:\n%s", out)
	}

	// Idempotent statements, retried for a bounded time: on an overloaded
	// machine the cluster may fail over by itself right after it is ready,
	// and a newcomer would simply run the command again.
	retryPsql(t, psql, conninfo, "CREATE TABLE IF NOT EXISTS newcomer (id int PRIMARY KEY, note text)")
	retryPsql(t, psql, conninfo, "INSERT INTO newcomer SELECT g, 'before failover' FROM generate_series(1, 100) g ON CONFLICT DO NOTHING")

	// The newcomer's psql session, left open across the kill.
	sess := exec.Command(psql, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=0", conninfo)
	sessIn, err := sess.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	sessOut, err := sess.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var sessErr lockedBuffer
	sess.Stderr = &sessErr
	if err := sess.Start(); err != nil {
		t.Fatalf("starting psql: %v", err)
	}
	t.Cleanup(func() {
		sessIn.Close()
		sess.Process.Kill()
		sess.Wait()
	})
	lines := lineReader(sessOut)
	fmt.Fprintln(sessIn, "SELECT 'BEFORE', count(*) FROM newcomer;")
	if l := waitLine(t, "psql before the kill", lines, "BEFORE", 30*time.Second); l != "BEFORE|100" {
		t.Fatalf("psql before the kill: %q, want BEFORE|100 (stderr: %s)", l, sessErr.String())
	}

	// Kill the primary as the output says: the pid is printed after
	// "kill -9" and, should the primary have changed since, in the newest
	// status line ("primary nodeN (pid P)").
	primaryRe := regexp.MustCompile(`primary node\d+ \(pid (\d+)\)`)
	var pid int
	waitFor(t, 30*time.Second, "a status line naming the primary", func() bool {
		m := primaryRe.FindAllStringSubmatch(d.output(), -1)
		if len(m) == 0 {
			return false
		}
		pid, _ = strconv.Atoi(m[len(m)-1][1])
		return pid > 0
	})
	mark := d.lineCount()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", pid, err)
	}
	report := d.waitForLineAfter(t, 90*time.Second, "==> Failover:", mark)
	if !regexp.MustCompile(`write gap \d+\.\d+s`).MatchString(report) {
		t.Fatalf("failover report without a measured write gap: %q", report)
	}
	t.Logf("demo reported: %s", report)

	// The same psql session goes on: it writes and finds every row.
	fmt.Fprintln(sessIn, "INSERT INTO newcomer VALUES (102, 'same session after failover') ON CONFLICT DO NOTHING;")
	fmt.Fprintln(sessIn, "SELECT 'AFTER', count(*) FROM newcomer WHERE id <= 100 OR id = 102;")
	if l := waitLine(t, "the same psql session after the failover", lines, "AFTER", 90*time.Second); l != "AFTER|101" {
		t.Fatalf("the same psql session after the failover: %q, want AFTER|101 (stderr: %s)", l, sessErr.String())
	}
	if e := sessErr.String(); e != "" {
		t.Errorf("psql reported on stderr across the failover (the session must not notice it): %s", e)
	}

	// A new connection reaches the new primary too and finds every row
	// written before the kill.
	// Idempotent, since a timed-out attempt may still have committed.
	var got string
	var lastErr error
	deadline := time.Now().Add(90 * time.Second)
	for got != "102" {
		if time.Now().After(deadline) {
			t.Fatalf("rows through a new gateway connection after failover: %q (last error: %v), want 102", got, lastErr)
		}
		got, lastErr = psqlOutput(psql, conninfo,
			"INSERT INTO newcomer VALUES (101, 'after failover') ON CONFLICT DO NOTHING; SELECT count(*) FROM newcomer")
		if lastErr != nil {
			t.Logf("retrying: %v", lastErr)
			time.Sleep(time.Second)
		}
	}
	// The killed node comes back and rejoins.
	d.waitForLineAfter(t, 60*time.Second, "==> restarted node", mark)

	pids := demoProcesses(dir)
	if len(pids) == 0 {
		t.Fatalf("found no process of the demo under %s before stopping it", dir)
	}
	code := d.interrupt(t, 90*time.Second)
	if code != 0 {
		t.Fatalf("demo exited %d after SIGINT; output:\n%s", code, d.output())
	}
	waitFor(t, 15*time.Second, "every demo process to be gone", func() bool {
		for _, p := range pids {
			if processAlive(p) && !isZombie(p) {
				return false
			}
		}
		return len(demoProcesses(dir)) == 0
	})
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("demo directory %s still exists after Ctrl-C (stat: %v)", dir, err)
	}
	if !strings.Contains(d.output(), "removed "+dir) {
		t.Errorf("demo did not say it removed %s:\n%s", dir, lastLines(d.output(), 10))
	}
}

// TestDemoPortTaken checks that a taken port is reported before anything
// starts, naming the port and what it is for.
func TestDemoPortTaken(t *testing.T) {
	addr := testutil.Addr(t)
	octet, _ := strconv.Atoi(addr[strings.LastIndexByte(addr, '.')+1:])
	basePort := 20000 + 50*octet
	// Occupy node2's HTTP port (base+10+3).
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", basePort+13))
	if err != nil {
		t.Skipf("cannot occupy the port for the test: %v", err)
	}
	defer l.Close()
	tmp := testutil.TempDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "demo", "-base-port", strconv.Itoa(basePort))
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("demo with a taken port: %v, want exit 1; output:\n%s", err, out)
	}
	want := fmt.Sprintf("Port %d on 127.0.0.1 (node2's HTTP API) is not free", basePort+13)
	if !strings.Contains(string(out), want) {
		t.Fatalf("output does not say %q:\n%s", want, out)
	}
	entries, _ := os.ReadDir(tmp)
	if len(entries) != 0 {
		t.Fatalf("the failed demo left %d entries in TMPDIR (%v)", len(entries), entries[0].Name())
	}
}

// demoProc is a running `pgbattery demo` with its output collected.
type demoProc struct {
	cmd     *exec.Cmd
	mu      sync.Mutex
	out     bytes.Buffer
	lines   []string
	changed chan struct{}
	done    chan struct{}
	waitErr error
	dir     string // set once known, for the cleanup's sweep
}

func startDemo(t *testing.T, tmpdir string, args ...string) *demoProc {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"demo"}, args...)...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmpdir)
	// Its own process group, as a shell job would be.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	d := &demoProc{cmd: cmd, changed: make(chan struct{}, 1), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting pgbattery demo: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			d.mu.Lock()
			d.out.WriteString(sc.Text() + "\n")
			d.lines = append(d.lines, sc.Text())
			d.mu.Unlock()
			select {
			case d.changed <- struct{}{}:
			default:
			}
		}
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		if dir := d.demoDir(); t.Failed() && dir != "" {
			// Ctrl-C removes the directory: show the agents' logs first.
			logs, _ := filepath.Glob(filepath.Join(dir, "node*", "agent.log"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("%s (last 60 lines):\n%s", l, lastLines(string(b), 60))
			}
		}
		select {
		case <-d.done:
		default:
			cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-d.done:
			case <-time.After(60 * time.Second):
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-d.done
			}
		}
		// Whatever happened, no process of this demo may outlive the test.
		if dir := d.demoDir(); dir != "" {
			for _, p := range demoProcesses(dir) {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
		if t.Failed() {
			t.Logf("demo output:\n%s", d.output())
		}
	})
	return d
}

func (d *demoProc) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.out.String()
}

func (d *demoProc) demoDir() string {
	m := regexp.MustCompile(`Data, configs and logs: (\S+)`).FindStringSubmatch(d.output())
	if m == nil {
		return ""
	}
	return m[1]
}

// match returns the first submatch of re in the output so far.
func (d *demoProc) match(t *testing.T, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(d.output())
	if m == nil {
		t.Fatalf("demo output has nothing matching %s:\n%s", re, d.output())
	}
	return m[1]
}

// waitForLine waits for a line containing s and returns the first one.
func (d *demoProc) waitForLine(t *testing.T, timeout time.Duration, s string) string {
	t.Helper()
	return d.waitForLineAfter(t, timeout, s, 0)
}

func (d *demoProc) lineCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.lines)
}

// waitForLineAfter waits for a line containing s among the lines after
// the first skip ones, and returns it.
func (d *demoProc) waitForLineAfter(t *testing.T, timeout time.Duration, s string, skip int) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		d.mu.Lock()
		for _, l := range d.lines[min(skip, len(d.lines)):] {
			if strings.Contains(l, s) {
				d.mu.Unlock()
				return l
			}
		}
		d.mu.Unlock()
		select {
		case <-d.changed:
		case <-d.done:
			t.Fatalf("demo exited (%v) before printing %q", d.waitErr, s)
		case <-deadline:
			t.Fatalf("demo did not print %q within %s", s, timeout)
		}
	}
}

// interrupt sends SIGINT (Ctrl-C) and returns the exit code.
func (d *demoProc) interrupt(t *testing.T, timeout time.Duration) int {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatalf("SIGINT to the demo: %v", err)
	}
	select {
	case <-d.done:
	case <-time.After(timeout):
		t.Fatalf("demo did not exit within %s of SIGINT", timeout)
	}
	if ee, ok := d.waitErr.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if d.waitErr != nil {
		t.Fatalf("waiting for the demo: %v", d.waitErr)
	}
	return 0
}

// demoProcesses lists the processes whose command line mentions dir: the
// agents (-config-file=dir/...) and every postgres (-D dir/...).
func demoProcesses(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(dir)) || isZombie(pid) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...; comm may contain spaces, so look after ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// findPsql finds the psql client: PATH, then Debian's versioned dirs.
func findPsql(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("psql"); err == nil {
		return p
	}
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/psql")
	if len(matches) > 0 {
		return matches[len(matches)-1]
	}
	t.Skip("psql not found (install postgresql-client); the demo test drives the gateway with it")
	return ""
}

func psqlOutput(psql, conninfo, sql string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql, conninfo)
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		return s, fmt.Errorf("psql -c %q: %v: %s", sql, err, s)
	}
	return s, nil
}

// retryPsql runs an idempotent statement until it succeeds, for at most a
// minute, logging every failure.
func retryPsql(t *testing.T, psql, conninfo, sql string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := psqlOutput(psql, conninfo, sql)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		t.Logf("retrying: %v", err)
		time.Sleep(time.Second)
	}
}
