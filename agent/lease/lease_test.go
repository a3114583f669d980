package lease

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/agent/fsm"
)

func good() Timings {
	return Timings{
		Lease: 5 * time.Second, RenewInterval: time.Second, HoldDown: 6 * time.Second,
		RaftHeartbeatTimeout: 200 * time.Millisecond, RaftElectionTimeout: 200 * time.Millisecond,
	}.WithDefaults()
}

func TestDefaultsValidate(t *testing.T) {
	if err := good().Validate(); err != nil {
		t.Fatal(err)
	}
	fast := Timings{Lease: 1500 * time.Millisecond, RenewInterval: 250 * time.Millisecond, HoldDown: 1600 * time.Millisecond,
		FenceBudget: 300 * time.Millisecond, RaftHeartbeatTimeout: 200 * time.Millisecond, RaftElectionTimeout: 200 * time.Millisecond}.WithDefaults()
	if err := fast.Validate(); err != nil {
		t.Fatalf("fast profile: %v", err)
	}
}

func TestValidateCatchesEachRule(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Timings)
		want   string
	}{
		{"zero lease", func(t *Timings) { t.Lease = 0 }, "lease (0s) must be positive"},
		{"zero renew", func(t *Timings) { t.RenewInterval = 0 }, "lease_renew_interval (0s) must be positive"},
		{"drift", func(t *Timings) { t.MaxDrift = 0.7 }, "max clock drift"},
		{"fence budget", func(t *Timings) { t.FenceBudget = 4 * time.Second }, "fence budget"},
		{"renew too slow", func(t *Timings) { t.RenewInterval = 3 * time.Second }, "at most half"},
		{"hold-down shorter than lease", func(t *Timings) { t.HoldDown = 5 * time.Second }, "hold_down (5s) must be at least"},
		{"lease shorter than raft failover", func(t *Timings) {
			t.RaftHeartbeatTimeout, t.RaftElectionTimeout = 2*time.Second, 2*time.Second
		}, "too short for raft"},
	}
	for _, c := range cases {
		tm := good()
		c.mutate(&tm)
		err := tm.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want error containing %q", c.name, err, c.want)
		}
	}
}

// The holder's view of expiry is never later than any other node's: it
// counts from the send, shortened by the drift and the fence budget.
func TestHolderMeasuresFromSend(t *testing.T) {
	tm := good()
	h := NewHolder(tm)
	if h.Valid(0) {
		t.Fatal("valid before any renewal")
	}
	sent := 10 * time.Second
	tk := h.Sent(1, sent)
	// The answer arrives much later; validity still counts from the send.
	h.Result(tk, true)
	d, ok := h.Deadline()
	if !ok || d != sent+tm.HolderValidity() {
		t.Fatalf("deadline %s, want %s", d, sent+tm.HolderValidity())
	}
	if tm.HolderValidity() >= tm.Lease-tm.FenceBudget {
		t.Fatalf("validity %s does not account for drift", tm.HolderValidity())
	}
	if !h.Valid(d-1) || h.Valid(d) {
		t.Fatal("validity boundary wrong")
	}
	// A failure or an older success does not move the deadline back or on.
	h.Result(Ticket{Epoch: 1, SentAt: sent - time.Second}, true)
	if d2, _ := h.Deadline(); d2 != d {
		t.Fatal("an older renewal moved the deadline")
	}
	tk2 := h.Sent(1, sent+time.Second)
	h.Result(tk2, false)
	if d2, _ := h.Deadline(); d2 != d {
		t.Fatal("a failed renewal moved the deadline")
	}
	// A success for another epoch does not count.
	tk3 := h.Sent(2, sent+2*time.Second)
	h.Result(tk, true)
	if h.Valid(sent + 2*time.Second) {
		t.Fatal("old epoch's renewal made the new epoch valid")
	}
	h.Result(tk3, true)
	if !h.Valid(sent + 2*time.Second) {
		t.Fatal("new epoch renewal not counted")
	}
	if h.RenewDue(sent+2*time.Second+tm.RenewInterval-1) || !h.RenewDue(sent+2*time.Second+tm.RenewInterval) {
		t.Fatal("renew schedule wrong")
	}
	h.Reset()
	if h.Valid(sent+2*time.Second) || h.Epoch() != 0 {
		t.Fatal("reset kept the lease")
	}
}

// The safety arithmetic: holder fences before any controller that waits
// the minimum hold-down from seeing the renewal could promote, for every
// pair of clock rates within the drift bound.
func TestHolderEndsBeforeHoldDown(t *testing.T) {
	tm := good()
	for _, rh := range []float64{1 - tm.MaxDrift, 1, 1 + tm.MaxDrift} {
		for _, rc := range []float64{1 - tm.MaxDrift, 1, 1 + tm.MaxDrift} {
			// true time at which the holder has finished fencing
			fenced := float64(tm.HolderValidity())/rh + float64(tm.FenceBudget)
			// true time at which the controller promotes (it saw the
			// renewal no earlier than the send, at true time 0)
			promote := float64(tm.MinHoldDown()) / rc
			if fenced >= promote {
				t.Fatalf("rates holder %.2f controller %.2f: fenced at %.0f, promote at %.0f", rh, rc, fenced, promote)
			}
		}
	}
}

type fakeState struct {
	mu  sync.Mutex
	st  *fsm.State
	sub chan struct{}
}

func (f *fakeState) State() *fsm.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}
func (f *fakeState) Subscribe() (<-chan struct{}, func()) { return f.sub, func() {} }

type fakeRenewer struct {
	fail     atomic.Bool
	renews   atomic.Int32
	released atomic.Int32
}

func (r *fakeRenewer) Renew(ctx context.Context, c *fsm.RenewLease) error {
	r.renews.Add(1)
	if r.fail.Load() {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}
func (r *fakeRenewer) Release(context.Context, *fsm.ReleaseLease) error {
	r.released.Add(1)
	return nil
}

type fakeFencer struct{ fenced chan string }

func (f *fakeFencer) Fence(_ context.Context, reason string) error {
	f.fenced <- reason
	return nil
}

// The runner renews while the FSM names this node, and fences when
// renewals stop succeeding, before the lease runs out.
func TestRunnerRenewsAndFences(t *testing.T) {
	tm := Timings{Lease: 400 * time.Millisecond, RenewInterval: 50 * time.Millisecond, HoldDown: 450 * time.Millisecond, FenceBudget: 100 * time.Millisecond}.WithDefaults()
	fen := &fakeFencer{fenced: make(chan string, 4)}
	r, _, ren := startValidRunner(t, tm, NewSystemClock(), fen)
	ren.fail.Store(true)
	lostAt := time.Now()
	select {
	case reason := <-fen.fenced:
		if !strings.Contains(reason, "could not be renewed") {
			t.Fatalf("fence reason %q", reason)
		}
		t.Logf("fenced %s after renewals stopped (lease %s)", time.Since(lostAt), tm.Lease)
	case <-time.After(5 * time.Second):
		t.Fatal("did not fence")
	}
	if r.Valid() {
		t.Fatal("still valid after fencing")
	}
	if err := r.Release(context.Background(), 10, "test"); err != nil || ren.released.Load() != 1 {
		t.Fatalf("release: %v (%d)", err, ren.released.Load())
	}
	// Once released, the epoch's lease is never renewed again, even while
	// the FSM has not yet applied the release.
	ren.fail.Store(false)
	time.Sleep(2 * tm.RenewInterval) // a renewal started before Release may still be counted
	n := ren.renews.Load()
	time.Sleep(5 * tm.RenewInterval)
	if ren.renews.Load() != n || r.Valid() {
		t.Fatalf("renewed %d times after release", ren.renews.Load()-n)
	}
}

func TestRunnerConfigErrors(t *testing.T) {
	_, err := NewRunner(RunnerConfig{Timings: Timings{Lease: time.Second}})
	if err == nil || !strings.Contains(err.Error(), "lease timings") {
		t.Fatalf("bad timings accepted: %v", err)
	}
	_, err = NewRunner(RunnerConfig{Timings: good()})
	if err == nil || !strings.Contains(err.Error(), "required") {
		t.Fatalf("missing deps accepted: %v", err)
	}
}

type killingFencer struct {
	fakeFencer
	killed chan string
}

func (f *killingFencer) Kill(reason string) error {
	f.killed <- reason
	return nil
}

// A lapse noticed long after the deadline (the process was frozen) kills
// PostgreSQL at once instead of fencing it by a reload.
func TestRunnerKillsAfterFreeze(t *testing.T) {
	tm := Timings{Lease: 400 * time.Millisecond, RenewInterval: 50 * time.Millisecond, HoldDown: 450 * time.Millisecond, FenceBudget: 100 * time.Millisecond}.WithDefaults()
	clock := NewSkewClock(NewSystemClock())
	fen := &killingFencer{fakeFencer: fakeFencer{fenced: make(chan string, 4)}, killed: make(chan string, 4)}
	_, st, ren := startValidRunner(t, tm, clock, fen)
	// Frozen for twice the lease: renewals could not have run.
	ren.fail.Store(true)
	if _, err := clock.Jump(2 * tm.Lease); err != nil {
		t.Fatal(err)
	}
	st.sub <- struct{}{}
	select {
	case reason := <-fen.killed:
		t.Logf("killed: %s", reason)
	case reason := <-fen.fenced:
		t.Fatalf("fenced by reload (%q) after a freeze, want a kill", reason)
	case <-time.After(5 * time.Second):
		t.Fatal("neither killed nor fenced")
	}
}

// startValidRunner runs a Runner for node "a", named primary of epoch 3
// by a fake FSM, until the test ends, and waits until it holds the lease.
func startValidRunner(t *testing.T, tm Timings, clock Clock, fen Fencer) (*Runner, *fakeState, *fakeRenewer) {
	t.Helper()
	st := &fakeState{st: &fsm.State{Primary: "a", Epoch: 3, Lease: fsm.Lease{Holder: "a", Epoch: 3}}, sub: make(chan struct{}, 1)}
	ren := &fakeRenewer{}
	r, err := NewRunner(RunnerConfig{Node: "a", Timings: tm, Clock: clock, State: st, Renewer: ren, Fencer: fen})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	deadline := time.Now().Add(5 * time.Second)
	for !r.Valid() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !r.Valid() {
		t.Fatal("never became valid")
	}
	return r, st, ren
}
