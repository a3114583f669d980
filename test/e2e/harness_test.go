package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// binary is the pgbattery binary built once for the whole package.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pgbattery-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// The binary must be reachable by the postgres OS user in the
	// unprivileged-agent test.
	os.Chmod(dir, 0o755)
	binary = filepath.Join(dir, "pgbattery")
	build := exec.Command("go", "build", "-o", binary, "github.com/pgbattery/pgbattery")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building pgbattery:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// agentProc is one `pgbattery agent` process under test.
type agentProc struct {
	t       testing.TB
	name    string
	addr    string
	dir     string // the node's directory: config and data_dir live here
	cfgFile string
	cmd     *exec.Cmd
	logMu   sync.Mutex
	log     bytes.Buffer
	waitErr chan error
	asUser  *syscall.Credential
}

// nodeOpts shape a test node's configuration.
type nodeOpts struct {
	postgres bool   // run PostgreSQL (false: a witness without it)
	expect   int    // bootstrap_expect; 0 means 1
	extraHCL string // appended to the generated config
	asUser   string // OS user to run the agent as (only when the test is root)
}

// newNode writes a config for a node on its own loopback address.
func newNode(t testing.TB, name string, o nodeOpts) *agentProc {
	t.Helper()
	addr := testutil.Addr(t)
	dir := testutil.TempDir(t)
	p := &agentProc{t: t, name: name, addr: addr, dir: dir, cfgFile: filepath.Join(dir, name+".hcl")}
	hcl := fmt.Sprintf(`
node_name        = %q
data_dir         = %q
bind_addr        = %q
server           = true
bootstrap_expect = %d
log_level        = "debug"
postgres {
  enabled = %t
}
%s
`, name, filepath.Join(dir, "data"), addr, max(o.expect, 1), o.postgres, o.extraHCL)
	if err := os.WriteFile(p.cfgFile, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	if o.asUser != "" && testutil.IsRoot() {
		u, err := user.Lookup(o.asUser)
		if err != nil {
			t.Fatalf("looking up %s: %v", o.asUser, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		p.asUser = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func (p *agentProc) httpAddr() string { return net.JoinHostPort(p.addr, "8432") }
func (p *agentProc) serfAddr() string { return net.JoinHostPort(p.addr, "8301") }
func (p *agentProc) dataDir() string  { return filepath.Join(p.dir, "data") }

// start runs the agent with extra flags; the process is stopped at cleanup.
func (p *agentProc) start(flags ...string) {
	p.t.Helper()
	p.startIn(nil, flags...)
}

// startIn starts the agent, inside the cgroup whose directory cgroup is
// open when it is not nil. The child is created there (clone3's
// CLONE_INTO_CGROUP): moving it after exec would race with the sockets it
// opens first, which keep the cgroup they were created in, so partition
// rules matching on the cgroup would miss them.
func (p *agentProc) startIn(cgroup *os.File, flags ...string) {
	p.t.Helper()
	args := append([]string{"agent", "-config-file=" + p.cfgFile}, flags...)
	cmd := exec.Command(binary, args...)
	cmd.Stdout = p.logWriter()
	cmd.Stderr = p.logWriter()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: p.asUser}
	if cgroup != nil {
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(cgroup.Fd())
	}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("starting agent %s: %v", p.name, err)
	}
	p.cmd = cmd
	// The goroutine gets its own channel: a restart replaces p.waitErr.
	done := make(chan error, 1)
	p.waitErr = done
	go func() { done <- cmd.Wait() }()
	p.t.Cleanup(func() {
		p.kill()
		if p.t.Failed() {
			p.t.Logf("log of agent %s:\n%s", p.name, p.logs())
		}
	})
}

type lockedWriter struct{ p *agentProc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.logMu.Lock()
	defer w.p.logMu.Unlock()
	return w.p.log.Write(b)
}

func (p *agentProc) logWriter() io.Writer { return lockedWriter{p} }

func (p *agentProc) logs() string {
	p.logMu.Lock()
	defer p.logMu.Unlock()
	return p.log.String()
}

// kill stops the agent's whole process group at once (SIGKILL), and any
// postmaster it left (it should not leave one: Pdeathsig).
func (p *agentProc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.waitErr:
	case <-time.After(10 * time.Second):
		p.t.Errorf("agent %s did not die after SIGKILL", p.name)
	}
	p.cmd = nil
	if pid := postmasterPID(p.dataDir()); pid > 0 {
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// stop sends sig and waits for the agent to exit, returning its exit code.
func (p *agentProc) stop(sig syscall.Signal, timeout time.Duration) int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signalling agent %s: %v", p.name, err)
	}
	select {
	case err := <-p.waitErr:
		p.cmd = nil
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			p.t.Fatalf("waiting for agent %s: %v", p.name, err)
		}
		return 0
	case <-time.After(timeout):
		p.t.Fatalf("agent %s did not exit within %s of %v", p.name, timeout, sig)
		return -1
	}
}

// exited reports whether the agent process has exited (without waiting).
func (p *agentProc) exited() bool {
	select {
	case err := <-p.waitErr:
		p.waitErr <- err
		return true
	default:
		return false
	}
}

// get fetches an API path and decodes JSON into out (if not nil); it returns
// the status code, or 0 when the agent did not answer.
func (p *agentProc) get(path string, out any) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.httpAddr() + path)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == 200 {
		json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// waitFor polls cond every 50 ms until it is true or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cli runs a pgbattery client command against this agent's API.
func (p *agentProc) cli(args ...string) (string, int) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all := append([]string{args[0], "-http-addr=" + p.httpAddr()}, args[1:]...)
	cmd := exec.CommandContext(ctx, binary, all...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		p.t.Fatalf("running pgbattery %v: %v", args, err)
	}
	return string(out), code
}

// postmasterPID reads PGDATA/postmaster.pid; 0 when absent.
func postmasterPID(dataDir string) int {
	b, err := os.ReadFile(filepath.Join(dataDir, "postgres", "data", "postmaster.pid"))
	if err != nil {
		return 0
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(first))
	return pid
}

func processAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

func execCommand(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, binary, args...)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// appendConfig adds HCL to the node's config file.
func (p *agentProc) appendConfig(hcl string) {
	p.t.Helper()
	f, err := os.OpenFile(p.cfgFile, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("\n" + hcl + "\n"); err != nil {
		p.t.Fatal(err)
	}
}
