package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/go-metrics"

	"github.com/pgbattery/pgbattery/agent/controller"
	"github.com/pgbattery/pgbattery/agent/fsm"
)

// Reinit: an operator asked (PUT /v1/operator/reinit) that this node set its
// PostgreSQL data aside and clone it afresh from the primary, for a standby
// that is broken or has diverged in a way pg_rewind cannot mend. The request
// is in the replicated state until this node reports it done, so it survives
// a restart of the agent: an agent that restarts in the middle of the clone
// (or after the clone but before its report committed) clones again, which
// costs time but never data, since the previous copy is only set aside.

// reinitReportEvery paces the retries of the "done" report while the raft
// leader cannot be reached.
const reinitReportEvery = time.Second

// reinitProgress is the reconciler's memory of the request it carried out.
type reinitProgress struct {
	doneID     string // request re-cloned, report not yet seen applied
	from       string // the primary it cloned from
	lastReport time.Time
}

// reinitAction turns a pending reinit request for this node into a clone
// from the current primary. ok is false when there is nothing to do now:
// no request, already carried out, this node is (becoming) the primary, or
// no primary serves to clone from (the request waits for one).
func (r *reconciler) reinitAction(ctx context.Context, st *fsm.State) (controller.Action, bool) {
	req, ok := st.Reinit[r.self]
	if !ok {
		r.reinit = reinitProgress{}
		return controller.Action{}, false
	}
	if req.ID == r.reinit.doneID {
		r.reportReinit(ctx, req)
		return controller.Action{}, false
	}
	if st.Primary == r.self || !st.PrimaryReady() || (st.Pending != nil && st.Pending.Target == r.self) {
		return controller.Action{}, false
	}
	return controller.Action{
		Kind: controller.ActClone, Upstream: st.Primary, Epoch: st.Epoch,
		Reason: fmt.Sprintf("reinit %s requested by %s", req.ID, orUnknown(req.RequestedBy)),
	}, true
}

// reinitCloned records that the clone of the pending request succeeded and
// PostgreSQL started as a standby of st.Primary, and reports it.
func (r *reconciler) reinitCloned(ctx context.Context, st *fsm.State) {
	req, ok := st.Reinit[r.self]
	if !ok {
		return
	}
	r.reinit = reinitProgress{doneID: req.ID, from: st.Primary}
	metrics.IncrCounter([]string{"postgres", "reinits"}, 1)
	r.logger.Warn("reinit done: PostgreSQL re-cloned from the primary and started as its standby",
		"id", req.ID, "primary", st.Primary, "epoch", st.Epoch, "old_data", r.instance().DataDir()+".old")
	r.reportReinit(ctx, req)
}

// reportReinit clears the request in the cluster state; retried from the
// reconcile loop until it applies.
func (r *reconciler) reportReinit(ctx context.Context, req fsm.ReinitRequest) {
	if time.Since(r.reinit.lastReport) < reinitReportEvery {
		return
	}
	r.reinit.lastReport = time.Now()
	ctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	cmd := &fsm.Reinit{
		Node: r.self, ID: req.ID, Done: true, Outcome: fsm.ReinitDone, From: r.reinit.from,
		Detail: fmt.Sprintf("re-cloned from %s; the previous data was set aside in %s.old", r.reinit.from, r.instance().DataDir()),
	}
	if err := r.c.fwd.apply(ctx, cmd); err != nil {
		r.logger.Debug("reporting the reinit done", "id", req.ID, "error", err)
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "an operator"
	}
	return s
}
