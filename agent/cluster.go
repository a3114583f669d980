package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"

	"github.com/pgbattery/pgbattery/agent/config"
	"github.com/pgbattery/pgbattery/agent/consensus"
	"github.com/pgbattery/pgbattery/agent/controller"
	"github.com/pgbattery/pgbattery/agent/fsm"
	"github.com/pgbattery/pgbattery/agent/lease"
	"github.com/pgbattery/pgbattery/gossip"
)

// Gossip tags the cluster layer adds to gossip's own (gossip.Tag*): what the
// raft leader needs to add a node to raft and to the FSM, and what servers
// need to bootstrap together.
const (
	tagPostgresAddr     = "pgaddr"     // host:port of the node's PostgreSQL
	tagBootstrapExpect  = "expect"     // the server's bootstrap_expect
	tagRaftState        = "rstate"     // "1" once the server has raft state
	tagNoFailover       = "nofailover" // "1": never promote automatically
	tagFailoverPriority = "prio"       // failover_priority, when not the default
)

// cluster is the raft control plane of one agent: the replicated state
// (fsm), the raft node, the controller that decides (active on the raft
// leader), the primary's lease runner and the reconciler that makes the
// local PostgreSQL match the state.
type cluster struct {
	a      *Agent
	logger hclog.Logger
	// clock is the monotonic clock of the lease and the hold-down. Its
	// offset stays 0 unless debug.clock_control lets a test jump it.
	clock *lease.SkewClock

	fsm    *fsm.FSM
	raft   *consensus.Node
	ctrl   *controller.Controller
	lease  *lease.Runner
	rec    *reconciler
	fwd    *forwarder
	timing lease.Timings

	lastTransfer      time.Time // of raft leadership away from the primary
	lastTransferEpoch uint64    // the primary epoch it was made in
}

// leadershipTransferEvery rate-limits handing raft leadership away from the
// primary, so a cluster whose other servers keep failing does not churn.
const leadershipTransferEvery = 30 * time.Second

// clusterTLS is the mutual TLS configuration of the agents' own traffic
// (raft) when the tls block names a CA, a certificate and a key: every peer
// must present a certificate the cluster CA issued.
func clusterTLS(t config.TLSConfig) (*tls.Config, error) {
	if t.CAFile == "" || t.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the agent's TLS certificate %s: %w", t.CertFile, err)
	}
	pem, err := os.ReadFile(t.CAFile)
	if err != nil {
		return nil, fmt.Errorf("reading the cluster CA %s: %w", t.CAFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("the cluster CA file %s holds no PEM certificate", t.CAFile)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}, nil
}

// leaseTimings derives the lease timings from the configuration and the
// raft timings, and validates them against each other.
func leaseTimings(cfg *config.RuntimeConfig) (lease.Timings, error) {
	rt, err := consensus.TimingsFor(cfg.Raft.Multiplier)
	if err != nil {
		return lease.Timings{}, err
	}
	t := lease.Timings{
		Lease:                cfg.Failover.Lease,
		RenewInterval:        cfg.Failover.LeaseRenewInterval,
		HoldDown:             cfg.Failover.HoldDown,
		RaftHeartbeatTimeout: rt.HeartbeatTimeout,
		RaftElectionTimeout:  rt.ElectionTimeout,
	}.WithDefaults()
	if err := t.Validate(); err != nil {
		return lease.Timings{}, fmt.Errorf("failover timings do not fit together: %w", err)
	}
	return t, nil
}

func newCluster(a *Agent, cfg *config.RuntimeConfig) (*cluster, error) {
	timing, err := leaseTimings(cfg)
	if err != nil {
		return nil, err
	}
	c := &cluster{
		a:      a,
		logger: a.logger.Named("cluster"),
		clock:  lease.NewSkewClock(lease.NewSystemClock()),
		timing: timing,
	}
	c.fsm = fsm.New(a.logger.Named("fsm"))
	raftTLS, err := clusterTLS(cfg.TLS)
	if err != nil {
		return nil, err
	}
	c.raft, err = consensus.New(consensus.Config{
		TLS:             raftTLS,
		NodeID:          cfg.NodeName,
		NodeName:        cfg.NodeName,
		DataDir:         cfg.DataDir,
		BindAddr:        net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.Ports.Raft)),
		AdvertiseAddr:   net.JoinHostPort(cfg.AdvertiseAddr, strconv.Itoa(cfg.Ports.Raft)),
		Server:          cfg.Server,
		BootstrapExpect: cfg.BootstrapExpect,
		Multiplier:      cfg.Raft.Multiplier,
		Logger:          a.logger.Named("raft"),
	}, c.fsm)
	if err != nil {
		return nil, fmt.Errorf("starting raft: %w", err)
	}
	c.fwd = &forwarder{c: c}
	if cfg.Postgres.Enabled {
		c.rec, err = newReconciler(c, cfg, a.logger.Named("postgres"))
		if err != nil {
			c.raft.Shutdown()
			return nil, err
		}
	}
	c.ctrl, err = controller.New(controller.Config{
		Node:             cfg.NodeName,
		Mode:             cfg.Replication.Mode,
		MaxLagOnFailover: uint64(cfg.Replication.MaxLagOnFailover),
		Timings:          timing,
		BootstrapExpect:  cfg.BootstrapExpect,
		// A probe opens a PostgreSQL connection on the node; on a loaded
		// machine that alone can take a few hundred milliseconds.
		ProbeTimeout: 1500 * time.Millisecond,
		// The old primary drains for up to switchover.drain_timeout
		// before it fences and releases its lease (agent/gateway.go).
		SwitchoverTimeout: switchoverTimeout(cfg.Switchover.DrainTimeout),
		WallClock:         time.Now,
	}, controller.Deps{
		Clock:    c.clock,
		State:    c.fsm,
		Leader:   leadership{c.raft},
		Proposer: proposer{c},
		Prober:   prober{c},
		Logger:   a.logger.Named("controller"),
		Metrics:  metrics.Default(),
	})
	if err != nil {
		c.raft.Shutdown()
		return nil, fmt.Errorf("configuring the controller: %w", err)
	}
	if c.rec != nil {
		c.lease, err = lease.NewRunner(lease.RunnerConfig{
			Node:     cfg.NodeName,
			Timings:  timing,
			Clock:    c.clock,
			State:    c.fsm,
			Renewer:  c.fwd,
			Fencer:   c.rec,
			Logger:   a.logger.Named("lease"),
			Position: c.rec.Position,
		})
		if err != nil {
			c.raft.Shutdown()
			return nil, fmt.Errorf("configuring the lease: %w", err)
		}
	}
	return c, nil
}

// localPrimaryServes reports whether this node, named primary, may take
// work: it holds a valid lease and its PostgreSQL is not fenced.
func (c *cluster) localPrimaryServes() bool {
	if c.lease != nil && !c.lease.Valid() {
		return false
	}
	return c.rec == nil || !c.rec.instance().Fenced()
}

// start runs the cluster's goroutines under the agent's ownership.
func (c *cluster) start() {
	changes, cancel := c.fsm.Subscribe()
	c.a.goRun("controller", func(ctx context.Context) {
		defer cancel()
		if err := c.ctrl.Run(ctx, changes); err != nil {
			c.logger.Error("controller stopped", "error", err)
		}
	})
	if c.lease != nil {
		c.a.goRun("lease", func(ctx context.Context) {
			if err := c.lease.Run(ctx); err != nil {
				c.logger.Error("lease runner stopped", "error", err)
			}
		})
	}
	if c.rec != nil {
		c.a.goRun("reconciler", c.rec.Run)
	}
	c.a.goRun("membership", c.runMembership)
	c.a.goRun("fsm-watch", c.watchState)
	c.a.goRun("cluster-metrics", c.emitMetrics)
}

// watchState keeps gossip in step with the cluster state: the primary is
// the node gossip watches most closely (its failure is what matters), and
// the cluster id travels as a tag so that nodes of another cluster are never
// added to this one's raft group.
func (c *cluster) watchState(ctx context.Context) {
	changes, cancel := c.fsm.Subscribe()
	defer cancel()
	primary, clusterID := "", ""
	for {
		st := c.fsm.State()
		if st.Primary != primary {
			primary = st.Primary
			c.a.gossip.SetPrimary(primary)
		}
		if st.ClusterID != clusterID {
			if err := c.a.gossip.UpdateTags(map[string]string{gossip.TagCluster: st.ClusterID}); err != nil {
				c.logger.Warn("publishing the cluster id", "error", err)
			} else {
				clusterID = st.ClusterID
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changes:
		}
	}
}

// shutdown stops raft after the goroutines have stopped. A leader hands
// leadership over first (consensus.Node.Leave), so the others need not wait
// for an election timeout.
func (c *cluster) shutdown(ctx context.Context) error {
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.raft.Leave(lctx); err != nil {
		return fmt.Errorf("stopping raft: %w", err)
	}
	return nil
}

// onGossipEvent feeds membership changes to the controller and wakes the
// membership loop.
func (c *cluster) onGossipEvent(ev gossip.Event) {
	var kind controller.EventKind
	switch ev.Type {
	case gossip.EventJoin:
		kind = controller.EventJoin
	case gossip.EventSuspect:
		kind = controller.EventSuspect
	case gossip.EventAlive:
		kind = controller.EventAlive
	case gossip.EventFailed:
		kind = controller.EventFailed
	case gossip.EventLeave:
		kind = controller.EventLeave
	case gossip.EventUpdate:
		kind = controller.EventUpdate
	default:
		return
	}
	c.ctrl.Notify(controller.Event{Kind: kind, Node: ev.Node})
}

// runMembership bootstraps raft once enough servers have met (as Consul's
// bootstrap_expect does) and, on the leader, keeps the raft configuration
// and the FSM's member list in step with gossip.
func (c *cluster) runMembership(ctx context.Context) {
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastTag := ""
	for {
		if st := c.stateTag(); st != lastTag {
			if err := c.a.gossip.UpdateTags(map[string]string{tagRaftState: st}); err == nil {
				lastTag = st
			}
		}
		if !c.raft.HasExistingState() {
			c.maybeBootstrap()
		} else if c.raft.IsLeader() {
			c.reconcileMembers(ctx)
			c.keepLeadershipOffPrimary(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// keepLeadershipOffPrimary hands raft leadership away when this node is
// both raft leader and PostgreSQL primary. If such a node died, a new raft
// leader would first have to be elected, and it would then wait a full
// hold-down from taking office (it cannot know when the lease was last
// renewed); with the roles on different nodes the surviving leader already
// knows, and the failover costs one hold-down less the time since the last
// renewal.
func (c *cluster) keepLeadershipOffPrimary(ctx context.Context) {
	st := c.fsm.State()
	self := c.a.config().NodeName
	if st.Primary != self || !st.PrimaryReady() {
		return
	}
	// Once per new primary at once (a failover often leaves the raft
	// leader and the new primary on one node, and a node's death then
	// costs an election on top of the hold-down); otherwise rate-limited.
	if st.Epoch == c.lastTransferEpoch && time.Since(c.lastTransfer) < leadershipTransferEvery {
		return
	}
	voters := 0
	for _, m := range c.a.gossip.Members() {
		if m.Name != self && m.Status == gossip.StatusAlive && m.Tags[gossip.TagRaft] == gossip.RaftVoter {
			voters++
		}
	}
	if voters < 2 {
		return // a transfer would leave no majority to fall back on
	}
	c.lastTransfer, c.lastTransferEpoch = time.Now(), st.Epoch
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.raft.LeadershipTransfer(tctx); err != nil {
		c.logger.Warn("handing raft leadership away from the primary", "error", err)
		return
	}
	c.logger.Info("handed raft leadership to another server so that the PostgreSQL primary and the raft leader live on different nodes")
}

func (c *cluster) stateTag() string {
	if c.raft.HasExistingState() {
		return "1"
	}
	return ""
}

func (c *cluster) maybeBootstrap() {
	var servers []consensus.Server
	for _, m := range c.a.gossip.Members() {
		if m.Status != gossip.StatusAlive || m.Tags[gossip.TagRaft] != gossip.RaftVoter || m.Tags[gossip.TagRaftAddr] == "" {
			continue
		}
		expect, _ := strconv.Atoi(m.Tags[tagBootstrapExpect])
		servers = append(servers, consensus.Server{
			ID: m.Name, Name: m.Name, Address: m.Tags[gossip.TagRaftAddr],
			Expect: expect, HasState: m.Tags[tagRaftState] == "1",
		})
	}
	done, err := c.raft.MaybeBootstrap(servers)
	if err != nil {
		c.logger.Warn("bootstrapping raft", "error", err)
		return
	}
	if done {
		c.logger.Info("raft bootstrapped", "servers", len(servers))
	}
}

// reconcileMembers runs on the leader: every alive gossip member is in the
// raft configuration (voter or non-voter as its tag says) and in the FSM;
// members that left gracefully are removed from both.
func (c *cluster) reconcileMembers(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st := c.fsm.State()
	for _, m := range c.a.gossip.Members() {
		raftAddr := m.Tags[gossip.TagRaftAddr]
		if raftAddr == "" {
			continue
		}
		if id := m.Tags[gossip.TagCluster]; id != "" && st.ClusterID != "" && id != st.ClusterID {
			c.logger.Warn("ignoring a member of another cluster", "node", m.Name, "its_cluster", id, "ours", st.ClusterID)
			continue
		}
		switch m.Status {
		case gossip.StatusAlive:
			want := memberFromGossip(m)
			if cur := st.Member(m.Name); cur == nil || !sameMember(cur, &want) {
				if _, err := c.raft.Apply(ctx, mustEncode(&fsm.UpsertMember{Member: want})); err != nil {
					c.logger.Warn("recording member", "node", m.Name, "error", err)
				}
			}
			var err error
			if want.Voter {
				err = c.raft.AddVoter(ctx, m.Name, raftAddr)
			} else {
				err = c.raft.AddNonvoter(ctx, m.Name, raftAddr)
			}
			if err != nil {
				c.logger.Warn("adding raft peer", "node", m.Name, "voter", want.Voter, "error", err)
			}
		case gossip.StatusLeft:
			if m.Name == c.a.config().NodeName || m.Name == st.Primary {
				continue
			}
			if err := c.raft.RemoveServer(ctx, m.Name); err != nil {
				c.logger.Debug("removing raft peer", "node", m.Name, "error", err)
			}
			if st.Member(m.Name) != nil {
				if _, err := c.raft.Apply(ctx, mustEncode(&fsm.RemoveMember{Name: m.Name})); err != nil {
					c.logger.Warn("removing member", "node", m.Name, "error", err)
				}
			}
		}
	}
}

// stableTags are the gossip tags copied into the FSM: the ones that change
// rarely. Role, PostgreSQL state and the LSN mark change all the time and
// would flood the raft log.
var stableTags = []string{gossip.TagBuild, gossip.TagDC, gossip.TagCluster}

func memberFromGossip(m gossip.Member) fsm.Member {
	prio, err := strconv.Atoi(m.Tags[tagFailoverPriority])
	if err != nil {
		prio = config.DefaultFailoverPriority
	}
	fm := fsm.Member{
		Name: m.Name,
		ID:   m.Name,
		Addrs: map[string]string{
			"raft":     m.Tags[gossip.TagRaftAddr],
			"http":     m.Tags[gossip.TagAPI],
			"gateway":  m.Tags[gossip.TagGateway],
			"postgres": m.Tags[tagPostgresAddr],
			"serf":     m.Address(),
		},
		Tags:             map[string]string{},
		NoFailover:       m.Tags[tagNoFailover] == "1",
		FailoverPriority: prio,
		Voter:            m.Tags[gossip.TagRaft] == gossip.RaftVoter,
		NoPostgres:       m.Tags[gossip.TagRole] == gossip.RoleWitness,
	}
	for k, v := range fm.Addrs {
		if v == "" {
			delete(fm.Addrs, k)
		}
	}
	for _, k := range stableTags {
		if v := m.Tags[k]; v != "" {
			fm.Tags[k] = v
		}
	}
	return fm
}

func sameMember(a, b *fsm.Member) bool {
	if a.Name != b.Name || a.ID != b.ID || a.NoFailover != b.NoFailover || a.FailoverPriority != b.FailoverPriority ||
		a.Voter != b.Voter || a.NoPostgres != b.NoPostgres || len(a.Addrs) != len(b.Addrs) || len(a.Tags) != len(b.Tags) {
		return false
	}
	for k, v := range a.Addrs {
		if b.Addrs[k] != v {
			return false
		}
	}
	for k, v := range a.Tags {
		if b.Tags[k] != v {
			return false
		}
	}
	return true
}

func mustEncode(cmd fsm.Command) []byte {
	data, err := fsm.Encode(cmd)
	if err != nil {
		// Encoding our own command structs cannot fail; if it does, the
		// build is broken, not the input.
		panic(fmt.Sprintf("encoding %s: %v", cmd.MessageType(), err))
	}
	return data
}

// leadership adapts the raft node to the controller.
type leadership struct{ n *consensus.Node }

func (l leadership) Leader() (bool, uint64) { return l.n.IsLeader(), l.n.Term() }

// proposer submits the controller's commands on the leader without waiting
// for the outcome: the controller reads it back from the FSM.
type proposer struct{ c *cluster }

func (p proposer) Propose(cmd fsm.Command) error {
	data, err := fsm.Encode(cmd)
	if err != nil {
		return err
	}
	if !p.c.raft.IsLeader() {
		return errors.New("not the raft leader")
	}
	p.c.a.goRun("propose", func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := p.c.raft.Apply(ctx, data); err != nil {
			p.c.logger.Debug("proposal not applied", "command", cmd.MessageType().String(), "error", err)
		}
	})
	return nil
}

// prober asks a node's agent, over its HTTP API, for its PostgreSQL state.
type prober struct{ c *cluster }

func (p prober) Probe(ctx context.Context, m *fsm.Member) (controller.PGStatus, error) {
	if m.Name == p.c.a.config().NodeName && p.c.rec != nil {
		return p.c.rec.pgStatus(ctx), nil
	}
	return p.c.fwd.probe(ctx, m)
}
