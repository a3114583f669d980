package controller

import (
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/agent/fsm"
	"github.com/pgbattery/pgbattery/agent/lease"
)

// clockJumpRig is a leader's controller (harness clock) and the primary's
// lease holder on a clock of its own, both advanced together except when
// the test jumps one of them.
type clockJumpRig struct {
	*harness
	primary *lease.Holder
	pnow    time.Duration // the primary's clock
}

func newClockJumpRig(t *testing.T) *clockJumpRig {
	r := &clockJumpRig{harness: newHarness(t, fsm.ModeQuorum), primary: lease.NewHolder(timings()), pnow: 5 * time.Hour}
	r.step() // takes office
	// A healthy primary: renewals every RenewInterval for a few hold-downs.
	for range 20 {
		r.tick(true)
	}
	if r.lastSetPrimary() != nil {
		t.Fatal("failover while the primary renewed")
	}
	return r
}

// tick lets one renewal interval pass on both clocks; with renew, the
// primary renews (successfully) at its start.
func (r *clockJumpRig) tick(renew bool) {
	if renew {
		tk := r.primary.Sent(r.f.State().Epoch, r.pnow)
		r.renew()
		r.primary.Result(tk, true)
		r.step() // the controller sees the renewal applied
	}
	d := r.cfg.Timings.RenewInterval
	r.pnow += d
	r.advance(d)
}

// A leader's clock that jumps by less than hold_down - lease still waits
// out the old primary's whole lease before it promotes: the jump eats
// into the hold-down's margin over the lease, as drift would, and no
// further.
func TestClockJumpOnLeaderWithinMargin(t *testing.T) {
	tm := timings()
	jump := tm.HoldDown - tm.Lease - time.Millisecond
	r := newClockJumpRig(t)
	r.clock.now += jump
	for range 10 {
		r.tick(true)
	}
	if sp := r.lastSetPrimary(); sp != nil {
		t.Fatalf("a %s jump of the leader's clock deposed a renewing primary: %+v", jump, sp)
	}

	// The primary stops renewing, and the leader's clock jumps again
	// right after the last renewal it saw.
	tk := r.primary.Sent(r.f.State().Epoch, r.pnow)
	r.renew()
	r.primary.Result(tk, true)
	r.step()
	r.clock.now += jump
	elapsed := time.Duration(0)
	for r.lastSetPrimary() == nil && elapsed < 10*tm.HoldDown {
		r.pnow += time.Millisecond
		elapsed += time.Millisecond
		r.advance(time.Millisecond)
	}
	if r.lastSetPrimary() == nil {
		t.Fatal("no failover after the primary stopped renewing")
	}
	if r.primary.Valid(r.pnow) {
		t.Fatalf("promoted %s after the last renewal while the old primary's lease was still valid on its clock", elapsed)
	}
	if elapsed < tm.Lease {
		t.Fatalf("promoted %s after the last renewal, before a whole lease (%s)", elapsed, tm.Lease)
	}
	t.Logf("leader jumped %s: promoted %s after the last renewal (hold-down %s, lease %s, holder validity %s)", jump, elapsed, tm.HoldDown, tm.Lease, tm.HolderValidity())
}

// A leader's clock that jumps by more than the hold-down is outside the
// lease model (clock rates bounded by MaxDrift). The controller then
// believes a healthy primary's lease ended and promotes another node while
// the old primary still holds its lease on its own clock. Nothing in the
// controller can tell a jump from time passing; what remains is the FSM's
// ExpectLeaseVersion check (a renewal applied after the decision voids
// it) and, for acknowledged writes, synchronous replication. This test
// pins that behaviour down so that docs/chaos.md stays true to it.
func TestClockJumpOnLeaderBeyondHoldDownPromotesDuringLease(t *testing.T) {
	tm := timings()
	r := newClockJumpRig(t)
	before := r.f.State().Epoch
	// The controller looks again between two renewals (its own sync
	// timer), after its clock jumped past the hold-down.
	r.clock.now += tm.HoldDown
	r.pnow += tm.RenewInterval / 2
	r.advance(tm.RenewInterval / 2)
	sp := r.lastSetPrimary()
	if sp == nil {
		t.Fatal("the controller did not promote: the hold-down protects against leader clock jumps after all (update docs/chaos.md and this test)")
	}
	st := r.f.State()
	if st.Epoch != before+1 || st.Primary == "a" {
		t.Fatalf("SetPrimary %+v not applied: epoch %d primary %s", sp, st.Epoch, st.Primary)
	}
	if !r.primary.Valid(r.pnow) {
		t.Fatal("the old primary's lease had ended on its own clock: nothing outside the model happened")
	}
	t.Logf("leader's clock jumped %s: %s promoted in epoch %d while a's lease was valid on a's clock for another %s",
		tm.HoldDown, st.Primary, st.Epoch, func() time.Duration { d, _ := r.primary.Deadline(); return d - r.pnow }())

	// A renewal applied between the decision and its commit voids it.
	r2 := newClockJumpRig(t)
	r2.prop.hold = true
	r2.clock.now += tm.HoldDown
	r2.advance(tm.RenewInterval / 2)
	if len(r2.prop.queued) == 0 {
		t.Fatal("no proposal queued")
	}
	r2.prop.hold = false
	r2.renew()
	for _, c := range r2.prop.queued {
		if err := r2.prop.apply(c); c.MessageType() == fsm.SetPrimaryType && err == nil {
			t.Fatal("a failover decided before a renewal was applied after it")
		}
	}
	if r2.f.State().Primary != "a" {
		t.Fatalf("primary is %s", r2.f.State().Primary)
	}
}
