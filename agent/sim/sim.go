// Package sim is a deterministic simulation of a pgbattery cluster: N nodes,
// each with a simulated PostgreSQL, a simulated network and a simple model of
// raft, driven by a seeded PRNG and a simulated clock. The FSM, the
// controller, the lease holder and the Desired rules are the real code; only
// PostgreSQL, raft replication, the network and time are models.
//
// Run plays one schedule of random faults and checks the promises after
// every event:
//   - one writer: never two PostgreSQL instances writable at the same
//     simulated instant;
//   - no acknowledged write lost (synchronous modes): a node is promoted, and
//     becomes writable, only if its WAL holds every acknowledged write;
//   - epochs only grow, on every node's FSM;
//   - after the faults heal: one writable primary, the one the FSM names;
//     every other node streams from it; a new write is acknowledged.
//
// A failing seed reproduces exactly: the same seed gives the same schedule.
package sim

import (
	"bytes"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strings"
	"time"

	"github.com/pgbattery/pgbattery/agent/controller"
	"github.com/pgbattery/pgbattery/agent/fsm"
	"github.com/pgbattery/pgbattery/agent/lease"
)

// Options configure one simulated schedule.
type Options struct {
	Seed  int64
	Nodes int    // 3 or 5
	Mode  string // fsm.ModeQuorum (default), ModeStrict, ModeAsync
	// Faults is how long faults are injected (after a fault-free
	// bootstrap); Settle how long the healed cluster gets to converge.
	Faults time.Duration
	Settle time.Duration
	// MaxDrift bounds each node's clock rate error (also given to the
	// lease timings).
	MaxDrift float64
	// UnsafeIgnoreHoldDown runs the controller variant that promotes as
	// soon as the primary stops answering: the checker must catch it.
	UnsafeIgnoreHoldDown bool
	// UnsafeNoSelfFence: a primary whose lease lapses keeps accepting
	// writes (no lease-runner fencing, no orphan guard).
	UnsafeNoSelfFence bool
	// UnsafeAckWithoutStandbys: the primary acknowledges commits without
	// waiting for its synchronous standbys.
	UnsafeAckWithoutStandbys bool
	// Trace records every event, not only faults and decisions.
	Trace bool
}

// Result is the outcome of one schedule.
type Result struct {
	Seed       int64
	Violations []string
	// Log is the schedule: faults, decisions and (with Trace) more.
	Log []string
	// Stats
	Failovers, Switchovers, Acked, Writes int
	FinalEpoch                            uint64
	Events                                int
}

// Failed reports whether any invariant was violated.
func (r *Result) Failed() bool { return len(r.Violations) > 0 }

// String renders the result with its schedule, for a failing test.
func (r *Result) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %d violation(s)\n", r.Seed, len(r.Violations))
	for _, v := range r.Violations {
		fmt.Fprintf(&b, "  VIOLATION %s\n", v)
	}
	b.WriteString("schedule:\n")
	for _, l := range r.Log {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	return b.String()
}

// Timings used by the simulation: a fast configuration that passes
// lease.Timings.Validate.
func simTimings(drift float64) lease.Timings {
	return lease.Timings{
		Lease:                1000 * time.Millisecond,
		RenewInterval:        200 * time.Millisecond,
		HoldDown:             time.Duration(1000*(1+drift))*time.Millisecond + 20*time.Millisecond,
		FenceBudget:          200 * time.Millisecond,
		MaxDrift:             drift,
		RaftHeartbeatTimeout: 50 * time.Millisecond,
		RaftElectionTimeout:  50 * time.Millisecond,
	}
}

const (
	tick             = 20 * time.Millisecond // agent and raft tick
	leaderStepDown   = 100 * time.Millisecond
	writeEvery       = 40 * time.Millisecond
	pgHangDetect     = 300 * time.Millisecond
	maxViolations    = 5
	maxLogLines      = 4000
	finalWriteBudget = 5 * time.Second
)

// ---- event queue ----

type event struct {
	at  time.Duration
	seq uint64
	fn  func()
}

type eventQueue []*event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// ---- simulated PostgreSQL ----

// seg is a run of WAL (start, end] written on one branch (a promotion
// creates a new branch; two branches never share WAL).
type seg struct {
	branch     int
	start, end uint64
}

type write struct {
	branch int
	lsn    uint64
	node   int
	epoch  uint64
}

type pgSim struct {
	hasData    bool
	running    bool
	frozen     bool // SIGSTOPped
	inRecovery bool
	writable   bool
	timeline   uint32
	wal        []seg
	upstream   int // -1: none
	sync       controller.SyncConfig
	syncSet    bool
	diverged   bool
	slowUntil  time.Duration // replication throttled until
	pending    []write
	systemID   uint64
}

func (p *pgSim) lsn() uint64 {
	if len(p.wal) == 0 {
		return 0
	}
	return p.wal[len(p.wal)-1].end
}

// contains reports whether the WAL holds the write.
func (p *pgSim) contains(w write) bool {
	for _, s := range p.wal {
		if s.branch == w.branch && w.lsn > s.start && w.lsn <= s.end {
			return true
		}
	}
	return false
}

// branchAt returns the branch of the WAL byte at lsn (lsn in (0, end]).
func branchAt(wal []seg, lsn uint64) int {
	for _, s := range wal {
		if lsn > s.start && lsn <= s.end {
			return s.branch
		}
	}
	return -1
}

// commonPrefix returns the largest LSN up to which a and b hold the same
// WAL.
func commonPrefix(a, b []seg) uint64 {
	var common uint64
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		sa, sb := a[i], b[j]
		if sa.branch != sb.branch {
			break
		}
		e := min(sa.end, sb.end)
		common = e
		if sa.end == e {
			i++
		}
		if sb.end == e {
			j++
		}
		if sa.end != sb.end {
			break
		}
	}
	return common
}

// truncate returns the WAL up to lsn.
func truncate(wal []seg, lsn uint64) []seg {
	var out []seg
	for _, s := range wal {
		if s.start >= lsn {
			break
		}
		s.end = min(s.end, lsn)
		out = append(out, s)
	}
	return out
}

// isPrefix reports whether a's WAL is a prefix of b's.
func isPrefix(a, b []seg) bool {
	la := uint64(0)
	if len(a) > 0 {
		la = a[len(a)-1].end
	}
	lb := uint64(0)
	if len(b) > 0 {
		lb = b[len(b)-1].end
	}
	if la > lb {
		return false
	}
	return commonPrefix(a, b) >= la
}

// ---- nodes ----

type node struct {
	s    *Sim
	idx  int
	name string

	rate   float64
	offset time.Duration

	agentUp     bool
	agentPaused bool
	netGroup    int

	fsm           *fsm.FSM
	applied       uint64
	lastEpoch     uint64
	ctrl          *controller.Controller
	holder        *lease.Holder
	pg            pgSim
	died          bool
	rewindFail    int
	busyUntil     time.Duration
	proposedAt    map[string]time.Duration
	deadlineEv    uint64 // generation of the scheduled lease-deadline check
	hangSince     time.Duration
	slowNetUntil  time.Duration
	releasedEpoch uint64
	dropOutUntil  time.Duration
	hangSeen      bool
	agentGen      int
}

// local converts simulated (true) time to this node's monotonic clock.
func (n *node) local(t time.Duration) time.Duration {
	return n.offset + time.Duration(float64(t)*n.rate)
}

// trueAt converts a local clock reading back to simulated time.
func (n *node) trueAt(l time.Duration) time.Duration {
	return time.Duration(float64(l-n.offset)/n.rate) + 1
}

type nodeClock struct{ n *node }

func (c nodeClock) Now() time.Duration { return c.n.local(c.n.s.now) }

type nodeLeader struct{ n *node }

func (l nodeLeader) Leader() (bool, uint64) { return l.n.s.raft.isLeader(l.n) }

type nodeProposer struct{ n *node }

func (p nodeProposer) Propose(cmd fsm.Command) error {
	return p.n.s.propose(p.n, cmd, nil)
}

type nodeProber struct{ n *node }

func (p nodeProber) Probe(_ context.Context, m *fsm.Member) (controller.PGStatus, error) {
	return p.n.s.probe(p.n, m.Name)
}

// ---- raft model ----

type rentry struct {
	term uint64
	data []byte
	at   time.Duration
}

type raftSim struct {
	s          *Sim
	committed  []rentry
	term       uint64
	leader     int
	stale      map[int]staleLeader
	electionAt time.Duration
	orphans    []rentry
	ref        *fsm.FSM
}

type staleLeader struct {
	until time.Duration
	term  uint64
}

func (r *raftSim) isLeader(n *node) (bool, uint64) {
	if !n.agentUp || n.agentPaused {
		return false, 0
	}
	if r.leader == n.idx {
		return true, r.term
	}
	if sl, ok := r.stale[n.idx]; ok && r.s.now < sl.until {
		return true, sl.term
	}
	return false, 0
}

// ---- the simulation ----

// Sim is one simulated cluster.
type Sim struct {
	opts  Options
	rng   *rand.Rand
	now   time.Duration
	queue eventQueue
	seq   uint64
	nodes []*node
	raft  *raftSim
	t     lease.Timings

	branches  int
	timelines uint32
	acked     []write
	res       Result
	healing   bool
	done      bool
}

// Run plays one schedule and returns its result.
func Run(opts Options) *Result {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Mode == "" {
		opts.Mode = fsm.ModeQuorum
	}
	if opts.Faults == 0 {
		opts.Faults = 20 * time.Second
	}
	if opts.Settle == 0 {
		opts.Settle = 15 * time.Second
	}
	if opts.MaxDrift == 0 {
		opts.MaxDrift = 0.02
	}
	s := &Sim{opts: opts, rng: rand.New(rand.NewSource(opts.Seed)), t: simTimings(opts.MaxDrift)}
	s.res.Seed = opts.Seed
	s.raft = &raftSim{s: s, leader: -1, stale: map[int]staleLeader{}, ref: fsm.New(nil)}
	for i := 0; i < opts.Nodes; i++ {
		n := &node{s: s, idx: i, name: fmt.Sprintf("n%d", i+1)}
		// Each clock runs at a rate within the drift bound, from an
		// arbitrary origin.
		n.rate = 1 + (s.rng.Float64()*2-1)*opts.MaxDrift
		n.offset = time.Duration(s.rng.Int63n(int64(time.Hour)))
		n.pg.upstream = -1
		s.nodes = append(s.nodes, n)
		s.startAgent(n)
	}
	// The agents register themselves (the lead's join path does this).
	for _, n := range s.nodes {
		m := fsm.Member{Name: n.name, ID: n.name, Voter: true, FailoverPriority: s.rng.Intn(3)}
		// In larger clusters one member may be tagged nofailover: never
		// promoted, never a synchronous standby, still a raft voter.
		if len(s.nodes) >= 5 && n.idx == len(s.nodes)-1 && s.rng.Intn(2) == 0 {
			m.NoFailover = true
		}
		s.raft.committed = append(s.raft.committed, rentry{term: 0, data: mustEncode(&fsm.UpsertMember{Member: m})})
		_ = s.raft.ref.ApplyEntry(uint64(len(s.raft.committed)), 0, s.raft.committed[len(s.raft.committed)-1].data)
	}
	s.raft.electionAt = 100 * time.Millisecond

	s.every(tick, s.raftTick)
	s.every(tick, s.replicationTick)
	s.every(writeEvery, s.clientTick)
	for _, n := range s.nodes {
		n := n
		s.after(time.Duration(s.rng.Int63n(int64(tick))), func() { s.everyNode(n) })
	}
	bootstrap := 5 * time.Second
	s.after(bootstrap, s.faultLoop)
	s.after(bootstrap+opts.Faults, s.heal)
	end := bootstrap + opts.Faults + opts.Settle
	s.after(end, s.finalCheck)
	for len(s.queue) > 0 && !s.done && len(s.res.Violations) < maxViolations {
		e := heap.Pop(&s.queue).(*event)
		s.res.Events++
		s.now = e.at
		e.fn()
		s.checkInvariants()
	}
	s.res.FinalEpoch = s.raft.ref.State().Epoch
	s.res.Acked = len(s.acked)
	return &s.res
}

func mustEncode(c fsm.Command) []byte {
	b, err := fsm.Encode(c)
	if err != nil {
		panic(err) // static command types: cannot fail
	}
	return b
}

func (s *Sim) at(t time.Duration, fn func()) {
	s.seq++
	heap.Push(&s.queue, &event{at: t, seq: s.seq, fn: fn})
}

func (s *Sim) after(d time.Duration, fn func()) { s.at(s.now+d, fn) }

func (s *Sim) every(d time.Duration, fn func()) {
	var loop func()
	loop = func() {
		fn()
		s.after(d, loop)
	}
	s.after(d, loop)
}

func (s *Sim) logf(format string, args ...any) {
	if len(s.res.Log) >= maxLogLines {
		return
	}
	s.res.Log = append(s.res.Log, fmt.Sprintf("%9.3fs ", s.now.Seconds())+fmt.Sprintf(format, args...))
}

func (s *Sim) tracef(format string, args ...any) {
	if s.opts.Trace {
		s.logf(format, args...)
	}
}

func (s *Sim) violate(format string, args ...any) {
	msg := fmt.Sprintf("t=%.3fs ", s.now.Seconds()) + fmt.Sprintf(format, args...)
	s.res.Violations = append(s.res.Violations, msg)
	s.logf("VIOLATION %s", msg)
}

// delayFor is the delay of a message between two nodes: a slow link adds
// hundreds of milliseconds.
func (s *Sim) delayFor(a, b *node) time.Duration {
	d := s.delay()
	if s.now < a.slowNetUntil || s.now < b.slowNetUntil {
		d += 200*time.Millisecond + time.Duration(s.rng.Int63n(int64(600*time.Millisecond)))
	}
	return d
}

// delay is a message's network delay: usually a few milliseconds, now and
// then (a congested link, a GC pause) up to most of a lease.
func (s *Sim) delay() time.Duration {
	if !s.healing && s.rng.Intn(40) == 0 {
		return 100*time.Millisecond + time.Duration(s.rng.Int63n(int64(700*time.Millisecond)))
	}
	return time.Millisecond + time.Duration(s.rng.Int63n(int64(4*time.Millisecond)))
}

func (s *Sim) connected(a, b *node) bool {
	return a.netGroup == b.netGroup
}

// ---- agents ----

func (s *Sim) startAgent(n *node) {
	n.agentGen++
	n.agentUp, n.agentPaused = true, false
	old := n.fsm
	n.fsm = fsm.New(nil)
	if old != nil {
		// A restarted agent restores its FSM from its local raft state
		// (snapshot), exercising Snapshot/Restore.
		snap, err := old.Snapshot()
		if err == nil {
			var buf bytes.Buffer
			sink := &memSink{Buffer: &buf}
			if err := snap.Persist(sink); err != nil {
				s.violate("%s: snapshot persist: %v", n.name, err)
			}
			if err := n.fsm.Restore(nopCloser{&buf}); err != nil {
				s.violate("%s: snapshot restore: %v", n.name, err)
			}
		}
	}
	n.holder = lease.NewHolder(s.t)
	n.proposedAt = map[string]time.Duration{}
	n.hangSeen = false
	ctrl, err := controller.New(controller.Config{
		Node: n.name, Mode: s.opts.Mode, Timings: s.t, MaxLagOnFailover: 1 << 20,
		SwitchoverTimeout: 3 * time.Second, RetryInterval: 300 * time.Millisecond,
		NewClusterID: func() string { return fmt.Sprintf("sim-%d", s.opts.Seed) },
		SerialProbes: true, UnsafeIgnoreHoldDown: s.opts.UnsafeIgnoreHoldDown,
	}, controller.Deps{
		Clock: nodeClock{n}, State: n.fsm, Leader: nodeLeader{n}, Proposer: nodeProposer{n}, Prober: nodeProber{n},
	})
	if err != nil {
		panic(fmt.Sprintf("sim controller config: %v", err)) // static configuration
	}
	n.ctrl = ctrl
}

// stopAgent kills (or pauses) the agent. Its PostgreSQL keeps running; the
// orphan guard fences it by the lease deadline (the agent starts
// PostgreSQL so that it cannot outlive it as a writable primary: e.g. a
// parent-death signal or a watchdog armed with the lease deadline).
func (s *Sim) stopAgent(n *node, pause bool) {
	if pause {
		n.agentPaused = true
	} else {
		n.agentUp = false
	}
	if d, ok := n.holder.Deadline(); ok && n.pg.writable {
		at := max(n.trueAt(d), s.now)
		gen := n.agentGen
		s.at(at, func() {
			if (!n.agentUp || n.agentPaused) && n.agentGen == gen && n.pg.writable {
				s.logf("%s: orphan guard fences PostgreSQL at the lease deadline", n.name)
				s.fencePG(n)
			}
		})
	} else if n.pg.writable {
		s.fencePG(n)
	}
}

func (s *Sim) everyNode(n *node) {
	s.agentTick(n)
	s.after(tick, func() { s.everyNode(n) })
}

func (s *Sim) agentTick(n *node) {
	if !n.agentUp || n.agentPaused {
		return
	}
	// Apply what raft delivered (raftTick) happens elsewhere; here: lease,
	// controller, reconciler.
	s.leaseTick(n)
	if ok, _ := s.raft.isLeader(n); ok {
		n.ctrl.Step(context.Background())
	}
	s.reconcile(n)
}

func (s *Sim) leaseTick(n *node) {
	st := n.fsm.State()
	mine := st.Primary == n.name && st.Lease.Holder == n.name && st.Lease.Epoch == st.Epoch && !st.Lease.Released &&
		st.Epoch != n.releasedEpoch
	now := n.local(s.now)
	if !mine {
		if n.holder.Epoch() != 0 {
			n.holder.Reset()
		}
		return
	}
	if !n.holder.RenewDue(now) {
		return
	}
	tk := n.holder.Sent(st.Epoch, now)
	gen := n.agentGen
	var pos fsm.LSN
	if n.pg.running && !n.pg.inRecovery {
		pos = fsm.LSN(n.pg.lsn())
	}
	_ = s.propose(n, &fsm.RenewLease{Holder: n.name, Epoch: st.Epoch, LSN: pos}, func(err error) {
		if n.agentGen != gen || !n.agentUp {
			return
		}
		n.holder.Result(tk, err == nil)
		s.scheduleDeadline(n)
	})
}

// scheduleDeadline arranges the lease runner's fencing at the holder's
// deadline.
func (s *Sim) scheduleDeadline(n *node) {
	d, ok := n.holder.Deadline()
	if !ok {
		return
	}
	n.deadlineEv++
	gen, ag := n.deadlineEv, n.agentGen
	s.at(max(n.trueAt(d), s.now), func() {
		if n.deadlineEv != gen || n.agentGen != ag || !n.agentUp || n.agentPaused {
			return
		}
		if !n.holder.Valid(n.local(s.now)) && n.pg.writable {
			s.logf("%s: lease lapsed, fencing", n.name)
			s.fencePG(n)
		}
	})
}

// fencePG makes PostgreSQL read-only within the fence budget; commits
// waiting for synchronous replication are cancelled (never acknowledged).
func (s *Sim) fencePG(n *node) {
	if !n.pg.writable {
		return
	}
	if s.opts.UnsafeNoSelfFence && n.fsm.State().Primary == n.name {
		return
	}
	d := time.Duration(s.rng.Int63n(int64(s.t.FenceBudget / 2)))
	s.after(d, func() {
		if n.pg.writable {
			s.tracef("%s: fenced", n.name)
		}
		n.pg.writable = false
		n.pg.pending = nil
	})
}

func (s *Sim) observe(n *node) controller.Local {
	l := controller.Local{
		HasData: n.pg.hasData, SystemID: n.pg.systemID, Running: n.pg.running && !n.pg.frozen,
		Died: n.died, InRecovery: n.pg.inRecovery, Writable: n.pg.writable, Timeline: n.pg.timeline,
		Diverged: n.pg.diverged, RewindFailures: n.rewindFail,
		LeaseValid: n.holder.Valid(n.local(s.now)),
	}
	if n.pg.upstream >= 0 {
		l.Upstream = s.nodes[n.pg.upstream].name
	}
	if n.pg.syncSet {
		sc := n.pg.sync
		l.SyncApplied = &sc
	}
	return l
}

func (s *Sim) nodeByName(name string) *node {
	for _, n := range s.nodes {
		if n.name == name {
			return n
		}
	}
	return nil
}

// proposeOnce proposes unless the same key was proposed recently.
func (s *Sim) proposeOnce(n *node, key string, cmd fsm.Command) {
	if at, ok := n.proposedAt[key]; ok && s.now-at < 300*time.Millisecond {
		return
	}
	n.proposedAt[key] = s.now
	_ = s.propose(n, cmd, nil)
}

func (s *Sim) reconcile(n *node) {
	if s.now < n.busyUntil {
		return
	}
	// A hung PostgreSQL is detected by the agent's responsiveness probe
	// and killed (a frozen postmaster cannot be made read-only).
	if n.pg.running && n.pg.frozen {
		if !n.hangSeen {
			n.hangSeen, n.hangSince = true, s.now
		} else if s.now-n.hangSince >= pgHangDetect {
			s.logf("%s: PostgreSQL hangs: agent kills it", n.name)
			s.crashPG(n)
			n.hangSeen = false
		}
		return
	}
	st := n.fsm.State()
	l := s.observe(n)
	act := controller.Desired(st, n.name, l)
	busy := func(lo, hi time.Duration) { n.busyUntil = s.now + lo + time.Duration(s.rng.Int63n(int64(hi-lo))) }
	up := s.nodeByName(act.Upstream)
	switch act.Kind {
	case controller.ActWait, controller.ActRefuse:
	case controller.ActInit:
		s.branches++
		s.timelines = max(s.timelines, 1)
		n.pg = pgSim{hasData: true, timeline: 1, wal: []seg{{branch: s.branches}}, upstream: -1, systemID: 4242}
		s.proposeOnce(n, "sysid", &fsm.SetSystemID{SystemID: 4242})
		s.logf("%s: initdb", n.name)
		busy(100*time.Millisecond, 300*time.Millisecond)
	case controller.ActStart:
		n.pg.running, n.pg.writable, n.died = true, false, false
		n.pg.frozen = false
		busy(50*time.Millisecond, 150*time.Millisecond)
	case controller.ActReleaseLease:
		if n.pg.writable {
			s.fencePG(n)
		}
		n.holder.Reset()
		n.releasedEpoch = st.Epoch
		s.proposeOnce(n, fmt.Sprintf("release/%d", st.Epoch), &fsm.ReleaseLease{Holder: n.name, Epoch: st.Epoch, Cause: "PostgreSQL died"})
	case controller.ActFence:
		s.fencePG(n)
	case controller.ActStepDown:
		// Fence now (the gateway drained first), then release with the
		// final position.
		n.pg.writable = false
		n.pg.pending = nil
		n.holder.Reset()
		n.releasedEpoch = st.Epoch
		s.proposeOnce(n, fmt.Sprintf("stepdown/%d", st.Epoch), &fsm.ReleaseLease{Holder: n.name, Epoch: st.Epoch, FinalLSN: fsm.LSN(n.pg.lsn()), Cause: "stepping down for " + st.Pending.Kind})
	case controller.ActPromote:
		s.branches++
		s.timelines++
		at := n.pg.lsn()
		n.pg.wal = append(n.pg.wal, seg{branch: s.branches, start: at, end: at})
		n.pg.timeline = s.timelines
		n.pg.inRecovery, n.pg.upstream, n.pg.writable, n.pg.syncSet = false, -1, false, false
		s.logf("%s: promoted for epoch %d at lsn %d (timeline %d)", n.name, st.Epoch, at, n.pg.timeline)
		s.checkHoldsAcked(n, "promoted")
		busy(50*time.Millisecond, 150*time.Millisecond)
	case controller.ActRecordFence:
		s.proposeOnce(n, fmt.Sprintf("fence/%d", st.Epoch), &fsm.RecordFence{Node: n.name, Epoch: st.Epoch, Timeline: n.pg.timeline, XID: uint64(1000 + st.Epoch), SwitchLSN: fsm.LSN(n.pg.lsn())})
	case controller.ActServe:
		n.pg.sync, n.pg.syncSet = act.Sync, true
		if !n.pg.writable {
			s.checkHoldsAcked(n, "writable")
			n.pg.writable = true
			s.logf("%s: writable primary of epoch %d (sync %v ANY %d)", n.name, st.Epoch, act.Sync.Standbys, act.Sync.K)
		}
	case controller.ActFollow:
		if !n.pg.running {
			n.pg.running, n.died = true, false
			busy(50*time.Millisecond, 150*time.Millisecond)
		}
		if up != nil && n.pg.upstream != up.idx {
			n.pg.upstream = up.idx
			n.pg.diverged = false
		}
	case controller.ActRewind, controller.ActClone:
		if up == nil || !s.connected(n, up) || !up.pg.running || up.pg.frozen || !up.pg.hasData {
			return // cannot reach the source: try again later
		}
		if n.pg.writable {
			s.fencePG(n)
			return
		}
		if act.Kind == controller.ActRewind && s.rng.Intn(10) == 0 {
			n.rewindFail++
			s.logf("%s: pg_rewind from %s failed (%d)", n.name, up.name, n.rewindFail)
			busy(100*time.Millisecond, 300*time.Millisecond)
			return
		}
		keep := uint64(0)
		if act.Kind == controller.ActRewind {
			keep = commonPrefix(n.pg.wal, up.pg.wal)
		} else {
			keep = up.pg.lsn()
			n.rewindFail = 0
		}
		wal := truncate(up.pg.wal, keep)
		s.logf("%s: %s from %s (WAL kept/copied up to %d, had %d)", n.name, act.Kind, up.name, keep, n.pg.lsn())
		n.pg = pgSim{hasData: true, running: true, inRecovery: true, timeline: up.pg.timeline, wal: wal, upstream: up.idx, systemID: up.pg.systemID, slowUntil: n.pg.slowUntil}
		n.died = false
		if act.Kind == controller.ActRewind {
			n.rewindFail = 0
		}
		busy(200*time.Millisecond, 500*time.Millisecond)
	}
}

// checkHoldsAcked is the "no acknowledged write lost" check, done when a
// node is promoted and when it starts accepting writes.
func (s *Sim) checkHoldsAcked(n *node, what string) {
	if s.opts.Mode == fsm.ModeAsync {
		return
	}
	for _, w := range s.acked {
		if !n.pg.contains(w) {
			s.violate("%s %s without acknowledged write lsn %d (branch %d, written on %s in epoch %d); its WAL ends at %d",
				n.name, what, w.lsn, w.branch, s.nodes[w.node].name, w.epoch, n.pg.lsn())
			return
		}
	}
}

// ---- raft ----

func (s *Sim) majority() int { return len(s.nodes)/2 + 1 }

func (s *Sim) reachableUp(n *node) int {
	c := 0
	for _, o := range s.nodes {
		if o.agentUp && !o.agentPaused && s.connected(n, o) {
			c++
		}
	}
	return c
}

func (s *Sim) raftTick() {
	r := s.raft
	valid := r.leader >= 0 && s.nodes[r.leader].agentUp && !s.nodes[r.leader].agentPaused && s.reachableUp(s.nodes[r.leader]) >= s.majority()
	if r.leader >= 0 && !valid {
		old := s.nodes[r.leader]
		if old.agentUp && !old.agentPaused {
			r.stale[old.idx] = staleLeader{until: s.now + leaderStepDown, term: r.term}
		}
		s.logf("raft: leader %s lost (term %d)", old.name, r.term)
		r.leader = -1
		r.electionAt = s.now + s.t.RaftHeartbeatTimeout + time.Duration(s.rng.Int63n(int64(s.t.RaftHeartbeatTimeout))) + s.t.RaftElectionTimeout
	}
	if r.leader < 0 && s.now >= r.electionAt {
		var cands []*node
		for _, n := range s.nodes {
			if n.agentUp && !n.agentPaused && s.reachableUp(n) >= s.majority() {
				cands = append(cands, n)
			}
		}
		if len(cands) > 0 {
			l := cands[s.rng.Intn(len(cands))]
			r.term++
			r.leader = l.idx
			delete(r.stale, l.idx)
			s.logf("raft: %s elected leader (term %d)", l.name, r.term)
			// Entries a deposed leader had replicated may be committed by
			// the new one: stale decisions reach the log, and the FSM's
			// conditions must reject them.
			for _, o := range r.orphans {
				if s.rng.Intn(2) == 0 {
					s.commit(o)
				}
			}
			r.orphans = nil
		} else {
			r.electionAt = s.now + s.t.RaftElectionTimeout
		}
	}
	// Deliver committed entries to every node that hears from the leader.
	if r.leader >= 0 {
		l := s.nodes[r.leader]
		for _, n := range s.nodes {
			if n.agentUp && s.connected(n, l) {
				s.deliver(n)
			}
		}
	}
}

func (s *Sim) deliver(n *node) {
	for n.applied < uint64(len(s.raft.committed)) {
		e := s.raft.committed[n.applied]
		n.applied++
		_ = n.fsm.ApplyEntry(n.applied, e.term, e.data)
	}
	st := n.fsm.State()
	if st.Epoch < n.lastEpoch {
		s.violate("%s: epoch went back from %d to %d", n.name, n.lastEpoch, st.Epoch)
	}
	n.lastEpoch = st.Epoch
}

func (s *Sim) commit(e rentry) error {
	r := s.raft
	e.term = r.term
	e.at = s.now
	r.committed = append(r.committed, e)
	idx := uint64(len(r.committed))
	before := r.ref.State()
	err := r.ref.ApplyEntry(idx, e.term, e.data)
	after := r.ref.State()
	if after.Epoch < before.Epoch {
		s.violate("reference FSM epoch went back from %d to %d", before.Epoch, after.Epoch)
	}
	if after.Epoch != before.Epoch {
		h := after.History[len(after.History)-1]
		s.logf("FSM: epoch %d primary %s (%s: %s) promote lsn %d", after.Epoch, after.Primary, h.Kind, h.Reason, h.PromoteLSN)
		switch h.Kind {
		case fsm.KindFailover:
			s.res.Failovers++
		case fsm.KindSwitchover:
			s.res.Switchovers++
		}
	} else if err == nil {
		c, _ := fsm.Decode(e.data)
		switch c := c.(type) {
		case *fsm.RenewLease:
		case *fsm.SetSync:
			s.logf("FSM: sync %v ANY %d voters %v quorum %d", c.Sync.Standbys, c.Sync.K, c.Sync.Voters, c.Sync.Quorum)
		default:
			s.logf("FSM: %s", c.MessageType())
		}
	} else if err != nil && !errors.Is(err, fsm.ErrUnknownType) {
		s.tracef("FSM: rejected: %v", err)
	}
	return err
}

// propose sends cmd from n towards the raft leader; done (if not nil) gets
// the apply result if the answer makes it back.
func (s *Sim) propose(n *node, cmd fsm.Command, done func(error)) error {
	data, err := fsm.Encode(cmd)
	if err != nil {
		return err
	}
	r := s.raft
	var target *node
	if ok, _ := r.isLeader(n); ok {
		target = n
	} else if r.leader >= 0 && s.connected(n, s.nodes[r.leader]) {
		target = s.nodes[r.leader]
	} else {
		return errors.New("no leader reachable")
	}
	if (!s.healing && s.rng.Intn(50) == 0) || (target != n && s.now < n.dropOutUntil) {
		return nil // dropped on the way
	}
	s.after(s.delayFor(n, target), func() {
		if !target.agentUp || target.agentPaused {
			return
		}
		if r.leader != target.idx || s.reachableUp(target) < s.majority() {
			if ok, _ := r.isLeader(target); ok {
				r.orphans = append(r.orphans, rentry{data: data})
			}
			return
		}
		s.after(s.delay(), func() {
			if r.leader != target.idx {
				r.orphans = append(r.orphans, rentry{data: data})
				return
			}
			res := s.commit(rentry{data: data})
			if done == nil {
				return
			}
			s.after(s.delayFor(target, n), func() {
				if n.agentUp && r.leader >= 0 && s.connected(n, s.nodes[r.leader]) && (s.healing || s.rng.Intn(50) != 0) {
					done(res)
				}
			})
		})
	})
	return nil
}

// ---- prober ----

func (s *Sim) probe(from *node, name string) (controller.PGStatus, error) {
	t := s.nodeByName(name)
	if t == nil {
		return controller.PGStatus{}, errors.New("no such node")
	}
	if !s.connected(from, t) || !t.agentUp || t.agentPaused {
		return controller.PGStatus{}, errors.New("timeout")
	}
	p := &t.pg
	st := controller.PGStatus{HasData: p.hasData, SystemID: p.systemID}
	if !p.running || p.frozen {
		return st, nil
	}
	st.Running, st.InRecovery, st.Writable, st.Timeline = true, p.inRecovery, p.writable, p.timeline
	st.Healthy = true
	if p.inRecovery {
		st.ReceiveLSN, st.ReplayLSN = fsm.LSN(p.lsn()), fsm.LSN(p.lsn())
		if p.upstream >= 0 {
			st.Upstream = s.nodes[p.upstream].name
		}
		st.Healthy = !p.diverged
	} else {
		st.FlushLSN = fsm.LSN(p.lsn())
		if p.syncSet {
			sc := p.sync
			st.SyncApplied = &sc
		}
		st.StandbyFlush = map[string]fsm.LSN{}
		for _, o := range s.nodes {
			if s.streaming(o, t) {
				st.StandbyFlush[o.name] = fsm.LSN(o.pg.lsn())
			}
		}
	}
	return st, nil
}

// streaming reports whether standby o streams from primary p.
func (s *Sim) streaming(o, p *node) bool {
	return o != p && o.pg.running && !o.pg.frozen && o.pg.inRecovery && o.pg.upstream == p.idx &&
		!o.pg.diverged && p.pg.running && !p.pg.frozen && s.connected(o, p)
}

// ---- replication and clients ----

func (s *Sim) replicationTick() {
	for _, o := range s.nodes {
		if !o.pg.running || o.pg.frozen || !o.pg.inRecovery || o.pg.upstream < 0 {
			continue
		}
		up := s.nodes[o.pg.upstream]
		if !up.pg.running || up.pg.frozen || !s.connected(o, up) || !up.pg.hasData {
			continue
		}
		if !isPrefix(o.pg.wal, up.pg.wal) {
			if !o.pg.diverged {
				s.logf("%s: WAL diverged from upstream %s", o.name, up.name)
			}
			o.pg.diverged = true
			continue
		}
		o.pg.diverged = false
		target := up.pg.lsn()
		if s.now < o.pg.slowUntil {
			target = min(target, o.pg.lsn()+20)
		}
		if target > o.pg.lsn() {
			o.pg.wal = truncate(up.pg.wal, target)
			if up.pg.timeline > o.pg.timeline {
				o.pg.timeline = up.pg.timeline
			}
		}
	}
	// Acknowledge pending commits per the primary's applied configuration.
	for _, p := range s.nodes {
		if len(p.pg.pending) == 0 {
			continue
		}
		keep := p.pg.pending[:0]
		for _, w := range p.pg.pending {
			if s.acknowledged(p, w) {
				s.acked = append(s.acked, w)
			} else {
				keep = append(keep, w)
			}
		}
		p.pg.pending = keep
	}
}

func (s *Sim) acknowledged(p *node, w write) bool {
	if !p.pg.running || p.pg.frozen {
		return false
	}
	if p.pg.sync.K == 0 || s.opts.UnsafeAckWithoutStandbys {
		return true // asynchronous
	}
	n := 0
	for _, name := range p.pg.sync.Standbys {
		o := s.nodeByName(name)
		if o != nil && s.streaming(o, p) && o.pg.contains(w) {
			n++
		}
	}
	return n >= p.pg.sync.K
}

func (s *Sim) clientTick() {
	for _, n := range s.nodes {
		if !n.pg.writable || !n.pg.running || n.pg.frozen {
			continue
		}
		s.res.Writes++
		last := &n.pg.wal[len(n.pg.wal)-1]
		last.end += 1 + uint64(s.rng.Intn(100))
		epoch := uint64(0)
		if n.agentUp {
			epoch = n.fsm.State().Epoch
		}
		n.pg.pending = append(n.pg.pending, write{branch: last.branch, lsn: last.end, node: n.idx, epoch: epoch})
	}
}

// ---- invariants ----

func (s *Sim) checkInvariants() {
	var writers []string
	for _, n := range s.nodes {
		if n.pg.writable && n.pg.running {
			writers = append(writers, n.name)
		}
	}
	if len(writers) > 1 {
		s.violate("one writer: %v are writable at the same time", writers)
	}
}

// ---- faults ----

func (s *Sim) randomNode() *node { return s.nodes[s.rng.Intn(len(s.nodes))] }

func (s *Sim) primaryNode() *node {
	if n := s.nodeByName(s.raft.ref.State().Primary); n != nil {
		return n
	}
	return s.randomNode()
}

func (s *Sim) faultLoop() {
	if s.healing {
		return
	}
	s.injectFault()
	s.after(300*time.Millisecond+time.Duration(s.rng.Int63n(int64(2500*time.Millisecond))), s.faultLoop)
}

func (s *Sim) injectFault() {
	pick := func() *node {
		if s.rng.Intn(2) == 0 {
			return s.primaryNode()
		}
		return s.randomNode()
	}
	restartLater := func(n *node, what string, fn func()) {
		s.after(500*time.Millisecond+time.Duration(s.rng.Int63n(int64(4*time.Second))), func() {
			if s.healing {
				return
			}
			s.logf("fault: restart %s %s", what, n.name)
			fn()
		})
	}
	switch s.rng.Intn(14) {
	case 13: // a congested link: every message to or from a node is slow,
		// and sometimes what it sends is lost (one-way partition)
		n := pick()
		n.slowNetUntil = s.now + time.Duration(s.rng.Int63n(int64(5*time.Second)))
		if s.rng.Intn(2) == 0 {
			n.dropOutUntil = n.slowNetUntil
		}
		s.logf("fault: network of %s slow until %.3fs (outgoing lost: %v)", n.name, n.slowNetUntil.Seconds(), n.dropOutUntil == n.slowNetUntil)
	case 0: // kill the whole node
		n := pick()
		if !n.agentUp {
			return
		}
		s.logf("fault: kill node %s", n.name)
		s.killNode(n)
		restartLater(n, "node", func() { s.restartNode(n) })
	case 1: // kill PostgreSQL only
		n := pick()
		if !n.pg.running {
			return
		}
		s.logf("fault: kill postgres on %s", n.name)
		s.crashPG(n)
	case 2: // kill the agent only
		n := pick()
		if !n.agentUp {
			return
		}
		s.logf("fault: kill agent on %s", n.name)
		s.stopAgent(n, false)
		restartLater(n, "agent", func() { s.startAgent(n) })
	case 3, 4: // partition the primary or the raft leader
		n := s.primaryNode()
		if s.rng.Intn(2) == 0 && s.raft.leader >= 0 {
			n = s.nodes[s.raft.leader]
		}
		s.logf("fault: partition %s", n.name)
		n.netGroup = 100 + n.idx
	case 5: // random split
		for _, n := range s.nodes {
			n.netGroup = s.rng.Intn(2)
		}
		var g []string
		for _, n := range s.nodes {
			g = append(g, fmt.Sprintf("%s:%d", n.name, n.netGroup))
		}
		s.logf("fault: split network %v", g)
	case 6, 7: // heal the network
		s.logf("fault: heal network")
		for _, n := range s.nodes {
			n.netGroup = 0
		}
	case 8: // pause (SIGSTOP) the agent or PostgreSQL
		n := pick()
		if s.rng.Intn(2) == 0 {
			if !n.agentUp || n.agentPaused {
				return
			}
			s.logf("fault: pause agent on %s", n.name)
			s.stopAgent(n, true)
			restartLater(n, "(resume) agent", func() {
				n.agentPaused = false
				s.scheduleDeadline(n)
			})
		} else if n.pg.running && !n.pg.frozen {
			s.logf("fault: pause postgres on %s", n.name)
			n.pg.frozen = true
			restartLater(n, "(resume) postgres", func() { n.pg.frozen = false })
		}
	case 9: // clock rate change within bounds (continuous local time)
		n := s.randomNode()
		cur := n.local(s.now)
		n.rate = 1 + (s.rng.Float64()*2-1)*s.opts.MaxDrift
		n.offset = cur - time.Duration(float64(s.now)*n.rate)
		s.logf("fault: clock of %s now runs at %.4f", n.name, n.rate)
	case 10: // a standby falls far behind
		n := s.randomNode()
		n.pg.slowUntil = s.now + time.Duration(s.rng.Int63n(int64(8*time.Second)))
		s.logf("fault: %s replicates slowly until %.3fs", n.name, n.pg.slowUntil.Seconds())
	case 11: // maintenance mode on/off
		n := s.randomNode()
		if !n.agentUp {
			return
		}
		p := !n.fsm.State().Paused
		s.logf("fault: operator sets paused=%v via %s", p, n.name)
		_ = s.propose(n, &fsm.SetPaused{Paused: p}, nil)
	case 12: // switchover, to a random node or the best one
		n := s.randomNode()
		if !n.agentUp {
			return
		}
		req, err := n.ctrl.PlanOperation(context.Background(), fsm.OpSwitchover, "", false)
		if s.rng.Intn(2) == 0 {
			req, err = n.ctrl.PlanOperation(context.Background(), fsm.OpSwitchover, s.randomNode().name, false)
		}
		if err != nil {
			s.logf("fault: switchover refused: %v", err)
			return
		}
		s.logf("fault: operator requests switchover to %q via %s", req.Op.Target, n.name)
		_ = s.propose(n, req, nil)
	}
}

func (s *Sim) crashPG(n *node) {
	n.pg.running, n.pg.writable, n.pg.frozen = false, false, false
	n.pg.pending = nil
	n.pg.syncSet = false
	if n.agentUp {
		n.died = true
	}
}

func (s *Sim) killNode(n *node) {
	s.crashPG(n)
	n.died = false
	n.agentUp = false
}

func (s *Sim) restartNode(n *node) {
	s.startAgent(n)
	n.died = false
}

func (s *Sim) heal() {
	s.healing = true
	s.logf("heal: network, agents, PostgreSQL, clocks; resume automatic failover")
	for _, n := range s.nodes {
		n.netGroup = 0
		n.pg.slowUntil = 0
		n.slowNetUntil, n.dropOutUntil = 0, 0
		n.pg.frozen = false
		if !n.agentUp {
			s.restartNode(n)
		}
		if n.agentPaused {
			n.agentPaused = false
			s.scheduleDeadline(n)
		}
	}
	var unpause func()
	unpause = func() {
		if !s.raft.ref.State().Paused {
			return
		}
		for _, n := range s.nodes {
			if n.agentUp && !n.agentPaused {
				_ = s.propose(n, &fsm.SetPaused{Paused: false}, nil)
				break
			}
		}
		s.after(500*time.Millisecond, unpause)
	}
	s.after(time.Second, unpause)
}

// finalCheck verifies that the healed cluster converged: one writable
// primary, the one the log names, every other node streaming from it, and
// a new write acknowledged. "Eventually": it looks again every 250ms for
// finalWriteBudget before it reports what is still wrong.
func (s *Sim) finalCheck() {
	deadline := s.now + finalWriteBudget
	var try func()
	try = func() {
		problems := s.convergence()
		if len(problems) == 0 {
			before := len(s.acked)
			s.after(finalWriteBudget, func() {
				if len(s.acked) == before {
					s.violate("after healing: no write acknowledged within %s", finalWriteBudget)
				}
				s.done = true
			})
			return
		}
		if s.now >= deadline {
			for _, p := range problems {
				s.violate("after healing: %s", p)
			}
			s.done = true
			return
		}
		s.after(250*time.Millisecond, try)
	}
	try()
}

func (s *Sim) convergence() []string {
	st := s.raft.ref.State()
	p := s.nodeByName(st.Primary)
	if p == nil {
		return []string{fmt.Sprintf("no primary in the FSM (controller status: %s)", s.leaderStatus())}
	}
	var out []string
	if !p.pg.writable {
		out = append(out, fmt.Sprintf("FSM primary %s (epoch %d) is not writable; controller status: %s", p.name, st.Epoch, s.leaderStatus()))
	}
	for _, n := range s.nodes {
		if ns := n.fsm.State(); ns.Epoch != st.Epoch || ns.Primary != st.Primary {
			out = append(out, fmt.Sprintf("%s's FSM says epoch %d primary %s, the log says epoch %d primary %s", n.name, ns.Epoch, ns.Primary, st.Epoch, st.Primary))
		}
		if n != p && !s.streaming(n, p) {
			out = append(out, fmt.Sprintf("%s is not streaming from primary %s (running=%v recovery=%v upstream=%d diverged=%v)",
				n.name, p.name, n.pg.running, n.pg.inRecovery, n.pg.upstream, n.pg.diverged))
		}
	}
	return out
}

func (s *Sim) leaderStatus() string {
	if s.raft.leader < 0 {
		return "no raft leader"
	}
	l := s.nodes[s.raft.leader]
	st := l.ctrl.Status()
	return fmt.Sprintf("%s on %s: %s", st.State, l.name, st.Reason)
}

// ---- helpers for snapshots ----

type memSink struct {
	*bytes.Buffer
}

func (m *memSink) ID() string    { return "sim" }
func (m *memSink) Cancel() error { return nil }
func (m *memSink) Close() error  { return nil }

type nopCloser struct{ *bytes.Buffer }

func (nopCloser) Close() error { return nil }
