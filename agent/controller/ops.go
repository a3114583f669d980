package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/pgbattery/pgbattery/agent/fsm"
)

// catchUpPoll is how often a switchover asks whether the target has
// received the old primary's final WAL position.
const catchUpPoll = 20 * time.Millisecond

// operation executes a pending switchover or manual failover.
//
// Both start the same way: the primary's agent sees the pending operation
// (Desired returns ActStepDown), fences its PostgreSQL and releases its
// lease with its final WAL position. If the primary is dead, its lease
// simply runs out (hold-down). Then:
//   - switchover: the target (or the best candidate) is promoted once it
//     holds the final WAL position; if none does within SwitchoverTimeout
//     the old primary is reinstated (new epoch, no data lost);
//   - manual failover: the named target is promoted whatever its WAL
//     position; the history records how much may have been lost.
func (c *Controller) operation(ctx context.Context, st *fsm.State, now time.Duration) time.Duration {
	op := st.Pending
	if c.opIndex != op.Index {
		c.opIndex, c.opSeenAt, c.opEndedSeen = op.Index, now, false
	}
	cancelKey := fmt.Sprintf("cancel/%d", op.Index)
	ended, left := c.leaseEnded(ctx, st, now)
	if !ended {
		waited := now - c.opSeenAt
		if waited > c.cfg.SwitchoverTimeout {
			c.propose(cancelKey, &fsm.CancelOp{Epoch: st.Epoch, Reason: fmt.Sprintf("primary %s did not step down within %s", st.Primary, c.cfg.SwitchoverTimeout)}, now)
			return c.cfg.RetryInterval
		}
		c.setStatus(now, StatusOperation, fmt.Sprintf("%s: waiting for primary %s to step down", op.Kind, st.Primary), st.Epoch, left)
		return min(left+time.Millisecond, c.cfg.SwitchoverTimeout-waited+time.Millisecond)
	}
	if !c.opEndedSeen {
		c.opEndedSeen, c.opEndedAt = true, now
	}
	waited := now - c.opEndedAt
	probes := c.probeAll(ctx, st, postgresMembers(st, st.Primary))
	switch op.Kind {
	case fsm.OpSwitchover:
		if !st.Lease.Released {
			// The primary died rather than stepping down: this is a
			// failover now, with the ordinary rules.
			c.propose(cancelKey, &fsm.CancelOp{Epoch: st.Epoch, Reason: "primary's lease ran out during the switchover; failing over instead"}, now)
			return c.cfg.RetryInterval
		}
		ch := c.chooseCandidate(st, probes, st.Lease.FinalLSN, op.Target)
		if ch.Node != "" {
			cmd := &fsm.SetPrimary{
				Node: ch.Node, Epoch: st.Epoch + 1, ExpectLeaseVersion: st.Lease.Version,
				Kind: fsm.KindSwitchover, Reason: fmt.Sprintf("switchover requested at index %d; %s holds the old primary's final WAL position %s", op.Index, ch.Node, st.Lease.FinalLSN),
				Candidates: ch.Evidence, PromoteLSN: ch.Position,
				Sync: c.initialSync(st, ch.Node, probes, ch.Position), DecidedBy: c.cfg.Node,
			}
			if c.propose(fmt.Sprintf("primary/%d", cmd.Epoch), cmd, now) {
				c.log.Info("switchover: promoting", "node", ch.Node, "epoch", cmd.Epoch)
			}
			c.setStatus(now, StatusOperation, "switchover: proposed "+ch.Node, st.Epoch, 0)
			return c.cfg.RetryInterval
		}
		if waited < c.cfg.SwitchoverTimeout {
			c.setStatus(now, StatusOperation, "switchover: waiting for a target to catch up: "+ch.Refused, st.Epoch, 0)
			// Writes are paused until the target holds the final
			// position, usually a few milliseconds of streaming away:
			// look again soon.
			return min(catchUpPoll, c.cfg.SwitchoverTimeout-waited+time.Millisecond)
		}
		return c.reinstate(ctx, st, now, "switchover could not finish: "+ch.Refused)
	case fsm.OpFailover:
		var tp *probeResult
		var best fsm.LSN
		for i := range probes {
			p := &probes[i]
			if p.err == nil && p.st.Running {
				best = max(best, p.st.Position())
			}
			if p.member.Name == op.Target {
				tp = p
			}
		}
		best = max(best, st.Lease.FinalLSN)
		if tp != nil && tp.err == nil && tp.st.Running {
			var lost uint64
			if best > tp.st.Position() {
				lost = uint64(best - tp.st.Position())
			}
			evidence := make([]fsm.Candidate, 0, len(probes))
			for i := range probes {
				ev := evidenceOf(&probes[i], slices.Contains(st.Sync.Voters, probes[i].member.Name))
				if ev.Node != op.Target {
					ev.Rejected = "not the operator's target"
				}
				evidence = append(evidence, ev)
			}
			cmd := &fsm.SetPrimary{
				Node: op.Target, Epoch: st.Epoch + 1, ExpectLeaseVersion: st.Lease.Version,
				Kind: fsm.KindManual, Reason: fmt.Sprintf("manual failover requested at index %d (%s)", op.Index, leaseEndReason(st)),
				Candidates: evidence, PromoteLSN: tp.st.Position(), MaybeLost: lost,
				Sync: c.initialSync(st, op.Target, probes, tp.st.Position()), DecidedBy: c.cfg.Node,
			}
			if c.propose(fmt.Sprintf("primary/%d", cmd.Epoch), cmd, now) {
				c.log.Warn("manual failover: promoting", "node", op.Target, "epoch", cmd.Epoch, "bytes_maybe_lost", lost)
			}
			return c.cfg.RetryInterval
		}
		if waited < c.cfg.SwitchoverTimeout {
			c.setStatus(now, StatusOperation, "manual failover: target "+op.Target+" is not running", st.Epoch, 0)
			return c.cfg.RetryInterval / 4
		}
		c.propose(cancelKey, &fsm.CancelOp{Epoch: st.Epoch, Reason: "manual failover target " + op.Target + " did not become available"}, now)
		return c.cfg.RetryInterval
	}
	c.propose(cancelKey, &fsm.CancelOp{Epoch: st.Epoch, Reason: "unknown operation " + op.Kind}, now)
	return c.cfg.RetryInterval
}

// reinstate gives the office back to the primary that stepped down for a
// switchover that could not finish: it fenced with the most WAL, so nothing
// is lost. If it is gone too, the operation is cancelled and the ordinary
// failover rules apply.
func (c *Controller) reinstate(ctx context.Context, st *fsm.State, now time.Duration, why string) time.Duration {
	old := st.Member(st.Primary)
	p, err := c.probe(ctx, old)
	if err != nil || !p.Running {
		c.propose(fmt.Sprintf("cancel/%d", st.Pending.Index), &fsm.CancelOp{Epoch: st.Epoch, Reason: why + "; old primary unavailable too"}, now)
		return c.cfg.RetryInterval
	}
	res := probeResult{member: old, st: p}
	others := c.probeAll(ctx, st, postgresMembers(st, st.Primary))
	cmd := &fsm.SetPrimary{
		Node: st.Primary, Epoch: st.Epoch + 1, ExpectLeaseVersion: st.Lease.Version,
		Kind: fsm.KindReinstate, Reason: why, Candidates: []fsm.Candidate{evidenceOf(&res, false)},
		PromoteLSN: p.Position(), Sync: c.initialSync(st, st.Primary, others, p.Position()), DecidedBy: c.cfg.Node,
	}
	if c.propose(fmt.Sprintf("primary/%d", cmd.Epoch), cmd, now) {
		c.log.Warn("switchover abandoned: reinstating old primary", "node", st.Primary, "reason", why)
	}
	return c.cfg.RetryInterval
}

// PlanOperation checks a requested switchover (kind fsm.OpSwitchover,
// target may be empty) or manual failover (fsm.OpFailover, target
// required) against fresh probes and returns the command to propose. It can
// run on any agent (the HTTP API); the leader's controller executes it.
// force skips the catch-up and nofailover checks of a switchover.
func (c *Controller) PlanOperation(ctx context.Context, kind, target string, force bool) (*fsm.RequestOp, error) {
	st := c.d.State.State()
	if st.Epoch == 0 || st.Primary == "" {
		return nil, errors.New("the cluster has no primary yet")
	}
	if st.Pending != nil {
		return nil, fmt.Errorf("a %s to %q is already pending", st.Pending.Kind, st.Pending.Target)
	}
	op := fsm.Operation{Kind: kind, Epoch: st.Epoch, Target: target, Force: force}
	switch kind {
	case fsm.OpSwitchover:
		if target == "" {
			return &fsm.RequestOp{Op: op}, nil
		}
		m := st.Member(target)
		if m == nil {
			return nil, fmt.Errorf("%q is not a member", target)
		}
		if target == st.Primary {
			return nil, fmt.Errorf("%q is already the primary", target)
		}
		if !m.Promotable() && !force {
			return nil, fmt.Errorf("%q is tagged nofailover or runs no PostgreSQL", target)
		}
		p, err := c.probe(ctx, m)
		if err != nil {
			return nil, fmt.Errorf("asking %s for its state: %w", target, err)
		}
		if !p.Running || !p.Healthy || !p.InRecovery {
			return nil, fmt.Errorf("%s is not a healthy streaming standby", target)
		}
		if st.Sync.Mode != fsm.ModeAsync && !slices.Contains(st.Sync.Voters, target) && !force {
			return nil, fmt.Errorf("%s is not in the synchronous standby set %v", target, st.Sync.Voters)
		}
		if !force {
			pp, err := c.probe(ctx, st.Member(st.Primary))
			if err == nil && pp.Position() > p.Position() && uint64(pp.Position()-p.Position()) > c.cfg.MaxLagOnFailover {
				return nil, fmt.Errorf("%s lags %d bytes behind the primary; wait for it to catch up or use -force", target, uint64(pp.Position()-p.Position()))
			}
		}
	case fsm.OpFailover:
		if target == "" {
			return nil, errors.New("a manual failover needs a target (-to NODE)")
		}
		m := st.Member(target)
		if m == nil || m.NoPostgres {
			return nil, fmt.Errorf("%q is not a member running PostgreSQL", target)
		}
		if target == st.Primary {
			return nil, fmt.Errorf("%q is already the primary", target)
		}
	default:
		return nil, fmt.Errorf("unknown operation %q", kind)
	}
	return &fsm.RequestOp{Op: op}, nil
}
