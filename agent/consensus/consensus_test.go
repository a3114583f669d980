package consensus

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestBootstrapExpectWaitsForServers(t *testing.T) {
	nodes := []*testNode{newTestNode(t, "s1"), newTestNode(t, "s2"), newTestNode(t, "s3")}
	s1 := nodes[0]

	// Two of three known: nothing happens.
	ok, err := s1.node.MaybeBootstrap([]Server{nodes[0].server(), nodes[1].server()})
	if err != nil || ok {
		t.Fatalf("bootstrap with 2 of 3 servers: bootstrapped=%v err=%v", ok, err)
	}
	if s1.node.HasExistingState() {
		t.Fatal("s1 has raft state before bootstrapping")
	}

	// A server that disagrees about bootstrap_expect blocks bootstrap.
	odd := nodes[2].server()
	odd.Expect = 5
	if _, err := s1.node.MaybeBootstrap([]Server{nodes[1].server(), odd}); err == nil || !strings.Contains(err.Error(), "expects 5") {
		t.Fatalf("bootstrap with a mismatched expect: err=%v, want one naming the mismatch", err)
	}

	// Two servers claiming one address are refused.
	dup := nodes[2].server()
	dup.Address = nodes[1].node.Address()
	if _, err := s1.node.MaybeBootstrap([]Server{nodes[1].server(), dup}); err == nil || !strings.Contains(err.Error(), "share the raft address") {
		t.Fatalf("bootstrap with a shared address: err=%v", err)
	}

	// All three, gossip order differing per node (and self omitted on s3:
	// it is added from its own config).
	all := []Server{nodes[0].server(), nodes[1].server(), nodes[2].server()}
	for i, tn := range nodes {
		servers := all
		switch i {
		case 1:
			servers = []Server{all[2], all[0], all[1]}
		case 2:
			servers = []Server{all[1], all[0]}
		}
		ok, err := tn.node.MaybeBootstrap(servers)
		// The first two can elect a leader that reaches the third before
		// its own call: then it has state and rightly does not bootstrap.
		if err != nil || !ok && !tn.node.HasExistingState() {
			t.Fatalf("bootstrapping %s: bootstrapped=%v err=%v", tn.cfg.NodeID, ok, err)
		}
		// Exactly once.
		if ok, err := tn.node.MaybeBootstrap(all); ok || err != nil {
			t.Fatalf("second bootstrap on %s: bootstrapped=%v err=%v", tn.cfg.NodeID, ok, err)
		}
	}
	leader := waitLeader(t, nodes, 10*time.Second)

	conf, _, err := leader.node.configuration()
	if err != nil {
		t.Fatal(err)
	}
	if len(conf.Servers) != 3 {
		t.Fatalf("configuration has %d servers, want 3: %+v", len(conf.Servers), conf.Servers)
	}

	for i := 0; i < 5; i++ {
		apply(t, nodes, fmt.Sprintf("k%d=v%d", i, i))
	}
	for _, tn := range nodes {
		waitFor(t, 5*time.Second, tn.cfg.NodeID+" to apply 5 entries", func() bool { return tn.fsm.len() == 5 })
	}

	// A fourth server with no state that finds servers with state must
	// not bootstrap next to them.
	late := newTestNode(t, "s4")
	var withState []Server
	for _, tn := range nodes {
		withState = append(withState, tn.server())
	}
	if !withState[0].HasState {
		t.Fatal("a bootstrapped server reports no existing state")
	}
	if ok, err := late.node.MaybeBootstrap(withState); ok || err != nil {
		t.Fatalf("late server bootstrapped=%v err=%v, want it to wait for the leader", ok, err)
	}
	if late.node.HasExistingState() {
		t.Fatal("late server acquired state without being added")
	}
}

func TestApplyOnFollowerNamesLeader(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := waitLeader(t, nodes, 10*time.Second)
	for _, tn := range nodes {
		if tn == leader {
			continue
		}
		_, err := tn.node.Apply(ctxTimeout(t, time.Second), []byte("a=b"))
		if !errors.Is(err, ErrNotLeader) || !strings.Contains(err.Error(), leader.cfg.NodeID) {
			t.Fatalf("apply on follower: %v, want ErrNotLeader naming %s", err, leader.cfg.NodeID)
		}
	}
	// The FSM's error comes back as the error. Leadership may move under
	// load while the entry commits; then ask the new leader (bounded).
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		_, err = leader.node.Apply(ctxTimeout(t, 5*time.Second), []byte("no equals sign"))
		if err == nil || !strings.Contains(err.Error(), "leadership lost") && !errors.Is(err, ErrNotLeader) {
			break
		}
		leader = waitLeader(t, nodes, 10*time.Second)
	}
	if err == nil || !strings.Contains(err.Error(), "bad entry") {
		t.Fatalf("apply of a bad entry: %v, want the FSM's error", err)
	}
	resp, err := leader.node.Apply(ctxTimeout(t, 5*time.Second), []byte("x=1"))
	if err != nil || resp != 1 {
		t.Fatalf("apply: resp=%v err=%v", resp, err)
	}
	if err := leader.node.Barrier(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := leader.node.VerifyLeader(ctxTimeout(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
}

func TestNonvoterJoinsAndReceivesEntries(t *testing.T) {
	nodes := newCluster(t, 3)
	for i := 0; i < 3; i++ {
		apply(t, nodes, fmt.Sprintf("before%d=x", i))
	}

	client := newTestNode(t, "c1", nonServer(), named("client-1"))
	if ok, err := client.node.MaybeBootstrap([]Server{nodes[0].server(), nodes[1].server(), nodes[2].server()}); ok || err != nil {
		t.Fatalf("non-server bootstrapped=%v err=%v", ok, err)
	}
	leader := waitLeader(t, nodes, 10*time.Second)
	// Followers cannot change membership.
	for _, tn := range nodes {
		if tn != leader {
			if err := tn.node.AddNonvoter(ctxTimeout(t, time.Second), "c1", client.node.Address()); !errors.Is(err, ErrNotLeader) {
				t.Fatalf("AddNonvoter on a follower: %v, want ErrNotLeader", err)
			}
		}
	}
	addC1 := func(n *Node) error { return n.AddNonvoter(ctxTimeout(t, 10*time.Second), "c1", client.node.Address()) }
	if err := onLeader(nodes, 10*time.Second, addC1); err != nil {
		t.Fatal(err)
	}
	// Idempotent.
	if err := onLeader(nodes, 10*time.Second, addC1); err != nil {
		t.Fatalf("adding the same non-voter again: %v", err)
	}
	// A voter cannot be added again as a non-voter.
	if err := onLeader(nodes, 10*time.Second, func(n *Node) error {
		return n.AddNonvoter(ctxTimeout(t, 10*time.Second), nodes[0].cfg.NodeID, nodes[0].node.Address())
	}); err == nil || !strings.Contains(err.Error(), "is a voter") {
		t.Fatal("AddNonvoter accepted a voter")
	}
	for i := 0; i < 3; i++ {
		apply(t, nodes, fmt.Sprintf("after%d=y", i))
	}
	waitFor(t, 10*time.Second, "the non-voter to apply every entry", func() bool { return client.fsm.len() == 6 })
	if v, _ := client.fsm.get("before0"); v != "x" {
		t.Fatalf("non-voter has before0=%q", v)
	}
	if client.node.IsLeader() {
		t.Fatal("non-voter is leader")
	}
	if _, id := client.node.Leader(); id != waitLeader(t, nodes, 10*time.Second).cfg.NodeID {
		t.Fatalf("non-voter knows leader %q", id)
	}

	// list-peers, with every node's report.
	all := append(nodes, client)
	waitFor(t, 5*time.Second, "every node to apply everything", func() bool {
		want := leader.node.Progress().CommitIndex
		for _, tn := range all {
			if tn.node.Progress().AppliedIndex < want {
				return false
			}
		}
		return true
	})
	reports := map[string]Progress{}
	for _, tn := range all {
		reports[tn.cfg.NodeID] = tn.node.Progress()
	}
	leader = waitLeader(t, nodes, 10*time.Second)
	peers, err := client.node.Peers(reports)
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 4 {
		t.Fatalf("list-peers has %d rows, want 4: %+v", len(peers), peers)
	}
	if peers[0].ID != leader.cfg.NodeID || peers[0].State != "leader" || !peers[0].Voter {
		t.Fatalf("first row %+v, want the leader %s", peers[0], leader.cfg.NodeID)
	}
	for _, p := range peers {
		if !p.Reported || p.Node != "node-"+p.ID && p.Node != "client-1" {
			t.Errorf("row %+v: node name or report missing", p)
		}
		if p.Voter != (p.ID != "c1") {
			t.Errorf("row %+v: voter=%v", p, p.Voter)
		}
		if p.TrailsLeaderBy != 0 || p.CommitIndex == 0 || p.RaftProtocol != "3" {
			t.Errorf("row %+v: want caught up, commit index > 0, protocol 3", p)
		}
		if p.ID != leader.cfg.NodeID && p.State != "follower" {
			t.Errorf("row %+v: want follower", p)
		}
	}

	// Trailing is the leader's commit index minus the peer's applied
	// index; a peer without a report is unknown.
	lag := reports["c1"]
	lag.AppliedIndex -= 4
	reports["c1"] = lag
	delete(reports, nodes[0].cfg.NodeID)
	if nodes[0] == leader {
		delete(reports, nodes[1].cfg.NodeID)
	}
	peers, err = leader.node.Peers(reports)
	if err != nil {
		t.Fatal(err)
	}
	unreported := 0
	for _, p := range peers {
		switch {
		case p.ID == "c1" && p.TrailsLeaderBy != 4:
			t.Errorf("lagging row %+v: want trails by 4", p)
		case !p.Reported:
			unreported++
			if p.State != "unknown" || p.Node != "" {
				t.Errorf("unreported row %+v", p)
			}
		}
	}
	if unreported != 1 {
		t.Errorf("%d unreported rows, want 1: %+v", unreported, peers)
	}

	// remove-peer: unknown IDs are an operator error; the non-voter goes.
	if err := leader.node.RemovePeer(ctxTimeout(t, 5*time.Second), "nope"); err == nil || !strings.Contains(err.Error(), "no peer") {
		t.Fatalf("removing an unknown peer: %v", err)
	}
	if err := onLeader(nodes, 10*time.Second, func(n *Node) error { return n.RemovePeer(ctxTimeout(t, 10*time.Second), "c1") }); err != nil {
		t.Fatal(err)
	}
	peers, err = leader.node.Peers(nil)
	if err != nil || len(peers) != 3 {
		t.Fatalf("after remove-peer: %d rows, err=%v", len(peers), err)
	}
}

func TestLeaderKillAndRestart(t *testing.T) {
	nodes := newCluster(t, 3)
	for i := 0; i < 10; i++ {
		apply(t, nodes, fmt.Sprintf("a%d=1", i))
	}
	old := waitLeader(t, nodes, 10*time.Second)

	// Watch from a follower: it must see a new term and a new leader.
	var watcher *testNode
	for _, tn := range nodes {
		if tn != old {
			watcher = tn
			break
		}
	}
	events, cancel := watcher.node.WatchLeadership()
	defer cancel()
	first := <-events
	if first.LeaderID != old.cfg.NodeID || first.IsLeader {
		t.Fatalf("first event %+v, want leader %s", first, old.cfg.NodeID)
	}

	old.stop()
	leader := waitLeader(t, nodes, 10*time.Second)
	if leader == old {
		t.Fatal("a stopped node is leader")
	}
	deadline := time.After(10 * time.Second)
	for seen := false; !seen; {
		select {
		case ev := <-events:
			seen = ev.Term > first.Term && ev.LeaderID == leader.cfg.NodeID
		case <-deadline:
			t.Fatalf("watcher never reported the new leader %s in a new term", leader.cfg.NodeID)
		}
	}
	for i := 0; i < 10; i++ {
		apply(t, nodes, fmt.Sprintf("b%d=2", i))
	}

	// Restart from its data dir: it rejoins, does not bootstrap again, and
	// catches up on what it missed.
	old.start()
	if !old.node.HasExistingState() {
		t.Fatal("restarted node has no state")
	}
	var servers []Server
	for _, tn := range nodes {
		servers = append(servers, tn.server())
	}
	if ok, err := old.node.MaybeBootstrap(servers); ok || err != nil {
		t.Fatalf("restarted node bootstrapped=%v err=%v", ok, err)
	}
	waitFor(t, 10*time.Second, "the restarted node to catch up", func() bool { return old.fsm.len() == 20 })
	if v, _ := old.fsm.get("b9"); v != "2" {
		t.Fatalf("restarted node has b9=%q", v)
	}
	leader = waitLeader(t, nodes, 10*time.Second)
	conf, _, err := leader.node.configuration()
	if err != nil || len(conf.Servers) != 3 {
		t.Fatalf("configuration after restart: %+v err=%v", conf.Servers, err)
	}
}

// Full stop and start of every server: the same state, a leader, no second
// bootstrap.
func TestFullClusterRestart(t *testing.T) {
	nodes := newCluster(t, 3)
	for i := 0; i < 5; i++ {
		apply(t, nodes, fmt.Sprintf("k%d=v", i))
	}
	for _, tn := range nodes {
		waitFor(t, 5*time.Second, tn.cfg.NodeID+" to apply", func() bool { return tn.fsm.len() == 5 })
	}
	for _, tn := range nodes {
		tn.stop()
	}
	for _, tn := range nodes {
		tn.start()
	}
	var servers []Server
	for _, tn := range nodes {
		servers = append(servers, tn.server())
	}
	for _, tn := range nodes {
		if ok, err := tn.node.MaybeBootstrap(servers); ok || err != nil {
			t.Fatalf("%s bootstrapped again: %v %v", tn.cfg.NodeID, ok, err)
		}
	}
	waitLeader(t, nodes, 10*time.Second)
	apply(t, nodes, "after=restart")
	for _, tn := range nodes {
		waitFor(t, 5*time.Second, tn.cfg.NodeID+" to replay and apply", func() bool { return tn.fsm.len() == 6 })
		if v, _ := tn.fsm.get("k4"); v != "v" {
			t.Fatalf("%s lost k4 over the restart", tn.cfg.NodeID)
		}
	}
}

func TestLeadershipTransferToNamedServer(t *testing.T) {
	nodes := newCluster(t, 3)
	leader := waitLeader(t, nodes, 10*time.Second)
	term := leader.node.Term()
	var target *testNode
	for _, tn := range nodes {
		if tn != leader {
			target = tn
		}
	}
	events, cancel := target.node.WatchLeadership()
	defer cancel()

	if err := target.node.LeadershipTransferToServer(ctxTimeout(t, 5*time.Second), leader.cfg.NodeID, ""); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("transfer from a follower: %v, want ErrNotLeader", err)
	}
	if err := leader.node.LeadershipTransferToServer(ctxTimeout(t, 5*time.Second), "nope", ""); err == nil {
		t.Fatal("transfer to an unknown server succeeded")
	}
	// (On a loaded machine leadership may move by itself meanwhile: then
	// ask whoever leads; if that is the target, there is nothing to do.)
	if err := onLeader(nodes, 10*time.Second, func(n *Node) error {
		if n == target.node {
			return nil
		}
		return n.LeadershipTransferToServer(ctxTimeout(t, 10*time.Second), target.cfg.NodeID, "")
	}); err != nil {
		t.Fatal(err)
	}
	if got := waitLeader(t, nodes, 10*time.Second); got != target {
		t.Fatalf("leader after transfer is %s, want %s", got.cfg.NodeID, target.cfg.NodeID)
	}
	deadline := time.After(5 * time.Second)
	for seen := false; !seen; {
		select {
		case ev := <-events:
			seen = ev.IsLeader && ev.Term > term
		case <-deadline:
			t.Fatal("the new leader's watcher never reported its leadership")
		}
	}
	apply(t, nodes, "after=transfer")

	// And an unnamed transfer moves it away again.
	if err := target.node.LeadershipTransfer(ctxTimeout(t, 10*time.Second)); err != nil && !errors.Is(err, ErrNotLeader) {
		t.Fatal(err)
	}
	if got := waitLeader(t, nodes, 10*time.Second); got == target {
		t.Fatal("leadership did not move")
	}
}

func TestLeaveHandsOverLeadership(t *testing.T) {
	nodes := newCluster(t, 3)
	apply(t, nodes, "a=1")
	leader := waitLeader(t, nodes, 10*time.Second)
	var others []*testNode
	for _, tn := range nodes {
		if tn != leader {
			others = append(others, tn)
		}
	}
	if err := leader.node.Leave(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	leader.node = nil
	// Handed over, not elected after a timeout: the new leader was in
	// place when Leave returned, or is within moments.
	next := waitLeader(t, others, 10*time.Second)
	apply(t, others, "b=2")
	waitFor(t, 5*time.Second, "the follower to apply", func() bool {
		for _, tn := range others {
			if tn.fsm.len() != 2 {
				return false
			}
		}
		return true
	})
	_ = next
}

func TestSnapshotCatchUpAndRestore(t *testing.T) {
	small := tweak(func(c *Config) {
		c.snapshotThreshold = 16
		c.trailingLogs = 4
		c.snapshotInterval = 50 * time.Millisecond
	})
	nodes := newCluster(t, 3, small)
	for i := 0; i < 60; i++ {
		apply(t, nodes, fmt.Sprintf("k%d=%d", i, i))
	}
	leader := waitLeader(t, nodes, 10*time.Second)
	if err := leader.node.Snapshot(ctxTimeout(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	// A new non-voter can only be brought up to date by a snapshot now.
	c := newTestNode(t, "c1", nonServer(), small)
	if err := onLeader(nodes, 10*time.Second, func(n *Node) error { return n.AddNonvoter(ctxTimeout(t, 10*time.Second), "c1", c.node.Address()) }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the non-voter to install the snapshot", func() bool { return c.fsm.len() == 60 })

	// Restarting it restores from its own snapshot.
	c.stop()
	c.start()
	waitFor(t, 10*time.Second, "the restarted non-voter to restore", func() bool { return c.fsm.len() == 60 })
}

func TestSecondProcessOnSameDirRefused(t *testing.T) {
	a := newTestNode(t, "s1", expect(1))
	b := &testNode{t: t, cfg: a.cfg, logs: &logBuffer{}}
	b.cfg.BindAddr = newTestNodeAddr(t)
	b.cfg.AdvertiseAddr = ""
	err := b.tryStart()
	if err == nil {
		b.stop()
		t.Fatal("a second node opened a raft directory in use")
	}
	if !strings.Contains(err.Error(), "in use") {
		t.Fatalf("error %v, want it to say the store is in use", err)
	}
}

func TestConfigValidation(t *testing.T) {
	base := Config{NodeID: "a", DataDir: "/tmp/x", BindAddr: "127.0.0.9"}
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no id", func(c *Config) { c.NodeID = "" }, "node ID"},
		{"no dir", func(c *Config) { c.DataDir = "" }, "data dir"},
		{"multiplier", func(c *Config) { c.Multiplier = 11 }, "multiplier"},
		{"expect on client", func(c *Config) { c.BootstrapExpect = 3 }, "not a server"},
		{"unspecified advertise", func(c *Config) { c.BindAddr = "0.0.0.0:8300" }, "advertise"},
		{"bad port", func(c *Config) { c.BindAddr = "127.0.0.9:99999" }, "port"},
	}
	for _, tc := range cases {
		c := base
		tc.mod(&c)
		if _, _, err := c.withDefaults(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err=%v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	c, _, err := base.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.BindAddr != "127.0.0.9:8300" || c.AdvertiseAddr != "127.0.0.9:8300" || c.Multiplier != 1 {
		t.Fatalf("defaults: %+v", c)
	}
	tm, err := TimingsFor(3)
	if err != nil || tm.HeartbeatTimeout != 3*baseHeartbeatTimeout || tm.LeaderLeaseTimeout != 3*baseLeaderLeaseTimeout {
		t.Fatalf("TimingsFor(3) = %+v, %v", tm, err)
	}
	rc := c.raftConfig()
	if rc.PreVoteDisabled || rc.ShutdownOnRemove {
		t.Fatalf("raft config: PreVoteDisabled=%v ShutdownOnRemove=%v", rc.PreVoteDisabled, rc.ShutdownOnRemove)
	}
}

// Membership changes from concurrent callers are queued, not raced: each
// is made against the configuration the previous one produced.
func TestConcurrentMembershipChangesSerialized(t *testing.T) {
	nodes := newCluster(t, 3)
	clients := []*testNode{
		newTestNode(t, "c1", nonServer()),
		newTestNode(t, "c2", nonServer()),
		newTestNode(t, "c3", nonServer()),
	}
	leader := waitLeader(t, nodes, 10*time.Second)
	errs := make(chan error, len(clients))
	for _, c := range clients {
		go func(id, addr string) {
			errs <- onLeader(nodes, 20*time.Second, func(n *Node) error { return n.AddNonvoter(ctxTimeout(t, 20*time.Second), id, addr) })
		}(c.cfg.NodeID, c.node.Address())
	}
	for range clients {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent AddNonvoter: %v", err)
		}
	}
	apply(t, nodes, "all=joined")
	for _, c := range clients {
		waitFor(t, 10*time.Second, c.cfg.NodeID+" to replicate", func() bool { return c.fsm.len() == 1 })
	}
	peers, err := leader.node.Peers(nil)
	if err != nil || len(peers) != 6 {
		t.Fatalf("peers after concurrent joins: %d, %v", len(peers), err)
	}
}
