package lease

import (
	"fmt"
	"sync/atomic"
	"time"
)

// SkewClock is a Clock that reads another Clock and adds an offset that
// only grows. The agent always reads its monotonic clock through one (the
// offset stays 0 unless it is jumped), so that fault tests can make one
// node's clock leap ahead, as a suspended VM's or a misbehaving
// hypervisor's may, and see what the lease and the hold-down make of it.
//
// Only forward jumps exist: a monotonic clock never goes backwards, and
// every reader (the lease holder, the controller) relies on that.
type SkewClock struct {
	base   Clock
	offset atomic.Int64 // nanoseconds; never decreases
}

// NewSkewClock returns a clock that reads base with no offset.
func NewSkewClock(base Clock) *SkewClock { return &SkewClock{base: base} }

// Now is the base clock's reading plus the offset.
func (c *SkewClock) Now() time.Duration {
	return c.base.Now() + time.Duration(c.offset.Load())
}

// Offset is the total of every jump so far.
func (c *SkewClock) Offset() time.Duration { return time.Duration(c.offset.Load()) }

// Jump moves the clock forward by d and returns the new total offset. A
// negative d is refused: a monotonic clock never goes backwards. A zero
// jump changes nothing.
func (c *SkewClock) Jump(d time.Duration) (time.Duration, error) {
	if d < 0 {
		return c.Offset(), fmt.Errorf("clock jump of %s refused: a monotonic clock never goes backwards; only forward jumps (positive durations) are possible", d)
	}
	for {
		old := c.offset.Load()
		next := old + int64(d)
		if next < old {
			return time.Duration(old), fmt.Errorf("clock jump of %s refused: the offset (%s) would overflow", d, time.Duration(old))
		}
		if c.offset.CompareAndSwap(old, next) {
			return time.Duration(next), nil
		}
	}
}
