package controller

import (
	"context"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/pgbattery/pgbattery/agent/fsm"
)

// maintainSync keeps the synchronous standby set right while the primary
// holds its lease. Changes go in two steps so that, at every moment, any
// Quorum of Voters includes a standby holding every acknowledged commit:
//
//  1. widen: Standbys/K become the new configuration and Voters the union
//     of old and new, with a Quorum that is safe for commits acknowledged
//     under either (PostgreSQL applies the new configuration only after
//     this is committed, because it reads it from the FSM);
//  2. narrow: once the primary reports the new configuration in effect, and
//     K of the new standbys have flushed past the primary's position at that
//     moment (so every commit acknowledged before is on K of them), Voters
//     becomes the new standby set.
func (c *Controller) maintainSync(ctx context.Context, st *fsm.State, now time.Duration) time.Duration {
	if c.syncChecked && now-c.lastSyncCheck < c.cfg.SyncInterval {
		return c.cfg.SyncInterval - (now - c.lastSyncCheck)
	}
	c.lastSyncCheck, c.syncChecked = now, true
	names := postgresMembers(st, "")
	probes := c.probeAll(ctx, st, names)
	var primary *probeResult
	for i := range probes {
		if probes[i].member.Name == st.Primary {
			primary = &probes[i]
		}
	}
	if primary == nil || primary.err != nil || !primary.st.Running || primary.st.InRecovery {
		return c.cfg.SyncInterval
	}
	c.lastPrimaryLSN = primary.st.Position()
	cur := st.Sync
	key := func(v uint64) string {
		return "sync/" + strconv.FormatUint(st.Epoch, 10) + "/" + strconv.FormatUint(v, 10)
	}

	if c.cfg.Mode == fsm.ModeAsync {
		if cur.Mode != fsm.ModeAsync {
			c.propose(key(cur.Version), &fsm.SetSync{Epoch: st.Epoch, ExpectVersion: cur.Version,
				Sync: fsm.SyncState{Mode: fsm.ModeAsync, FloorLSN: cur.FloorLSN, UpdatedBy: c.cfg.Node}}, now)
		}
		return c.cfg.SyncInterval
	}
	if cur.Mode == fsm.ModeAsync {
		// Leaving async: nothing acknowledged so far is guaranteed anywhere
		// (that is what async means); start from the current set.
		target, ok := c.targetSync(st, primary, probes)
		if !ok {
			return c.cfg.SyncInterval
		}
		c.propose(key(cur.Version), &fsm.SetSync{Epoch: st.Epoch, ExpectVersion: cur.Version, Sync: fsm.SyncState{
			Mode: c.cfg.Mode, Standbys: target.Standbys, K: target.K, Voters: target.Standbys,
			Quorum: len(target.Standbys) - target.K + 1, FloorLSN: primary.st.Position(), UpdatedBy: c.cfg.Node,
		}}, now)
		return c.cfg.SyncInterval
	}

	target, ok := c.targetSync(st, primary, probes)
	if !cur.Steady() && (!ok || target.Equal(SyncConfig{Standbys: cur.Standbys, K: cur.K})) {
		applied := primary.st.SyncApplied
		if applied == nil || !applied.Equal(SyncConfig{Standbys: cur.Standbys, K: cur.K}) {
			return c.cfg.SyncInterval // the primary's agent has not applied it yet
		}
		if c.confirmVersion != cur.Version {
			c.confirmVersion, c.confirmLSN = cur.Version, primary.st.Position()
		}
		caught := 0
		for _, s := range cur.Standbys {
			if lsn, ok := primary.st.StandbyFlush[s]; ok && lsn >= c.confirmLSN {
				caught++
			}
		}
		if caught >= cur.K {
			ns := cur
			ns.Voters = slices.Clone(cur.Standbys)
			ns.Quorum = len(cur.Standbys) - cur.K + 1
			ns.UpdatedBy = c.cfg.Node
			c.propose(key(cur.Version), &fsm.SetSync{Epoch: st.Epoch, ExpectVersion: cur.Version, Sync: ns}, now)
		}
		return c.cfg.SyncInterval
	}
	// A change in progress whose target no longer fits (a standby of the
	// new set stopped streaming before it caught up, another one started)
	// is replaced by a new widening step rather than waited for: it could
	// never complete, and every commit would wait on a standby that does
	// not stream (TestChaos_FlappingPartitions: three minutes without an
	// acknowledged write). Widening from it is as safe as from a steady
	// set: the voters stay the union of every set since the last steady
	// one, and the guarantee does not grow.
	if !ok || (target.Equal(SyncConfig{Standbys: cur.Standbys, K: cur.K}) && cur.Mode == c.cfg.Mode) {
		return c.cfg.SyncInterval
	}
	voters := union(cur.Voters, target.Standbys)
	ns := fsm.SyncState{
		Mode: c.cfg.Mode, Standbys: target.Standbys, K: target.K, Voters: voters,
		Quorum:   len(voters) - min(cur.Guarantee(), target.K) + 1,
		FloorLSN: cur.FloorLSN, UpdatedBy: c.cfg.Node,
	}
	if c.propose(key(cur.Version), &fsm.SetSync{Epoch: st.Epoch, ExpectVersion: cur.Version, Sync: ns}, now) {
		c.log.Info("changing synchronous standby set", "from", cur.Standbys, "from_k", cur.K, "to", target.Standbys, "to_k", target.K)
	}
	return c.cfg.SyncInterval
}

// targetSync is the synchronous configuration the cluster should have now.
// ok is false when there is no sensible change (never drop to no standbys:
// then writes wait, as quorum and strict modes promise).
func (c *Controller) targetSync(st *fsm.State, primary *probeResult, probes []probeResult) (SyncConfig, bool) {
	var set []string
	for i := range probes {
		p := &probes[i]
		m := p.member
		if m.Name == st.Primary || !m.Promotable() {
			continue
		}
		if c.cfg.Mode == fsm.ModeStrict {
			set = append(set, m.Name)
			continue
		}
		_, streaming := primary.st.StandbyFlush[m.Name]
		if p.err == nil && p.st.Running && p.st.Healthy && streaming {
			set = append(set, m.Name)
		}
	}
	if len(set) == 0 {
		return SyncConfig{}, false
	}
	sort.Strings(set)
	return SyncConfig{Standbys: set, K: c.syncK(len(set))}, true
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	sort.Strings(out)
	return out
}
