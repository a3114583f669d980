package consensus

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// Progress is one node's own report of where its raft stands. Every agent
// serves its Progress (the agent's HTTP API); list-peers gathers them and
// hands them to Peers.
type Progress struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Address      string `json:"address"`
	State        string `json:"state"` // Follower, Candidate, Leader, Shutdown
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`    // last entry in its log
	CommitIndex  uint64 `json:"commit_index"`  // highest entry it knows committed
	AppliedIndex uint64 `json:"applied_index"` // last entry handed to its FSM
	RaftProtocol int    `json:"raft_protocol"`
	// LastContactMs is how long ago it last heard from the leader, in
	// milliseconds; 0 on the leader, -1 if never.
	LastContactMs int64 `json:"last_contact_ms"`
}

// Progress reports this node's raft progress.
func (n *Node) Progress() Progress {
	st := n.raft.Stats()
	proto, _ := strconv.Atoi(st["protocol_version"])
	p := Progress{
		ID:           n.cfg.NodeID,
		Name:         n.cfg.NodeName,
		Address:      n.cfg.AdvertiseAddr,
		State:        n.raft.State().String(),
		Term:         n.raft.CurrentTerm(),
		LastIndex:    n.raft.LastIndex(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		RaftProtocol: proto,
	}
	switch last := n.raft.LastContact(); {
	case p.State == raft.Leader.String():
		p.LastContactMs = 0
	case last.IsZero():
		p.LastContactMs = -1
	default:
		p.LastContactMs = time.Since(last).Milliseconds()
	}
	return p
}

// Peer is one row of `pgbattery operator raft list-peers`, Consul's columns.
type Peer struct {
	Node    string `json:"node"` // the node name the peer reported; empty if it did not report
	ID      string `json:"id"`
	Address string `json:"address"`
	// State is "leader" for the leader this node knows, otherwise the
	// peer's reported raft state in lower case ("follower", "candidate"),
	// or "unknown" if it did not report.
	State        string `json:"state"`
	Voter        bool   `json:"voter"`
	RaftProtocol string `json:"raft_protocol"`
	// CommitIndex is the highest entry the peer knows to be committed.
	CommitIndex uint64 `json:"commit_index"`
	// TrailsLeaderBy is how many committed entries the peer has not yet
	// applied to its FSM: the leader's commit index minus the peer's
	// applied index (0 when caught up; never negative). It is how stale the
	// peer's copy of the cluster state is, in entries.
	TrailsLeaderBy uint64 `json:"trails_leader_by"`
	// Reported says whether the peer's Progress was available; without it
	// CommitIndex and TrailsLeaderBy are unknown (zero).
	Reported bool `json:"reported"`
}

// Peers returns the raft configuration as list-peers shows it, leader
// first then by ID. reports maps server IDs to the Progress each reported;
// this node's own is filled in when missing. Trailing is measured against
// the leader's report, so with no report from the leader (or no leader)
// TrailsLeaderBy stays zero.
func (n *Node) Peers(reports map[string]Progress) ([]Peer, error) {
	conf, _, err := n.configuration()
	if err != nil {
		return nil, err
	}
	all := make(map[string]Progress, len(reports)+1)
	for id, p := range reports {
		all[id] = p
	}
	if _, ok := all[n.cfg.NodeID]; !ok {
		all[n.cfg.NodeID] = n.Progress()
	}
	_, leaderID := n.Leader()
	leader, haveLeader := all[leaderID]
	haveLeader = haveLeader && leaderID != ""

	peers := make([]Peer, 0, len(conf.Servers))
	for _, s := range conf.Servers {
		id := string(s.ID)
		p := Peer{
			ID:      id,
			Address: string(s.Address),
			Voter:   s.Suffrage == raft.Voter,
			State:   "unknown",
		}
		if rep, ok := all[id]; ok {
			p.Reported = true
			p.Node = rep.Name
			p.State = strings.ToLower(rep.State)
			p.RaftProtocol = fmt.Sprint(rep.RaftProtocol)
			p.CommitIndex = rep.CommitIndex
			if haveLeader && leader.CommitIndex > rep.AppliedIndex {
				p.TrailsLeaderBy = leader.CommitIndex - rep.AppliedIndex
			}
		}
		if id == leaderID {
			p.State = "leader"
		}
		peers = append(peers, p)
	}
	sortPeers(peers)
	return peers, nil
}

func sortPeers(peers []Peer) {
	sort.Slice(peers, func(i, j int) bool {
		a, b := peers[i], peers[j]
		if (a.State == "leader") != (b.State == "leader") {
			return a.State == "leader"
		}
		return a.ID < b.ID
	})
}
