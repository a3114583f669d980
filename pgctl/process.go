package pgctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// StopMode is PostgreSQL's shutdown mode.
type StopMode int

const (
	// StopFast disconnects clients, rolls back and checkpoints (SIGINT).
	StopFast StopMode = iota
	// StopSmart waits for clients to disconnect (SIGTERM).
	StopSmart
	// StopImmediate exits at once; the next start runs crash recovery
	// (SIGQUIT).
	StopImmediate
)

func (m StopMode) String() string {
	switch m {
	case StopSmart:
		return "smart"
	case StopFast:
		return "fast"
	case StopImmediate:
		return "immediate"
	}
	return fmt.Sprintf("StopMode(%d)", int(m))
}

// ParseStopMode parses "smart", "fast" or "immediate".
func ParseStopMode(s string) (StopMode, error) {
	switch s {
	case "smart":
		return StopSmart, nil
	case "fast":
		return StopFast, nil
	case "immediate":
		return StopImmediate, nil
	}
	return 0, fmt.Errorf("unknown stop mode %q (smart, fast or immediate)", s)
}

// escalation lists the signals Stop sends, strongest last.
func (m StopMode) escalation() []syscall.Signal {
	switch m {
	case StopSmart:
		return []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGKILL}
	case StopImmediate:
		return []syscall.Signal{syscall.SIGQUIT, syscall.SIGKILL}
	default:
		return []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT, syscall.SIGKILL}
	}
}

// StartOptions tune Start.
type StartOptions struct {
	// Fenced starts PostgreSQL with default_transaction_read_only=on in
	// effect before it accepts the first connection, so every session is
	// read-only until SetFenced(ctx, false). Without it, Start lifts a fence
	// left in the managed file.
	Fenced bool
}

// ExitStatus describes how a postmaster ended.
type ExitStatus struct {
	PID int
	// Code is the exit code, or -1 when a signal ended it.
	Code int
	// Signal is the signal that ended it, or 0.
	Signal syscall.Signal
	// Expected is true when Stop ended it.
	Expected bool
	// At is when pgctl reaped it.
	At time.Time
	// Err is a reaping error other than a non-zero exit (rare).
	Err error
}

func (e ExitStatus) String() string {
	how := fmt.Sprintf("exit code %d", e.Code)
	if e.Signal != 0 {
		how = "signal " + e.Signal.String()
	}
	if e.Expected {
		how += ", requested"
	}
	return fmt.Sprintf("postmaster %d exited (%s)", e.PID, how)
}

// Postmaster is one run of the postmaster, a direct child of the agent.
type Postmaster struct {
	pid      int
	started  time.Time
	proc     *os.Process
	done     chan struct{}
	exit     ExitStatus // valid once done is closed
	expected atomic.Bool
	logStart int64 // offset of this run's output in the log file

	// Exactly one of Start's error and Config.OnExit reports an exit:
	// a postmaster that dies before Start hands it over is Start's failure.
	announceMu sync.Mutex
	announced  bool
	reaped     bool
}

// announce hands the postmaster to the caller: from now on its exit is
// reported through OnExit. It fails if the postmaster already died.
func (p *Postmaster) announce() bool {
	p.announceMu.Lock()
	defer p.announceMu.Unlock()
	if p.reaped {
		return false
	}
	p.announced = true
	return true
}

// PID returns the postmaster's process id.
func (p *Postmaster) PID() int { return p.pid }

// StartedAt returns when the process was started.
func (p *Postmaster) StartedAt() time.Time { return p.started }

// Done is closed as soon as the postmaster has exited and been reaped.
func (p *Postmaster) Done() <-chan struct{} { return p.done }

// Exited reports whether the postmaster has exited.
func (p *Postmaster) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// ExitStatus returns how it ended; it blocks until it has.
func (p *Postmaster) ExitStatus() ExitStatus {
	<-p.done
	return p.exit
}

func (p *Postmaster) signal(sig syscall.Signal) error {
	if err := p.proc.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// Postmaster returns the current postmaster run, or nil if this Instance
// never started one. Check Exited on the result.
func (i *Instance) Postmaster() *Postmaster {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.pm
}

// isRunning reports whether a postmaster started by this Instance lives.
func (i *Instance) isRunning() bool {
	pm := i.Postmaster()
	return pm != nil && !pm.Exited()
}

// Running reports whether a postmaster started by this Instance is alive.
func (i *Instance) Running() bool { return i.isRunning() }

// foreignPostmaster reports a live postmaster on PGDATA that this Instance
// did not start (postmaster.pid names a live postgres process).
func (i *Instance) foreignPostmaster() (int, bool) {
	b, err := os.ReadFile(filepath.Join(i.cfg.DataDir, "postmaster.pid"))
	if err != nil {
		return 0, false
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil || pid <= 0 {
		return 0, false
	}
	if pm := i.Postmaster(); pm != nil && pm.pid == pid && !pm.Exited() {
		return 0, false
	}
	if !processAlive(pid) {
		return 0, false
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	c := strings.TrimSpace(string(comm))
	if c != "postgres" && c != "postmaster" {
		return 0, false // a recycled pid: PostgreSQL treats the lock file as stale too
	}
	return pid, true
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// Field 3, after "(comm)", is the state.
	if j := strings.LastIndexByte(string(stat), ')'); j >= 0 && j+2 < len(stat) {
		return stat[j+2] != 'Z' && stat[j+2] != 'X'
	}
	return true
}

// Start starts the postmaster as a direct child of the agent and waits,
// bounded by ctx, until it answers a real query over the unix socket. The
// managed configuration and pg_hba.conf are rewritten first.
//
// If PostgreSQL runs but is not ready when ctx ends (a standby replaying a
// long WAL backlog, say), or refuses the control role, Start returns the
// running Postmaster and an error: the caller decides whether to keep
// waiting (WaitReady) or Stop. If the
// postmaster exits during start-up, Start returns a nil Postmaster and an
// error quoting its log. Every exit of a Postmaster that Start returned is
// reported through Config.OnExit and Postmaster.Done; an exit during
// start-up is reported by Start's error only.
func (i *Instance) Start(ctx context.Context, opts StartOptions) (*Postmaster, error) {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	return i.start(ctx, opts)
}

func (i *Instance) start(ctx context.Context, opts StartOptions) (*Postmaster, error) {
	if i.isRunning() {
		return i.Postmaster(), fmt.Errorf("starting PostgreSQL: %w (pid %d)", ErrRunning, i.Postmaster().pid)
	}
	if err := i.checkDataMajor(); err != nil {
		return nil, fmt.Errorf("starting PostgreSQL: %w", err)
	}
	if pid, ok := i.foreignPostmaster(); ok {
		return nil, fmt.Errorf("starting PostgreSQL: a postmaster (pid %d) not started by this agent already runs on %s; stop it first", pid, i.cfg.DataDir)
	}
	if err := i.prepareDirs(); err != nil {
		return nil, fmt.Errorf("starting PostgreSQL: %w", err)
	}
	if err := i.ensureDataDirMode(); err != nil {
		return nil, fmt.Errorf("starting PostgreSQL: %w", err)
	}
	i.mu.Lock()
	i.state.Fenced = opts.Fenced
	st := i.state
	i.mu.Unlock()
	if err := i.writeConfig(st); err != nil {
		return nil, fmt.Errorf("starting PostgreSQL: %w", err)
	}
	// Stop cancels a start that is still waiting for readiness, so an agent
	// shutting down is not held up by a standby replaying a long backlog.
	sctx, cancel := context.WithCancel(ctx)
	i.mu.Lock()
	i.startCancel = cancel
	i.mu.Unlock()
	defer func() {
		i.mu.Lock()
		i.startCancel = nil
		i.mu.Unlock()
		cancel()
	}()
	return i.startWithRetry(sctx, nil)
}

// startWithRetry spawns the postmaster and waits for readiness. A
// postmaster SIGKILLed a moment ago may leave backends that still hold its
// shared memory for a few milliseconds; PostgreSQL then refuses to start
// ("pre-existing shared memory block is still in use"), so that one failure
// is retried within ctx.
func (i *Instance) startWithRetry(ctx context.Context, args []string) (*Postmaster, error) {
	for attempt := 1; ; attempt++ {
		pm, err := i.spawn(args)
		if err != nil {
			return nil, err
		}
		i.log.Info("postmaster started", "pid", pm.pid, "data_dir", i.cfg.DataDir, "attempt", attempt)
		err = i.waitReady(ctx, pm)
		if pm.announce() {
			if err == nil {
				i.log.Info("PostgreSQL ready", "pid", pm.pid, "after", time.Since(pm.started).Round(time.Millisecond))
			}
			return pm, err
		}
		if err == nil {
			err = fmt.Errorf("postmaster exited right after start-up (%s): %s", pm.exit, lastLines(i.logSince(pm.logStart), 10))
		}
		logTail := i.logSince(pm.logStart)
		if strings.Contains(logTail, "is still in use") && attempt < 100 && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		return nil, err
	}
}

// spawn starts the postmaster from a goroutine locked to its OS thread for
// the child's whole life: Linux delivers Pdeathsig when the forking thread
// exits, not the process, and the Go runtime terminates threads (one whose
// locked goroutine returns without unlocking, for instance); forking from
// an arbitrary goroutine's thread could kill a healthy postmaster later. With the thread pinned, the postmaster
// gets SIGKILL exactly when the agent process dies, so an orphaned
// PostgreSQL cannot stay a writable primary.
func (i *Instance) spawn(args []string) (*Postmaster, error) {
	logf, err := os.OpenFile(i.cfg.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening PostgreSQL log %s: %w", i.cfg.LogFile, err)
	}
	if err := i.user.chown(i.cfg.LogFile); err != nil {
		logf.Close()
		return nil, err
	}
	off, _ := logf.Seek(0, io.SeekEnd)

	argv := append([]string{"-D", i.cfg.DataDir}, args...)
	cmd := exec.Command(i.cfg.Binaries.Path("postgres"), argv...)
	cmd.Env = i.childEnv()
	cmd.Dir = i.cfg.DataDir
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: i.user.credential(),
		Pdeathsig:  syscall.SIGKILL,
		// Its own process group: a Ctrl-C at the agent's terminal reaches
		// the agent, which decides how PostgreSQL stops.
		Setpgid: true,
	}
	pm := &Postmaster{done: make(chan struct{}), logStart: off}
	started := make(chan error, 1)
	onExit := i.cfg.OnExit
	go func() {
		// Never unlocked: the goroutine ends after the child is reaped, and
		// the runtime then discards the thread, which is harmless by then.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			logf.Close()
			started <- err
			return
		}
		pm.proc = cmd.Process
		pm.pid = cmd.Process.Pid
		pm.started = time.Now()
		started <- nil
		werr := cmd.Wait()
		ex := ExitStatus{PID: pm.pid, Code: -1, At: time.Now(), Expected: pm.expected.Load()}
		if ps := cmd.ProcessState; ps != nil {
			if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
				if ws.Signaled() {
					ex.Signal = ws.Signal()
				} else {
					ex.Code = ws.ExitStatus()
				}
			}
		}
		var ee *exec.ExitError
		if werr != nil && !errors.As(werr, &ee) {
			ex.Err = werr
		}
		logf.Close()
		pm.exit = ex
		pm.announceMu.Lock()
		pm.reaped = true
		report := pm.announced
		pm.announceMu.Unlock()
		close(pm.done)
		fields := []any{"pid", ex.PID, "code", ex.Code}
		if ex.Signal != 0 {
			fields = append(fields, "signal", ex.Signal.String())
		}
		if ex.Expected {
			i.log.Info("postmaster exited", fields...)
		} else {
			i.log.Error("postmaster exited unexpectedly", fields...)
		}
		if onExit != nil && report {
			onExit(ex)
		}
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("starting postmaster %s: %w", i.cfg.Binaries.Path("postgres"), err)
	}
	i.mu.Lock()
	i.pm = pm
	i.mu.Unlock()
	return pm, nil
}

// WaitReady waits, bounded by ctx, until the running postmaster answers
// SELECT 1 over the unix socket.
func (i *Instance) WaitReady(ctx context.Context) error {
	pm := i.Postmaster()
	if pm == nil || pm.Exited() {
		return ErrNotRunning
	}
	return i.waitReady(ctx, pm)
}

func (i *Instance) waitReady(ctx context.Context, pm *Postmaster) error {
	backoff := 5 * time.Millisecond
	var lastErr error
	for {
		if pm.Exited() {
			return fmt.Errorf("postmaster exited during start-up (%s): %s", pm.exit, lastLines(i.logSince(pm.logStart), 10))
		}
		err := i.ping(ctx)
		if err == nil {
			return nil
		}
		lastErr = err
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "28P01" || pgErr.Code == "28000") {
			// Wrong secret or pg_hba: waiting will not help.
			return fmt.Errorf("PostgreSQL refuses the agent's control role %s (%s): the data directory belongs to another cluster or the stored secret is wrong", i.cfg.Superuser.User, pgErr.Message)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for PostgreSQL to accept queries: %w (last error: %v)", ctx.Err(), lastErr)
		case <-pm.done:
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 100*time.Millisecond)
	}
}

// Ready runs SELECT 1 over the unix socket: a real query, not a pid check.
func (i *Instance) Ready(ctx context.Context) error {
	if !i.isRunning() {
		return ErrNotRunning
	}
	return i.ping(ctx)
}

func (i *Instance) ping(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := i.Connect(cctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	var one int
	return conn.QueryRow(cctx, "SELECT 1").Scan(&one)
}

// logSince returns the log file's content from offset (last 16 KiB).
func (i *Instance) logSince(off int64) string {
	f, err := os.Open(i.cfg.LogFile)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	if fi.Size()-off > 16*1024 {
		off = fi.Size() - 16*1024
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return ""
	}
	b, _ := io.ReadAll(io.LimitReader(f, 16*1024))
	return string(b)
}

// Stop shuts PostgreSQL down in mode and waits until the postmaster has
// exited. ctx bounds the requested mode; when it ends, Stop escalates
// (smart → fast → immediate → SIGKILL), giving each further step
// Config.StopGrace. A Start still waiting for readiness is cancelled
// first. Stop also stops a postmaster on PGDATA that this
// Instance did not start (found through postmaster.pid). Stopping a stopped
// instance is not an error.
func (i *Instance) Stop(ctx context.Context, mode StopMode) error {
	i.mu.Lock()
	if i.startCancel != nil {
		i.startCancel()
	}
	i.mu.Unlock()
	i.opMu.Lock()
	defer i.opMu.Unlock()
	return i.stop(ctx, mode)
}

func (i *Instance) stop(ctx context.Context, mode StopMode) error {
	pm := i.Postmaster()
	if pm == nil || pm.Exited() {
		if pid, ok := i.foreignPostmaster(); ok {
			return i.stopForeign(ctx, pid, mode)
		}
		return nil
	}
	pm.expected.Store(true)
	// An idle control connection would hold a smart shutdown up; one in
	// use is cut by the shutdown itself.
	i.closeControlIfIdle()
	for n, sig := range mode.escalation() {
		if n > 0 {
			i.log.Warn("PostgreSQL did not stop in time: escalating", "pid", pm.pid, "signal", sig)
		} else {
			i.log.Info("stopping PostgreSQL", "pid", pm.pid, "mode", mode)
		}
		if err := pm.signal(sig); err != nil {
			return fmt.Errorf("signalling postmaster %d: %w", pm.pid, err)
		}
		if n == 0 {
			select {
			case <-pm.done:
				return nil
			case <-ctx.Done():
			}
			continue
		}
		timer := time.NewTimer(i.cfg.StopGrace)
		select {
		case <-pm.done:
			timer.Stop()
			return nil
		case <-timer.C:
		}
	}
	<-pm.done // SIGKILL cannot be ignored
	return nil
}

func (i *Instance) stopForeign(ctx context.Context, pid int, mode StopMode) error {
	i.log.Warn("stopping a postmaster this agent did not start", "pid", pid, "mode", mode)
	for n, sig := range mode.escalation() {
		if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("signalling postmaster %d: %w", pid, err)
		}
		deadline := time.Now().Add(i.cfg.StopGrace)
		for processAlive(pid) {
			if n == 0 && ctx.Err() != nil || n > 0 && time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !processAlive(pid) {
			return nil
		}
	}
	return fmt.Errorf("postmaster %d did not exit after SIGKILL", pid)
}

// Restart stops PostgreSQL (fast) and starts it with opts.
func (i *Instance) Restart(ctx context.Context, opts StartOptions) (*Postmaster, error) {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	if err := i.stop(ctx, StopFast); err != nil {
		return nil, err
	}
	return i.start(ctx, opts)
}

// Reload rewrites the managed configuration and pg_hba.conf and sends
// SIGHUP to the postmaster. Settings that need a restart stay pending
// (PendingRestart lists them).
func (i *Instance) Reload(ctx context.Context) error {
	i.opMu.Lock()
	defer i.opMu.Unlock()
	i.mu.Lock()
	st := i.state
	i.mu.Unlock()
	if err := i.writeConfig(st); err != nil {
		return fmt.Errorf("reloading: %w", err)
	}
	return i.sighup()
}

func (i *Instance) sighup() error {
	pm := i.Postmaster()
	if pm != nil && !pm.Exited() {
		if err := pm.signal(syscall.SIGHUP); err != nil {
			return fmt.Errorf("reloading: %w", err)
		}
		return nil
	}
	if pid, ok := i.foreignPostmaster(); ok {
		if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
			return fmt.Errorf("reloading postmaster %d: %w", pid, err)
		}
		return nil
	}
	return fmt.Errorf("reloading: %w", ErrNotRunning)
}

// Kill ends a PostgreSQL that no longer answers: the postmaster is stopped
// (so it forks nothing more), every process it forked is killed (backends
// call setsid, so the process group does not reach them), then the
// postmaster itself; SIGKILL also ends processes that are stopped (SIGSTOP)
// or asleep in the kernel. No backend survives to finish a commit after it.
// The exit is reported to OnExit as unexpected, like a crash, so the
// caller's crash handling (a primary releases its lease) runs. Killing a
// stopped instance is not an error.
func (i *Instance) Kill(reason string) error {
	pm := i.Postmaster()
	if pm == nil || pm.Exited() {
		return nil
	}
	i.log.Error("killing PostgreSQL", "pid", pm.pid, "reason", reason)
	if err := pm.signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("killing PostgreSQL (postmaster %d): %w", pm.pid, err)
	}
	for _, child := range ChildProcesses(pm.pid) {
		if err := syscall.Kill(child, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			i.log.Warn("killing a PostgreSQL child process", "pid", child, "error", err)
		}
	}
	if err := pm.signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("killing PostgreSQL (postmaster %d): %w", pm.pid, err)
	}
	return nil
}

// ChildProcesses lists the processes whose parent is pid, from /proc (on
// systems without it, none). Kill uses it on the postmaster; the
// multi-node tests use it to find PostgreSQL's processes.
func ChildProcesses(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and
		// parentheses, so parse after the last ')'.
		rest := string(b)
		if k := strings.LastIndexByte(rest, ')'); k >= 0 {
			rest = rest[k+1:]
		}
		f := strings.Fields(rest)
		if len(f) >= 2 {
			if ppid, err := strconv.Atoi(f[1]); err == nil && ppid == pid {
				out = append(out, child)
			}
		}
	}
	return out
}
