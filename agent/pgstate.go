package agent

import (
	"context"
	"time"

	"github.com/pgbattery/pgbattery/gossip"
)

// PostgreSQL states the agent reports (gossip tag "pg", readiness).
const (
	pgStateStarting = gossip.PGStarting
	pgStateRunning  = gossip.PGRunning
	pgStateStopped  = gossip.PGStopped
	pgStateCrashed  = gossip.PGCrashed
)

// stopTimeout bounds a fast shutdown of PostgreSQL before pgctl escalates.
const stopTimeout = 30 * time.Second

func boolGauge(b bool) float32 {
	if b {
		return 1
	}
	return 0
}

// sleepCtx waits d or until ctx ends; it reports whether the full wait ran.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
