package lease

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/pgbattery/pgbattery/agent/fsm"
)

// Clock is a monotonic clock: Now is the time elapsed since an arbitrary,
// fixed origin. It never jumps with wall-clock changes.
type Clock interface {
	Now() time.Duration
}

// SystemClock reads Go's monotonic clock.
type SystemClock struct{ origin time.Time }

// NewSystemClock returns a clock whose origin is now.
func NewSystemClock() *SystemClock { return &SystemClock{origin: time.Now()} }

// Now returns the monotonic time since the clock's origin.
func (c *SystemClock) Now() time.Duration { return time.Since(c.origin) }

// Renewer sends lease commands through the raft leader. Both calls return
// nil only when the entry was committed and applied without rejection (the
// FSM's Apply response was nil).
type Renewer interface {
	Renew(ctx context.Context, cmd *fsm.RenewLease) error
	Release(ctx context.Context, cmd *fsm.ReleaseLease) error
}

// Fencer stops the local PostgreSQL from accepting writes: read-only first
// (default_transaction_read_only + reload), then terminate client backends,
// then stop PostgreSQL if either step fails. It must finish within the
// fence budget; its context carries that deadline.
type Fencer interface {
	Fence(ctx context.Context, reason string) error
}

// Killer is what a Fencer may also offer: end PostgreSQL at once. The
// runner uses it when it notices a lapse late, after the deadline plus a
// renewal interval: this process was not running (frozen, starved), and
// neither, probably, was PostgreSQL, which resumed with it and may be taking
// writes right now. A reload-based fence takes tens of milliseconds; a kill
// takes one.
type Killer interface {
	Kill(reason string) error
}

// StateSource is the local FSM replica.
type StateSource interface {
	State() *fsm.State
	Subscribe() (<-chan struct{}, func())
}

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	Node    string
	Timings Timings
	Clock   Clock
	State   StateSource
	Renewer Renewer
	Fencer  Fencer
	Logger  hclog.Logger
	// Position, if set, reports the local primary's WAL flush position;
	// it is sent with every renewal.
	Position func() fsm.LSN
}

// Runner keeps this node's lease while the FSM names it primary, and fences
// the local PostgreSQL when the lease lapses.
type Runner struct {
	cfg RunnerConfig

	mu       sync.Mutex
	holder   *Holder
	inflight int
	fenced   bool   // fenced since the lease last lapsed
	released uint64 // epoch whose lease this node gave up: never renewed again
	// releaseSent is the epoch whose release the cluster accepted.
	releaseSent uint64
	wake        chan struct{}
}

// NewRunner validates the configuration and returns a Runner.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	cfg.Timings = cfg.Timings.WithDefaults()
	if err := cfg.Timings.Validate(); err != nil {
		return nil, fmt.Errorf("lease timings: %w", err)
	}
	if cfg.Node == "" || cfg.Clock == nil || cfg.State == nil || cfg.Renewer == nil || cfg.Fencer == nil {
		return nil, fmt.Errorf("lease runner: Node, Clock, State, Renewer and Fencer are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Runner{cfg: cfg, holder: NewHolder(cfg.Timings), wake: make(chan struct{}, 1)}, nil
}

// Valid reports whether this node holds the lease now: the reconciler lets
// PostgreSQL accept writes only while it does.
func (r *Runner) Valid() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.holder.Valid(r.cfg.Clock.Now())
}

// Release gives the lease up through the log after the caller has made
// PostgreSQL unable to accept writes (it died, or it was fenced for a
// switchover). From then on Valid is false.
func (r *Runner) Release(ctx context.Context, finalLSN fsm.LSN, cause string) (err error) {
	st := r.cfg.State.State()
	r.mu.Lock()
	r.holder.Reset()
	r.fenced = true
	again := r.releaseSent == st.Epoch
	r.released = st.Epoch
	r.mu.Unlock()
	if st.Primary != r.cfg.Node || st.Lease.Released || again {
		// Already given up (a second call before this node's replica
		// has applied the first release is not a new release).
		return nil
	}
	defer func() {
		if err == nil {
			r.mu.Lock()
			r.releaseSent = st.Epoch
			r.mu.Unlock()
		}
	}()
	return r.cfg.Renewer.Release(ctx, &fsm.ReleaseLease{Holder: r.cfg.Node, Epoch: st.Epoch, FinalLSN: finalLSN, Cause: cause})
}

// Run renews and fences until ctx ends.
func (r *Runner) Run(ctx context.Context) error {
	changes, cancel := r.cfg.State.Subscribe()
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		next := r.step(ctx, &wg)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// step does what is due now and returns how long to sleep.
func (r *Runner) step(ctx context.Context, wg *sync.WaitGroup) time.Duration {
	st := r.cfg.State.State()
	now := r.cfg.Clock.Now()
	t := r.cfg.Timings
	sleep := t.RenewInterval

	r.mu.Lock()
	defer r.mu.Unlock()
	mine := st.Primary == r.cfg.Node && st.Lease.Holder == r.cfg.Node && st.Lease.Epoch == st.Epoch && !st.Lease.Released &&
		st.Epoch != r.released
	if !mine {
		if r.holder.Epoch() != 0 {
			r.holder.Reset()
		}
		return sleep
	}
	if r.holder.RenewDue(now) && r.inflight < 2 {
		tk := r.holder.Sent(st.Epoch, now)
		r.inflight++
		timeout := t.RenewInterval * 2
		if d, ok := r.holder.Deadline(); ok && d > now {
			timeout = d - now
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rctx, cancel := context.WithTimeout(ctx, timeout)
			var pos fsm.LSN
			if r.cfg.Position != nil {
				pos = r.cfg.Position()
			}
			err := r.cfg.Renewer.Renew(rctx, &fsm.RenewLease{Holder: r.cfg.Node, Epoch: tk.Epoch, LSN: pos})
			cancel()
			r.mu.Lock()
			r.inflight--
			r.holder.Result(tk, err == nil)
			if err == nil && r.holder.Valid(r.cfg.Clock.Now()) {
				r.fenced = false
			}
			r.mu.Unlock()
			if err != nil {
				r.cfg.Logger.Warn("lease renewal failed", "epoch", tk.Epoch, "error", err)
			}
			select {
			case r.wake <- struct{}{}:
			default:
			}
		}()
	}
	if next := r.holder.NextRenew() - now; next > 0 && next < sleep {
		sleep = next
	}
	d, ok := r.holder.Deadline()
	switch {
	case ok && now < d:
		if d-now < sleep {
			sleep = d - now
		}
	case ok && !r.fenced:
		// The lease lapsed: fence now, within the budget.
		r.fenced = true
		if k, isKiller := r.cfg.Fencer.(Killer); isKiller && now-d > t.RenewInterval {
			r.cfg.Logger.Error("primary lease lapsed long ago: this process was not running; killing PostgreSQL", "epoch", st.Epoch, "lapsed_for", now-d)
			if err := k.Kill(fmt.Sprintf("the primary lease lapsed %s before this agent noticed (it was frozen or starved)", now-d)); err != nil {
				r.cfg.Logger.Error("killing PostgreSQL", "error", err)
			} else {
				break
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fctx, cancel := context.WithTimeout(ctx, t.FenceBudget)
			defer cancel()
			r.cfg.Logger.Error("primary lease lapsed: fencing PostgreSQL", "epoch", st.Epoch)
			if err := r.cfg.Fencer.Fence(fctx, "primary lease could not be renewed"); err != nil {
				r.cfg.Logger.Error("fencing failed", "error", err)
			}
		}()
	}
	if sleep < time.Millisecond {
		sleep = time.Millisecond
	}
	return sleep
}
