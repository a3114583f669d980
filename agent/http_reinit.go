package agent

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/pgbattery/pgbattery/agent/api"
	"github.com/pgbattery/pgbattery/agent/fsm"
)

// maxReinitReason bounds the free-text reason stored with a request.
const maxReinitReason = 200

// handleReinitRoute serves /v1/operator/reinit: GET reads, PUT requests.
func (a *Agent) handleReinitRoute(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.Method == http.MethodGet {
		return a.handleReinitStatus(w, r)
	}
	return a.handleReinit(w, r)
}

// handleReinit is PUT /v1/operator/reinit?node=NODE[&force=1][&reason=TEXT]:
// record that NODE must set its PostgreSQL data aside and clone it afresh
// from the primary. The request lives in the cluster state, so the node's
// agent carries it out even if it restarts before it sees it; the node
// clears it once it has re-cloned and started as a standby.
func (a *Agent) handleReinit(w http.ResponseWriter, r *http.Request) (any, error) {
	q := r.URL.Query()
	node := q.Get("node")
	if node == "" {
		return nil, badRequest("missing node: PUT /v1/operator/reinit?node=NODE")
	}
	force, err := boolParam(q.Get("force"), "force")
	if err != nil {
		return nil, err
	}
	reason := strings.TrimSpace(q.Get("reason"))
	if len(reason) > maxReinitReason || strings.ContainsAny(reason, "\r\n\x00") {
		return nil, badRequest("reason must be one line of at most %d bytes", maxReinitReason)
	}
	if a.cluster == nil {
		return nil, unavailable("this agent runs no raft")
	}
	st := a.cluster.fsm.State()
	m := st.Member(node)
	switch {
	case m == nil:
		return nil, HTTPError{Code: http.StatusNotFound, Msg: fmt.Sprintf("no member named %q (members: %v)", node, st.MemberNames())}
	case m.NoPostgres:
		return nil, conflict("%s is a witness: it has no PostgreSQL data to re-initialize", node)
	case node == st.Primary:
		return nil, conflict("%s is the primary of epoch %d: its data is the one the others clone; switch over first, then reinit it as a standby", node, st.Epoch)
	case !st.PrimaryReady():
		return nil, conflict("no primary serves at epoch %d to clone from; try again once `pgbattery status` shows one", st.Epoch)
	}
	if p := st.Pending; p != nil && p.Epoch == st.Epoch && p.Target == node {
		return nil, conflict("a %s to %s is pending; reinit it once that has finished", p.Kind, node)
	}
	if req, ok := st.Reinit[node]; ok {
		return nil, conflict("a reinit of %s is already pending (request %s)", node, req.ID)
	}
	if err := reinitKeepsWrites(st, node); err != nil && !force {
		return nil, conflict("%v (use force=1 to re-initialize it anyway)", err)
	}
	id, err := reinitID()
	if err != nil {
		return nil, err
	}
	cmd := &fsm.Reinit{Node: node, ID: id, RequestedBy: a.config().NodeName, Reason: reason}
	ctx, cancel := context.WithTimeout(r.Context(), operatorTimeout)
	defer cancel()
	if err := a.cluster.fwd.apply(ctx, cmd); err != nil {
		if errors.Is(err, errRejected) {
			return nil, conflict("reinit refused: %v", err)
		}
		return nil, unavailable("committing the reinit request: %v", err)
	}
	a.logger.Info("operator requested a reinit", "node", node, "id", id, "primary", st.Primary, "force", force, "reason", reason)
	return api.ReinitResponse{Node: node, ID: id, From: st.Primary, Epoch: st.Epoch}, nil
}

// reinitKeepsWrites says why taking node's PostgreSQL away for a re-clone
// would block commits: in a synchronous mode, the standbys left in the set
// must still be able to acknowledge ANY k.
func reinitKeepsWrites(st *fsm.State, node string) error {
	s := st.Sync
	if s.Mode == fsm.ModeAsync || !slices.Contains(s.Standbys, node) {
		return nil
	}
	if left := len(s.Standbys) - 1; left < s.K {
		return fmt.Errorf("%s is one of the synchronous standbys the primary needs (ANY %d of %v): commits would block until it has re-cloned", node, s.K, s.Standbys)
	}
	return nil
}

func reinitID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("choosing a request id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// handleReinitStatus is GET /v1/operator/reinit: the pending requests and
// the recently finished ones.
func (a *Agent) handleReinitStatus(w http.ResponseWriter, r *http.Request) (any, error) {
	if a.cluster == nil {
		return nil, unavailable("this agent runs no raft")
	}
	st := a.cluster.fsm.State()
	out := api.ReinitStatus{Pending: []api.Reinit{}, Recent: []api.Reinit{}}
	for _, req := range st.Reinit {
		out.Pending = append(out.Pending, reinitToAPI(req))
	}
	sort.Slice(out.Pending, func(i, j int) bool { return out.Pending[i].Index < out.Pending[j].Index })
	for _, rec := range st.ReinitLog {
		x := reinitToAPI(rec.ReinitRequest)
		x.Outcome, x.Detail, x.From, x.DoneIndex = rec.Outcome, rec.Detail, rec.From, rec.DoneIndex
		out.Recent = append(out.Recent, x)
	}
	return out, nil
}

func reinitToAPI(req fsm.ReinitRequest) api.Reinit {
	return api.Reinit{Node: req.Node, ID: req.ID, RequestedBy: req.RequestedBy, Reason: req.Reason, Index: req.Index, Epoch: req.Epoch}
}
