// Package controller holds the control plane's decisions: when the primary
// has failed, which standby to promote, the synchronous standby set,
// switchover and manual failover, and what each node's PostgreSQL should be
// doing (Desired).
//
// The controller runs on every server agent and acts only on the raft
// leader. It is written against small interfaces (Clock, StateReader,
// Leadership, Proposer, NodeProber) so the same code runs in the agent and in
// the deterministic simulation (agent/sim). It is a step machine: Step looks
// at the world once, proposes at most a few conditional commands, and
// returns how soon it wants to look again. Run drives Step from FSM changes,
// events and timers.
package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/pgbattery/pgbattery/agent/fsm"
	"github.com/pgbattery/pgbattery/agent/lease"
)

// Config configures a Controller.
type Config struct {
	// Node is this agent's name, recorded as the decider.
	Node string
	// Mode is the replication mode: fsm.ModeQuorum (default), ModeStrict
	// or ModeAsync.
	Mode string
	// SyncK overrides K of ANY K (0: automatic; quorum mode uses
	// 1+(n-1)/2 of n healthy standbys, strict mode 1).
	SyncK int
	// MaxLagOnFailover bounds, in async mode, how many bytes of WAL a
	// failover may lose.
	MaxLagOnFailover uint64
	// Timings are the lease timings (validated by New).
	Timings lease.Timings
	// ProbeTimeout bounds each fresh probe of a node (default 500ms).
	ProbeTimeout time.Duration
	// SwitchoverTimeout bounds each phase of a switchover or manual
	// failover (default 10s).
	SwitchoverTimeout time.Duration
	// RetryInterval is how long a proposal is given before it is proposed
	// again (default 1s).
	RetryInterval time.Duration
	// SyncInterval is how often the synchronous standby set is checked
	// (default: Timings.RenewInterval).
	SyncInterval time.Duration
	// NewClusterID makes the id of a new cluster (default: random).
	NewClusterID func() string
	// WallClock stamps decisions for the history (nil: not stamped, as
	// in the simulation). Nothing is decided by it.
	WallClock func() time.Time
	// BootstrapExpect is how many members running PostgreSQL must be
	// registered before the first primary is chosen (0: any), so that a
	// member holding existing data is not overlooked.
	BootstrapExpect int
	// SerialProbes probes nodes one after the other instead of in
	// parallel. For the simulation, whose prober answers at once.
	SerialProbes bool

	// UnsafeIgnoreHoldDown makes the controller promote as soon as the
	// primary stops answering probes, without waiting for its lease to end.
	// It exists only so the simulation can show that its invariant checker
	// catches the resulting split brain. Never set it elsewhere.
	UnsafeIgnoreHoldDown bool
}

// Deps are the controller's collaborators.
type Deps struct {
	Clock    Clock
	State    StateReader
	Leader   Leadership
	Proposer Proposer
	Prober   NodeProber
	Logger   hclog.Logger
	Metrics  Metrics
}

// Controller makes the cluster's decisions while this node is raft leader.
type Controller struct {
	cfg Config
	d   Deps
	log hclog.Logger

	mu     sync.Mutex
	status Status
	events chan Event
	failed map[string]bool // gossip says failed/left

	// leadership and lease observation (leader only)
	term             uint64
	leaderSince      time.Duration
	leaseSeenVersion uint64
	leaseSeenAt      time.Duration

	inflight       map[string]time.Duration
	lastSyncCheck  time.Duration
	syncChecked    bool
	confirmVersion uint64
	confirmLSN     fsm.LSN
	lastPrimaryLSN fsm.LSN
	opIndex        uint64
	opSeenAt       time.Duration
	opEndedAt      time.Duration
	opEndedSeen    bool

	// gapEpoch is the epoch of a new primary this leader chose, gapFrom
	// when it last saw the old one able to write (its last lease
	// renewal, or its release): once the new primary records its fence,
	// the difference goes into the history as the write gap.
	gapEpoch uint64
	gapFrom  time.Duration
}

// New validates cfg and returns a Controller.
func New(cfg Config, deps Deps) (*Controller, error) {
	if cfg.Mode == "" {
		cfg.Mode = fsm.ModeQuorum
	}
	switch cfg.Mode {
	case fsm.ModeQuorum, fsm.ModeStrict, fsm.ModeAsync:
	default:
		return nil, fmt.Errorf("replication mode %q: must be %q, %q or %q", cfg.Mode, fsm.ModeQuorum, fsm.ModeStrict, fsm.ModeAsync)
	}
	if cfg.SyncK < 0 {
		return nil, fmt.Errorf("synchronous standby count %d must not be negative", cfg.SyncK)
	}
	cfg.Timings = cfg.Timings.WithDefaults()
	if err := cfg.Timings.Validate(); err != nil {
		return nil, fmt.Errorf("controller timings: %w", err)
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = 500 * time.Millisecond
	}
	if cfg.SwitchoverTimeout == 0 {
		cfg.SwitchoverTimeout = 10 * time.Second
	}
	if cfg.RetryInterval == 0 {
		cfg.RetryInterval = time.Second
	}
	if cfg.SyncInterval == 0 {
		cfg.SyncInterval = cfg.Timings.RenewInterval
	}
	if cfg.NewClusterID == nil {
		cfg.NewClusterID = randomID
	}
	if deps.Clock == nil || deps.State == nil || deps.Leader == nil || deps.Proposer == nil || deps.Prober == nil {
		return nil, errors.New("controller: Clock, State, Leader, Proposer and Prober are required")
	}
	if deps.Logger == nil {
		deps.Logger = hclog.NewNullLogger()
	}
	if deps.Metrics == nil {
		deps.Metrics = nullMetrics{}
	}
	return &Controller{
		cfg:      cfg,
		d:        deps,
		log:      deps.Logger,
		events:   make(chan Event, 64),
		failed:   make(map[string]bool),
		inflight: make(map[string]time.Duration),
	}, nil
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Status returns the controller's current status.
func (c *Controller) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}

func (c *Controller) setStatus(now time.Duration, s StatusState, reason string, epoch uint64, left time.Duration) {
	c.mu.Lock()
	changed := c.status.State != s || c.status.Reason != reason
	if c.status.State != s {
		c.status.Since = now
	}
	c.status.State, c.status.Reason, c.status.Term, c.status.Epoch, c.status.HoldDownLeft = s, reason, c.term, epoch, left
	c.mu.Unlock()
	if changed {
		switch s {
		case StatusBlocked:
			c.log.Error("failover blocked", "reason", reason, "epoch", epoch)
			c.d.Metrics.IncrCounter([]string{"controller", "failover", "blocked"}, 1)
		case StatusFollower:
		default:
			c.log.Info("controller status", "state", string(s), "reason", reason, "epoch", epoch)
		}
	}
	c.d.Metrics.SetGauge([]string{"controller", "blocked"}, boolGauge(s == StatusBlocked))
}

func boolGauge(b bool) float32 {
	if b {
		return 1
	}
	return 0
}

// Notify feeds a gossip event or an agent report to the controller. It
// never blocks; if the buffer is full, Run still steps on its timer.
func (c *Controller) Notify(ev Event) {
	c.mu.Lock()
	switch ev.Kind {
	case EventFailed, EventLeave:
		c.failed[ev.Node] = true
	case EventAlive, EventJoin:
		delete(c.failed, ev.Node)
	}
	c.mu.Unlock()
	select {
	case c.events <- ev:
	default:
	}
}

// Run steps the controller whenever the FSM changes, an event arrives, or
// the time Step asked for has come, until ctx ends.
func (c *Controller) Run(ctx context.Context, changes <-chan struct{}) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-c.events:
		case <-timer.C:
		}
		next := max(c.Step(ctx), time.Millisecond)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// idle is how long Step sleeps when nothing is pending.
const idle = time.Second

// Step looks at the world once and returns when it wants to look again.
func (c *Controller) Step(ctx context.Context) time.Duration {
	now := c.d.Clock.Now()
	isLeader, term := c.d.Leader.Leader()
	if !isLeader {
		if c.term != 0 {
			c.log.Info("no longer raft leader: controller idle")
		}
		c.term = 0
		c.setStatus(now, StatusFollower, "", 0, 0)
		return idle
	}
	st := c.d.State.State()
	if term != c.term {
		// A new leader does not know when the primary last renewed: it
		// waits a full hold-down from now before it believes the lease
		// ended (unless the holder released it through the log).
		c.term = term
		c.leaderSince = now
		c.leaseSeenVersion = st.Lease.Version
		c.leaseSeenAt = now
		clear(c.inflight)
		c.gapEpoch = 0
		c.syncChecked = false
		c.confirmVersion = 0
		c.opIndex = 0
		c.log.Info("raft leader: hold-down armed", "term", term, "hold_down", c.cfg.Timings.HoldDown)
	}
	if st.Lease.Version != c.leaseSeenVersion {
		c.leaseSeenVersion = st.Lease.Version
		c.leaseSeenAt = now
	}
	if st.Epoch == 0 {
		return c.bootstrap(ctx, st, now)
	}
	c.annotateWriteGap(st, now)
	if st.Pending != nil {
		return c.operation(ctx, st, now)
	}
	ended, left := c.leaseEnded(ctx, st, now)
	if !ended {
		if left > 0 && left < c.cfg.Timings.HoldDown && !st.Lease.Released && now-c.leaseSeenAt > 2*c.cfg.Timings.RenewInterval {
			c.setStatus(now, StatusHoldDown, fmt.Sprintf("primary %s has not renewed its lease; it certainly ends in %s", st.Primary, left), st.Epoch, left)
		} else {
			c.setStatus(now, StatusHealthy, "", st.Epoch, 0)
		}
		// Sync maintenance probes every member, the primary too: behind a
		// partition that probe would wait out ProbeTimeout and hold the
		// failover decision past the lease's end. It gets no longer than
		// the lease has left.
		sctx, cancel := context.WithTimeout(ctx, left+time.Millisecond)
		next := c.maintainSync(sctx, st, now)
		cancel()
		return min(next, left+time.Millisecond)
	}
	if st.Paused {
		// No failover while paused; but a primary whose PostgreSQL runs
		// again (restarted read-only after a crash) gets its office back.
		if old := st.Member(st.Primary); old != nil {
			if p, err := c.probe(ctx, old); err == nil && p.Running && p.Healthy && !p.InRecovery &&
				p.Position() >= st.Sync.FloorLSN && (st.Timeline == 0 || p.Timeline >= st.Timeline) {
				res := probeResult{member: old, st: p}
				others := c.probeAll(ctx, st, postgresMembers(st, st.Primary))
				cmd := &fsm.SetPrimary{
					Node: st.Primary, Epoch: st.Epoch + 1, ExpectLeaseVersion: st.Lease.Version,
					Kind: fsm.KindReinstate, Reason: "paused: the primary's lease ended (" + leaseEndReason(st) + ") and its PostgreSQL runs again; restarting in place",
					Candidates: []fsm.Candidate{evidenceOf(&res, false)}, PromoteLSN: p.Position(),
					Sync: c.initialSync(st, st.Primary, others, p.Position()), DecidedBy: c.cfg.Node,
				}
				c.propose(fmt.Sprintf("primary/%d", cmd.Epoch), cmd, now)
			}
		}
		c.setStatus(now, StatusPaused, fmt.Sprintf("lease of primary %s ended but automatic failover is paused", st.Primary), st.Epoch, 0)
		return c.cfg.RetryInterval
	}
	reason := fmt.Sprintf("lease of %s (epoch %d) ended: %s", st.Primary, st.Epoch, leaseEndReason(st))
	return c.failover(ctx, st, now, fsm.KindFailover, reason, "", 0)
}

func leaseEndReason(st *fsm.State) string {
	if st.Lease.Released {
		return "released (" + st.Lease.ReleaseCause + ")"
	}
	return "not renewed within the hold-down"
}

// leaseEnded reports whether the current primary's lease has certainly
// ended, and if not, how long until it will have (if no renewal comes).
func (c *Controller) leaseEnded(ctx context.Context, st *fsm.State, now time.Duration) (bool, time.Duration) {
	if st.Lease.Released {
		return true, 0
	}
	if c.cfg.UnsafeIgnoreHoldDown {
		m := st.Member(st.Primary)
		p, err := c.probe(ctx, m)
		if err != nil || !p.Running {
			return true, 0
		}
		return false, c.cfg.SyncInterval
	}
	start := max(c.leaderSince, c.leaseSeenAt)
	deadline := start + c.cfg.Timings.HoldDown
	if now >= deadline {
		return true, 0
	}
	return false, deadline - now
}

// propose submits cmd unless the same key was proposed within
// RetryInterval.
func (c *Controller) propose(key string, cmd fsm.Command, now time.Duration) bool {
	if at, ok := c.inflight[key]; ok && now-at < c.cfg.RetryInterval {
		return false
	}
	if sp, ok := cmd.(*fsm.SetPrimary); ok && c.cfg.WallClock != nil && sp.DecidedAt.IsZero() {
		sp.DecidedAt = c.cfg.WallClock().UTC()
	}
	if err := c.d.Proposer.Propose(cmd); err != nil {
		c.log.Warn("proposing failed", "command", cmd.MessageType().String(), "error", err)
		return false
	}
	c.inflight[key] = now
	if sp, ok := cmd.(*fsm.SetPrimary); ok {
		c.gapEpoch, c.gapFrom = sp.Epoch, c.leaseSeenAt
	}
	return true
}

// annotateWriteGap records, once the primary this leader chose has taken
// office (its fence xid is in the log), how long no primary could write.
func (c *Controller) annotateWriteGap(st *fsm.State, now time.Duration) {
	if c.gapEpoch == 0 || st.Epoch != c.gapEpoch {
		if st.Epoch > c.gapEpoch {
			c.gapEpoch = 0 // another leader's decision: not ours to time
		}
		return
	}
	if !st.PrimaryReady() {
		return
	}
	gap := now - c.gapFrom
	c.gapEpoch = 0
	c.propose(fmt.Sprintf("gap/%d", st.Epoch), &fsm.AnnotateHistory{Epoch: st.Epoch, WriteGapMS: gap.Milliseconds()}, now)
	c.d.Metrics.SetGauge([]string{"failover", "last_write_gap_ms"}, float32(gap.Milliseconds()))
	c.log.Info("new primary in office", "node", st.Primary, "epoch", st.Epoch, "write_gap", gap)
}

// probeResult is one node's fresh answer.
type probeResult struct {
	member *fsm.Member
	st     PGStatus
	err    error
}

func (c *Controller) probe(ctx context.Context, m *fsm.Member) (PGStatus, error) {
	if m == nil {
		return PGStatus{}, errors.New("not a member")
	}
	c.mu.Lock()
	failed := c.failed[m.Name]
	c.mu.Unlock()
	if failed {
		return PGStatus{}, errors.New("gossip reports the node failed")
	}
	pctx, cancel := context.WithTimeout(ctx, c.cfg.ProbeTimeout)
	defer cancel()
	return c.d.Prober.Probe(pctx, m)
}

// probeAll asks every listed member in parallel; results are in the order
// of names.
func (c *Controller) probeAll(ctx context.Context, st *fsm.State, names []string) []probeResult {
	res := make([]probeResult, len(names))
	if c.cfg.SerialProbes {
		for i, n := range names {
			res[i].member = st.Member(n)
			res[i].st, res[i].err = c.probe(ctx, res[i].member)
		}
		return res
	}
	var wg sync.WaitGroup
	for i, n := range names {
		m := st.Member(n)
		res[i].member = m
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i].st, res[i].err = c.probe(ctx, m)
		}()
	}
	wg.Wait()
	return res
}

// postgresMembers lists members that run PostgreSQL, except skip.
func postgresMembers(st *fsm.State, skip string) []string {
	var out []string
	for _, n := range st.MemberNames() {
		if n != skip && !st.Members[n].NoPostgres {
			out = append(out, n)
		}
	}
	return out
}

// quorumK is K of ANY K for n healthy standbys in quorum mode: a majority
// of them rounded down, at least 1. A failover must then reach n-K+1 of
// them, so it tolerates K-1 unreachable standbys besides the primary.
func quorumK(n int) int {
	if n <= 0 {
		return 1
	}
	return 1 + (n-1)/2
}

func (c *Controller) syncK(n int) int {
	switch c.cfg.Mode {
	case fsm.ModeStrict:
		k := c.cfg.SyncK
		if k == 0 {
			k = 1
		}
		return max(1, min(k, n))
	default:
		if c.cfg.SyncK > 0 {
			return max(1, min(c.cfg.SyncK, n))
		}
		return quorumK(n)
	}
}

// initialSync is the replication configuration of a new epoch whose
// primary will be node, with the given fresh probes of the others.
func (c *Controller) initialSync(st *fsm.State, node string, probes []probeResult, floor fsm.LSN) fsm.SyncState {
	s := fsm.SyncState{Mode: c.cfg.Mode, FloorLSN: floor}
	if c.cfg.Mode == fsm.ModeAsync {
		return s
	}
	var set []string
	for _, p := range probes {
		m := p.member
		if m == nil || m.Name == node || !m.Promotable() {
			continue
		}
		if c.cfg.Mode == fsm.ModeStrict || (p.err == nil && p.st.Running && p.st.Healthy) {
			set = append(set, m.Name)
		}
	}
	if c.cfg.Mode == fsm.ModeStrict {
		// Strict keeps every promotable member, reachable or not.
		set = nil
		for _, n := range st.MemberNames() {
			if n != node && st.Members[n].Promotable() {
				set = append(set, n)
			}
		}
	}
	sort.Strings(set)
	s.Standbys = set
	s.K = c.syncK(len(set))
	s.Voters = slices.Clone(set)
	s.Quorum = len(set) - s.K + 1
	return s
}

// bootstrap chooses the first primary: a member that already has data
// (the most WAL), else the highest priority, then name.
func (c *Controller) bootstrap(ctx context.Context, st *fsm.State, now time.Duration) time.Duration {
	names := postgresMembers(st, "")
	if len(names) == 0 || len(names) < c.cfg.BootstrapExpect {
		c.setStatus(now, StatusBootstrapping, fmt.Sprintf("%d of %d expected members running PostgreSQL have registered", len(names), max(1, c.cfg.BootstrapExpect)), 0, 0)
		return idle
	}
	probes := c.probeAll(ctx, st, names)
	var best *probeResult
	var evidence []fsm.Candidate
	for i := range probes {
		p := &probes[i]
		ev := evidenceOf(p, false)
		switch {
		case p.err != nil:
			ev.Rejected = "unreachable"
		case !p.member.Promotable():
			ev.Rejected = "nofailover"
		default:
			if best == nil || bootstrapBetter(p, best) {
				best = p
			}
		}
		evidence = append(evidence, ev)
	}
	if best == nil {
		c.setStatus(now, StatusBootstrapping, "no promotable member answered", 0, 0)
		return c.cfg.RetryInterval
	}
	for i := range evidence {
		if evidence[i].Node != best.member.Name && evidence[i].Rejected == "" {
			evidence[i].Rejected = "another member was preferred"
		}
	}
	reason := "first primary: most WAL among members with data, else highest priority"
	if !best.st.HasData {
		reason = "first primary: no member has data; chosen by priority and name (initdb)"
	}
	cmd := &fsm.Bootstrap{
		ClusterID: c.cfg.NewClusterID(), Node: best.member.Name, Reason: reason,
		Sync:     c.initialSync(st, best.member.Name, probes, best.st.Position()),
		Evidence: evidence, DecidedBy: c.cfg.Node,
	}
	if c.propose("bootstrap", cmd, now) {
		c.log.Info("bootstrapping cluster", "primary", best.member.Name, "cluster_id", cmd.ClusterID)
	}
	c.setStatus(now, StatusBootstrapping, "proposed "+best.member.Name+" as first primary", 0, 0)
	return c.cfg.RetryInterval
}

func bootstrapBetter(a, b *probeResult) bool {
	if a.st.HasData != b.st.HasData {
		return a.st.HasData
	}
	if a.st.Position() != b.st.Position() {
		return a.st.Position() > b.st.Position()
	}
	if a.member.FailoverPriority != b.member.FailoverPriority {
		return a.member.FailoverPriority > b.member.FailoverPriority
	}
	return a.member.Name < b.member.Name
}

func evidenceOf(p *probeResult, voter bool) fsm.Candidate {
	ev := fsm.Candidate{Node: p.member.Name, Priority: p.member.FailoverPriority, Voter: voter}
	if p.err != nil {
		ev.Error = p.err.Error()
		return ev
	}
	ev.Reachable = true
	ev.Healthy = p.st.Running && p.st.Healthy
	ev.Timeline = p.st.Timeline
	ev.ReceiveLSN, ev.ReplayLSN, ev.FlushLSN = p.st.ReceiveLSN, p.st.ReplayLSN, p.st.FlushLSN
	return ev
}

// Choice is the outcome of candidate selection.
type Choice struct {
	Node     string
	Position fsm.LSN
	Evidence []fsm.Candidate
	// Refused says why no candidate is safe ("" when Node is set).
	Refused string
}

// chooseCandidate applies the failover rules to fresh probes of every
// PostgreSQL member but the old primary. minLSN is an additional floor (a
// switchover's final LSN).
func (c *Controller) chooseCandidate(st *fsm.State, probes []probeResult, minLSN fsm.LSN, target string) Choice {
	sync := st.Sync
	mode := sync.Mode
	if mode == "" {
		mode = c.cfg.Mode
	}
	syncMode := mode != fsm.ModeAsync
	var (
		ch         Choice
		reached    int
		maxReached fsm.LSN
		floor      = max(sync.FloorLSN, minLSN)
	)
	if syncMode {
		for i := range probes {
			p := &probes[i]
			if slices.Contains(sync.Voters, p.member.Name) && p.err == nil && p.st.Running {
				reached++
				maxReached = max(maxReached, p.st.Position())
			}
		}
		floor = max(floor, maxReached)
	}
	var ref fsm.LSN // async: the WAL position the old primary is known to have reached
	if !syncMode {
		ref = max(c.lastPrimaryLSN, st.Lease.FinalLSN, st.Lease.RenewedLSN)
	}
	var best *probeResult
	for i := range probes {
		p := &probes[i]
		voter := slices.Contains(sync.Voters, p.member.Name)
		ev := evidenceOf(p, voter)
		switch {
		case p.err != nil:
			ev.Rejected = "unreachable: " + p.err.Error()
		case !p.st.Running || !p.st.Healthy:
			ev.Rejected = "PostgreSQL not running or unhealthy"
		case p.member.NoFailover:
			ev.Rejected = "nofailover"
		case target != "" && p.member.Name != target:
			ev.Rejected = "not the requested target"
		case syncMode && !voter:
			ev.Rejected = "not in the synchronous standby set"
		case st.Timeline != 0 && p.st.Timeline < st.Timeline:
			ev.Rejected = fmt.Sprintf("on timeline %d, cluster is on %d", p.st.Timeline, st.Timeline)
		case p.st.Position() < floor:
			ev.Rejected = fmt.Sprintf("has WAL up to %s, needs at least %s", p.st.Position(), floor)
		case !syncMode && ref > p.st.Position() && uint64(ref-p.st.Position()) > c.cfg.MaxLagOnFailover:
			ev.Rejected = fmt.Sprintf("lags %d bytes behind the last known primary position %s (max_lag_on_failover %d)", uint64(ref-p.st.Position()), ref, c.cfg.MaxLagOnFailover)
		default:
			if best == nil || candidateBetter(p, best) {
				best = p
			}
		}
		ch.Evidence = append(ch.Evidence, ev)
	}
	if syncMode && reached < sync.Quorum {
		ch.Refused = fmt.Sprintf("only %d of the synchronous standbys %v answered with PostgreSQL running; %d are needed to be sure the chosen one holds every acknowledged commit", reached, sync.Voters, sync.Quorum)
		if len(sync.Voters) == 0 {
			ch.Refused = "no synchronous standby set is established for this epoch; no standby is known to hold every acknowledged commit"
		}
		return ch
	}
	if best == nil {
		ch.Refused = "no eligible standby (see evidence: each one's reason)"
		return ch
	}
	ch.Node = best.member.Name
	ch.Position = best.st.Position()
	for i := range ch.Evidence {
		if ch.Evidence[i].Node != ch.Node && ch.Evidence[i].Rejected == "" {
			ch.Evidence[i].Rejected = "less WAL or lower priority than " + ch.Node
		}
	}
	return ch
}

// candidateBetter orders candidates: most WAL, then failover_priority
// (higher first), then name.
func candidateBetter(a, b *probeResult) bool {
	if a.st.Position() != b.st.Position() {
		return a.st.Position() > b.st.Position()
	}
	if a.member.FailoverPriority != b.member.FailoverPriority {
		return a.member.FailoverPriority > b.member.FailoverPriority
	}
	return a.member.Name < b.member.Name
}

// failover chooses and proposes a new primary after the lease ended.
//
// The former primary is a candidate of last resort: when no standby is
// safe, but the former primary's PostgreSQL runs again (it restarted,
// read-only, after its lease ended), it holds every commit it acknowledged
// and is given a new epoch rather than leaving the cluster without a primary.
func (c *Controller) failover(ctx context.Context, st *fsm.State, now time.Duration, kind, reason, target string, minLSN fsm.LSN) time.Duration {
	names := postgresMembers(st, "")
	all := c.probeAll(ctx, st, names)
	var probes []probeResult
	var former *probeResult
	for i := range all {
		if all[i].member.Name == st.Primary {
			former = &all[i]
			continue
		}
		probes = append(probes, all[i])
	}
	ch := c.chooseCandidate(st, probes, minLSN, target)
	if ch.Node == "" && target == "" && former != nil && former.err == nil && former.st.Running && former.st.Healthy &&
		former.st.Position() >= max(st.Sync.FloorLSN, minLSN) && (st.Timeline == 0 || former.st.Timeline >= st.Timeline) {
		reason = fmt.Sprintf("%s; no standby is safe (%s), the former primary runs again and holds every commit it acknowledged", reason, ch.Refused)
		ev := evidenceOf(former, false)
		ch = Choice{Node: former.member.Name, Position: former.st.Position(), Evidence: append(ch.Evidence, ev)}
	}
	if ch.Node == "" {
		c.setStatus(now, StatusBlocked, ch.Refused, st.Epoch, 0)
		c.log.Debug("failover evidence", "candidates", ch.Evidence)
		return c.cfg.RetryInterval / 2
	}
	cmd := &fsm.SetPrimary{
		Node: ch.Node, Epoch: st.Epoch + 1, ExpectLeaseVersion: st.Lease.Version,
		Kind: kind, Reason: reason, Candidates: ch.Evidence, PromoteLSN: ch.Position,
		Sync: c.initialSync(st, ch.Node, all, ch.Position), DecidedBy: c.cfg.Node,
	}
	if c.propose(fmt.Sprintf("primary/%d", cmd.Epoch), cmd, now) {
		c.log.Warn("promoting new primary", "kind", kind, "node", ch.Node, "epoch", cmd.Epoch, "lsn", ch.Position.String(), "reason", reason)
		c.d.Metrics.IncrCounter([]string{"controller", kind}, 1)
	}
	c.setStatus(now, StatusFailingOver, fmt.Sprintf("proposed %s as primary of epoch %d", ch.Node, cmd.Epoch), st.Epoch, 0)
	return c.cfg.RetryInterval
}
