package consensus

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// kvFSM is a tiny FSM for these tests: "key=value" entries into a map.
type kvFSM struct {
	mu sync.Mutex
	m  map[string]string
}

func newKV() *kvFSM { return &kvFSM{m: map[string]string{}} }

func (f *kvFSM) Apply(l *raft.Log) interface{} {
	k, v, ok := strings.Cut(string(l.Data), "=")
	if !ok {
		return fmt.Errorf("bad entry %q", l.Data)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[k] = v
	return len(f.m)
}

func (f *kvFSM) get(k string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.m[k]
	return v, ok
}

func (f *kvFSM) len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.m)
}

func (f *kvFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, err := json.Marshal(f.m)
	return kvSnap(b), err
}

func (f *kvFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	m := map[string]string{}
	if err := json.NewDecoder(rc).Decode(&m); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m = m
	return nil
}

type kvSnap []byte

func (s kvSnap) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s kvSnap) Release() {}

// logBuffer collects a node's logs; they are printed when the test fails
// (t.Log cannot be used: raft goroutines may log after the test ends).
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 8<<20 {
		return len(p), nil // cap
	}
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testNode is one member under test.
type testNode struct {
	t      testing.TB
	cfg    Config
	fsm    *kvFSM
	logs   *logBuffer
	node   *Node
	fsmNew bool // a fresh FSM at every start, as an agent restart has
}

type nodeOpt func(*Config)

func withTLS(c *tls.Config) nodeOpt { return func(cfg *Config) { cfg.TLS = c } }
func nonServer() nodeOpt            { return func(cfg *Config) { cfg.Server = false; cfg.BootstrapExpect = 0 } }
func expect(n int) nodeOpt          { return func(cfg *Config) { cfg.BootstrapExpect = n } }
func tweak(f func(*Config)) nodeOpt { return f }
func named(name string) nodeOpt     { return func(cfg *Config) { cfg.NodeName = name } }
func multiplier(m int) nodeOpt      { return func(cfg *Config) { cfg.Multiplier = m } }
func dataDir(d string) nodeOpt      { return func(cfg *Config) { cfg.DataDir = d } }
func nodeID(id string) nodeOpt      { return func(cfg *Config) { cfg.NodeID = id } }
func applyOpts(c *Config, opts []nodeOpt) {
	for _, o := range opts {
		o(c)
	}
}

// newTestNode starts a node on its own loopback address and data dir.
func newTestNode(t testing.TB, id string, opts ...nodeOpt) *testNode {
	t.Helper()
	cfg := Config{
		NodeID:          id,
		NodeName:        "node-" + id,
		DataDir:         t.TempDir(),
		Server:          true,
		BootstrapExpect: 3,
	}
	applyOpts(&cfg, opts)
	if cfg.BindAddr == "" {
		cfg.BindAddr = testutil.Addr(t)
	}
	tn := &testNode{t: t, cfg: cfg, logs: &logBuffer{}}
	t.Cleanup(func() {
		tn.stop()
		if t.Failed() {
			t.Logf("logs of %s:\n%s", id, tn.logs.String())
		}
	})
	tn.start()
	return tn
}

func (tn *testNode) start() {
	tn.t.Helper()
	if err := tn.tryStart(); err != nil {
		tn.t.Fatalf("starting %s: %v", tn.cfg.NodeID, err)
	}
}

func (tn *testNode) tryStart() error {
	cfg := tn.cfg
	cfg.Logger = hclog.New(&hclog.LoggerOptions{
		Name:   tn.cfg.NodeID,
		Level:  hclog.Debug,
		Output: tn.logs,
	})
	tn.fsm = newKV()
	n, err := New(cfg, tn.fsm)
	if err != nil {
		return err
	}
	tn.node = n
	return nil
}

func (tn *testNode) stop() {
	if tn.node != nil {
		if err := tn.node.Shutdown(); err != nil {
			tn.t.Errorf("shutting down %s: %v", tn.cfg.NodeID, err)
		}
		tn.node = nil
	}
}

func (tn *testNode) server() Server {
	return Server{
		ID:       tn.cfg.NodeID,
		Name:     tn.cfg.NodeName,
		Address:  tn.node.Address(),
		Expect:   tn.cfg.BootstrapExpect,
		HasState: tn.node.HasExistingState(),
	}
}

// newCluster starts n servers with bootstrap_expect n and bootstraps them
// the way the agent would: every server is told about every server.
func newCluster(t testing.TB, n int, opts ...nodeOpt) []*testNode {
	t.Helper()
	nodes := make([]*testNode, n)
	for i := range nodes {
		nodes[i] = newTestNode(t, fmt.Sprintf("s%d", i+1), append([]nodeOpt{expect(n)}, opts...)...)
	}
	var servers []Server
	for _, tn := range nodes {
		servers = append(servers, tn.server())
	}
	for _, tn := range nodes {
		ok, err := tn.node.MaybeBootstrap(servers)
		// A majority that bootstrapped first may have elected a leader
		// that reached this node already: then it has state and rightly
		// does not bootstrap.
		if err != nil || !ok && !tn.node.HasExistingState() {
			t.Fatalf("bootstrapping %s: bootstrapped=%v err=%v", tn.cfg.NodeID, ok, err)
		}
	}
	return nodes
}

// waitFor polls cond until it holds or the timeout, stretched by
// testutil.Timeout for slow machines, passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	timeout = testutil.Timeout(t, timeout)
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitLeader waits until exactly one running node leads and every running
// node agrees on it (the timeout is stretched as waitFor's).
func waitLeader(t testing.TB, nodes []*testNode, timeout time.Duration) *testNode {
	t.Helper()
	var leader *testNode
	waitFor(t, timeout, "one leader all nodes agree on", func() bool {
		leader = nil
		for _, tn := range nodes {
			if tn.node == nil {
				continue
			}
			if tn.node.IsLeader() {
				if leader != nil {
					return false
				}
				leader = tn
			}
		}
		if leader == nil {
			return false
		}
		for _, tn := range nodes {
			if tn.node == nil {
				continue
			}
			if _, id := tn.node.Leader(); id != leader.cfg.NodeID {
				return false
			}
		}
		return true
	})
	return leader
}

// ctxTimeout is a context that ends after d, stretched by testutil.Timeout.
func ctxTimeout(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testutil.Timeout(t, d))
	t.Cleanup(cancel)
	return ctx
}

// apply applies key=value through the leader, retrying while leadership
// moves (bounded).
func apply(t testing.TB, nodes []*testNode, kv string) {
	t.Helper()
	deadline := time.Now().Add(testutil.Timeout(t, 60*time.Second))
	for {
		leader := waitLeader(t, nodes, 10*time.Second)
		_, err := leader.node.Apply(ctxTimeout(t, 5*time.Second), []byte(kv))
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("applying %q: %v", kv, err)
		}
	}
}

func running(nodes []*testNode) []*testNode {
	var out []*testNode
	for _, tn := range nodes {
		if tn.node != nil {
			out = append(out, tn)
		}
	}
	return out
}

// onLeader runs fn on the current leader, again on the next leader if
// leadership moved under it (machines under load lose leaders), until the
// timeout, stretched by testutil.TimeoutScale. It is safe to call from any
// goroutine.
func onLeader(nodes []*testNode, timeout time.Duration, fn func(n *Node) error) error {
	scale, err := testutil.TimeoutScale()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(time.Duration(float64(timeout) * scale))
	for {
		var leader *Node
		for _, tn := range nodes {
			if n := tn.node; n != nil && n.IsLeader() {
				leader = n
			}
		}
		var err error
		if leader == nil {
			err = ErrNotLeader
		} else if err = fn(leader); err == nil {
			return nil
		}
		if !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) &&
			!errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return err
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}
