package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"time"
)

// Cluster state, history and operator endpoints. docs/api.md documents every
// one of them with its answers and status codes.

// SwitchoverWaitTimeout is how long the agent waits for a switchover or
// failover requested with wait=1 to finish; the client allows a little more.
const SwitchoverWaitTimeout = 45 * time.Second

// ClusterStatus answers GET /v1/status: the replicated cluster state, the
// controller's situation and a fresh look at every member's PostgreSQL.
type ClusterStatus struct {
	// Node is the agent that built the answer; FromLeader says whether it
	// was the raft leader (only the leader's controller status means
	// anything). A follower forwards the request to the leader and answers
	// itself only when the leader cannot be reached.
	Node       string `json:"node"`
	FromLeader bool   `json:"from_leader"`

	ClusterID string `json:"cluster_id"`
	SystemID  string `json:"system_id,omitempty"`
	Primary   string `json:"primary"`
	// PrimaryReady: the primary recorded its fence for the current epoch.
	// Writable: the gateway routes writes to it (ready, lease held, no
	// switchover draining it).
	PrimaryReady bool       `json:"primary_ready"`
	Writable     bool       `json:"writable"`
	Epoch        uint64     `json:"epoch"`
	Timeline     uint32     `json:"timeline"`
	Paused       bool       `json:"paused"`
	Pending      *Operation `json:"pending,omitempty"`
	Sync         SyncState  `json:"sync"`
	Lease        LeaseState `json:"lease"`

	Controller ControllerStatus `json:"controller"`
	Raft       RaftStatus       `json:"raft"`

	Members []MemberStatus `json:"members"`
	// LastTransition is the newest history entry (nil before bootstrap).
	LastTransition *Transition `json:"last_transition,omitempty"`
	// LastFailover is the newest entry that was not the bootstrap.
	LastFailover *Transition `json:"last_failover,omitempty"`
}

// Operation is a pending switchover or manual failover.
type Operation struct {
	Kind   string `json:"kind"`
	Epoch  uint64 `json:"epoch"`
	From   string `json:"from"`
	Target string `json:"target,omitempty"`
	Force  bool   `json:"force,omitempty"`
}

// SyncState is the synchronous replication rule of the epoch: the primary
// runs synchronous_standby_names = ANY K (Standbys).
type SyncState struct {
	Mode     string   `json:"mode"`
	Standbys []string `json:"standbys"`
	K        int      `json:"k"`
	Voters   []string `json:"voters,omitempty"`
	Quorum   int      `json:"quorum"`
}

// LeaseState is the primary's lease as the cluster state records it.
type LeaseState struct {
	Holder       string `json:"holder"`
	Epoch        uint64 `json:"epoch"`
	Released     bool   `json:"released"`
	ReleaseCause string `json:"release_cause,omitempty"`
	RenewedLSN   string `json:"renewed_lsn,omitempty"`
}

// ControllerStatus is the raft leader's controller: what it is doing and
// why (for example why a failover is blocked).
type ControllerStatus struct {
	State          string `json:"state"`
	Reason         string `json:"reason,omitempty"`
	Term           uint64 `json:"term,omitempty"`
	Epoch          uint64 `json:"epoch,omitempty"`
	HoldDownLeftMs int64  `json:"hold_down_left_ms,omitempty"`
}

// RaftStatus is the answering node's view of raft.
type RaftStatus struct {
	Leader        string `json:"leader"`
	LeaderAddress string `json:"leader_address,omitempty"`
	State         string `json:"state"`
	Term          uint64 `json:"term"`
	AppliedIndex  uint64 `json:"applied_index"`
}

// MemberStatus is one member of the cluster state, with its gossip view and
// a fresh probe of its PostgreSQL.
type MemberStatus struct {
	Name string `json:"name"`
	// Role: primary (the FSM's primary), replica, witness.
	Role         string            `json:"role"`
	Voter        bool              `json:"voter"`
	NoFailover   bool              `json:"no_failover,omitempty"`
	Sync         bool              `json:"sync"`
	GossipStatus string            `json:"gossip_status"`
	Postgres     string            `json:"postgres"` // the agent's gossip "pg" tag: running, stopped, ...
	Addrs        map[string]string `json:"addrs,omitempty"`

	// Probed: the node's agent answered the probe; ProbeError otherwise.
	Probed     bool   `json:"probed"`
	ProbeError string `json:"probe_error,omitempty"`
	Running    bool   `json:"running"`
	Healthy    bool   `json:"healthy"`
	InRecovery bool   `json:"in_recovery"`
	Writable   bool   `json:"writable"`
	Timeline   uint32 `json:"timeline,omitempty"`
	// LSN is the node's WAL position (flush on a primary, the larger of
	// receive and replay on a standby); ReceiveLSN/ReplayLSN are a standby's.
	LSN        string `json:"lsn,omitempty"`
	ReceiveLSN string `json:"receive_lsn,omitempty"`
	ReplayLSN  string `json:"replay_lsn,omitempty"`
	Upstream   string `json:"upstream,omitempty"`
	// LagBytes is how far the node's position is behind the primary's,
	// when both were probed.
	LagBytes *uint64 `json:"lag_bytes,omitempty"`
}

// Transition is one history entry: a change of primary and its evidence.
type Transition struct {
	Epoch      uint64      `json:"epoch"`
	Kind       string      `json:"kind"`
	From       string      `json:"from,omitempty"`
	To         string      `json:"to"`
	Reason     string      `json:"reason"`
	Candidates []Candidate `json:"candidates,omitempty"`
	PromoteLSN string      `json:"promote_lsn,omitempty"`
	MaybeLost  uint64      `json:"maybe_lost,omitempty"`
	DecidedBy  string      `json:"decided_by,omitempty"`
	// DecidedAt is the deciding leader's wall clock (UTC).
	DecidedAt time.Time `json:"decided_at,omitzero"`
	Index     uint64    `json:"index"`
	Term      uint64    `json:"term"`
	// WriteGapMS: how long no primary accepted writes, as the raft leader
	// saw it (an upper bound; 0 when not measured).
	WriteGapMS int64 `json:"write_gap_ms,omitempty"`
}

// Candidate is the evidence about one node at a decision.
type Candidate struct {
	Node       string `json:"node"`
	Reachable  bool   `json:"reachable"`
	Healthy    bool   `json:"healthy"`
	Timeline   uint32 `json:"timeline,omitempty"`
	ReceiveLSN string `json:"receive_lsn,omitempty"`
	ReplayLSN  string `json:"replay_lsn,omitempty"`
	FlushLSN   string `json:"flush_lsn,omitempty"`
	Priority   int    `json:"priority,omitempty"`
	Voter      bool   `json:"voter,omitempty"`
	Rejected   string `json:"rejected,omitempty"`
	Error      string `json:"error,omitempty"`
}

// OperationResponse answers PUT /v1/operator/switchover and failover.
type OperationResponse struct {
	Kind   string `json:"kind"`
	Epoch  uint64 `json:"epoch"`
	From   string `json:"from"`
	Target string `json:"target,omitempty"`
	// With wait=1: Done is true once a new primary of a later epoch is
	// ready; NewPrimary and NewEpoch name it, and Transition is its history
	// entry (kind "reinstate" when the switchover could not finish and the
	// old primary got its office back).
	Waited     bool        `json:"waited,omitempty"`
	Done       bool        `json:"done,omitempty"`
	NewPrimary string      `json:"new_primary,omitempty"`
	NewEpoch   uint64      `json:"new_epoch,omitempty"`
	Transition *Transition `json:"transition,omitempty"`
}

// PausedResponse answers PUT /v1/operator/pause and resume.
type PausedResponse struct {
	Paused bool `json:"paused"`
}

// RaftPeer is one row of `pgbattery operator raft list-peers`.
type RaftPeer struct {
	Node           string `json:"node"`
	ID             string `json:"id"`
	Address        string `json:"address"`
	State          string `json:"state"`
	Voter          bool   `json:"voter"`
	RaftProtocol   string `json:"raft_protocol"`
	CommitIndex    uint64 `json:"commit_index"`
	TrailsLeaderBy uint64 `json:"trails_leader_by"`
	// Reported: the peer's agent answered; without it CommitIndex and
	// TrailsLeaderBy are unknown.
	Reported bool `json:"reported"`
}

// RaftProgress is one node's own report of its raft (GET
// /v1/operator/raft/progress).
type RaftProgress struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Address       string `json:"address"`
	State         string `json:"state"`
	Term          uint64 `json:"term"`
	LastIndex     uint64 `json:"last_index"`
	CommitIndex   uint64 `json:"commit_index"`
	AppliedIndex  uint64 `json:"applied_index"`
	RaftProtocol  int    `json:"raft_protocol"`
	LastContactMs int64  `json:"last_contact_ms"`
}

// TransferLeaderResponse answers PUT /v1/operator/raft/transfer-leader.
type TransferLeaderResponse struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Status returns the cluster's state (GET /v1/status).
func (c *Client) Status(ctx context.Context) (*ClusterStatus, error) {
	var out ClusterStatus
	if err := c.do(ctx, http.MethodGet, "/v1/status", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// History returns the failovers and switchovers, oldest first.
func (c *Client) History(ctx context.Context) ([]Transition, error) {
	var out []Transition
	if err := c.do(ctx, http.MethodGet, "/v1/history", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// SwitchoverOptions shape a switchover or manual failover request.
type SwitchoverOptions struct {
	// To is the target node; empty lets the controller choose (switchover
	// only: a manual failover needs one).
	To string
	// Force skips the switchover's catch-up and nofailover checks.
	Force bool
	// Wait makes the agent answer only once the new primary is ready (or
	// SwitchoverWaitTimeout passed).
	Wait bool
}

func (o SwitchoverOptions) query() url.Values {
	q := url.Values{}
	if o.To != "" {
		q.Set("to", o.To)
	}
	if o.Force {
		q.Set("force", "1")
	}
	if o.Wait {
		q.Set("wait", "1")
	}
	return q
}

// Switchover requests a planned change of primary.
func (c *Client) Switchover(ctx context.Context, o SwitchoverOptions) (*OperationResponse, error) {
	return c.operation(ctx, "/v1/operator/switchover", o)
}

// Failover requests a manual failover to o.To, which may lose data that did
// not reach it.
func (c *Client) Failover(ctx context.Context, o SwitchoverOptions) (*OperationResponse, error) {
	if o.To == "" {
		return nil, errors.New("failover: a target node is required")
	}
	return c.operation(ctx, "/v1/operator/failover", o)
}

func (c *Client) operation(ctx context.Context, path string, o SwitchoverOptions) (*OperationResponse, error) {
	timeout := c.timeout
	if o.Wait {
		timeout = max(timeout, SwitchoverWaitTimeout+15*time.Second)
	}
	var out OperationResponse
	if err := c.doTimeout(ctx, timeout, http.MethodPut, path, o.query(), &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Pause turns automatic failover off.
func (c *Client) Pause(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/v1/operator/pause", nil, &PausedResponse{})
}

// Resume turns automatic failover back on.
func (c *Client) Resume(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/v1/operator/resume", nil, &PausedResponse{})
}

// RaftPeers returns the raft configuration with every peer's progress.
func (c *Client) RaftPeers(ctx context.Context) ([]RaftPeer, error) {
	var out []RaftPeer
	if err := c.do(ctx, http.MethodGet, "/v1/operator/raft/configuration", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// RaftProgress returns the answering node's raft progress.
func (c *Client) RaftProgress(ctx context.Context) (*RaftProgress, error) {
	var out RaftProgress
	if err := c.do(ctx, http.MethodGet, "/v1/operator/raft/progress", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RaftRemovePeer removes the server id from the raft configuration.
func (c *Client) RaftRemovePeer(ctx context.Context, id string) error {
	if id == "" {
		return errors.New("remove-peer: a peer ID is required")
	}
	return c.do(ctx, http.MethodDelete, "/v1/operator/raft/peer", url.Values{"id": {id}}, nil)
}

// RaftTransferLeader hands raft leadership to id, or to the most
// up-to-date voter when id is empty.
func (c *Client) RaftTransferLeader(ctx context.Context, id string) (*TransferLeaderResponse, error) {
	q := url.Values{}
	if id != "" {
		q.Set("id", id)
	}
	var out TransferLeaderResponse
	if err := c.do(ctx, http.MethodPut, "/v1/operator/raft/transfer-leader", q, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
