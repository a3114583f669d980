package lease

import (
	"time"
)

// Holder is the primary-side lease bookkeeping, without I/O, so that the
// same code runs in the agent (Runner) and in the simulation. All times are
// readings of the node's own monotonic clock.
//
// Protocol: call Sent before sending a renewal for an epoch and keep the
// returned ticket; call Result with the ticket when the renewal's outcome is
// known. Valid says whether the node may act as primary at that moment.
type Holder struct {
	t Timings

	epoch      uint64
	validUntil time.Duration // 0: not valid
	hasLease   bool
	lastSent   time.Duration
	sentAny    bool
}

// Ticket identifies one renewal attempt.
type Ticket struct {
	Epoch  uint64
	SentAt time.Duration
}

// NewHolder returns a Holder for the given (validated) timings.
func NewHolder(t Timings) *Holder {
	return &Holder{t: t.WithDefaults()}
}

// Timings returns the holder's timings.
func (h *Holder) Timings() Timings { return h.t }

// Reset forgets the lease (the node is no longer primary, or released it).
func (h *Holder) Reset() {
	*h = Holder{t: h.t}
}

// Epoch is the epoch the holder currently holds or seeks a lease for.
func (h *Holder) Epoch() uint64 { return h.epoch }

// Sent records that a renewal for epoch is being sent now. A new epoch
// discards the previous one's lease.
func (h *Holder) Sent(epoch uint64, now time.Duration) Ticket {
	if epoch != h.epoch {
		h.Reset()
		h.epoch = epoch
	}
	h.lastSent = now
	h.sentAny = true
	return Ticket{Epoch: epoch, SentAt: now}
}

// Result records a renewal outcome. Only a success for the current epoch
// extends the lease, to SentAt + HolderValidity: never beyond what the
// controller can see.
func (h *Holder) Result(tk Ticket, ok bool) {
	if !ok || tk.Epoch != h.epoch {
		return
	}
	until := tk.SentAt + h.t.HolderValidity()
	if !h.hasLease || until > h.validUntil {
		h.validUntil = until
		h.hasLease = true
	}
}

// Valid reports whether the node holds the lease at now.
func (h *Holder) Valid(now time.Duration) bool {
	return h.hasLease && now < h.validUntil
}

// Deadline is when the holder must have started fencing (valid only if a
// renewal ever succeeded).
func (h *Holder) Deadline() (time.Duration, bool) {
	return h.validUntil, h.hasLease
}

// RenewDue reports whether a renewal should be sent now.
func (h *Holder) RenewDue(now time.Duration) bool {
	return !h.sentAny || now-h.lastSent >= h.t.RenewInterval
}

// NextRenew is when the next renewal is due.
func (h *Holder) NextRenew() time.Duration {
	if !h.sentAny {
		return 0
	}
	return h.lastSent + h.t.RenewInterval
}
