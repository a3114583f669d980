package lease

import (
	"strings"
	"sync"
	"testing"
	"time"
)

type manualClock struct{ now time.Duration }

func (c *manualClock) Now() time.Duration { return c.now }

func TestSkewClockJumpsForwardOnly(t *testing.T) {
	base := &manualClock{now: 10 * time.Second}
	c := NewSkewClock(base)
	if c.Now() != 10*time.Second || c.Offset() != 0 {
		t.Fatalf("unjumped clock reads %s (offset %s), want the base's 10s", c.Now(), c.Offset())
	}
	off, err := c.Jump(3 * time.Second)
	if err != nil || off != 3*time.Second {
		t.Fatalf("Jump(3s) = %s, %v", off, err)
	}
	base.now += time.Second
	if got := c.Now(); got != 14*time.Second {
		t.Fatalf("after a 3s jump and 1s of base time the clock reads %s, want 14s", got)
	}
	if off, err := c.Jump(0); err != nil || off != 3*time.Second {
		t.Fatalf("Jump(0) = %s, %v: want no change", off, err)
	}
	off, err = c.Jump(-time.Second)
	if err == nil || !strings.Contains(err.Error(), "never goes backwards") {
		t.Fatalf("a backward jump was not refused with the reason: %v", err)
	}
	if off != 3*time.Second || c.Now() != 14*time.Second {
		t.Fatalf("a refused jump moved the clock: offset %s, now %s", off, c.Now())
	}
	if _, err := c.Jump(time.Duration(1<<63 - 1)); err == nil || !strings.Contains(err.Error(), "overflow") {
		t.Fatalf("an overflowing jump was not refused: %v", err)
	}
	if c.Offset() != 3*time.Second {
		t.Fatalf("a refused overflow changed the offset to %s", c.Offset())
	}
}

// Concurrent jumps add up; no reader ever sees the clock go back.
func TestSkewClockConcurrentJumps(t *testing.T) {
	c := NewSkewClock(NewSystemClock())
	var wg sync.WaitGroup
	stop := make(chan struct{})
	backwards := make(chan string, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := c.Now()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if now := c.Now(); now < last {
				select {
				case backwards <- (last - now).String():
				default:
				}
			} else {
				last = now
			}
		}
	}()
	var jumpers sync.WaitGroup
	for range 8 {
		jumpers.Add(1)
		go func() {
			defer jumpers.Done()
			for range 100 {
				if _, err := c.Jump(time.Millisecond); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	jumpers.Wait()
	close(stop)
	wg.Wait()
	if c.Offset() != 800*time.Millisecond {
		t.Fatalf("800 jumps of 1ms made an offset of %s", c.Offset())
	}
	select {
	case d := <-backwards:
		t.Fatalf("the clock went back by %s", d)
	default:
	}
}

// A primary whose clock jumps past its lease believes the lease lapsed
// and fences, even though its renewals keep succeeding; a jump well inside
// the lease's slack changes nothing.
func TestRunnerWithSkewClock(t *testing.T) {
	// A long lease, so that a loaded machine's scheduling delays cannot
	// make a renewal late enough to fence on their own.
	tm := Timings{Lease: 2 * time.Second, RenewInterval: 100 * time.Millisecond, HoldDown: 2100 * time.Millisecond, FenceBudget: 200 * time.Millisecond}.WithDefaults()
	clock := NewSkewClock(NewSystemClock())
	fen := &fakeFencer{fenced: make(chan string, 4)}
	r, st, _ := startValidRunner(t, tm, clock, fen)
	// A small jump: the next renewals keep the lease.
	if _, err := clock.Jump(tm.RenewInterval / 5); err != nil {
		t.Fatal(err)
	}
	select {
	case reason := <-fen.fenced:
		t.Fatalf("fenced after a %s jump (validity %s): %s", tm.RenewInterval/5, tm.HolderValidity(), reason)
	case <-time.After(tm.Lease):
	}
	if !r.Valid() {
		t.Fatal("lease not valid after a small jump")
	}
	// A jump past the whole lease: the lease lapsed in this node's time.
	if _, err := clock.Jump(2 * tm.Lease); err != nil {
		t.Fatal(err)
	}
	st.sub <- struct{}{}
	select {
	case reason := <-fen.fenced:
		t.Logf("fenced after a %s jump: %s", 2*tm.Lease, reason)
	case <-time.After(5 * time.Second):
		t.Fatal("did not fence after the clock jumped past the lease")
	}
}
