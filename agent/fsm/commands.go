package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// MessageType is the first byte of every log entry. The payload that follows
// is the JSON encoding of the command struct for that type. Types are never
// renumbered or reused; a new command gets a new number.
type MessageType uint8

const (
	BootstrapType       MessageType = 1
	SetSystemIDType     MessageType = 2
	UpsertMemberType    MessageType = 3
	RemoveMemberType    MessageType = 4
	SetPrimaryType      MessageType = 5
	RecordFenceType     MessageType = 6
	RenewLeaseType      MessageType = 7
	ReleaseLeaseType    MessageType = 8
	SetSyncType         MessageType = 9
	SetPausedType       MessageType = 10
	RequestOpType       MessageType = 11
	CancelOpType        MessageType = 12
	AnnotateHistoryType MessageType = 13
	SetSecretsType      MessageType = 14
	ReinitType          MessageType = 15
)

var typeNames = map[MessageType]string{
	BootstrapType:       "bootstrap",
	SetSystemIDType:     "set-system-id",
	UpsertMemberType:    "upsert-member",
	RemoveMemberType:    "remove-member",
	SetPrimaryType:      "set-primary",
	RecordFenceType:     "record-fence",
	RenewLeaseType:      "renew-lease",
	ReleaseLeaseType:    "release-lease",
	SetSyncType:         "set-sync",
	SetPausedType:       "set-paused",
	RequestOpType:       "request-op",
	CancelOpType:        "cancel-op",
	AnnotateHistoryType: "annotate-history",
	SetSecretsType:      "set-secrets",
	ReinitType:          "reinit",
}

func (t MessageType) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("unknown(%d)", uint8(t))
}

// Command is a change to the cluster state.
type Command interface {
	MessageType() MessageType
}

// command is a Command this package can apply.
type command interface {
	Command
	apply(s *State, a applyCtx) error
}

// commandTable is the message-type table: one entry per type, each command
// with its own apply function. A type missing here is refused by Decode.
var commandTable = map[MessageType]func() command{
	BootstrapType:       func() command { return &Bootstrap{} },
	SetSystemIDType:     func() command { return &SetSystemID{} },
	UpsertMemberType:    func() command { return &UpsertMember{} },
	RemoveMemberType:    func() command { return &RemoveMember{} },
	SetPrimaryType:      func() command { return &SetPrimary{} },
	RecordFenceType:     func() command { return &RecordFence{} },
	RenewLeaseType:      func() command { return &RenewLease{} },
	ReleaseLeaseType:    func() command { return &ReleaseLease{} },
	SetSyncType:         func() command { return &SetSync{} },
	SetPausedType:       func() command { return &SetPaused{} },
	RequestOpType:       func() command { return &RequestOp{} },
	CancelOpType:        func() command { return &CancelOp{} },
	AnnotateHistoryType: func() command { return &AnnotateHistory{} },
	SetSecretsType:      func() command { return &SetSecrets{} },
	ReinitType:          func() command { return &Reinit{} },
}

// Encode renders a command as a log entry: one type byte, then JSON.
func Encode(c Command) ([]byte, error) {
	payload, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("encoding %s command: %w", c.MessageType(), err)
	}
	buf := make([]byte, 0, 1+len(payload))
	buf = append(buf, byte(c.MessageType()))
	return append(buf, payload...), nil
}

// Decode parses a log entry produced by Encode.
func Decode(data []byte) (Command, error) {
	if len(data) == 0 {
		return nil, errors.New("decoding command: empty log entry")
	}
	t := MessageType(data[0])
	newCmd, ok := commandTable[t]
	if !ok {
		return nil, fmt.Errorf("decoding command: %w: type byte %d", ErrUnknownType, data[0])
	}
	c := newCmd()
	if err := json.Unmarshal(data[1:], c); err != nil {
		return nil, fmt.Errorf("decoding %s command: %w", t, err)
	}
	return c, nil
}

// ErrUnknownType is returned (wrapped) for a log entry whose type byte this
// version does not know, e.g. one written by a newer agent.
var ErrUnknownType = errors.New("unknown command type")

// RejectedError is what Apply returns when a command's condition does not
// hold (stale epoch, lease moved, wrong holder...). The state is unchanged.
type RejectedError struct {
	Type   MessageType
	Reason string
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("%s rejected: %s", e.Type, e.Reason)
}

// IsRejected reports whether err is a condition rejection from Apply.
func IsRejected(err error) bool {
	var r *RejectedError
	return errors.As(err, &r)
}

func reject(t MessageType, format string, args ...any) error {
	return &RejectedError{Type: t, Reason: fmt.Sprintf(format, args...)}
}

// applyCtx is what every apply function receives.
type applyCtx struct {
	index, term uint64
}

// Bootstrap names the first primary (epoch 1) of a new cluster. It applies
// only once.
type Bootstrap struct {
	ClusterID string      `json:"cluster_id"`
	Node      string      `json:"node"`
	Reason    string      `json:"reason,omitempty"`
	Sync      SyncState   `json:"sync"`
	Evidence  []Candidate `json:"evidence,omitempty"`
	DecidedBy string      `json:"decided_by,omitempty"`
}

func (*Bootstrap) MessageType() MessageType { return BootstrapType }

func (c *Bootstrap) apply(s *State, a applyCtx) error {
	if s.ClusterID != "" || s.Epoch != 0 {
		return reject(BootstrapType, "cluster %q already bootstrapped (epoch %d)", s.ClusterID, s.Epoch)
	}
	if c.ClusterID == "" {
		return reject(BootstrapType, "empty cluster id")
	}
	m := s.Member(c.Node)
	if m == nil {
		return reject(BootstrapType, "%q is not a member", c.Node)
	}
	if m.NoPostgres {
		return reject(BootstrapType, "%q runs no PostgreSQL", c.Node)
	}
	s.ClusterID = c.ClusterID
	takeOffice(s, a, c.Node, 1, c.Sync)
	appendHistory(s, Transition{
		Epoch: 1, Kind: KindBootstrap, To: c.Node, Reason: c.Reason, Candidates: c.Evidence,
		DecidedBy: c.DecidedBy, Index: a.index, Term: a.term,
	})
	return nil
}

// SetSystemID records PostgreSQL's system identifier once the first primary
// has run initdb. It can be set once; a different value is refused.
type SetSystemID struct {
	SystemID uint64 `json:"system_id,string"`
}

func (*SetSystemID) MessageType() MessageType { return SetSystemIDType }

func (c *SetSystemID) apply(s *State, _ applyCtx) error {
	if c.SystemID == 0 {
		return reject(SetSystemIDType, "system identifier 0")
	}
	if s.SystemID != 0 && s.SystemID != c.SystemID {
		return reject(SetSystemIDType, "cluster already has system identifier %d, refusing %d", s.SystemID, c.SystemID)
	}
	s.SystemID = c.SystemID
	return nil
}

// UpsertMember adds or updates a member.
type UpsertMember struct {
	Member Member `json:"member"`
}

func (*UpsertMember) MessageType() MessageType { return UpsertMemberType }

func (c *UpsertMember) apply(s *State, _ applyCtx) error {
	if c.Member.Name == "" {
		return reject(UpsertMemberType, "member without a name")
	}
	if s.Members == nil {
		s.Members = make(map[string]*Member)
	}
	m := c.Member
	m.Addrs = cloneMap(m.Addrs)
	m.Tags = cloneMap(m.Tags)
	s.Members[m.Name] = &m
	return nil
}

// RemoveMember removes a member. The current primary cannot be removed.
type RemoveMember struct {
	Name string `json:"name"`
}

func (*RemoveMember) MessageType() MessageType { return RemoveMemberType }

func (c *RemoveMember) apply(s *State, _ applyCtx) error {
	if s.Member(c.Name) == nil {
		return reject(RemoveMemberType, "%q is not a member", c.Name)
	}
	if c.Name == s.Primary {
		return reject(RemoveMemberType, "%q is the primary (epoch %d); switch over first", c.Name, s.Epoch)
	}
	delete(s.Members, c.Name)
	return nil
}

// SetPrimary names a new primary for epoch Epoch. It is conditional: it
// applies only if the current epoch is Epoch-1 and the lease has not changed
// since the decision (ExpectLeaseVersion), so a stale leader's decision, or
// one made while the old primary was still renewing, cannot apply.
type SetPrimary struct {
	Node               string      `json:"node"`
	Epoch              uint64      `json:"epoch"`
	ExpectLeaseVersion uint64      `json:"expect_lease_version"`
	Kind               string      `json:"kind"`
	Reason             string      `json:"reason"`
	Candidates         []Candidate `json:"candidates,omitempty"`
	PromoteLSN         LSN         `json:"promote_lsn,omitempty"`
	MaybeLost          uint64      `json:"maybe_lost,omitempty"`
	// Sync is the replication configuration of the new epoch.
	Sync      SyncState `json:"sync"`
	DecidedBy string    `json:"decided_by,omitempty"`
	// DecidedAt is the deciding leader's wall clock, for people reading
	// the history; no decision depends on it.
	DecidedAt time.Time `json:"decided_at,omitzero"`
}

func (*SetPrimary) MessageType() MessageType { return SetPrimaryType }

func (c *SetPrimary) apply(s *State, a applyCtx) error {
	if s.Epoch == 0 {
		return reject(SetPrimaryType, "cluster not bootstrapped")
	}
	if c.Epoch != s.Epoch+1 {
		return reject(SetPrimaryType, "decision for epoch %d but current epoch is %d", c.Epoch, s.Epoch)
	}
	if c.ExpectLeaseVersion != s.Lease.Version {
		return reject(SetPrimaryType, "lease of %s changed at index %d after the decision (saw %d)",
			s.Lease.Holder, s.Lease.Version, c.ExpectLeaseVersion)
	}
	m := s.Member(c.Node)
	if m == nil {
		return reject(SetPrimaryType, "%q is not a member", c.Node)
	}
	if m.NoPostgres {
		return reject(SetPrimaryType, "%q runs no PostgreSQL", c.Node)
	}
	from := s.Primary
	takeOffice(s, a, c.Node, c.Epoch, c.Sync)
	appendHistory(s, Transition{
		Epoch: c.Epoch, Kind: c.Kind, From: from, To: c.Node, Reason: c.Reason,
		Candidates: c.Candidates, PromoteLSN: c.PromoteLSN, MaybeLost: c.MaybeLost,
		DecidedBy: c.DecidedBy, DecidedAt: c.DecidedAt, Index: a.index, Term: a.term,
	})
	return nil
}

// takeOffice makes node the primary of epoch, granting it the lease.
func takeOffice(s *State, a applyCtx, node string, epoch uint64, sync SyncState) {
	s.Primary = node
	s.Epoch = epoch
	s.Lease = Lease{
		Holder: node, Epoch: epoch,
		GrantedIndex: a.index, GrantedTerm: a.term,
		Version: a.index,
	}
	sync.Epoch = epoch
	sync.Version = a.index
	sync.Standbys = slices.Clone(sync.Standbys)
	sync.Voters = slices.Clone(sync.Voters)
	s.Sync = sync
	s.Pending = nil
	cancelReinitOf(s, node, a.index)
}

func appendHistory(s *State, t Transition) {
	s.History = append(s.History, t)
	if len(s.History) > MaxHistory {
		s.History = slices.Clone(s.History[len(s.History)-MaxHistory:])
	}
}

// RecordFence is sent by a newly promoted primary before it accepts writes.
type RecordFence struct {
	Node      string `json:"node"`
	Epoch     uint64 `json:"epoch"`
	Timeline  uint32 `json:"timeline"`
	XID       uint64 `json:"xid"`
	SwitchLSN LSN    `json:"switch_lsn,omitempty"`
}

func (*RecordFence) MessageType() MessageType { return RecordFenceType }

func (c *RecordFence) apply(s *State, a applyCtx) error {
	if c.Epoch != s.Epoch || c.Node != s.Primary {
		return reject(RecordFenceType, "%s is not the primary of epoch %d (current: %s, epoch %d)", c.Node, c.Epoch, s.Primary, s.Epoch)
	}
	if _, ok := s.FenceFor(c.Epoch); ok {
		return reject(RecordFenceType, "fence for epoch %d already recorded", c.Epoch)
	}
	if c.Timeline < s.Timeline {
		return reject(RecordFenceType, "timeline %d is older than the cluster's %d", c.Timeline, s.Timeline)
	}
	s.Timeline = c.Timeline
	s.Fences = append(s.Fences, Fence{
		Epoch: c.Epoch, Node: c.Node, Timeline: c.Timeline, XID: c.XID, SwitchLSN: c.SwitchLSN, Index: a.index,
	})
	if len(s.Fences) > MaxFences {
		s.Fences = slices.Clone(s.Fences[len(s.Fences)-MaxFences:])
	}
	return nil
}

// RenewLease extends the holder's lease. The holder measures the new expiry
// from when it sent the request; every other node from when it saw this
// entry applied, which is always later.
type RenewLease struct {
	Holder string `json:"holder"`
	Epoch  uint64 `json:"epoch"`
	// LSN is the primary's WAL flush position when it sent the renewal, so
	// every node knows a recent primary position (async failover bound).
	LSN LSN `json:"lsn,omitempty"`
}

func (*RenewLease) MessageType() MessageType { return RenewLeaseType }

func (c *RenewLease) apply(s *State, a applyCtx) error {
	if err := checkHolder(RenewLeaseType, s, c.Holder, c.Epoch); err != nil {
		return err
	}
	s.Lease.RenewedIndex = a.index
	s.Lease.RenewedTerm = a.term
	s.Lease.Version = a.index
	s.Lease.RenewedLSN = max(s.Lease.RenewedLSN, c.LSN)
	return nil
}

func checkHolder(t MessageType, s *State, holder string, epoch uint64) error {
	if s.Lease.Holder != holder || s.Lease.Epoch != epoch || epoch != s.Epoch {
		return reject(t, "%s does not hold the lease of epoch %d (holder %s, epoch %d)", holder, epoch, s.Lease.Holder, s.Lease.Epoch)
	}
	if s.Lease.Released {
		return reject(t, "lease of epoch %d was released at index %d", epoch, s.Lease.ReleasedIndex)
	}
	return nil
}

// ReleaseLease ends the holder's lease at once. The holder sends it only
// after its PostgreSQL can no longer accept writes (dead, or fenced for a
// switchover), so the controller need not wait for the lease to expire.
type ReleaseLease struct {
	Holder   string `json:"holder"`
	Epoch    uint64 `json:"epoch"`
	FinalLSN LSN    `json:"final_lsn,omitempty"`
	Cause    string `json:"cause"`
}

func (*ReleaseLease) MessageType() MessageType { return ReleaseLeaseType }

func (c *ReleaseLease) apply(s *State, a applyCtx) error {
	if err := checkHolder(ReleaseLeaseType, s, c.Holder, c.Epoch); err != nil {
		return err
	}
	s.Lease.Released = true
	s.Lease.ReleasedIndex = a.index
	s.Lease.FinalLSN = c.FinalLSN
	s.Lease.ReleaseCause = c.Cause
	s.Lease.Version = a.index
	return nil
}

// SetSync changes the synchronous replication configuration within an
// epoch; it applies only if the epoch and the configuration's Version are
// the ones the controller based its change on.
type SetSync struct {
	Epoch         uint64    `json:"epoch"`
	ExpectVersion uint64    `json:"expect_version"`
	Sync          SyncState `json:"sync"`
}

func (*SetSync) MessageType() MessageType { return SetSyncType }

func (c *SetSync) apply(s *State, a applyCtx) error {
	if c.Epoch != s.Epoch {
		return reject(SetSyncType, "change for epoch %d but current epoch is %d", c.Epoch, s.Epoch)
	}
	if c.ExpectVersion != s.Sync.Version {
		return reject(SetSyncType, "sync configuration changed at index %d (expected %d)", s.Sync.Version, c.ExpectVersion)
	}
	ns := c.Sync
	if ns.Mode != ModeAsync {
		for _, v := range ns.Standbys {
			if !slices.Contains(ns.Voters, v) {
				return reject(SetSyncType, "standby %s missing from the failover voters", v)
			}
		}
		if ns.K < 1 || (len(ns.Standbys) > 0 && ns.K > len(ns.Standbys)) {
			return reject(SetSyncType, "ANY %d of %d standbys", ns.K, len(ns.Standbys))
		}
	}
	ns.Epoch = s.Epoch
	ns.Version = a.index
	ns.Standbys = slices.Clone(ns.Standbys)
	ns.Voters = slices.Clone(ns.Voters)
	s.Sync = ns
	return nil
}

// SetPaused turns automatic failover off (maintenance) or on.
type SetPaused struct {
	Paused bool `json:"paused"`
}

func (*SetPaused) MessageType() MessageType { return SetPausedType }

func (c *SetPaused) apply(s *State, _ applyCtx) error {
	s.Paused = c.Paused
	return nil
}

// RequestOp asks the controller for a switchover or a manual failover of
// the given epoch. Only one operation can be pending.
type RequestOp struct {
	Op Operation `json:"op"`
}

func (*RequestOp) MessageType() MessageType { return RequestOpType }

func (c *RequestOp) apply(s *State, a applyCtx) error {
	op := c.Op
	if op.Kind != OpSwitchover && op.Kind != OpFailover {
		return reject(RequestOpType, "unknown operation %q", op.Kind)
	}
	if op.Epoch != s.Epoch || s.Epoch == 0 {
		return reject(RequestOpType, "%s requested for epoch %d but current epoch is %d", op.Kind, op.Epoch, s.Epoch)
	}
	if s.Pending != nil {
		return reject(RequestOpType, "a %s to %q is already pending", s.Pending.Kind, s.Pending.Target)
	}
	if op.Target != "" {
		m := s.Member(op.Target)
		if m == nil {
			return reject(RequestOpType, "%q is not a member", op.Target)
		}
		if m.NoPostgres {
			return reject(RequestOpType, "%q runs no PostgreSQL", op.Target)
		}
		if op.Target == s.Primary {
			return reject(RequestOpType, "%q is already the primary", op.Target)
		}
	} else if op.Kind == OpFailover {
		return reject(RequestOpType, "a manual failover needs a target")
	}
	op.From = s.Primary
	op.Index = a.index
	s.Pending = &op
	return nil
}

// CancelOp clears the pending operation of an epoch.
type CancelOp struct {
	Epoch  uint64 `json:"epoch"`
	Reason string `json:"reason"`
}

func (*CancelOp) MessageType() MessageType { return CancelOpType }

func (c *CancelOp) apply(s *State, _ applyCtx) error {
	if s.Pending == nil || s.Pending.Epoch != c.Epoch {
		return reject(CancelOpType, "no operation pending for epoch %d", c.Epoch)
	}
	s.Pending = nil
	return nil
}

// AnnotateHistory adds what was learned after a transition (the write gap
// measured by the gateway) to its history entry.
type AnnotateHistory struct {
	Epoch      uint64 `json:"epoch"`
	WriteGapMS int64  `json:"write_gap_ms"`
}

func (*AnnotateHistory) MessageType() MessageType { return AnnotateHistoryType }

func (c *AnnotateHistory) apply(s *State, _ applyCtx) error {
	for i := len(s.History) - 1; i >= 0; i-- {
		if s.History[i].Epoch == c.Epoch {
			s.History[i].WriteGapMS = c.WriteGapMS
			return nil
		}
	}
	return reject(AnnotateHistoryType, "no history entry for epoch %d", c.Epoch)
}
