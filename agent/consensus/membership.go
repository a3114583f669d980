package consensus

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/raft"
)

// Server is a server (voter-eligible) agent as gossip reports it.
type Server struct {
	ID      string
	Name    string
	Address string // raft host:port
	// Expect is the server's bootstrap_expect (0: not told). Servers that
	// disagree about it never bootstrap together.
	Expect int
	// HasState is the server's HasExistingState, as it publishes it. A new
	// server that sees servers with state joins them instead of
	// bootstrapping next to them.
	HasState bool
}

// MaybeBootstrap bootstraps the raft group, as Consul's bootstrap_expect
// does, once at least BootstrapExpect servers (this one included) are known
// and none of them, this one included, has raft state yet. The
// configuration is every server in servers, all voters, sorted by ID: every
// server that sees the same set computes the same configuration, and raft
// makes bootstrapping with an identical configuration on each of them safe.
//
// The agent calls it with every server member gossip knows, whenever that
// set changes; it returns true on the call that bootstrapped. It does
// nothing on non-servers, with BootstrapExpect 0, or once it has
// bootstrapped or found state. As in Consul, the servers should all be
// started with the same bootstrap_expect equal to the number of initial
// servers: if more servers than that have met, the group forms with all of
// them.
func (n *Node) MaybeBootstrap(servers []Server) (bool, error) {
	if !n.cfg.Server || n.cfg.BootstrapExpect == 0 {
		return false, nil
	}
	n.bootMu.Lock()
	defer n.bootMu.Unlock()
	if n.bootstrapped {
		return false, nil
	}
	if n.HasExistingState() {
		n.bootstrapped = true
		return false, nil
	}

	byID := map[string]Server{}
	byAddr := map[string]string{}
	self := Server{ID: n.cfg.NodeID, Name: n.cfg.NodeName, Address: n.cfg.AdvertiseAddr, Expect: n.cfg.BootstrapExpect}
	for _, s := range append([]Server{self}, servers...) {
		if s.ID == "" || s.Address == "" {
			return false, fmt.Errorf("bootstrapping raft: server %q has no ID or raft address", s.Name)
		}
		addr, err := withPort(s.Address)
		if err != nil {
			return false, fmt.Errorf("bootstrapping raft: server %s: raft address: %w", s.ID, err)
		}
		s.Address = addr
		if s.Expect != 0 && s.Expect != n.cfg.BootstrapExpect {
			return false, fmt.Errorf("bootstrapping raft: server %s (%s) expects %d servers, this node %d; start every server with the same bootstrap_expect", s.Name, s.ID, s.Expect, n.cfg.BootstrapExpect)
		}
		if prev, ok := byID[s.ID]; ok && prev.Address != s.Address {
			if s.ID == self.ID {
				return false, fmt.Errorf("bootstrapping raft: another server claims this node's ID %s at %s", s.ID, s.Address)
			}
			return false, fmt.Errorf("bootstrapping raft: server ID %s is claimed at %s and at %s", s.ID, prev.Address, s.Address)
		}
		if id, ok := byAddr[s.Address]; ok && id != s.ID {
			return false, fmt.Errorf("bootstrapping raft: servers %s and %s share the raft address %s", id, s.ID, s.Address)
		}
		if s.HasState && s.ID != self.ID {
			n.logger.Info("a server already belongs to a raft group; waiting to be added by its leader instead of bootstrapping", "server", s.ID)
			return false, nil
		}
		byID[s.ID] = s
		byAddr[s.Address] = s.ID
	}
	if len(byID) < n.cfg.BootstrapExpect {
		n.logger.Debug("waiting for servers before bootstrapping raft", "known", len(byID), "expect", n.cfg.BootstrapExpect)
		return false, nil
	}

	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var conf raft.Configuration
	for _, id := range ids {
		conf.Servers = append(conf.Servers, raft.Server{
			Suffrage: raft.Voter,
			ID:       raft.ServerID(id),
			Address:  raft.ServerAddress(byID[id].Address),
		})
	}
	n.logger.Info("bootstrapping raft", "servers", serverIDs(conf))
	if err := n.raft.BootstrapCluster(conf).Error(); err != nil {
		if errors.Is(err, raft.ErrCantBootstrap) {
			n.bootstrapped = true
			return false, nil
		}
		return false, fmt.Errorf("bootstrapping raft with %s: %w", serverIDs(conf), err)
	}
	n.bootstrapped = true
	return true, nil
}

// lockChanges takes the membership-change slot, honouring ctx.
func (n *Node) lockChanges(ctx context.Context) (func(), error) {
	select {
	case n.changeSem <- struct{}{}:
		return func() { <-n.changeSem }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for an earlier raft membership change: %w", ctx.Err())
	}
}

// change runs one membership change: reads the configuration, lets decide
// return the change to make (nil: none needed), and makes it against the
// configuration index it read, so a concurrent change elsewhere makes it
// fail rather than apply to a configuration it did not see.
func (n *Node) change(ctx context.Context, what string, decide func(raft.Configuration) (func(prevIndex uint64, timeout time.Duration) raft.IndexFuture, error)) error {
	if !n.IsLeader() {
		return fmt.Errorf("%s: %w", what, n.notLeader())
	}
	unlock, err := n.lockChanges(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer unlock()
	conf, index, err := n.configuration()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	do, err := decide(conf)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if do == nil {
		return nil
	}
	if err := wait(ctx, do(index, n.timeout(ctx))); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	n.logger.Info("raft membership changed", "change", what)
	return nil
}

// AddVoter makes id at addr a voter: adds it, promotes it if it is a
// non-voter, or updates its address. A voter already at addr is left
// alone. Leader only; changes are serialized.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	addr = normalizeAddr(addr)
	return n.change(ctx, fmt.Sprintf("adding raft voter %s at %s", id, addr), func(conf raft.Configuration) (func(uint64, time.Duration) raft.IndexFuture, error) {
		if id == "" || addr == "" {
			return nil, errors.New("server ID and address are required")
		}
		if s, ok := findServer(conf, id); ok && s.Suffrage == raft.Voter && string(s.Address) == addr {
			return nil, nil
		}
		if err := addrTaken(conf, id, addr); err != nil {
			return nil, err
		}
		return func(prev uint64, timeout time.Duration) raft.IndexFuture {
			return n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), prev, timeout)
		}, nil
	})
}

// AddNonvoter adds id at addr as a non-voter (it receives the log but does
// not vote), or updates a non-voter's address. It refuses to demote a voter:
// use DemoteVoter for that. Leader only; changes are serialized.
func (n *Node) AddNonvoter(ctx context.Context, id, addr string) error {
	addr = normalizeAddr(addr)
	return n.change(ctx, fmt.Sprintf("adding raft non-voter %s at %s", id, addr), func(conf raft.Configuration) (func(uint64, time.Duration) raft.IndexFuture, error) {
		if id == "" || addr == "" {
			return nil, errors.New("server ID and address are required")
		}
		if s, ok := findServer(conf, id); ok {
			if s.Suffrage == raft.Voter {
				return nil, fmt.Errorf("%s is a voter; demote it first", id)
			}
			if string(s.Address) == addr {
				return nil, nil
			}
		}
		if err := addrTaken(conf, id, addr); err != nil {
			return nil, err
		}
		return func(prev uint64, timeout time.Duration) raft.IndexFuture {
			return n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), prev, timeout)
		}, nil
	})
}

// DemoteVoter makes the voter id a non-voter. Leader only; serialized.
func (n *Node) DemoteVoter(ctx context.Context, id string) error {
	return n.change(ctx, fmt.Sprintf("demoting raft voter %s", id), func(conf raft.Configuration) (func(uint64, time.Duration) raft.IndexFuture, error) {
		s, ok := findServer(conf, id)
		if !ok {
			return nil, fmt.Errorf("no raft peer with ID %q (peers: %s)", id, serverIDs(conf))
		}
		if s.Suffrage != raft.Voter {
			return nil, nil
		}
		return func(prev uint64, timeout time.Duration) raft.IndexFuture {
			return n.raft.DemoteVoter(raft.ServerID(id), prev, timeout)
		}, nil
	})
}

// RemoveServer removes id from the configuration; removing a server that is
// not there is not an error (the agent reconciles departed members with
// it). Leader only; serialized.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	return n.change(ctx, fmt.Sprintf("removing raft server %s", id), func(conf raft.Configuration) (func(uint64, time.Duration) raft.IndexFuture, error) {
		if _, ok := findServer(conf, id); !ok {
			return nil, nil
		}
		return func(prev uint64, timeout time.Duration) raft.IndexFuture {
			return n.raft.RemoveServer(raft.ServerID(id), prev, timeout)
		}, nil
	})
}

// RemovePeer is `operator raft remove-peer`: like RemoveServer, but an
// unknown ID is an error that lists the peers, since an operator typed it.
func (n *Node) RemovePeer(ctx context.Context, id string) error {
	conf, _, err := n.configuration()
	if err != nil {
		return err
	}
	if _, ok := findServer(conf, id); !ok {
		return fmt.Errorf("removing raft peer: no peer with ID %q (peers: %s)", id, serverIDs(conf))
	}
	return n.RemoveServer(ctx, id)
}

// addrTaken refuses to give id an address another server already has.
func addrTaken(conf raft.Configuration, id, addr string) error {
	for _, s := range conf.Servers {
		if string(s.Address) == addr && string(s.ID) != id {
			return fmt.Errorf("address %s already belongs to raft server %s; remove it first", addr, s.ID)
		}
	}
	return nil
}

// normalizeAddr gives a bare host DefaultPort; anything unparsable is left
// for raft's dial to report.
func normalizeAddr(addr string) string {
	if a, err := withPort(addr); err == nil {
		return a
	}
	return addr
}
