package pgctl

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// Credentials every test instance shares: a template data directory is
// initdb'd once and copied, and the roles in it carry these secrets.
var (
	testSuper = Credentials{User: DefaultSuperuser, Password: "test-superuser-secret-0123456789abcdef"}
	testRepl  = Credentials{User: DefaultReplicationUser, Password: "test-replication-secret-0123456789abc"}
)

var (
	templateOnce sync.Once
	templateDir  string // a stopped, freshly initdb'd PGDATA
	templateErr  error
	templateRoot string
)

func TestMain(m *testing.M) {
	if h := os.Getenv(helperEnv); h != "" {
		os.Exit(runHelper(h))
	}
	code := m.Run()
	if templateRoot != "" {
		os.RemoveAll(templateRoot)
	}
	os.Exit(code)
}

func testBinaries(t testing.TB) *Binaries {
	t.Helper()
	b, err := FindBinaries(context.Background(), "")
	if err != nil {
		t.Fatalf("FindBinaries: %v", err)
	}
	return b
}

// syncBuffer is a goroutine-safe log sink, so tests can assert what the
// logs never contain.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

type testNode struct {
	*Instance
	addr string
	logs *syncBuffer
	exit chan ExitStatus
}

func (n *testNode) peer() Peer { return Peer{Host: n.addr, Port: n.Config().Port} }

// newTestNode configures an instance on its own loopback address with its
// own directory. withData copies the template cluster into PGDATA.
func newTestNode(t testing.TB, name string, withData bool) *testNode {
	t.Helper()
	addr := testutil.Addr(t)
	dir := filepath.Join(testutil.TempDir(t), name)
	logs := &syncBuffer{}
	exits := make(chan ExitStatus, 16)
	inst, err := NewInstance(Config{
		NodeName:    name,
		Binaries:    testBinaries(t),
		Dir:         dir,
		ListenAddr:  addr,
		Port:        DefaultPort,
		OSUser:      testutil.PostgresOSUser,
		Superuser:   testSuper,
		Replication: testRepl,
		Parameters: map[string]string{
			// Test speed: durability is not what these tests are about.
			"fsync":                      "off",
			"synchronous_commit":         "on",
			"full_page_writes":           "on",
			"shared_buffers":             "16MB",
			"max_connections":            "40",
			"checkpoint_timeout":         "30s",
			"log_min_messages":           "info",
			"log_line_prefix":            "%m [%p] ",
			"wal_keep_size":              "64MB",
			"max_wal_size":               "64MB",
			"min_wal_size":               "32MB",
			"log_connections":            "off",
			"log_statement":              "all",
			"logging_collector":          "off",
			"dynamic_shared_memory_type": "posix",
		},
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:   "pgctl." + name,
			Level:  hclog.Debug,
			Output: io.MultiWriter(logs, testWriter{t}),
		}),
		OnExit:    func(e ExitStatus) { exits <- e },
		StopGrace: 5 * time.Second,
	})
	if err != nil {
		t.Fatalf("NewInstance: %v", err)
	}
	n := &testNode{Instance: inst, addr: addr, logs: logs, exit: exits}
	if withData {
		copyTemplate(t, inst)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := inst.Stop(ctx, StopImmediate); err != nil {
			t.Errorf("cleanup: stopping %s: %v", name, err)
		}
		if t.Failed() {
			b, _ := os.ReadFile(inst.Config().LogFile)
			t.Logf("PostgreSQL log of %s:\n%s", name, lastN(string(b), 4000))
		}
		// The secrets must never reach the agent's logs, nor PostgreSQL's
		// (which logs every statement here: log_statement=all).
		pglog, _ := os.ReadFile(inst.Config().LogFile)
		for _, s := range []string{testSuper.Password, testRepl.Password} {
			if strings.Contains(logs.String(), s) {
				t.Errorf("a secret appeared in the agent log of %s", name)
			}
			if strings.Contains(string(pglog), s) {
				t.Errorf("a secret appeared in the PostgreSQL log of %s", name)
			}
		}
	})
	return n
}

func lastN(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

// copyTemplate fills inst's PGDATA with a copy of the template cluster.
func copyTemplate(t testing.TB, inst *Instance) {
	t.Helper()
	templateOnce.Do(func() {
		templateRoot, templateErr = os.MkdirTemp("", "pgctl-template-")
		if templateErr != nil {
			return
		}
		if templateErr = os.Chmod(templateRoot, 0o755); templateErr != nil {
			return
		}
		tmpl, err := NewInstance(Config{
			NodeName:    "template",
			Binaries:    inst.cfg.Binaries,
			Dir:         filepath.Join(templateRoot, "n"),
			ListenAddr:  "127.0.0.1",
			Port:        DefaultPort,
			OSUser:      testutil.PostgresOSUser,
			Superuser:   testSuper,
			Replication: testRepl,
		})
		if err != nil {
			templateErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		templateErr = tmpl.InitDB(ctx, InitDBOptions{NoSync: true})
		templateDir = tmpl.DataDir()
	})
	if templateErr != nil {
		t.Fatalf("creating the template cluster: %v", templateErr)
	}
	if err := inst.prepareDirs(); err != nil {
		t.Fatal(err)
	}
	if err := copyTree(templateDir, inst.DataDir()); err != nil {
		t.Fatalf("copying the template cluster: %v", err)
	}
	if err := inst.user.chownTree(inst.DataDir()); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(inst.DataDir(), 0o700); err != nil {
		t.Fatal(err)
	}
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm())
		case d.Type().IsRegular():
			in, err := os.Open(p)
			if err != nil {
				return err
			}
			defer in.Close()
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, in); err != nil {
				out.Close()
				return err
			}
			return out.Close()
		case d.Type()&fs.ModeSymlink != 0:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(l, target)
		}
		return fmt.Errorf("copying %s: unsupported file type", p)
	})
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// startNode starts n and fails the test when it does not become ready.
func startNode(t testing.TB, n *testNode, opts StartOptions) *Postmaster {
	t.Helper()
	pm, err := n.Start(testCtx(t, 60*time.Second), opts)
	if err != nil {
		t.Fatalf("starting %s: %v", n.cfg.NodeName, err)
	}
	return pm
}

// eventually polls cond every 20ms until it returns nil or d elapses.
func eventually(t testing.TB, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s: %v", what, d, err)
}

// exec runs SQL on n's local socket.
func execSQL(t testing.TB, n *testNode, sql string, args ...any) error {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	conn, err := n.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

func mustExec(t testing.TB, n *testNode, sql string, args ...any) {
	t.Helper()
	if err := execSQL(t, n, sql, args...); err != nil {
		t.Fatalf("%s on %s: %v", sql, n.cfg.NodeName, err)
	}
}

func queryInt(t testing.TB, n *testNode, sql string, args ...any) (int64, error) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	conn, err := n.Connect(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	var v int64
	err = conn.QueryRow(ctx, sql, args...).Scan(&v)
	return v, err
}
