package consensus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// ErrNotLeader is returned by operations only the leader can perform. It is
// raft's own value, so errors.Is works for errors from either package.
var ErrNotLeader = raft.ErrNotLeader

// ErrShutdown is returned once the node has been shut down.
var ErrShutdown = raft.ErrRaftShutdown

// Node is this agent's member of the raft group.
type Node struct {
	cfg    Config
	logger hclog.Logger
	raft   *raft.Raft
	trans  *raft.NetworkTransport
	stores *stores

	// changeSem serializes membership changes made through this Node
	// (capacity 1; a channel rather than a mutex so waiting honours ctx).
	changeSem chan struct{}

	bootMu       sync.Mutex
	bootstrapped bool // MaybeBootstrap has bootstrapped or found state

	watch *leadershipWatch

	shutdownOnce sync.Once
	shutdownErr  error
}

// New opens the raft store under cfg.DataDir, starts the transport and
// raft. A node with existing state resumes it; a new node waits for
// MaybeBootstrap or for a leader to add it.
func New(cfg Config, fsm raft.FSM) (*Node, error) {
	if fsm == nil {
		return nil, errors.New("raft: FSM is nil")
	}
	cfg, adv, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	logger := cfg.Logger

	st, err := openStores(cfg.DataDir, logger, cfg.Metrics, cfg.segmentSize)
	if err != nil {
		return nil, err
	}
	stream, err := newStreamLayer(cfg.BindAddr, adv, cfg.TLS, logger.Named("raft-transport"))
	if err != nil {
		st.close()
		return nil, err
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: transportMaxPool,
		Timeout: transportTimeout,
		Logger:  logger.Named("raft-transport"),
	})

	rc := cfg.raftConfig()
	if err := raft.ValidateConfig(rc); err != nil {
		trans.Close()
		st.close()
		return nil, fmt.Errorf("raft configuration: %w", err)
	}
	r, err := raft.NewRaft(rc, fsm, st.wal, st.wal, st.snaps, trans)
	if err != nil {
		trans.Close()
		st.close()
		if strings.Contains(err.Error(), "failed to load any existing snapshots") {
			// Every snapshot failed to open or to restore into the FSM
			// (raft v1.8 says so only in this text; it logs each failure).
			return nil, &CorruptError{Path: st.dir, Err: fmt.Errorf("snapshots: %w", err)}
		}
		return nil, fmt.Errorf("starting raft with the store at %s: %w", st.dir, err)
	}

	n := &Node{
		cfg:       cfg,
		logger:    logger,
		raft:      r,
		trans:     trans,
		stores:    st,
		changeSem: make(chan struct{}, 1),
	}
	n.watch = newLeadershipWatch(r, rc.HeartbeatTimeout/10, logger)
	logger.Info("raft started", "id", cfg.NodeID, "address", cfg.AdvertiseAddr,
		"server", cfg.Server, "bootstrap_expect", cfg.BootstrapExpect,
		"multiplier", cfg.Multiplier, "tls", cfg.TLS != nil, "existing_state", n.HasExistingState())
	return n, nil
}

// ID is this node's raft server ID.
func (n *Node) ID() string { return n.cfg.NodeID }

// Address is this node's advertised raft address.
func (n *Node) Address() string { return n.cfg.AdvertiseAddr }

// Timings are the raft timeouts this node runs with.
func (n *Node) Timings() Timings {
	return n.cfg.timings()
}

// HasExistingState reports whether this node has raft state (a term, log
// entries or a snapshot): it has been part of a group and must never
// bootstrap. The agent publishes it in its gossip tags so that a new server
// does not bootstrap next to servers that already formed the group.
func (n *Node) HasExistingState() bool {
	ok, err := raft.HasExistingState(n.stores.wal, n.stores.wal, n.stores.snaps)
	if err != nil {
		// Err towards "has state": that forbids bootstrapping.
		n.logger.Error("checking for existing raft state", "error", err)
		return true
	}
	return ok
}

// IsLeader reports whether this node is the leader. A leader cut off from
// the majority believes it for up to LeaderLeaseTimeout; use VerifyLeader
// when that matters.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's address and ID as this node knows
// them; both are empty when there is no known leader.
func (n *Node) Leader() (addr, id string) {
	a, i := n.raft.LeaderWithID()
	return string(a), string(i)
}

// State is this node's raft state: "Follower", "Candidate", "Leader" or
// "Shutdown".
func (n *Node) State() string { return n.raft.State().String() }

// Term is the current raft term.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// AppliedIndex is the index of the last entry handed to the FSM.
func (n *Node) AppliedIndex() uint64 { return n.raft.AppliedIndex() }

// LastContact is when this node last heard from a leader (zero if never;
// meaningless on the leader itself).
func (n *Node) LastContact() time.Time { return n.raft.LastContact() }

// Stats returns raft's statistics (state, term, indexes, configuration...).
func (n *Node) Stats() map[string]string { return n.raft.Stats() }

// timeout is how long an operation may wait: the context's deadline, or
// ApplyTimeout when it has none.
func (n *Node) timeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		t := time.Until(d)
		if t <= 0 {
			return time.Millisecond
		}
		return t
	}
	return n.cfg.ApplyTimeout
}

// wait waits for a raft future, or for ctx.
func wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }() // raft resolves every future, at the latest at shutdown
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Apply commits data to the log and returns the FSM's response once this
// node's FSM has applied it. Only the leader can apply (ErrNotLeader
// otherwise; forward to Leader()). An FSM response that is an error is
// returned as the error. When ctx ends first the entry may still commit.
func (n *Node) Apply(ctx context.Context, data []byte) (interface{}, error) {
	if !n.IsLeader() {
		return nil, n.notLeader()
	}
	f := n.raft.Apply(data, n.timeout(ctx))
	if err := wait(ctx, f); err != nil {
		return nil, fmt.Errorf("applying raft entry: %w", err)
	}
	resp := f.Response()
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

// notLeader says who the leader is, when known.
func (n *Node) notLeader() error {
	if addr, id := n.Leader(); id != "" {
		return fmt.Errorf("%w: the leader is %s at %s", ErrNotLeader, id, addr)
	}
	return fmt.Errorf("%w: no leader is known", ErrNotLeader)
}

// Barrier waits until every entry committed before it has been applied to
// this (leader's) FSM: a new leader calls it before acting on FSM state.
func (n *Node) Barrier(ctx context.Context) error {
	if err := wait(ctx, n.raft.Barrier(n.timeout(ctx))); err != nil {
		return fmt.Errorf("raft barrier: %w", err)
	}
	return nil
}

// VerifyLeader confirms with a quorum that this node is still the leader.
func (n *Node) VerifyLeader(ctx context.Context) error {
	if err := wait(ctx, n.raft.VerifyLeader()); err != nil {
		return fmt.Errorf("verifying raft leadership: %w", err)
	}
	return nil
}

// LeadershipTransfer hands leadership to the most up-to-date voter.
// Attempts that time out (the target must catch up and win within an
// ElectionTimeout, which a loaded machine can miss) are retried while this
// node is still leader, until ctx ends.
func (n *Node) LeadershipTransfer(ctx context.Context) error {
	if err := n.transfer(ctx, func() raft.Future { return n.raft.LeadershipTransfer() }); err != nil {
		return fmt.Errorf("transferring raft leadership: %w", err)
	}
	return nil
}

// LeadershipTransferToServer hands leadership to the voter id, retrying as
// LeadershipTransfer does. addr may be empty: it is then taken from the
// configuration.
func (n *Node) LeadershipTransferToServer(ctx context.Context, id, addr string) error {
	if addr == "" {
		cfg, _, err := n.configuration()
		if err != nil {
			return err
		}
		s, ok := findServer(cfg, id)
		if !ok {
			return fmt.Errorf("transferring raft leadership: no server with ID %q in the configuration (servers: %s)", id, serverIDs(cfg))
		}
		if s.Suffrage != raft.Voter {
			return fmt.Errorf("transferring raft leadership: %q is not a voter", id)
		}
		addr = string(s.Address)
	}
	err := n.transfer(ctx, func() raft.Future {
		return n.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr))
	})
	if err != nil {
		return fmt.Errorf("transferring raft leadership to %s: %w", id, err)
	}
	return nil
}

// transferRetryPause separates transfer attempts.
const transferRetryPause = 20 * time.Millisecond

func (n *Node) transfer(ctx context.Context, start func() raft.Future) error {
	for {
		err := wait(ctx, start())
		// raft v1.8 reports a transfer that ran out of time only by this
		// text; the leader stays leader and may try again.
		if err == nil || !strings.Contains(err.Error(), "leadership transfer timeout") || !n.IsLeader() {
			return err
		}
		n.logger.Warn("raft leadership transfer timed out; retrying", "error", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(transferRetryPause):
		}
	}
}

// Snapshot takes a snapshot now (operators and tests; raft also snapshots
// on its own schedule).
func (n *Node) Snapshot(ctx context.Context) error {
	if err := wait(ctx, n.raft.Snapshot()); err != nil {
		return fmt.Errorf("taking raft snapshot: %w", err)
	}
	return nil
}

// Leave is a graceful stop: a leader first hands leadership to another
// voter (bounded by ctx), so the group does not wait out an election
// timeout, then the node shuts down — always, even when the hand-over
// failed, which the returned error then reports. It does not remove the
// node from the configuration: that is the agent's decision (RemoveServer
// on the leader).
func (n *Node) Leave(ctx context.Context) error {
	var handover error
	if n.IsLeader() {
		conf, _, err := n.configuration()
		if err == nil && voters(conf) > 1 {
			handover = n.LeadershipTransfer(ctx)
			if errors.Is(handover, ErrNotLeader) {
				handover = nil // it lost leadership meanwhile: nothing to hand over
			}
		}
	}
	return errors.Join(handover, n.Shutdown())
}

func voters(conf raft.Configuration) int {
	v := 0
	for _, s := range conf.Servers {
		if s.Suffrage == raft.Voter {
			v++
		}
	}
	return v
}

// Shutdown stops raft, the transport and the store. It is safe to call more
// than once; the node can be started again from its data dir with New.
func (n *Node) Shutdown() error {
	n.shutdownOnce.Do(func() {
		var errs []error
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("stopping raft: %w", err))
		}
		n.watch.stop()
		if err := n.trans.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing raft transport: %w", err))
		}
		if err := n.stores.close(); err != nil {
			errs = append(errs, fmt.Errorf("closing raft store: %w", err))
		}
		n.shutdownErr = errors.Join(errs...)
		n.logger.Info("raft stopped")
	})
	return n.shutdownErr
}

func findServer(cfg raft.Configuration, id string) (raft.Server, bool) {
	for _, s := range cfg.Servers {
		if string(s.ID) == id {
			return s, true
		}
	}
	return raft.Server{}, false
}

func (n *Node) configuration() (raft.Configuration, uint64, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, 0, fmt.Errorf("reading raft configuration: %w", err)
	}
	return f.Configuration(), f.Index(), nil
}

func serverIDs(cfg raft.Configuration) string {
	ids := make([]string, 0, len(cfg.Servers))
	for _, s := range cfg.Servers {
		ids = append(ids, string(s.ID))
	}
	return strings.Join(ids, ", ")
}
