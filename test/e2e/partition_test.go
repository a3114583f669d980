package e2e

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// defaultLease is the agents' default failover lease (issue 4 defaults);
// the tests run with the defaults.
const defaultLease = 1200 * time.Millisecond

// fenceProbe writes to one node's PostgreSQL directly, as the agent's role
// and with synchronous_commit = local (any client may set it), so that a
// write succeeds exactly while that PostgreSQL accepts writes: it measures
// fencing, not synchronous replication.
type fenceProbe struct {
	mu        sync.Mutex
	lastOK    time.Time // invoke time of the last acknowledged write
	okAfter   []time.Time
	after     time.Time
	cancel    context.CancelFunc
	done      chan struct{}
	attempted int
}

func startFenceProbe(t *testing.T, p *agentProc) *fenceProbe {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fenceProbe{cancel: cancel, done: make(chan struct{})}
	var err error
	waitFor(t, 30*time.Second, "the fence probe's table on "+p.name, func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		err = execOn(cctx, t, p, "CREATE TABLE IF NOT EXISTS fence_probe (at timestamptz)")
		return err == nil
	})
	dsn := agentDSN(t, p)
	go func() {
		defer close(f.done)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		for ctx.Err() == nil {
			invoke := time.Now()
			if conn == nil || conn.IsClosed() {
				cctx, ccancel := context.WithTimeout(ctx, time.Second)
				conn, _ = pgx.Connect(cctx, dsn)
				ccancel()
			}
			if conn != nil {
				octx, ocancel := context.WithTimeout(ctx, time.Second)
				_, err := conn.Exec(octx, "SET synchronous_commit TO local; INSERT INTO fence_probe VALUES (now())")
				ocancel()
				f.mu.Lock()
				f.attempted++
				if err == nil {
					f.lastOK = invoke
					if !f.after.IsZero() && invoke.After(f.after) {
						f.okAfter = append(f.okAfter, invoke)
					}
				}
				f.mu.Unlock()
				if err != nil {
					conn.Close(context.Background())
					conn = nil
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(f.stop)
	return f
}

// forbidAfter records, from now on, every write invoked after at that
// succeeds.
func (f *fenceProbe) forbidAfter(at time.Time) {
	f.mu.Lock()
	f.after = at
	f.mu.Unlock()
}

func (f *fenceProbe) stop() {
	f.cancel()
	<-f.done
}

// Partition the primary from the two other nodes: it fences itself (no write
// invoked after its lease has certainly ended succeeds on it, even with
// synchronous_commit = local), the majority promotes, no acknowledged append
// is lost; heal: the old primary rejoins as a standby on the new timeline.
func TestPartitionPrimary(t *testing.T) {
	c := startFaultCluster(t, 3, true)
	old := c.settle(t)
	before, _ := clusterStatus(old)
	run := startAppend(t, c, "acked_partition")
	probe := startFenceProbe(t, old)
	time.Sleep(2 * time.Second)
	probe.mu.Lock()
	wroteBefore := !probe.lastOK.IsZero()
	probe.mu.Unlock()
	if !wroteBefore {
		t.Fatalf("the fence probe never wrote to %s before the partition", old.name)
	}

	faultAt := run.cfg.Clock.Now()
	partitioned := time.Now()
	heal := c.partition(t, old)
	// Its last renewal started before the partition, so the lease has
	// certainly ended one lease later; allow the probe's scheduling.
	probe.forbidAfter(partitioned.Add(defaultLease + 300*time.Millisecond))

	newPrimary := c.waitNewPrimary(t, old, 60*time.Second)
	promoted := time.Since(partitioned)
	var st statusJSON
	waitFor(t, 30*time.Second, "the majority's status to show the new primary", func() bool {
		var ok bool
		st, ok = clusterStatus(newPrimary)
		return ok && st.Primary == newPrimary.name
	})
	if st.Epoch <= before.Epoch {
		t.Errorf("epoch %d after the partition's failover, was %d", st.Epoch, before.Epoch)
	}
	// Keep probing the isolated node for a while after the promotion.
	time.Sleep(3 * time.Second)
	probe.stop()
	probe.mu.Lock()
	lastOK, okAfter := probe.lastOK, probe.okAfter
	probe.mu.Unlock()
	t.Logf("partitioned %s: last write accepted there %s after the partition; %s promoted after %s",
		old.name, lastOK.Sub(partitioned), newPrimary.name, promoted)
	if len(okAfter) > 0 {
		t.Errorf("the partitioned old primary %s accepted %d writes after its lease had ended (first invoked %s after the partition)",
			old.name, len(okAfter), okAfter[0].Sub(partitioned))
	}
	if !strings.Contains(old.logs(), "fenc") {
		t.Errorf("the partitioned primary's log says nothing about fencing")
	}

	c.waitWritable(t, 60*time.Second)
	heal()
	waitFor(t, 3*time.Minute, "the old primary to rejoin as a replica after the heal", func() bool { return role(old) == "replica" })
	run.finish(t, faultAt)
	// The cluster may move again while it settles after the heal (raft
	// elections); judge the end state once it is steady.
	primary := c.settle(t)
	if primary == old {
		t.Logf("note: after the heal the cluster chose %s as primary again", old.name)
	}
	checkRejoined(t, c, primary)
	for _, p := range c.nodes {
		run.checkAcksOn(t, p)
	}
}

// checkRejoined checks that every node other than primary streams on
// primary's timeline.
func checkRejoined(t *testing.T, c *faultCluster, primary *agentProc) {
	t.Helper()
	for _, p := range c.others(primary) {
		var want, got int64
		waitFor(t, 60*time.Second, p.name+" to stream on the primary's timeline", func() bool {
			var err error
			if want, err = timelineOf(t, primary); err != nil {
				return false
			}
			got, _ = timelineOf(t, p)
			return got == want
		})
		t.Logf("%s streams from %s on timeline %d", p.name, primary.name, got)
	}
}
