package controller

import (
	"context"
	"slices"
	"time"

	"github.com/pgbattery/pgbattery/agent/fsm"
	"github.com/pgbattery/pgbattery/agent/lease"
)

// Clock is a monotonic clock (see lease.Clock).
type Clock = lease.Clock

// StateReader is the local FSM replica (*fsm.FSM implements it).
type StateReader interface {
	State() *fsm.State
}

// Leadership tells whether this node is the raft leader, and in which term.
// With hashicorp/raft: r.State() == raft.Leader and the current term
// (r.Stats()["term"], or count LeaderCh/LeaderObservation transitions).
type Leadership interface {
	Leader() (isLeader bool, term uint64)
}

// Proposer submits a command to the raft log. It must not wait for the
// outcome: the controller learns it from the FSM (every safety-relevant
// command is conditional, so a duplicate or late one is harmless). With
// hashicorp/raft: data, _ := fsm.Encode(cmd); r.Apply(data, timeout), with
// the future's error only logged.
type Proposer interface {
	Propose(cmd fsm.Command) error
}

// NodeProber asks a node's agent, fresh, for its PostgreSQL state. It must
// honour ctx's deadline. An error means the node could not be asked.
type NodeProber interface {
	Probe(ctx context.Context, m *fsm.Member) (PGStatus, error)
}

// Metrics is the subset of go-metrics the controller reports to;
// *metrics.Metrics from github.com/hashicorp/go-metrics implements it.
type Metrics interface {
	SetGauge(key []string, val float32)
	IncrCounter(key []string, val float32)
}

type nullMetrics struct{}

func (nullMetrics) SetGauge([]string, float32)    {}
func (nullMetrics) IncrCounter([]string, float32) {}

// SyncConfig is a synchronous_standby_names setting: ANY K (Standbys).
type SyncConfig struct {
	Standbys []string `json:"standbys"`
	K        int      `json:"k"`
}

// Equal compares two configurations, ignoring order.
func (s SyncConfig) Equal(o SyncConfig) bool {
	if s.K != o.K || len(s.Standbys) != len(o.Standbys) {
		return false
	}
	a, b := slices.Clone(s.Standbys), slices.Clone(o.Standbys)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// PGStatus is what a node reports about its PostgreSQL, asked fresh.
type PGStatus struct {
	// Running: the postmaster is up and answers queries.
	Running bool `json:"running"`
	// Healthy: answers within its responsiveness probe; for a standby,
	// also receiving WAL.
	Healthy bool `json:"healthy"`
	// DiskFull: less than failover.min_free_space is left for its data or
	// WAL. Such a node is not healthy: it is not promoted or reinstated.
	DiskFull   bool   `json:"disk_full,omitempty"`
	InRecovery bool   `json:"in_recovery"`
	Writable   bool   `json:"writable"`
	Timeline   uint32 `json:"timeline"`
	SystemID   uint64 `json:"system_id,string"`
	HasData    bool   `json:"has_data"`
	// Standby positions: pg_last_wal_receive_lsn (flushed by the WAL
	// receiver) and pg_last_wal_replay_lsn. For a primary FlushLSN is
	// pg_current_wal_flush_lsn.
	ReceiveLSN fsm.LSN `json:"receive_lsn"`
	ReplayLSN  fsm.LSN `json:"replay_lsn"`
	FlushLSN   fsm.LSN `json:"flush_lsn"`
	// Upstream is the node a standby streams from.
	Upstream string `json:"upstream,omitempty"`
	// Primary only: the synchronous_standby_names in effect, and each
	// connected standby's flush LSN (pg_stat_replication, keyed by node
	// name = application_name).
	SyncApplied  *SyncConfig        `json:"sync_applied,omitempty"`
	StandbyFlush map[string]fsm.LSN `json:"standby_flush,omitempty"`
}

// Position is how much WAL the node holds: everything received is
// replayed on promotion.
func (p PGStatus) Position() fsm.LSN {
	return max(p.ReceiveLSN, p.ReplayLSN, p.FlushLSN)
}

// EventKind is what happened to a node, from gossip or from its agent.
type EventKind string

const (
	EventJoin    EventKind = "join"
	EventSuspect EventKind = "suspect"
	EventAlive   EventKind = "alive"
	EventFailed  EventKind = "failed"
	EventLeave   EventKind = "leave"
	EventUpdate  EventKind = "update"
	// EventPGDead: an agent reports its PostgreSQL dead.
	EventPGDead EventKind = "pg-dead"
	// EventPGAlive: an agent reports its PostgreSQL running again.
	EventPGAlive EventKind = "pg-alive"
)

// Event is an input that makes the controller look again.
type Event struct {
	Kind EventKind
	Node string
}

// Status is the controller's current situation, for the HTTP API, logs and
// metrics.
type Status struct {
	State  StatusState `json:"state"`
	Reason string      `json:"reason,omitempty"`
	// Since is the controller clock reading when State last changed.
	Since time.Duration `json:"since"`
	Term  uint64        `json:"term,omitempty"`
	Epoch uint64        `json:"epoch,omitempty"`
	// HoldDownLeft is how long until the current lease certainly ended
	// (0 when it has).
	HoldDownLeft time.Duration `json:"hold_down_left,omitempty"`
}

// StatusState names the controller's situation.
type StatusState string

const (
	StatusFollower      StatusState = "follower"         // not the raft leader: nothing to decide
	StatusBootstrapping StatusState = "bootstrapping"    // choosing the first primary
	StatusHealthy       StatusState = "healthy"          // primary holds its lease
	StatusHoldDown      StatusState = "hold-down"        // lease not renewed; waiting until it certainly ended
	StatusFailingOver   StatusState = "failing-over"     // a new primary was proposed
	StatusBlocked       StatusState = "failover-blocked" // no safe candidate: refusing rather than losing data
	StatusPaused        StatusState = "paused"           // automatic failover disabled
	StatusOperation     StatusState = "operation"        // switchover / manual failover in progress
)
