package pgctl

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// maxCapturedOutput caps what pgctl keeps of a helper program's output.
const maxCapturedOutput = 64 * 1024

// cappedBuffer keeps the last max bytes written to it.
type cappedBuffer struct {
	buf bytes.Buffer
	max int
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if len(p) > c.max {
		p = p[len(p)-c.max:]
	}
	if c.buf.Len()+len(p) > c.max {
		rest := c.buf.Bytes()[c.buf.Len()+len(p)-c.max:]
		keep := append([]byte(nil), rest...)
		c.buf.Reset()
		c.buf.Write(keep)
	}
	c.buf.Write(p)
	return n, nil
}

func (c *cappedBuffer) String() string { return c.buf.String() }

// childEnv is the environment of every PostgreSQL program pgctl runs: the
// agent's environment without PG* variables (a stray PGPASSWORD,
// PGHOST or PGDATA would change what the programs do) and with the C locale
// for messages pgctl parses.
// When PostgreSQL runs as another user than the agent, HOME points at the
// node directory: libpq and the server look for files under HOME, and the
// agent's (root's) home is not theirs to read.
func (i *Instance) childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || k == "LC_ALL" || k == "LC_MESSAGES" || k == "LANG" || k == "LANGUAGE" {
			continue
		}
		if k == "HOME" && i.user.asRoot {
			continue
		}
		env = append(env, kv)
	}
	if i.user.asRoot {
		env = append(env, "HOME="+i.cfg.Dir)
	}
	return append(env, "LC_ALL=C", "LANG=C")
}

// run runs a PostgreSQL helper program (initdb, pg_basebackup, pg_rewind,
// pg_controldata) as the OS user, bounded by ctx, and returns its combined
// output (the last 64 KiB). The arguments are logged: they never carry a
// secret (passwords travel in files named by passfile= or --pwfile).
func (i *Instance) run(ctx context.Context, name string, args ...string) (string, error) {
	path := i.cfg.Binaries.Path(name)
	out := &cappedBuffer{max: maxCapturedOutput}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = i.childEnv()
	cmd.Dir = i.cfg.Dir
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: i.user.credential(),
		// Helper programs die with the agent too; see startPostmaster for
		// why the forking thread is locked.
		Pdeathsig: syscall.SIGKILL,
		Setpgid:   true,
	}
	cmd.WaitDelay = 5 * time.Second
	i.log.Debug("running", "cmd", name, "args", strings.Join(args, " "))

	// Lock the thread for the child's life: Pdeathsig fires when the thread
	// that forked the child exits, not the process.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		errc <- cmd.Run()
	}()
	err := <-errc
	if err != nil {
		if ctx.Err() != nil {
			return out.String(), fmt.Errorf("%s: %w (%v)", name, ctx.Err(), err)
		}
		return out.String(), fmt.Errorf("%s: %w: %s", name, err, lastLines(out.String(), 15))
	}
	return out.String(), nil
}

// lastLines returns up to n last non-empty lines of s, joined by " | ".
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	var kept []string
	for j := len(lines) - 1; j >= 0 && len(kept) < n; j-- {
		if l := strings.TrimSpace(lines[j]); l != "" {
			kept = append(kept, l)
		}
	}
	for a, b := 0, len(kept)-1; a < b; a, b = a+1, b-1 {
		kept[a], kept[b] = kept[b], kept[a]
	}
	return strings.Join(kept, " | ")
}
