package command

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/cli"
	"github.com/hashicorp/go-hclog"

	"github.com/pgbattery/pgbattery/agent/config"
	"github.com/pgbattery/pgbattery/test/testutil"
)

func TestAgentValidate(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.hcl")
	bad := filepath.Join(dir, "bad.hcl")
	if err := os.WriteFile(good, []byte("data_dir = \"/var/lib/pgbattery\"\nbind_addr = \"127.0.0.2\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("data_dir = \"rel\"\nports {\n  http = 0\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	code, out, errOut := runCLI(t, "agent", "-validate", "-config-file", good)
	if code != 0 || out != "Configuration is valid!\n" {
		t.Fatalf("valid: code %d, out %q, err %q", code, out, errOut)
	}

	code, out, errOut = runCLI(t, "agent", "-validate", "-config-file", bad, "-serf-port", "70000")
	want := "Invalid configuration (3 problems):\n" +
		"  " + bad + ":1: data_dir: must be an absolute path, not \"rel\"\n" +
		"  " + bad + ":3: ports.http: must be 1..65535, not 0\n" +
		"  flag -serf-port: must be 1..65535, not 70000\n"
	if code != 1 || errOut != want || out != "" {
		t.Fatalf("invalid: code %d, out %q\n got: %q\nwant: %q", code, out, errOut, want)
	}

	// Flags fix what the file lacks.
	code, _, errOut = runCLI(t, "agent", "-validate", "-data-dir", dir, "-bind", "127.0.0.2")
	if code != 0 {
		t.Fatalf("flags only: %d %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "agent", "-validate", "-bind", "127.0.0.2", "stray")
	if code != 1 || !strings.Contains(errOut, "takes no arguments") {
		t.Fatalf("stray argument: %d %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "agent", "-bootstrap-expect", "x")
	if code != 1 || !strings.Contains(errOut, `invalid value "x" for flag -bootstrap-expect: "x" is not a whole number`) {
		t.Fatalf("bad flag value: %d %q", code, errOut)
	}
}

// fakeAgent stands in for agent.Agent to exercise the command's life cycle
// and signal handling.
type fakeAgent struct {
	mu         sync.Mutex
	started    bool
	reloads    []*config.RuntimeConfig
	shutdowns  int
	startErr   error
	blockStop  bool // Shutdown waits for its context to end
	blockStart bool // Start waits for its context to end
	shutdownCh chan struct{}
	events     chan string
}

func newFakeAgent() *fakeAgent {
	return &fakeAgent{shutdownCh: make(chan struct{}), events: make(chan string, 16)}
}

func (a *fakeAgent) Start(ctx context.Context) error {
	a.mu.Lock()
	a.started = true
	err, block := a.startErr, a.blockStart
	a.mu.Unlock()
	a.events <- "start"
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return err
}

func (a *fakeAgent) Shutdown(ctx context.Context) error {
	a.mu.Lock()
	a.shutdowns++
	block := a.blockStop
	a.mu.Unlock()
	a.events <- "shutdown"
	if block {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (a *fakeAgent) Reload(cfg *config.RuntimeConfig) error {
	a.mu.Lock()
	a.reloads = append(a.reloads, cfg)
	a.mu.Unlock()
	a.events <- "reload"
	return nil
}

func (a *fakeAgent) ShutdownCh() <-chan struct{} { return a.shutdownCh }

// waitEvent waits (bounded) for the fake agent to report ev.
func waitEvent(t *testing.T, a *fakeAgent, ev string) {
	t.Helper()
	select {
	case got := <-a.events:
		if got != ev {
			t.Fatalf("event %q, want %q", got, ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no %q event", ev)
	}
}

type agentRun struct {
	signals chan os.Signal
	done    chan int
	ui      *cli.MockUi
	logs    *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startAgentCommand runs `pgbattery agent` with the fake agent in the
// background; the test delivers signals through the returned channel.
func startAgentCommand(t *testing.T, fa *fakeAgent, args ...string) *agentRun {
	t.Helper()
	r := &agentRun{signals: make(chan os.Signal, 4), done: make(chan int, 1), ui: cli.NewMockUi(), logs: &syncBuffer{}}
	cmd := newAgentCommand(r.ui)
	cmd.signals = r.signals
	cmd.logOutput = r.logs
	cmd.gracefulTimeout = 2 * time.Second
	cmd.newAgent = func(cfg *config.RuntimeConfig, logger hclog.Logger) (agentRunner, error) { return fa, nil }
	go func() { r.done <- cmd.Run(args) }()
	t.Cleanup(func() {
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("agent command did not return")
		}
	})
	return r
}

func (r *agentRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-r.done:
		r.done <- code // for the cleanup
		return code
	case <-time.After(10 * time.Second):
		t.Fatal("agent command did not return")
		return -1
	}
}

func TestAgentReloadAndGracefulShutdown(t *testing.T) {
	dir := testutil.TempDir(t)
	path := filepath.Join(dir, "agent.hcl")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("data_dir = \"" + dir + "\"\nbind_addr = \"127.0.0.2\"\nlog_level = \"info\"\n")

	fa := newFakeAgent()
	r := startAgentCommand(t, fa, "-config-file", path, "-node", "n1")
	waitEvent(t, fa, "start")

	// SIGHUP re-reads the file; the flags still apply.
	write("data_dir = \"" + dir + "\"\nbind_addr = \"127.0.0.2\"\nlog_level = \"debug\"\n")
	r.signals <- syscall.SIGHUP
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s\nui: %s %s", r.logs.String(), r.ui.OutputWriter.String(), r.ui.ErrorWriter.String())
		}
	})
	waitEvent(t, fa, "reload")
	fa.mu.Lock()
	got := fa.reloads[0]
	fa.mu.Unlock()
	if got.LogLevel != "debug" || got.NodeName != "n1" {
		t.Fatalf("reloaded config: level %q node %q", got.LogLevel, got.NodeName)
	}

	// A broken file on SIGHUP is logged; the agent keeps running.
	write("data_dir = \"" + dir + "\"\nports {\n  http = -5\n}\n")
	r.signals <- syscall.SIGHUP
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.logs.String(), "ports.http: must be 1..65535, not -5") {
		if time.Now().After(deadline) {
			t.Fatalf("no error logged for the bad reload; logs:\n%s", r.logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}

	r.signals <- os.Interrupt
	waitEvent(t, fa, "shutdown")
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if len(fa.reloads) != 1 || fa.shutdowns != 1 {
		t.Fatalf("reloads %d, shutdowns %d", len(fa.reloads), fa.shutdowns)
	}
}

func TestAgentSecondSignalForcesExit(t *testing.T) {
	dir := testutil.TempDir(t)
	fa := newFakeAgent()
	fa.blockStop = true
	r := startAgentCommand(t, fa, "-data-dir", dir, "-bind", "127.0.0.2")
	waitEvent(t, fa, "start")
	r.signals <- syscall.SIGTERM
	waitEvent(t, fa, "shutdown")
	r.signals <- syscall.SIGTERM
	if code := r.wait(t); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
}

func TestAgentShutdownTimesOut(t *testing.T) {
	dir := testutil.TempDir(t)
	fa := newFakeAgent()
	fa.blockStop = true
	r := startAgentCommand(t, fa, "-data-dir", dir, "-bind", "127.0.0.2")
	waitEvent(t, fa, "start")
	r.signals <- os.Interrupt
	waitEvent(t, fa, "shutdown")
	if code := r.wait(t); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	if !strings.Contains(r.logs.String(), "graceful shutdown failed") {
		t.Fatalf("logs:\n%s", r.logs.String())
	}
}

func TestAgentStopsOnItsOwn(t *testing.T) {
	dir := testutil.TempDir(t)
	fa := newFakeAgent()
	r := startAgentCommand(t, fa, "-data-dir", dir, "-bind", "127.0.0.2")
	waitEvent(t, fa, "start")
	close(fa.shutdownCh)
	if code := r.wait(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func TestAgentStartFails(t *testing.T) {
	dir := testutil.TempDir(t)
	fa := newFakeAgent()
	fa.startErr = errors.New("port 5432 in use")
	r := startAgentCommand(t, fa, "-data-dir", dir, "-bind", "127.0.0.2")
	waitEvent(t, fa, "start")
	if code := r.wait(t); code != 1 {
		t.Fatalf("exit code %d", code)
	}
	if !strings.Contains(r.logs.String(), "agent failed to start: error=\"port 5432 in use\"") {
		t.Fatalf("logs:\n%s", r.logs.String())
	}
}

func TestAgentLogsJSON(t *testing.T) {
	dir := testutil.TempDir(t)
	fa := newFakeAgent()
	fa.startErr = errors.New("boom")
	r := startAgentCommand(t, fa, "-data-dir", dir, "-bind", "127.0.0.2", "-log-json")
	waitEvent(t, fa, "start")
	r.wait(t)
	if !strings.Contains(r.logs.String(), `"@message":"agent failed to start"`) || !strings.Contains(r.logs.String(), `"@module":"agent"`) {
		t.Fatalf("logs:\n%s", r.logs.String())
	}
}

func TestAgentSignalDuringStart(t *testing.T) {
	dir := testutil.TempDir(t)
	fa := newFakeAgent()
	fa.blockStart = true
	r := startAgentCommand(t, fa, "-data-dir", dir, "-bind", "127.0.0.2")
	waitEvent(t, fa, "start")
	r.signals <- syscall.SIGHUP // remembered, not fatal
	r.signals <- os.Interrupt
	waitEvent(t, fa, "shutdown")
	if code := r.wait(t); code != 1 {
		t.Fatalf("exit code %d, want 1", code)
	}
	fa.mu.Lock()
	defer fa.mu.Unlock()
	if len(fa.reloads) != 0 {
		t.Fatalf("reloaded %d times before the agent ran", len(fa.reloads))
	}
}
