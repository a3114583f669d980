// Package lease is the primary's side of the lease that keeps one writer per
// epoch, and the timing rules that make it safe.
//
// The primary renews its lease through the raft log every RenewInterval. It
// measures the lease from the moment it SENT a renewal that then succeeded,
// on its own monotonic clock, so its view of the expiry is always earlier
// than that of any other node, which can only measure from when it saw the
// renewal applied. If it cannot renew, it fences its PostgreSQL (read-only,
// terminate client backends, stop) so that fencing completes before the
// lease ends. The controller promotes a new primary only after HoldDown has
// passed since it last saw the lease change (and since it became raft leader).
//
// Clock rates may differ between nodes by at most MaxDrift (a fraction: 0.01
// is 1 %). Both sides correct for it: the holder gives up (1-MaxDrift) of the
// lease, the controller waits at least Lease×(1+MaxDrift).
package lease

import (
	"errors"
	"fmt"
	"time"
)

// Timings are the lease settings together with the raft timings they must
// agree with.
type Timings struct {
	// Lease is how long a successful renewal keeps the primary in office.
	Lease time.Duration
	// RenewInterval is how often the primary renews.
	RenewInterval time.Duration
	// HoldDown is how long the controller waits, from the last lease change
	// it saw and from becoming raft leader, before it treats the lease as
	// ended.
	HoldDown time.Duration
	// FenceBudget is how long fencing may take: the holder starts fencing
	// this long before its lease ends.
	FenceBudget time.Duration
	// MaxDrift bounds the relative rate difference of any two nodes'
	// monotonic clocks (0.01 = 1 %).
	MaxDrift float64

	// Raft timings (agent/consensus.Timings): a change of raft leader must
	// not cost the primary its lease.
	RaftHeartbeatTimeout time.Duration
	RaftElectionTimeout  time.Duration
}

// Defaults used when a field is zero.
const (
	DefaultFenceBudget = 500 * time.Millisecond
	DefaultMaxDrift    = 0.01
)

// WithDefaults fills zero FenceBudget and MaxDrift.
func (t Timings) WithDefaults() Timings {
	if t.FenceBudget == 0 {
		t.FenceBudget = DefaultFenceBudget
		if t.Lease > 0 && t.FenceBudget > t.Lease/4 {
			t.FenceBudget = t.Lease / 4
		}
	}
	if t.MaxDrift == 0 {
		t.MaxDrift = DefaultMaxDrift
	}
	return t
}

// HolderValidity is how long after sending a successful renewal the holder
// considers itself in office (on its own clock); it starts fencing then, so
// fencing ends before Lease has passed by any clock within MaxDrift.
func (t Timings) HolderValidity() time.Duration {
	return time.Duration(float64(t.Lease-t.FenceBudget) * (1 - t.MaxDrift))
}

// MinHoldDown is the shortest safe hold-down: a full lease as measured by a
// clock that may run fast by MaxDrift.
func (t Timings) MinHoldDown() time.Duration {
	return time.Duration(float64(t.Lease)*(1+t.MaxDrift)) + 1
}

// RaftFailover is a pessimistic bound on how long the raft group may be
// without a leader when the leader dies (one election round).
func (t Timings) RaftFailover() time.Duration {
	return 2*t.RaftHeartbeatTimeout + 2*t.RaftElectionTimeout
}

// Validate checks the timings against each other. Every error says which
// setting is wrong and why.
func (t Timings) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if t.Lease <= 0 {
		add("lease (%s) must be positive", t.Lease)
	}
	if t.RenewInterval <= 0 {
		add("lease_renew_interval (%s) must be positive", t.RenewInterval)
	}
	if t.MaxDrift < 0 || t.MaxDrift >= 0.5 {
		add("max clock drift (%g) must be in [0, 0.5)", t.MaxDrift)
	}
	if t.FenceBudget <= 0 || t.FenceBudget > t.Lease/2 {
		add("fence budget (%s) must be positive and at most half the lease (%s)", t.FenceBudget, t.Lease)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	validity := t.HolderValidity()
	if t.RenewInterval*2 > validity {
		add("lease_renew_interval (%s) must be at most half of the time the primary may rely on a renewal (%s = (lease %s - fence budget %s) x (1 - drift %g)), so that one lost renewal does not fence a healthy primary",
			t.RenewInterval, validity, t.Lease, t.FenceBudget, t.MaxDrift)
	}
	if t.HoldDown < t.MinHoldDown() {
		add("hold_down (%s) must be at least the lease as measured by a clock running %g%% fast (%s): a shorter hold-down could promote a new primary while the old one still holds its lease",
			t.HoldDown, t.MaxDrift*100, t.MinHoldDown())
	}
	if t.RaftHeartbeatTimeout > 0 || t.RaftElectionTimeout > 0 {
		if need := t.RaftFailover() + t.RenewInterval; validity < need {
			add("lease (%s) is too short for raft: a raft leader change may take %s (2 x heartbeat %s + 2 x election %s) and the primary renews every %s, so the primary would fence itself whenever the raft leader changes; use a lease of at least %s or a smaller raft multiplier",
				t.Lease, t.RaftFailover(), t.RaftHeartbeatTimeout, t.RaftElectionTimeout, t.RenewInterval,
				time.Duration(float64(need)/(1-t.MaxDrift))+t.FenceBudget)
		}
	}
	return errors.Join(errs...)
}
