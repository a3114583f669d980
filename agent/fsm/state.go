package fsm

import (
	"slices"
	"sort"
	"time"
)

// Bounds on what the state keeps, so that a long-lived cluster's snapshot
// stays small.
const (
	// MaxHistory is how many failovers/switchovers the history keeps.
	MaxHistory = 100
	// MaxFences is how many epochs' fence xids are kept. Commit resolution
	// only ever asks about the current and the previous few epochs.
	MaxFences = 64
)

// Replication modes, as in the `replication { mode = ... }` setting.
const (
	ModeQuorum = "quorum"
	ModeStrict = "strict"
	ModeAsync  = "async"
)

// Member is one agent of the cluster as the FSM records it.
type Member struct {
	Name string `json:"name"`
	// ID is the raft server ID (stable across restarts).
	ID string `json:"id,omitempty"`
	// Addresses by purpose: "raft", "postgres", "gateway", "http", "serf".
	Addrs map[string]string `json:"addrs,omitempty"`
	// Tags are the gossip tags the member advertises.
	Tags map[string]string `json:"tags,omitempty"`
	// NoFailover members are never promoted automatically and are not part
	// of the synchronous standby set.
	NoFailover bool `json:"no_failover,omitempty"`
	// FailoverPriority breaks ties between equally up-to-date candidates:
	// higher wins.
	FailoverPriority int `json:"failover_priority,omitempty"`
	// Voter is the member's raft suffrage.
	Voter bool `json:"voter,omitempty"`
	// NoPostgres marks a witness: a raft voter with no PostgreSQL.
	NoPostgres bool `json:"no_postgres,omitempty"`
}

// Promotable reports whether the member may ever become primary
// automatically.
func (m *Member) Promotable() bool { return m != nil && !m.NoFailover && !m.NoPostgres }

// Lease is the primary's lease. Times are raft positions, never clock
// readings: clocks of different nodes cannot be compared. Each node measures
// durations from the moment it observed a lease change on its own monotonic
// clock (see agent/lease and agent/controller).
type Lease struct {
	Holder string `json:"holder,omitempty"`
	Epoch  uint64 `json:"epoch,omitempty"`
	// GrantedIndex/Term: the log position of the SetPrimary that granted it.
	GrantedIndex uint64 `json:"granted_index,omitempty"`
	GrantedTerm  uint64 `json:"granted_term,omitempty"`
	// RenewedIndex/Term: the log position of the latest renewal (0: never).
	RenewedIndex uint64 `json:"renewed_index,omitempty"`
	RenewedTerm  uint64 `json:"renewed_term,omitempty"`
	// RenewedLSN is the highest WAL position the holder reported with a
	// renewal.
	RenewedLSN LSN `json:"renewed_lsn,omitempty"`
	// Released is set when the holder gave the lease up through the log
	// (PostgreSQL died, or it stepped down for a switchover). A released
	// lease has certainly ended: the holder fenced before releasing.
	Released      bool   `json:"released,omitempty"`
	ReleasedIndex uint64 `json:"released_index,omitempty"`
	// FinalLSN is the holder's last WAL position when it released after
	// fencing (0 when unknown, e.g. PostgreSQL died).
	FinalLSN     LSN    `json:"final_lsn,omitempty"`
	ReleaseCause string `json:"release_cause,omitempty"`
	// Version is the index of the last change to the lease (grant, renewal
	// or release). Decisions that depend on the lease having ended carry
	// the Version they saw, and do not apply if it moved.
	Version uint64 `json:"version"`
}

// Fence is what a primary recorded when it took office, before any write
// reached it.
type Fence struct {
	Epoch    uint64 `json:"epoch"`
	Node     string `json:"node"`
	Timeline uint32 `json:"timeline"`
	// XID is pg_snapshot_xmax(pg_current_snapshot()) on the new primary:
	// a transaction id at or above it did not commit before this epoch.
	XID uint64 `json:"xid"`
	// SwitchLSN is where the new timeline begins (0 if unknown).
	SwitchLSN LSN    `json:"switch_lsn,omitempty"`
	Index     uint64 `json:"index"`
}

// SyncState is the synchronous replication configuration for an epoch and
// the failover rule that follows from it.
//
// The primary's PostgreSQL runs synchronous_standby_names = ANY K (Standbys).
// A failover must reach at least Quorum members of Voters (asked fresh) and
// promote one holding at least as much WAL as the most advanced of them, and
// at least FloorLSN. Voters ⊇ Standbys; they differ only while the
// configuration changes (the controller widens Voters first, lets PostgreSQL
// apply the new set, waits for it to catch up, then narrows Voters). The
// invariant kept at every step: every acknowledged commit is on at least
// len(Voters)-Quorum+1 members of Voters, so any Quorum of them includes one.
type SyncState struct {
	Epoch     uint64   `json:"epoch"`
	Mode      string   `json:"mode"`
	Standbys  []string `json:"standbys,omitempty"`
	K         int      `json:"k"`
	Voters    []string `json:"voters,omitempty"`
	Quorum    int      `json:"quorum"`
	FloorLSN  LSN      `json:"floor_lsn,omitempty"`
	Version   uint64   `json:"version"`
	UpdatedBy string   `json:"updated_by,omitempty"`
}

// Steady reports whether the failover rule is exactly the one PostgreSQL's
// configuration implies (no change in progress).
func (s SyncState) Steady() bool {
	if s.Mode == ModeAsync {
		return true
	}
	return slices.Equal(s.Voters, s.Standbys) && s.Quorum == len(s.Standbys)-s.K+1
}

// Guarantee is how many members of Voters every acknowledged commit is on.
func (s SyncState) Guarantee() int { return len(s.Voters) - s.Quorum + 1 }

// Candidate is the evidence about one node at a decision.
type Candidate struct {
	Node       string `json:"node"`
	Reachable  bool   `json:"reachable"`
	Healthy    bool   `json:"healthy"`
	Timeline   uint32 `json:"timeline,omitempty"`
	ReceiveLSN LSN    `json:"receive_lsn,omitempty"`
	ReplayLSN  LSN    `json:"replay_lsn,omitempty"`
	FlushLSN   LSN    `json:"flush_lsn,omitempty"`
	Priority   int    `json:"priority,omitempty"`
	Voter      bool   `json:"voter,omitempty"`
	// Rejected says why the node was not chosen ("" for the chosen one).
	Rejected string `json:"rejected,omitempty"`
	Error    string `json:"error,omitempty"`
}

// Transition kinds.
const (
	KindBootstrap  = "bootstrap"
	KindFailover   = "failover"
	KindSwitchover = "switchover"
	KindManual     = "manual-failover"
	KindReinstate  = "reinstate" // a switchover that could not finish gave the old primary back its office
)

// Transition is one entry of the history: a change of primary and the
// evidence it was decided on.
type Transition struct {
	Epoch      uint64      `json:"epoch"`
	Kind       string      `json:"kind"`
	From       string      `json:"from,omitempty"`
	To         string      `json:"to"`
	Reason     string      `json:"reason"`
	Candidates []Candidate `json:"candidates,omitempty"`
	// PromoteLSN is the chosen node's WAL position when it was chosen.
	PromoteLSN LSN `json:"promote_lsn,omitempty"`
	// MaybeLost is set when a manual failover chose a node known to hold
	// less WAL than another one: how many bytes may be lost.
	MaybeLost uint64 `json:"maybe_lost,omitempty"`
	DecidedBy string `json:"decided_by,omitempty"`
	// DecidedAt is the deciding leader's wall clock (zero for entries
	// written before it was recorded).
	DecidedAt time.Time `json:"decided_at,omitzero"`
	Index     uint64    `json:"index"`
	Term      uint64    `json:"term"`
	// WriteGapMS is how long no primary accepted writes, as the raft
	// leader saw it: from the old primary's last lease renewal (or its
	// release) to the new primary's fence record. An upper bound: the old
	// primary may have written until shortly after its last renewal.
	WriteGapMS int64 `json:"write_gap_ms,omitempty"`
}

// Operation kinds an operator can request.
const (
	OpSwitchover = "switchover"
	OpFailover   = "failover"
)

// Operation is a requested switchover or manual failover, executed by the
// controller on the raft leader.
type Operation struct {
	Kind   string `json:"kind"`
	Epoch  uint64 `json:"epoch"`
	From   string `json:"from"`
	Target string `json:"target,omitempty"`
	Force  bool   `json:"force,omitempty"`
	// Index is the log position of the request; the controller measures
	// its timeout from when it first saw it.
	Index uint64 `json:"index"`
}

// State is the replicated cluster state. Values returned by FSM.State are
// immutable snapshots: never modify them.
type State struct {
	ClusterID string             `json:"cluster_id,omitempty"`
	SystemID  uint64             `json:"system_id,omitempty,string"`
	Members   map[string]*Member `json:"members,omitempty"`
	Primary   string             `json:"primary,omitempty"`
	Epoch     uint64             `json:"epoch"`
	Timeline  uint32             `json:"timeline,omitempty"`
	Fences    []Fence            `json:"fences,omitempty"`
	Sync      SyncState          `json:"sync"`
	Paused    bool               `json:"paused,omitempty"`
	Lease     Lease              `json:"lease"`
	Pending   *Operation         `json:"pending,omitempty"`
	History   []Transition       `json:"history,omitempty"`
	// Secrets are the agent roles' passwords (SetSecrets); immutable once
	// set, so Clone shares the pointer.
	Secrets *Secrets `json:"secrets,omitempty"`
	// Reinit holds the pending reinit requests by node; ReinitLog the
	// finished ones, oldest first.
	Reinit    map[string]ReinitRequest `json:"reinit,omitempty"`
	ReinitLog []ReinitRecord           `json:"reinit_log,omitempty"`
	// Index and Term of the last applied log entry.
	Index uint64 `json:"index"`
	Term  uint64 `json:"term"`
}

// Member returns the named member or nil.
func (s *State) Member(name string) *Member {
	if s == nil {
		return nil
	}
	return s.Members[name]
}

// MemberNames returns the members' names, sorted.
func (s *State) MemberNames() []string {
	names := make([]string, 0, len(s.Members))
	for n := range s.Members {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// FenceFor returns the fence recorded for an epoch.
func (s *State) FenceFor(epoch uint64) (Fence, bool) {
	for i := len(s.Fences) - 1; i >= 0; i-- {
		if s.Fences[i].Epoch == epoch {
			return s.Fences[i], true
		}
	}
	return Fence{}, false
}

// PrimaryReady reports whether the current primary has recorded its fence
// (and so may accept writes).
func (s *State) PrimaryReady() bool {
	_, ok := s.FenceFor(s.Epoch)
	return ok && s.Primary != ""
}

// WritablePrimary is what the gateway routes writes to: the primary of the
// current epoch once it has recorded its fence (so no write can reach it
// before the fence xid is known), while its lease is not released and no
// switchover is draining it. ok is false while there is no such primary:
// the gateway holds new requests then.
func (s *State) WritablePrimary() (node string, epoch uint64, ok bool) {
	if s == nil || s.Primary == "" || !s.PrimaryReady() || s.Lease.Released || (s.Pending != nil && s.Pending.Epoch == s.Epoch) {
		return "", s.epoch(), false
	}
	return s.Primary, s.Epoch, true
}

func (s *State) epoch() uint64 {
	if s == nil {
		return 0
	}
	return s.Epoch
}

// Clone returns a deep copy.
func (s *State) Clone() *State {
	c := *s
	if s.Members != nil {
		c.Members = make(map[string]*Member, len(s.Members))
		for k, m := range s.Members {
			mc := *m
			mc.Addrs = cloneMap(m.Addrs)
			mc.Tags = cloneMap(m.Tags)
			c.Members[k] = &mc
		}
	}
	c.Fences = slices.Clone(s.Fences)
	c.Sync.Standbys = slices.Clone(s.Sync.Standbys)
	c.Sync.Voters = slices.Clone(s.Sync.Voters)
	if s.Pending != nil {
		p := *s.Pending
		c.Pending = &p
	}
	c.History = make([]Transition, len(s.History))
	for i, t := range s.History {
		t.Candidates = slices.Clone(t.Candidates)
		c.History[i] = t
	}
	if len(c.History) == 0 {
		c.History = nil
	}
	if s.Reinit != nil {
		c.Reinit = make(map[string]ReinitRequest, len(s.Reinit))
		for k, v := range s.Reinit {
			c.Reinit[k] = v
		}
	}
	c.ReinitLog = slices.Clone(s.ReinitLog)
	return &c
}

func cloneMap(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	c := make(map[string]string, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}
