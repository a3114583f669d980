package pgctl

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgbattery/pgbattery/test/testutil"
)

func TestInitDB(t *testing.T) {
	n := newTestNode(t, "init", false)
	ctx := testCtx(t, 2*time.Minute)
	if err := n.InitDB(ctx, InitDBOptions{NoSync: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(n.cfg.Dir, ".initdb-pwfile")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the password file outlived initdb: %v", err)
	}
	cd, err := n.ControlData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !cd.DataChecksums || cd.State != StateShutDown || cd.Timeline != 1 || cd.SystemIdentifier == 0 {
		t.Fatalf("control data after initdb: %+v", cd)
	}
	checkOwnership(t, n)
	// The role was created with a verifier and without statement logging:
	// the server's log (log_statement=all here) shows neither the password
	// nor the verifier, though it logged the session's other statements.
	pglog, _ := os.ReadFile(n.cfg.LogFile)
	if !strings.Contains(string(pglog), "SET log_statement") || strings.Contains(string(pglog), "SCRAM-SHA-256$") ||
		strings.Contains(string(pglog), testRepl.Password) {
		t.Fatalf("PostgreSQL log after initdb:\n%s", lastN(string(pglog), 3000))
	}

	// A second initdb must not touch existing data.
	if err := n.InitDB(ctx, InitDBOptions{NoSync: true}); !errors.Is(err, ErrDataExists) {
		t.Fatalf("initdb over existing data: %v", err)
	}

	startNode(t, n, StartOptions{})
	conn, err := n.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var super, repl bool
	var superPW, replPW, enc string
	err = conn.QueryRow(ctx, `SELECT a.rolsuper, a.rolpassword, b.rolreplication, b.rolpassword, pg_encoding_to_char(d.encoding)
FROM pg_authid a, pg_authid b, pg_database d
WHERE a.rolname = $1 AND b.rolname = $2 AND d.datname = 'postgres'`, testSuper.User, testRepl.User).Scan(&super, &superPW, &repl, &replPW, &enc)
	if err != nil {
		t.Fatal(err)
	}
	if !super || !repl || !strings.HasPrefix(superPW, "SCRAM-SHA-256$") || !strings.HasPrefix(replPW, "SCRAM-SHA-256$") || enc != "UTF8" {
		t.Fatalf("roles: super=%v repl=%v superPW=%.14s replPW=%.14s enc=%s", super, repl, superPW, replPW, enc)
	}
	// Connections over TCP need the password too: no trust anywhere.
	for _, c := range []Credentials{testSuper, {User: testSuper.User, Password: "wrong-password-0123456789"}} {
		cfg, err := PeerConnConfig(n.peer(), c, "postgres", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		pc, err := pgconn.ConnectConfig(ctx, &cfg.Config)
		if c.Password == testSuper.Password {
			if err != nil {
				t.Fatalf("TCP connection with the right password: %v", err)
			}
			pc.Close(ctx)
		} else if err == nil {
			pc.Close(ctx)
			t.Fatal("TCP connection with a wrong password succeeded")
		}
	}
}

// checkOwnership asserts the modes and owners of what PostgreSQL writes.
func checkOwnership(t *testing.T, n *testNode) {
	t.Helper()
	fi, err := os.Stat(n.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("PGDATA mode %v, want 0700", fi.Mode().Perm())
	}
	wantUID := os.Geteuid()
	if testutil.IsRoot() {
		u, err := user.Lookup(testutil.PostgresOSUser)
		if err != nil {
			t.Fatal(err)
		}
		wantUID, _ = strconv.Atoi(u.Uid)
	}
	for _, p := range []string{n.cfg.Dir, n.DataDir(), n.SocketDir(), n.cfg.PassFile,
		filepath.Join(n.DataDir(), ManagedConfFile), filepath.Join(n.DataDir(), "pg_hba.conf")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if uid := int(fi.Sys().(*syscall.Stat_t).Uid); uid != wantUID {
			t.Errorf("%s owned by uid %d, want %d", p, uid, wantUID)
		}
	}
	if fi, err := os.Stat(n.cfg.PassFile); err == nil && fi.Mode().Perm() != 0o600 {
		t.Errorf("passfile mode %v", fi.Mode().Perm())
	}
}

// procStatusField returns a field of /proc/PID/status.
func procStatusField(pid int, field string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func TestStartStatusStop(t *testing.T) {
	n := newTestNode(t, "n1", true)
	ctx := testCtx(t, 2*time.Minute)
	pm := startNode(t, n, StartOptions{})
	if err := n.Ready(ctx); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	if _, err := n.Start(ctx, StartOptions{}); !errors.Is(err, ErrRunning) {
		t.Fatalf("second Start: %v", err)
	}
	checkOwnership(t, n)

	// The postmaster runs as the OS user, with no supplementary groups.
	if testutil.IsRoot() {
		u, _ := user.Lookup(testutil.PostgresOSUser)
		if uids := strings.Fields(procStatusField(pm.PID(), "Uid")); len(uids) == 0 || uids[0] != u.Uid || uids[1] != u.Uid {
			t.Errorf("postmaster uids %v, want %s", uids, u.Uid)
		}
		if g := procStatusField(pm.PID(), "Groups"); g != "" {
			t.Errorf("postmaster supplementary groups %q, want none", g)
		}
	}

	st, err := n.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cdRunning, err := n.ControlData(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Role != RolePrimary || st.Timeline != 1 || st.CurrentLSN == 0 || st.PID != pm.PID() ||
		st.SystemIdentifier != cdRunning.SystemIdentifier || st.ReadOnly || st.ServerVersionNum/10000 != n.cfg.Binaries.Major {
		t.Fatalf("status %+v", st)
	}
	if st.WALPosition() != st.CurrentLSN {
		t.Fatal("WALPosition of a primary is not its current LSN")
	}

	mustExec(t, n, "CREATE TABLE t (id int)")
	st2, err := n.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st2.CurrentLSN <= st.CurrentLSN {
		t.Fatalf("LSN did not advance: %s -> %s", st.CurrentLSN, st2.CurrentLSN)
	}

	// Each stop mode, with the offline state it leaves.
	for _, c := range []struct {
		mode  StopMode
		state string
	}{{StopSmart, StateShutDown}, {StopFast, StateShutDown}, {StopImmediate, StateInProduction}} {
		pm := n.Postmaster()
		if err := n.Stop(ctx, c.mode); err != nil {
			t.Fatalf("stop %s: %v", c.mode, err)
		}
		if !pm.Exited() {
			t.Fatalf("stop %s returned with the postmaster alive", c.mode)
		}
		ex := pm.ExitStatus()
		if !ex.Expected || ex.PID != pm.PID() {
			t.Fatalf("stop %s: exit %+v", c.mode, ex)
		}
		if _, err := n.Status(ctx); !errors.Is(err, ErrNotRunning) {
			t.Fatalf("Status of a stopped instance: %v", err)
		}
		cd, err := n.ControlData(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if cd.State != c.state {
			t.Fatalf("after stop %s: state %q, want %q", c.mode, cd.State, c.state)
		}
		if err := n.Stop(ctx, c.mode); err != nil {
			t.Fatalf("stopping a stopped instance: %v", err)
		}
		startNode(t, n, StartOptions{})
		if v, err := queryInt(t, n, "SELECT count(*) FROM t"); err != nil || v != 0 {
			t.Fatalf("after restart: %d, %v", v, err)
		}
	}

	// A smart stop with a client connected escalates to fast once ctx ends.
	conn, err := n.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := n.Stop(sctx, StopSmart); err != nil {
		t.Fatal(err)
	}
	if cd, _ := n.ControlData(ctx); cd == nil || cd.State != StateShutDown {
		t.Fatalf("escalated stop left %+v", cd)
	}
	if !strings.Contains(n.logs.String(), "escalating") {
		t.Fatal("smart stop with a connected client did not escalate")
	}

	// Restart and Reload.
	startNode(t, n, StartOptions{})
	old := n.Postmaster().PID()
	pm2, err := n.Restart(ctx, StartOptions{})
	if err != nil || pm2.PID() == old {
		t.Fatalf("Restart: %v", err)
	}
	if err := n.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	if pend, err := n.PendingRestart(ctx); err != nil || len(pend) != 0 {
		t.Fatalf("pending restart %v, %v", pend, err)
	}
}

func TestCrashDetection(t *testing.T) {
	n := newTestNode(t, "crash", true)
	ctx := testCtx(t, time.Minute)
	pm := startNode(t, n, StartOptions{})
	// An open session, as in production: its backend outlives the
	// postmaster for a moment, which the restart must cope with.
	conn, err := n.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	if err := syscall.Kill(pm.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case ex := <-n.exit:
		if ex.PID != pm.PID() || ex.Signal != syscall.SIGKILL || ex.Expected {
			t.Fatalf("exit reported as %+v", ex)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("postmaster death not reported")
	}
	select {
	case <-pm.Done():
	default:
		t.Fatal("Done not closed after the exit was reported")
	}
	if n.Running() {
		t.Fatal("Running after the postmaster died")
	}
	if err := n.Ready(ctx); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Ready after death: %v", err)
	}
	// Restart after the crash: crash recovery, then ready.
	pm2 := startNode(t, n, StartOptions{})
	if pm2.PID() == pm.PID() {
		t.Fatal("same pid")
	}
	mustExec(t, n, "CREATE TABLE after_crash (id int)")
}

func TestFencedStart(t *testing.T) {
	n := newTestNode(t, "fence", true)
	ctx := testCtx(t, time.Minute)
	startNode(t, n, StartOptions{})
	mustExec(t, n, "CREATE TABLE f (id int)")
	if err := n.Stop(ctx, StopFast); err != nil {
		t.Fatal(err)
	}

	startNode(t, n, StartOptions{Fenced: true})
	assertReadOnly := func(want bool) {
		t.Helper()
		err := execSQL(t, n, "INSERT INTO f VALUES (1)")
		var pgErr *pgconn.PgError
		if want && (!errors.As(err, &pgErr) || pgErr.Code != "25006") {
			t.Fatalf("write on a fenced instance: %v, want SQLSTATE 25006", err)
		}
		if !want && err != nil {
			t.Fatalf("write on an unfenced instance: %v", err)
		}
	}
	assertReadOnly(true)
	if st, err := n.Status(ctx); err != nil || !st.ReadOnly {
		t.Fatalf("status of a fenced instance: %+v %v", st, err)
	}

	// A session open across the change: terminated, so it cannot go on.
	held, err := n.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close(context.Background())

	if err := n.SetFenced(ctx, false); err != nil {
		t.Fatal(err)
	}
	assertReadOnly(false)
	if err := n.SetFenced(ctx, true); err != nil {
		t.Fatal(err)
	}
	assertReadOnly(true)
	killed, err := n.TerminateClientBackends(ctx)
	if err != nil || killed < 1 {
		t.Fatalf("TerminateClientBackends: %d, %v", killed, err)
	}
	if _, err := held.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("a terminated session still runs queries")
	}

	// Start without Fenced lifts a fence left in the managed file.
	if _, err := n.Restart(ctx, StartOptions{}); err != nil {
		t.Fatal(err)
	}
	assertReadOnly(false)
}

func TestReplicationSlots(t *testing.T) {
	n := newTestNode(t, "slots", true)
	ctx := testCtx(t, time.Minute)
	startNode(t, n, StartOptions{})
	for _, want := range []bool{true, false} {
		created, err := n.CreateReplicationSlot(ctx, "pgbattery_n2")
		if err != nil || created != want {
			t.Fatalf("create: %v, %v (want created=%v)", created, err, want)
		}
	}
	if _, err := n.CreateReplicationSlot(ctx, "pgbattery_n3"); err != nil {
		t.Fatal(err)
	}
	slots, err := n.ReplicationSlots(ctx)
	if err != nil || len(slots) != 2 || slots[0].Name != "pgbattery_n2" || slots[0].Active || slots[0].RestartLSN == 0 {
		t.Fatalf("slots %+v, %v", slots, err)
	}
	for _, want := range []bool{true, false} {
		dropped, err := n.DropReplicationSlot(ctx, "pgbattery_n2")
		if err != nil || dropped != want {
			t.Fatalf("drop: %v, %v (want dropped=%v)", dropped, err, want)
		}
	}
	if slots, _ := n.ReplicationSlots(ctx); len(slots) != 1 || slots[0].Name != "pgbattery_n3" {
		t.Fatalf("after drop: %+v", slots)
	}
	if _, err := n.CreateReplicationSlot(ctx, "Bad-Name"); err == nil {
		t.Fatal("invalid slot name accepted")
	}
}

// scanProcsForSecrets fails the test if any process's arguments or
// PostgreSQL's environment carry one of the secrets.
func scanProcsForSecrets(t *testing.T) {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	scanned := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		for _, f := range []string{"cmdline", "environ"} {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, f))
			if err != nil {
				continue
			}
			scanned++
			for _, s := range []string{testSuper.Password, testRepl.Password} {
				if strings.Contains(string(b), s) {
					t.Errorf("a secret appears in /proc/%d/%s: %q", pid, f, strings.ReplaceAll(string(b), "\x00", " "))
				}
			}
		}
	}
	if scanned == 0 {
		t.Fatal("could not read any /proc/*/cmdline")
	}
}

// TestSetFencedGivesUpWhenPostgresDies: a setting that does not take effect
// (here overridden for the agent's role) keeps SetFenced waiting; when
// PostgreSQL dies meanwhile it returns at once instead of waiting out its
// context (the reconciler's is minutes long).
func TestSetFencedGivesUpWhenPostgresDies(t *testing.T) {
	n := newTestNode(t, "fencedie", true)
	ctx := testCtx(t, 60*time.Second)
	if _, err := n.Start(ctx, StartOptions{}); err != nil {
		t.Fatal(err)
	}
	// A role setting beats the configuration file for sessions that start
	// after it: the control connection is made to start again.
	mustExec(t, n, "ALTER ROLE "+testSuper.User+" SET default_transaction_read_only = off")
	mustExec(t, n, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- n.SetFenced(ctx, true) }()
	time.Sleep(300 * time.Millisecond)
	if err := n.Kill("test: dies while the fence is applied"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not running") {
			t.Fatalf("SetFenced on a dead server: %v", err)
		}
		t.Logf("returned %s after the start, with: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(20 * time.Second):
		t.Fatal("SetFenced still waiting 20 s after PostgreSQL died")
	}
}
