package controller

import (
	"fmt"
	"slices"
	"strings"

	"github.com/pgbattery/pgbattery/agent/fsm"
)

// ActionKind is what a node's reconciler should do with its PostgreSQL.
type ActionKind string

const (
	// ActWait: leave PostgreSQL as it is (never writable); nothing to do.
	ActWait ActionKind = "wait"
	// ActRefuse: the data directory belongs to another cluster; touch
	// nothing and report.
	ActRefuse ActionKind = "refuse"
	// ActInit: initdb, then start read-only (this node is the first
	// primary and has no data).
	ActInit ActionKind = "init"
	// ActClone: pg_basebackup from Upstream (no data, or rewind failed too
	// often), then follow it.
	ActClone ActionKind = "clone"
	// ActStart: start PostgreSQL as it was, fenced (read-only).
	ActStart ActionKind = "start"
	// ActReleaseLease: PostgreSQL died while this node was primary: release
	// the lease at once (lease.Runner.Release) so failover need not wait.
	ActReleaseLease ActionKind = "release-lease"
	// ActFence: make PostgreSQL stop accepting writes now (read-only,
	// terminate client backends, stop if that fails).
	ActFence ActionKind = "fence"
	// ActStepDown: fence, then release the lease with the final WAL
	// position (pg_current_wal_flush_lsn after fencing).
	ActStepDown ActionKind = "step-down"
	// ActPromote: pg_promote and wait until out of recovery; stay
	// read-only.
	ActPromote ActionKind = "promote"
	// ActRecordFence: promoted, fence not in the FSM yet: read
	// pg_snapshot_xmax(pg_current_snapshot()) once, while still read-only
	// (every xid assigned afterwards is at or above it), lift the
	// read-only default (synchronous standbys in place first), and
	// propose fsm.RecordFence with it. Gateways route to the primary only
	// once the FSM has the fence.
	ActRecordFence ActionKind = "record-fence"
	// ActServe: apply Sync (synchronous_standby_names = ANY K (Standbys))
	// and then, only then, accept writes.
	ActServe ActionKind = "serve"
	// ActFollow: be a standby streaming from Upstream (standby.signal,
	// primary_conninfo, recovery_target_timeline = latest).
	ActFollow ActionKind = "follow"
	// ActRewind: stop, pg_rewind from Upstream (a no-op when the WAL has
	// not diverged), then follow it.
	ActRewind ActionKind = "rewind"
)

// Local is what a node's agent observes of its own PostgreSQL.
type Local struct {
	HasData  bool
	SystemID uint64
	// Running: the postmaster is up and answering.
	Running bool
	// Died: the agent saw PostgreSQL die (or hang) and has not restarted
	// it yet. Distinguishes a crash from "not started yet".
	Died bool
	// InRecovery: a standby (running), or configured as one (stopped:
	// standby.signal present).
	InRecovery bool
	// Writable: accepting writes (not in recovery and not read-only).
	Writable bool
	Timeline uint32
	// Upstream: who it streams from.
	Upstream string
	// Diverged: its WAL is not a prefix of the primary's (streaming failed
	// on a timeline fork, or pg_rewind --dry-run says it must rewind).
	Diverged bool
	// RewindFailures counts failed pg_rewind attempts since the last
	// success.
	RewindFailures int
	// LeaseValid: lease.Runner.Valid().
	LeaseValid bool
	// DiskFull: less than failover.min_free_space is left for its data or
	// WAL (a primary then steps down: it cannot take writes for long).
	DiskFull bool
	// SyncApplied is the synchronous_standby_names in effect.
	SyncApplied *SyncConfig
}

// Action is what Desired decides.
type Action struct {
	Kind     ActionKind
	Upstream string
	Epoch    uint64
	// Sync is what ActServe (and ActPromote, ahead of time) must apply
	// before accepting writes.
	Sync SyncConfig
	// Slots (ActServe, ActPromote) are the physical replication slots the primary
	// keeps, one per other member running PostgreSQL (SlotName). It creates
	// missing ones and drops other slots named with SlotPrefix, never any
	// other slot.
	Slots  []string
	Reason string
}

// SlotPrefix begins the name of every replication slot pgbattery manages.
const SlotPrefix = "pgbattery_"

// SlotName is the replication slot of a member: SlotPrefix and the name
// lowercased, with anything but [a-z0-9_] replaced by '_' (slot names allow
// only those; at most 63 bytes).
func SlotName(member string) string {
	b := []byte(SlotPrefix)
	for _, r := range strings.ToLower(member) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
			b = append(b, byte(r))
		} else {
			b = append(b, '_')
		}
	}
	if len(b) > 63 {
		b = b[:63]
	}
	return string(b)
}

func (a Action) String() string {
	s := string(a.Kind)
	if a.Upstream != "" {
		s += " " + a.Upstream
	}
	if a.Reason != "" {
		s += " (" + a.Reason + ")"
	}
	return s
}

// MaxRewindAttempts is how many times pg_rewind is tried before re-cloning.
const MaxRewindAttempts = 3

// Desired says what node self's PostgreSQL should be doing, given the FSM
// state and what the agent observes locally. It is a pure function: the
// reconciler calls it after every FSM change and every local observation
// and carries the action out (idempotently).
//
// The rules that keep one writer: a node is told to accept writes
// (ActRecordFence, ActServe) only if the FSM names it primary of the
// current epoch, its own lease is valid, and it has been promoted; it lifts
// its read-only default only after it has fixed its fence xid. Every
// other node that is, or may be, a writable primary is told to fence.
func Desired(st *fsm.State, self string, l Local) Action {
	m := st.Member(self)
	fenceIfWritable := func(wait Action) Action {
		if l.Running && !l.InRecovery && l.Writable {
			return Action{Kind: ActFence, Epoch: st.Epoch, Reason: wait.Reason}
		}
		return wait
	}
	switch {
	case m == nil:
		return fenceIfWritable(Action{Kind: ActWait, Reason: "not a member of the cluster"})
	case m.NoPostgres:
		return Action{Kind: ActWait, Reason: "witness: no PostgreSQL"}
	case l.HasData && st.SystemID != 0 && l.SystemID != 0 && l.SystemID != st.SystemID:
		return Action{Kind: ActRefuse, Reason: fmt.Sprintf("data directory has system identifier %d, the cluster's is %d", l.SystemID, st.SystemID)}
	case st.Epoch == 0 || st.Primary == "":
		return fenceIfWritable(Action{Kind: ActWait, Reason: "no primary elected yet"})
	}
	if self == st.Primary {
		return desiredPrimary(st, l, fenceIfWritable)
	}

	// Not the primary.
	up := st.Primary
	switch {
	case l.Running && !l.InRecovery && l.Writable:
		return Action{Kind: ActFence, Epoch: st.Epoch, Reason: fmt.Sprintf("%s is the primary of epoch %d", up, st.Epoch)}
	case !l.HasData:
		return Action{Kind: ActClone, Upstream: up, Epoch: st.Epoch, Reason: "no data"}
	case l.Diverged || !l.InRecovery:
		// A former primary (or a standby whose WAL forked): rewind to the
		// primary's timeline, re-clone when rewind keeps failing.
		if l.RewindFailures >= MaxRewindAttempts {
			return Action{Kind: ActClone, Upstream: up, Epoch: st.Epoch, Reason: fmt.Sprintf("pg_rewind failed %d times", l.RewindFailures)}
		}
		return Action{Kind: ActRewind, Upstream: up, Epoch: st.Epoch, Reason: "WAL may have diverged from the primary's"}
	default:
		return Action{Kind: ActFollow, Upstream: up, Epoch: st.Epoch}
	}
}

func desiredPrimary(st *fsm.State, l Local, fenceIfWritable func(Action) Action) Action {
	e := st.Epoch
	switch {
	case st.Lease.Released:
		if l.HasData && !l.Running {
			// Start read-only so the controller can see its WAL: if no
			// standby is safe it gives this node a new epoch.
			return Action{Kind: ActStart, Epoch: e, Reason: "lease released; start fenced while a new primary is chosen"}
		}
		return fenceIfWritable(Action{Kind: ActWait, Epoch: e, Reason: "lease released; waiting for a new primary"})
	case st.Pending != nil && st.Pending.Epoch == e:
		return Action{Kind: ActStepDown, Epoch: e, Reason: st.Pending.Kind + " requested"}
	case !l.HasData:
		if e == 1 && st.SystemID == 0 {
			return Action{Kind: ActInit, Epoch: e, Reason: "first primary of a new cluster"}
		}
		return Action{Kind: ActWait, Epoch: e, Reason: "named primary but has no data"}
	case l.Died:
		return Action{Kind: ActReleaseLease, Epoch: e, Reason: "PostgreSQL died while primary"}
	case l.DiskFull && l.Running && !l.InRecovery:
		// PostgreSQL fails writes (53100) or PANICs on WAL and restarts in
		// place, holding the lease all the while: hand over as a
		// switchover does (fence, release with the final position) so a
		// standby with room takes office.
		return Action{Kind: ActStepDown, Epoch: e, Reason: "disk nearly full"}
	case !l.Running:
		return Action{Kind: ActStart, Epoch: e, Reason: "start fenced before taking office"}
	case !l.LeaseValid:
		return fenceIfWritable(Action{Kind: ActWait, Epoch: e, Reason: "no valid lease"})
	case l.InRecovery:
		// Slots and synchronous_standby_names are put in place before
		// the promotion (a standby ignores the setting and may hold
		// physical slots): the standbys that re-point find their slot at
		// once, and ActServe has nothing left to do but lift the fence.
		return primaryAction(st, ActPromote)
	case !st.PrimaryReady():
		a := primaryAction(st, ActRecordFence)
		a.Reason = "fix the fence xid, then accept writes and record it"
		return a
	}
	return primaryAction(st, ActServe)
}

// primaryAction is kind with the slots and synchronous standbys the
// primary of st must keep.
func primaryAction(st *fsm.State, kind ActionKind) Action {
	var slots []string
	for _, n := range st.MemberNames() {
		if n != st.Primary && !st.Members[n].NoPostgres {
			slots = append(slots, SlotName(n))
		}
	}
	return Action{Kind: kind, Epoch: st.Epoch, Sync: SyncConfig{Standbys: slices.Clone(st.Sync.Standbys), K: st.Sync.K}, Slots: slots}
}
