package controller

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/agent/fsm"
	"github.com/pgbattery/pgbattery/agent/lease"
)

type testClock struct{ now time.Duration }

func (c *testClock) Now() time.Duration { return c.now }

type testLeader struct {
	leader bool
	term   uint64
}

func (l *testLeader) Leader() (bool, uint64) { return l.leader, l.term }

// testProposer applies proposals to a real FSM at once, as a healthy raft
// would shortly after.
type testProposer struct {
	t       *testing.T
	f       *fsm.FSM
	index   uint64
	applied []fsm.Command
	results []error
	hold    bool // queue instead of applying
	queued  []fsm.Command
}

func (p *testProposer) Propose(c fsm.Command) error {
	if p.hold {
		p.queued = append(p.queued, c)
		return nil
	}
	p.apply(c)
	return nil
}

func (p *testProposer) apply(c fsm.Command) error {
	data, err := fsm.Encode(c)
	if err != nil {
		p.t.Fatalf("encode: %v", err)
	}
	p.index++
	err = p.f.ApplyEntry(p.index, 1, data)
	p.applied = append(p.applied, c)
	p.results = append(p.results, err)
	return err
}

func (p *testProposer) last() fsm.Command {
	if len(p.applied) == 0 {
		return nil
	}
	return p.applied[len(p.applied)-1]
}

func (p *testProposer) count(typ fsm.MessageType) int {
	n := 0
	for _, c := range p.applied {
		if c.MessageType() == typ {
			n++
		}
	}
	return n
}

type testProber struct {
	mu sync.Mutex
	st map[string]PGStatus
}

func (p *testProber) Probe(_ context.Context, m *fsm.Member) (PGStatus, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.st[m.Name]
	if !ok {
		return PGStatus{}, errors.New("connection refused")
	}
	return s, nil
}

func (p *testProber) set(name string, s PGStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.st[name] = s
}

func (p *testProber) down(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.st, name)
}

type testMetrics struct {
	mu       sync.Mutex
	counters map[string]float32
}

func (m *testMetrics) SetGauge([]string, float32) {}
func (m *testMetrics) IncrCounter(k []string, v float32) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.counters[strings.Join(k, ".")] += v
}

type harness struct {
	t       *testing.T
	clock   *testClock
	leader  *testLeader
	prop    *testProposer
	prober  *testProber
	metrics *testMetrics
	f       *fsm.FSM
	c       *Controller
	cfg     Config
}

func timings() lease.Timings {
	return lease.Timings{Lease: time.Second, RenewInterval: 200 * time.Millisecond, HoldDown: 1100 * time.Millisecond, FenceBudget: 200 * time.Millisecond}
}

func standby(lsn fsm.LSN, tl uint32) PGStatus {
	return PGStatus{Running: true, Healthy: true, InRecovery: true, HasData: true, Timeline: tl, ReceiveLSN: lsn, ReplayLSN: lsn, Upstream: "a"}
}

func primaryStatus(lsn fsm.LSN, applied *SyncConfig, flush map[string]fsm.LSN) PGStatus {
	return PGStatus{Running: true, Healthy: true, Writable: true, HasData: true, Timeline: 1, FlushLSN: lsn, SyncApplied: applied, StandbyFlush: flush}
}

// newHarness builds a cluster a (primary), b, c, d... with the given mode,
// bootstrapped with a synchronous set over the standbys.
func newHarness(t *testing.T, mode string, names ...string) *harness {
	t.Helper()
	if len(names) == 0 {
		names = []string{"a", "b", "c"}
	}
	h := &harness{t: t, clock: &testClock{now: time.Hour}, leader: &testLeader{leader: true, term: 5},
		prober: &testProber{st: map[string]PGStatus{}}, metrics: &testMetrics{counters: map[string]float32{}}}
	h.f = fsm.New(nil)
	h.prop = &testProposer{t: t, f: h.f}
	for i, n := range names {
		h.prop.apply(&fsm.UpsertMember{Member: fsm.Member{Name: n, Voter: true, FailoverPriority: i}})
	}
	standbys := names[1:]
	sync := fsm.SyncState{Mode: mode}
	if mode != fsm.ModeAsync {
		k := quorumK(len(standbys))
		sync = fsm.SyncState{Mode: mode, Standbys: standbys, K: k, Voters: standbys, Quorum: len(standbys) - k + 1}
	}
	h.prop.apply(&fsm.Bootstrap{ClusterID: "c", Node: names[0], Sync: sync})
	h.prop.apply(&fsm.RecordFence{Node: names[0], Epoch: 1, Timeline: 1, XID: 10})
	h.cfg = Config{Node: "ctl", Mode: mode, Timings: timings(), MaxLagOnFailover: 1000, SwitchoverTimeout: 5 * time.Second, RetryInterval: 300 * time.Millisecond, SyncInterval: 200 * time.Millisecond, SerialProbes: true}
	h.rebuild()
	flush := map[string]fsm.LSN{}
	for _, s := range standbys {
		h.prober.set(s, standby(100, 1))
		flush[s] = 100
	}
	h.prober.set(names[0], primaryStatus(100, &SyncConfig{Standbys: sync.Standbys, K: sync.K}, flush))
	return h
}

func (h *harness) rebuild() {
	h.t.Helper()
	c, err := New(h.cfg, Deps{Clock: h.clock, State: h.f, Leader: h.leader, Proposer: h.prop, Prober: h.prober, Metrics: h.metrics})
	if err != nil {
		h.t.Fatal(err)
	}
	h.c = c
}

func (h *harness) step() Status {
	h.c.Step(context.Background())
	return h.c.Status()
}

func (h *harness) advance(d time.Duration) Status {
	h.clock.now += d
	return h.step()
}

func (h *harness) renew() {
	st := h.f.State()
	if err := h.prop.apply(&fsm.RenewLease{Holder: st.Primary, Epoch: st.Epoch}); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) lastSetPrimary() *fsm.SetPrimary {
	for i := len(h.prop.applied) - 1; i >= 0; i-- {
		if sp, ok := h.prop.applied[i].(*fsm.SetPrimary); ok {
			return sp
		}
	}
	return nil
}

func TestFollowerDecidesNothing(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	h.leader.leader = false
	h.prober.down("a")
	n := len(h.prop.applied)
	if s := h.advance(time.Hour); s.State != StatusFollower {
		t.Fatalf("status %s", s.State)
	}
	if len(h.prop.applied) != n {
		t.Fatal("a follower proposed something")
	}
}

// Hold-down: a new leader waits a full hold-down from taking office, and
// every renewal it sees restarts the wait.
func TestHoldDownFromTakingOfficeAndRenewals(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	h.prober.down("a")
	h.step() // takes office now
	hd := h.cfg.Timings.HoldDown
	if s := h.advance(hd - time.Millisecond); s.State == StatusFailingOver || h.lastSetPrimary() != nil {
		t.Fatal("promoted before the hold-down from taking office")
	}
	h.renew() // the old primary was alive after all
	if s := h.advance(2 * time.Millisecond); h.lastSetPrimary() != nil {
		t.Fatalf("promoted right after a renewal: %v", s)
	}
	if s := h.advance(hd - 10*time.Millisecond); h.lastSetPrimary() != nil || s.State != StatusHoldDown {
		t.Fatalf("promoted before the hold-down from the renewal (status %s)", s.State)
	}
	h.advance(20 * time.Millisecond)
	sp := h.lastSetPrimary()
	if sp == nil || sp.Epoch != 2 || sp.Kind != fsm.KindFailover {
		t.Fatalf("no failover after the hold-down: %+v", sp)
	}
	if sp.ExpectLeaseVersion != h.f.State().History[len(h.f.State().History)-2].Index && h.f.State().Epoch != 2 {
		t.Fatal("failover not applied")
	}

	// A new term re-arms the hold-down.
	h2 := newHarness(t, fsm.ModeQuorum)
	h2.prober.down("a")
	h2.step()
	h2.advance(hd - 100*time.Millisecond)
	h2.leader.term++ // leadership moved away and back
	h2.advance(200 * time.Millisecond)
	if h2.lastSetPrimary() != nil {
		t.Fatal("a new term did not re-arm the hold-down")
	}
	h2.advance(hd)
	if h2.lastSetPrimary() == nil {
		t.Fatal("no failover a hold-down after the new term")
	}
}

// A decision is conditional on the lease it saw: a renewal that lands
// between decision and commit voids it.
func TestStaleDecisionRejected(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	h.prober.down("a")
	h.step()
	h.prop.hold = true
	h.advance(h.cfg.Timings.HoldDown)
	if len(h.prop.queued) != 1 {
		t.Fatalf("queued %d proposals", len(h.prop.queued))
	}
	h.renew() // lands first
	if err := h.prop.apply(h.prop.queued[0]); !fsm.IsRejected(err) {
		t.Fatalf("stale decision applied: %v", err)
	}
	if h.f.State().Epoch != 1 {
		t.Fatal("epoch moved")
	}
}

func TestReleasedLeaseFailsOverAtOnce(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	h.step()
	h.prop.apply(&fsm.ReleaseLease{Holder: "a", Epoch: 1, Cause: "PostgreSQL died"})
	h.prober.set("a", PGStatus{HasData: true})
	h.prober.set("b", standby(100, 1))
	h.prober.set("c", standby(120, 1))
	h.advance(time.Millisecond)
	st := h.f.State()
	if st.Epoch != 2 || st.Primary != "c" {
		t.Fatalf("epoch %d primary %s", st.Epoch, st.Primary)
	}
	tr := st.History[len(st.History)-1]
	if !strings.Contains(tr.Reason, "released") || tr.PromoteLSN != 120 || len(tr.Candidates) != 2 {
		t.Fatalf("history: %+v", tr)
	}
	for _, c := range tr.Candidates {
		if c.Node == "b" && !strings.Contains(c.Rejected, "needs at least 0/78") {
			t.Fatalf("b rejected for %q", c.Rejected)
		}
	}
	// New epoch's sync set: the other healthy standby, floor at the
	// promotion point.
	if st.Sync.FloorLSN != 120 || len(st.Sync.Standbys) != 1 || st.Sync.Standbys[0] != "b" || st.Sync.Epoch != 2 {
		t.Fatalf("new sync: %+v", st.Sync)
	}
}

func failoverWith(t *testing.T, mode string, names []string, probes map[string]PGStatus, mutate func(*harness)) (*harness, Status) {
	t.Helper()
	h := newHarness(t, mode, names...)
	if mutate != nil {
		mutate(h)
	}
	h.step()
	st := h.f.State()
	h.prop.apply(&fsm.ReleaseLease{Holder: st.Primary, Epoch: st.Epoch, Cause: "test"})
	h.prober.down(names[0])
	for n, s := range probes {
		if s.Timeline == 0 && !s.Running {
			h.prober.down(n)
			continue
		}
		h.prober.set(n, s)
	}
	return h, h.advance(time.Millisecond)
}

func TestCandidateChoice(t *testing.T) {
	names := []string{"a", "b", "c", "d", "e"}
	cases := []struct {
		name   string
		mode   string
		probes map[string]PGStatus
		mutate func(*harness)
		want   string // "" = refuse
		why    string // substring of the refusal or of a rejection
	}{
		{"most WAL wins", fsm.ModeQuorum, map[string]PGStatus{"b": standby(100, 1), "c": standby(300, 1), "d": standby(200, 1), "e": standby(100, 1)}, nil, "c", ""},
		{"tie broken by priority", fsm.ModeQuorum, map[string]PGStatus{"b": standby(300, 1), "c": standby(300, 1), "d": standby(300, 1), "e": standby(100, 1)}, nil, "d", ""},
		{"tie broken by name", fsm.ModeQuorum, map[string]PGStatus{"b": standby(300, 1), "c": standby(300, 1), "d": standby(100, 1), "e": standby(100, 1)},
			func(h *harness) {
				h.prop.apply(&fsm.UpsertMember{Member: fsm.Member{Name: "c", FailoverPriority: 1}})
			}, "b", ""},
		{"nofailover skipped", fsm.ModeQuorum, map[string]PGStatus{"b": standby(100, 1), "c": standby(300, 1), "d": standby(200, 1), "e": standby(100, 1)},
			func(h *harness) { h.prop.apply(&fsm.UpsertMember{Member: fsm.Member{Name: "c", NoFailover: true}}) }, "", "nofailover"},
		{"unhealthy skipped", fsm.ModeQuorum, map[string]PGStatus{"b": standby(100, 1), "c": {Running: true, Healthy: false, InRecovery: true, Timeline: 1, ReceiveLSN: 300}, "d": standby(300, 1), "e": standby(100, 1)}, nil, "d", ""},
		{"older timeline skipped", fsm.ModeQuorum, map[string]PGStatus{"b": standby(100, 2), "c": standby(300, 1), "d": standby(300, 2), "e": standby(100, 2)},
			func(h *harness) {
				// cluster is on timeline 2
				st := h.f.State()
				h.prop.apply(&fsm.SetPrimary{Node: "a", Epoch: 2, ExpectLeaseVersion: st.Lease.Version, Sync: st.Sync})
				h.prop.apply(&fsm.RecordFence{Node: "a", Epoch: 2, Timeline: 2})
			}, "d", "on timeline 1, cluster is on 2"},
		{"quorum of sync standbys not reached", fsm.ModeQuorum, map[string]PGStatus{"b": standby(100, 1), "c": standby(300, 1), "d": {}, "e": {}}, nil, "", "answered"},
		{"quorum reached with one down", fsm.ModeQuorum, map[string]PGStatus{"b": standby(100, 1), "c": standby(300, 1), "d": standby(200, 1), "e": {}}, nil, "c", ""},
		{"async within lag", fsm.ModeAsync, map[string]PGStatus{"b": standby(100, 1), "c": standby(150, 1), "d": {}, "e": {}}, nil, "c", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var epochBefore uint64
			h, s := failoverWith(t, c.mode, names, c.probes, func(h *harness) {
				if c.mutate != nil {
					c.mutate(h)
				}
				epochBefore = h.f.State().Epoch
			})
			sp := h.lastSetPrimary()
			if c.want == "" {
				if h.f.State().Epoch != epochBefore {
					t.Fatalf("promoted %s, want refusal", h.f.State().Primary)
				}
				if s.State != StatusBlocked {
					t.Fatalf("status %s, want blocked", s.State)
				}
				if !strings.Contains(s.Reason, c.why) && !strings.Contains(s.Reason, "evidence") {
					t.Fatalf("reason %q does not explain (%q)", s.Reason, c.why)
				}
				if h.metrics.counters["controller.failover.blocked"] == 0 {
					t.Fatal("blocked metric not reported")
				}
				return
			}
			if sp == nil || sp.Node != c.want {
				t.Fatalf("promoted %+v, want %s (status %s: %s)", sp, c.want, s.State, s.Reason)
			}
			if c.why != "" {
				found := false
				for _, ev := range sp.Candidates {
					found = found || strings.Contains(ev.Rejected, c.why)
				}
				if !found {
					t.Fatalf("no candidate rejected for %q: %+v", c.why, sp.Candidates)
				}
			}
		})
	}
}

func TestAsyncLagRefused(t *testing.T) {
	h := newHarness(t, fsm.ModeAsync)
	h.prober.set("a", primaryStatus(5000, nil, nil))
	h.step() // learns the primary's position
	h.prop.apply(&fsm.ReleaseLease{Holder: "a", Epoch: 1, Cause: "test"})
	h.prober.down("a")
	h.prober.set("b", standby(1000, 1))
	h.prober.set("c", standby(3000, 1))
	s := h.advance(time.Millisecond)
	if s.State != StatusBlocked || h.f.State().Epoch != 1 {
		t.Fatalf("promoted a standby 2000 bytes behind with max lag 1000: %s", s.State)
	}
	h.prober.set("c", standby(4500, 1))
	h.advance(time.Second)
	if st := h.f.State(); st.Epoch != 2 || st.Primary != "c" {
		t.Fatalf("no failover within the lag bound: epoch %d", st.Epoch)
	}
}

func TestPausedMeansNoAutomaticFailover(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	h.prop.apply(&fsm.SetPaused{Paused: true})
	h.prober.down("a")
	h.step()
	if s := h.advance(time.Minute); s.State != StatusPaused || h.f.State().Epoch != 1 {
		t.Fatalf("status %s epoch %d", s.State, h.f.State().Epoch)
	}
	h.prop.apply(&fsm.SetPaused{Paused: false})
	h.advance(time.Millisecond)
	if h.f.State().Epoch != 2 {
		t.Fatal("no failover after resume")
	}
}

// Paused, a primary whose PostgreSQL crashed and came back is given its
// office back (restart in place), never a standby.
func TestPausedRestartInPlace(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	h.prop.apply(&fsm.SetPaused{Paused: true})
	h.step()
	h.prop.apply(&fsm.ReleaseLease{Holder: "a", Epoch: 1, Cause: "PostgreSQL died"})
	h.prober.set("a", PGStatus{HasData: true})
	h.prober.set("c", standby(900, 1))
	if s := h.advance(time.Millisecond); s.State != StatusPaused || h.f.State().Epoch != 1 {
		t.Fatalf("status %s epoch %d", s.State, h.f.State().Epoch)
	}
	h.prober.set("a", PGStatus{Running: true, Healthy: true, HasData: true, Timeline: 1, FlushLSN: 100})
	h.advance(time.Second)
	st := h.f.State()
	if st.Epoch != 2 || st.Primary != "a" || st.History[len(st.History)-1].Kind != fsm.KindReinstate {
		t.Fatalf("epoch %d primary %s", st.Epoch, st.Primary)
	}
}

func TestFormerPrimaryIsLastResort(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	h.step()
	h.prop.apply(&fsm.ReleaseLease{Holder: "a", Epoch: 1, Cause: "PostgreSQL died"})
	// Standbys lag behind the floor of the epoch: not safe.
	st := h.f.State()
	ns := st.Sync
	ns.FloorLSN = 500
	h.prober.set("b", standby(100, 1))
	h.prober.set("c", standby(100, 1))
	// Raise the floor through a new epoch (floor = promote LSN).
	h.prop.apply(&fsm.SetPrimary{Node: "a", Epoch: 2, ExpectLeaseVersion: h.f.State().Lease.Version, Sync: ns})
	h.prop.apply(&fsm.ReleaseLease{Holder: "a", Epoch: 2, Cause: "PostgreSQL died"})
	h.prober.down("a")
	if s := h.advance(time.Millisecond); s.State != StatusBlocked {
		t.Fatalf("status %s, want blocked: standbys lack WAL and the former primary is down", s.State)
	}
	h.prober.set("a", PGStatus{Running: true, Healthy: true, HasData: true, Timeline: 1, FlushLSN: 600})
	h.advance(time.Second)
	if st := h.f.State(); st.Epoch != 3 || st.Primary != "a" {
		t.Fatalf("former primary not reinstated: epoch %d primary %s", st.Epoch, st.Primary)
	}
}

func TestSyncSetShrinksSafely(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	h.step()
	// c stops streaming.
	h.prober.down("c")
	h.prober.set("a", primaryStatus(200, &SyncConfig{Standbys: []string{"b", "c"}, K: 1}, map[string]fsm.LSN{"b": 200}))
	h.advance(h.cfg.SyncInterval)
	s := h.f.State().Sync
	if s.Steady() || len(s.Standbys) != 1 || s.Standbys[0] != "b" || len(s.Voters) != 2 || s.Quorum != 2 {
		t.Fatalf("widen step: %+v", s)
	}
	// Until PostgreSQL applies it and b has caught up, voters stay wide.
	h.advance(h.cfg.SyncInterval)
	if h.f.State().Sync.Steady() {
		t.Fatal("narrowed before PostgreSQL applied the new set")
	}
	h.prober.set("a", primaryStatus(300, &SyncConfig{Standbys: []string{"b"}, K: 1}, map[string]fsm.LSN{"b": 250}))
	h.advance(h.cfg.SyncInterval)
	if h.f.State().Sync.Steady() {
		t.Fatal("narrowed before b caught up with the switch point")
	}
	h.prober.set("a", primaryStatus(310, &SyncConfig{Standbys: []string{"b"}, K: 1}, map[string]fsm.LSN{"b": 300}))
	h.advance(h.cfg.SyncInterval)
	s = h.f.State().Sync
	if !s.Steady() || len(s.Voters) != 1 || s.Quorum != 1 {
		t.Fatalf("narrow step: %+v", s)
	}
	// Never below one standby: when b dies too, the set stays (writes wait).
	h.prober.down("b")
	h.prober.set("a", primaryStatus(310, &SyncConfig{Standbys: []string{"b"}, K: 1}, map[string]fsm.LSN{}))
	h.advance(h.cfg.SyncInterval)
	if s2 := h.f.State().Sync; len(s2.Standbys) != 1 || s2.Version != s.Version {
		t.Fatalf("sync set dropped to nothing: %+v", s2)
	}
	// b and c return: the set grows, in one step (growing is safe at once).
	h.prober.set("b", standby(310, 1))
	h.prober.set("c", standby(310, 1))
	h.prober.set("a", primaryStatus(310, &SyncConfig{Standbys: []string{"b"}, K: 1}, map[string]fsm.LSN{"b": 310, "c": 310}))
	h.advance(h.cfg.SyncInterval)
	s = h.f.State().Sync
	if !s.Steady() || len(s.Standbys) != 2 || s.K != 1 || s.Quorum != 2 {
		t.Fatalf("grow: %+v", s)
	}
}

func TestStrictNeverShrinks(t *testing.T) {
	h := newHarness(t, fsm.ModeStrict)
	h.step()
	h.prober.down("c")
	h.prober.set("a", primaryStatus(200, &SyncConfig{Standbys: []string{"b", "c"}, K: 1}, map[string]fsm.LSN{"b": 200}))
	v := h.f.State().Sync.Version
	h.advance(h.cfg.SyncInterval)
	h.advance(h.cfg.SyncInterval)
	if s := h.f.State().Sync; s.Version != v || len(s.Standbys) != 2 {
		t.Fatalf("strict set changed: %+v", s)
	}
}

func TestQuorumK(t *testing.T) {
	for n, want := range map[int]int{0: 1, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3} {
		if got := quorumK(n); got != want {
			t.Errorf("quorumK(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestSwitchover(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	h.step()
	req, err := h.c.PlanOperation(context.Background(), fsm.OpSwitchover, "b", false)
	if err != nil {
		t.Fatal(err)
	}
	h.prop.apply(req)
	if s := h.advance(time.Millisecond); s.State != StatusOperation || h.f.State().Epoch != 1 {
		t.Fatalf("status %s: must wait for the primary to step down", s.State)
	}
	// The primary fences and releases with its final position.
	h.prop.apply(&fsm.ReleaseLease{Holder: "a", Epoch: 1, FinalLSN: 500, Cause: "stepping down"})
	h.prober.set("b", standby(400, 1))
	h.prober.set("c", standby(500, 1))
	h.advance(time.Millisecond)
	if h.f.State().Epoch != 1 {
		t.Fatal("promoted a target that lacks the final WAL")
	}
	h.prober.set("b", standby(500, 1))
	h.advance(time.Millisecond)
	st := h.f.State()
	if st.Epoch != 2 || st.Primary != "b" || st.History[len(st.History)-1].Kind != fsm.KindSwitchover || st.Pending != nil {
		t.Fatalf("switchover: epoch %d primary %s", st.Epoch, st.Primary)
	}
}

func TestSwitchoverReinstatesWhenTargetNeverCatchesUp(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	h.step()
	h.prop.apply(&fsm.RequestOp{Op: fsm.Operation{Kind: fsm.OpSwitchover, Epoch: 1, Target: "b"}})
	h.advance(time.Millisecond)
	h.prop.apply(&fsm.ReleaseLease{Holder: "a", Epoch: 1, FinalLSN: 500, Cause: "stepping down"})
	h.prober.set("a", PGStatus{Running: true, Healthy: true, HasData: true, Timeline: 1, FlushLSN: 500})
	h.prober.set("b", standby(400, 1))
	h.advance(time.Millisecond)
	h.advance(h.cfg.SwitchoverTimeout + time.Millisecond)
	st := h.f.State()
	if st.Epoch != 2 || st.Primary != "a" || st.History[len(st.History)-1].Kind != fsm.KindReinstate {
		t.Fatalf("not reinstated: epoch %d primary %s", st.Epoch, st.Primary)
	}
}

func TestSwitchoverCancelledWhenPrimaryNeverStepsDown(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	h.step()
	h.prop.apply(&fsm.RequestOp{Op: fsm.Operation{Kind: fsm.OpSwitchover, Epoch: 1, Target: "b"}})
	h.advance(time.Millisecond)
	for i := 0; i < 10; i++ {
		h.renew()
		h.advance(h.cfg.SwitchoverTimeout / 8)
	}
	if st := h.f.State(); st.Pending != nil || st.Epoch != 1 || h.prop.count(fsm.CancelOpType) == 0 {
		t.Fatalf("pending %+v epoch %d", st.Pending, st.Epoch)
	}
}

func TestManualFailoverRecordsPossibleLoss(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	h.step()
	h.prop.apply(&fsm.RequestOp{Op: fsm.Operation{Kind: fsm.OpFailover, Epoch: 1, Target: "b"}})
	h.prober.down("a")
	h.prober.set("b", standby(100, 1))
	h.prober.set("c", standby(180, 1))
	// Even an operator cannot skip the hold-down.
	h.advance(time.Millisecond)
	if h.f.State().Epoch != 1 {
		t.Fatal("manual failover skipped the hold-down")
	}
	h.advance(h.cfg.Timings.HoldDown)
	st := h.f.State()
	tr := st.History[len(st.History)-1]
	if st.Primary != "b" || tr.Kind != fsm.KindManual || tr.MaybeLost != 80 {
		t.Fatalf("manual failover: primary %s %+v", st.Primary, tr)
	}
}

func TestPlanOperationValidation(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	ctx := context.Background()
	cases := []struct {
		kind, target, want string
		force              bool
	}{
		{fsm.OpSwitchover, "zz", "not a member", false},
		{fsm.OpSwitchover, "a", "already the primary", false},
		{fsm.OpFailover, "", "needs a target", false},
		{"nap", "b", "unknown operation", false},
	}
	for _, c := range cases {
		if _, err := h.c.PlanOperation(ctx, c.kind, c.target, c.force); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: %v, want %q", c.kind, c.target, err, c.want)
		}
	}
	h.prober.set("a", primaryStatus(5000, nil, nil))
	h.prober.set("b", standby(10, 1))
	if _, err := h.c.PlanOperation(ctx, fsm.OpSwitchover, "b", false); err == nil || !strings.Contains(err.Error(), "lags") {
		t.Errorf("lagging target accepted: %v", err)
	}
	if _, err := h.c.PlanOperation(ctx, fsm.OpSwitchover, "b", true); err != nil {
		t.Errorf("forced: %v", err)
	}
	h.prober.down("c")
	if _, err := h.c.PlanOperation(ctx, fsm.OpSwitchover, "c", false); err == nil {
		t.Error("unreachable target accepted")
	}
}

func TestBootstrapPrefersData(t *testing.T) {
	f := fsm.New(nil)
	p := &testProposer{t: t, f: f}
	for i, n := range []string{"a", "b", "c"} {
		p.apply(&fsm.UpsertMember{Member: fsm.Member{Name: n, FailoverPriority: 3 - i}})
	}
	prober := &testProber{st: map[string]PGStatus{"a": {}, "b": {HasData: true, FlushLSN: 50}, "c": {HasData: true, FlushLSN: 70}}}
	c, err := New(Config{Node: "x", Timings: timings(), SerialProbes: true, NewClusterID: func() string { return "cid" }},
		Deps{Clock: &testClock{}, State: f, Leader: &testLeader{leader: true, term: 1}, Proposer: p, Prober: prober})
	if err != nil {
		t.Fatal(err)
	}
	c.Step(context.Background())
	st := f.State()
	if st.Primary != "c" || st.ClusterID != "cid" || st.Epoch != 1 {
		t.Fatalf("bootstrap chose %s (epoch %d)", st.Primary, st.Epoch)
	}

	f2 := fsm.New(nil)
	p2 := &testProposer{t: t, f: f2}
	for i, n := range []string{"a", "b", "c"} {
		p2.apply(&fsm.UpsertMember{Member: fsm.Member{Name: n, FailoverPriority: i}})
	}
	c2, _ := New(Config{Node: "x", Timings: timings(), SerialProbes: true},
		Deps{Clock: &testClock{}, State: f2, Leader: &testLeader{leader: true, term: 1}, Proposer: p2,
			Prober: &testProber{st: map[string]PGStatus{"a": {}, "b": {}, "c": {}}}})
	c2.Step(context.Background())
	if f2.State().Primary != "c" {
		t.Fatalf("without data, priority should win: %s", f2.State().Primary)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	deps := Deps{Clock: &testClock{}, State: fsm.New(nil), Leader: &testLeader{}, Proposer: &testProposer{}, Prober: &testProber{}}
	if _, err := New(Config{Mode: "sync", Timings: timings()}, deps); err == nil || !strings.Contains(err.Error(), "replication mode") {
		t.Fatalf("bad mode: %v", err)
	}
	bad := timings()
	bad.HoldDown = bad.Lease
	if _, err := New(Config{Timings: bad}, deps); err == nil || !strings.Contains(err.Error(), "hold_down") {
		t.Fatalf("bad timings: %v", err)
	}
	if _, err := New(Config{Timings: timings()}, Deps{}); err == nil {
		t.Fatal("missing deps accepted")
	}
}

// Run steps on FSM changes and stops with its context.
func TestRunLoop(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	h.leader.leader = false
	changes := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.c.Run(ctx, changes) }()
	changes <- struct{}{}
	h.c.Notify(Event{Kind: EventFailed, Node: "b"})
	deadline := time.Now().Add(5 * time.Second)
	for h.c.Status().State != StatusFollower && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if h.c.Status().State != StatusFollower {
		t.Fatalf("status %s", h.c.Status().State)
	}
}

// TestSyncChangeReplacedWhenItCannotComplete: a shrink to a standby that
// then stops streaming before it caught up is replaced by a set with the
// standby that does stream, keeping every voter of the unfinished change.
func TestSyncChangeReplacedWhenItCannotComplete(t *testing.T) {
	h := newHarness(t, fsm.ModeQuorum)
	h.step()
	// c stops streaming (it is being rewound): the set shrinks to b.
	h.prober.down("c")
	h.prober.set("a", primaryStatus(200, &SyncConfig{Standbys: []string{"b", "c"}, K: 1}, map[string]fsm.LSN{"b": 200}))
	h.advance(h.cfg.SyncInterval)
	s := h.f.State().Sync
	if s.Steady() || !slices.Equal(s.Standbys, []string{"b"}) {
		t.Fatalf("shrink step: %+v", s)
	}
	// The primary applies it, but b stops streaming before it catches up,
	// and c streams again.
	h.prober.down("b")
	h.prober.set("c", standby(300, 1))
	h.prober.set("a", primaryStatus(300, &SyncConfig{Standbys: []string{"b"}, K: 1}, map[string]fsm.LSN{"c": 300}))
	h.advance(h.cfg.SyncInterval)
	s = h.f.State().Sync
	if !slices.Equal(s.Standbys, []string{"c"}) || !slices.Equal(s.Voters, []string{"b", "c"}) || s.Guarantee() != 1 {
		t.Fatalf("the unfinished change was not replaced: %+v", s)
	}
	// It completes like any other once c has caught up.
	h.prober.set("a", primaryStatus(310, &SyncConfig{Standbys: []string{"c"}, K: 1}, map[string]fsm.LSN{"c": 300}))
	h.advance(h.cfg.SyncInterval)
	h.prober.set("a", primaryStatus(320, &SyncConfig{Standbys: []string{"c"}, K: 1}, map[string]fsm.LSN{"c": 320}))
	h.advance(h.cfg.SyncInterval)
	if s = h.f.State().Sync; !s.Steady() || !slices.Equal(s.Voters, []string{"c"}) {
		t.Fatalf("narrow step: %+v", s)
	}
}
