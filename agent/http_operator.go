package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/pgbattery/pgbattery/agent/api"
	"github.com/pgbattery/pgbattery/agent/consensus"
	"github.com/pgbattery/pgbattery/agent/fsm"
)

// forwardedHeader marks a request one agent forwarded to the raft leader;
// an agent that receives one and is not the leader (leadership moved in
// between) answers 503 rather than forwarding again.
const forwardedHeader = "X-Pgbattery-Forwarded"

// operatorTimeout bounds an operator request that commits through raft.
const operatorTimeout = 10 * time.Second

// handleRaftProgress is GET /v1/operator/raft/progress: this node's own
// raft progress, which list-peers gathers from every peer.
func (a *Agent) handleRaftProgress(w http.ResponseWriter, r *http.Request) (any, error) {
	if a.cluster == nil {
		return nil, unavailable("this agent runs no raft")
	}
	return a.cluster.raft.Progress(), nil
}

// handleRaftConfiguration is GET /v1/operator/raft/configuration: the raft
// configuration as `operator raft list-peers` shows it. Every peer's
// progress is asked from its agent in parallel; a peer that does not answer
// in time is listed with reported=false.
func (a *Agent) handleRaftConfiguration(w http.ResponseWriter, r *http.Request) (any, error) {
	if a.cluster == nil {
		return nil, unavailable("this agent runs no raft")
	}
	c := a.cluster
	peers, err := c.raft.Peers(nil)
	if err != nil {
		return nil, unavailable("reading the raft configuration: %v", err)
	}
	ctx, cancel := context.WithTimeout(r.Context(), forwardTimeout)
	defer cancel()
	var (
		mu      sync.Mutex
		reports = map[string]consensus.Progress{}
		wg      sync.WaitGroup
	)
	self := c.raft.ID()
	for _, p := range peers {
		if p.ID == self {
			continue
		}
		addr, err := c.fwd.apiAddr(p.ID)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func(id, addr string) {
			defer wg.Done()
			var prog consensus.Progress
			if err := c.fwd.getJSON(ctx, addr, "/v1/operator/raft/progress", &prog); err != nil {
				a.logger.Debug("list-peers: peer did not report", "peer", id, "error", err)
				return
			}
			if prog.ID != id {
				// Another agent answers at that address now: its report
				// says nothing about this peer.
				return
			}
			mu.Lock()
			reports[id] = prog
			mu.Unlock()
		}(p.ID, addr)
	}
	wg.Wait()
	peers, err = c.raft.Peers(reports)
	if err != nil {
		return nil, unavailable("reading the raft configuration: %v", err)
	}
	out := make([]api.RaftPeer, 0, len(peers))
	for _, p := range peers {
		out = append(out, api.RaftPeer{
			Node: p.Node, ID: p.ID, Address: p.Address, State: p.State, Voter: p.Voter,
			RaftProtocol: p.RaftProtocol, CommitIndex: p.CommitIndex, TrailsLeaderBy: p.TrailsLeaderBy,
			Reported: p.Reported,
		})
	}
	return out, nil
}

// raftPeerKnown reports whether id is in the raft configuration, and the
// configured IDs for the error message.
func (a *Agent) raftPeerKnown(id string) (bool, []string, error) {
	peers, err := a.cluster.raft.Peers(nil)
	if err != nil {
		return false, nil, unavailable("reading the raft configuration: %v", err)
	}
	ids := make([]string, 0, len(peers))
	found := false
	for _, p := range peers {
		ids = append(ids, p.ID)
		found = found || p.ID == id
	}
	return found, ids, nil
}

// handleRaftRemovePeer is DELETE /v1/operator/raft/peer?id=ID. Membership
// changes happen on the leader: a follower forwards the request.
func (a *Agent) handleRaftRemovePeer(w http.ResponseWriter, r *http.Request) (any, error) {
	id := r.URL.Query().Get("id")
	if id == "" {
		return nil, badRequest("missing peer ID: DELETE /v1/operator/raft/peer?id=ID")
	}
	if a.cluster == nil {
		return nil, unavailable("this agent runs no raft")
	}
	found, ids, err := a.raftPeerKnown(id)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, HTTPError{Code: http.StatusNotFound, Msg: fmt.Sprintf("no raft peer with ID %q (peers: %v)", id, ids)}
	}
	if !a.cluster.raft.IsLeader() {
		return a.forwardToLeader(r)
	}
	ctx, cancel := context.WithTimeout(r.Context(), operatorTimeout)
	defer cancel()
	if err := a.cluster.raft.RemovePeer(ctx, id); err != nil {
		return nil, raftError(err)
	}
	return nil, nil
}

// handleRaftTransferLeader is PUT /v1/operator/raft/transfer-leader[?id=ID]:
// the leader hands its office to id, or to the most up-to-date voter.
func (a *Agent) handleRaftTransferLeader(w http.ResponseWriter, r *http.Request) (any, error) {
	id := r.URL.Query().Get("id")
	if a.cluster == nil {
		return nil, unavailable("this agent runs no raft")
	}
	if id != "" {
		found, ids, err := a.raftPeerKnown(id)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, HTTPError{Code: http.StatusNotFound, Msg: fmt.Sprintf("no raft peer with ID %q (peers: %v)", id, ids)}
		}
	}
	if !a.cluster.raft.IsLeader() {
		return a.forwardToLeader(r)
	}
	self := a.cluster.raft.ID()
	if id == self {
		return nil, conflict("%s is already the raft leader", id)
	}
	ctx, cancel := context.WithTimeout(r.Context(), operatorTimeout)
	defer cancel()
	var err error
	if id == "" {
		err = a.cluster.raft.LeadershipTransfer(ctx)
	} else {
		err = a.cluster.raft.LeadershipTransferToServer(ctx, id, "")
	}
	if err != nil {
		return nil, raftError(err)
	}
	out := api.TransferLeaderResponse{From: self, To: id}
	// The new leader is known here once its first heartbeat arrived.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if _, leader := a.cluster.raft.Leader(); leader != "" && leader != self {
			out.To = leader
			break
		}
		if !sleepCtx(ctx, 20*time.Millisecond) {
			break
		}
	}
	return out, nil
}

// raftError maps a raft failure: a lost leadership is 503 (try again, the
// cluster has or will have another leader), a refused change 409.
func raftError(err error) error {
	if errors.Is(err, consensus.ErrNotLeader) || errors.Is(err, consensus.ErrShutdown) ||
		errors.Is(err, context.DeadlineExceeded) {
		return unavailable("%v", err)
	}
	return conflict("%v", err)
}

// forwardToLeader sends the request on to the raft leader's agent and
// relays its answer.
func (a *Agent) forwardToLeader(r *http.Request) (any, error) {
	if r.Header.Get(forwardedHeader) != "" {
		return nil, unavailable("not the raft leader (leadership moved while the request was forwarded); try again")
	}
	f := a.cluster.fwd
	addr, err := f.leaderAPI()
	if err != nil {
		return nil, unavailable("this node is not the raft leader and %v", err)
	}
	ctx, cancel := context.WithTimeout(r.Context(), operatorTimeout+5*time.Second)
	defer cancel()
	u := f.url(addr, r.URL.Path)
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, u, nil)
	if err != nil {
		return nil, err
	}
	f.auth(req)
	req.Header.Set(forwardedHeader, a.config().NodeName)
	// The forwarder's client has a short timeout fit for probes; a
	// membership change or leadership transfer may take longer.
	hc := *f.client()
	hc.Timeout = operatorTimeout + 5*time.Second
	resp, err := hc.Do(req)
	if err != nil {
		return nil, unavailable("forwarding to the raft leader at %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxForwardReply))
	if resp.StatusCode != http.StatusOK {
		return nil, HTTPError{Code: resp.StatusCode, Msg: errorMessage(body)}
	}
	if len(body) == 0 {
		return nil, nil
	}
	return jsonBytes(body), nil
}

// jsonBytes is a JSON answer relayed as is.
type jsonBytes []byte

func (j jsonBytes) MarshalJSON() ([]byte, error) { return j, nil }

// handleSwitchover is PUT /v1/operator/switchover[?to=NODE][&force=1][&wait=1].
func (a *Agent) handleSwitchover(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.operation(r, fsm.OpSwitchover)
}

// handleFailover is PUT /v1/operator/failover?to=NODE[&wait=1].
func (a *Agent) handleFailover(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.operation(r, fsm.OpFailover)
}

func (a *Agent) operation(r *http.Request, kind string) (any, error) {
	q := r.URL.Query()
	target := q.Get("to")
	force, err := boolParam(q.Get("force"), "force")
	if err != nil {
		return nil, err
	}
	wait, err := boolParam(q.Get("wait"), "wait")
	if err != nil {
		return nil, err
	}
	if kind == fsm.OpFailover {
		if target == "" {
			return nil, badRequest("a manual failover needs a target: PUT /v1/operator/failover?to=NODE")
		}
		if force {
			return nil, badRequest("force applies to a switchover only: a manual failover never checks catch-up")
		}
	}
	if a.cluster == nil {
		return nil, unavailable("this agent runs no raft")
	}
	st := a.cluster.fsm.State()
	if target != "" && st.Member(target) == nil {
		return nil, HTTPError{Code: http.StatusNotFound, Msg: fmt.Sprintf("no member named %q (members: %v)", target, st.MemberNames())}
	}
	ctx, cancel := context.WithTimeout(r.Context(), operatorTimeout)
	defer cancel()
	cmd, err := a.cluster.ctrl.PlanOperation(ctx, kind, target, force)
	if err != nil {
		return nil, conflict("%s refused: %v", kind, err)
	}
	if err := a.cluster.fwd.apply(ctx, cmd); err != nil {
		if errors.Is(err, errRejected) {
			return nil, conflict("%s refused: %v", kind, err)
		}
		return nil, unavailable("committing the %s request: %v", kind, err)
	}
	out := api.OperationResponse{Kind: kind, Epoch: cmd.Op.Epoch, From: st.Primary, Target: target}
	a.logger.Info("operator requested "+kind, "from", out.From, "target", target, "epoch", out.Epoch, "force", force)
	if !wait {
		return out, nil
	}
	out.Waited = true
	return a.waitOperation(r.Context(), out)
}

// waitOperation waits until a primary of a later epoch is ready, the
// request is cancelled, or api.SwitchoverWaitTimeout passed.
func (a *Agent) waitOperation(ctx context.Context, out api.OperationResponse) (any, error) {
	changes, stop := a.cluster.fsm.Subscribe()
	defer stop()
	timer := time.NewTimer(api.SwitchoverWaitTimeout)
	defer timer.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	seenPending := false
	for {
		st := a.cluster.fsm.State()
		if st.Epoch > out.Epoch && st.PrimaryReady() {
			out.Done, out.NewPrimary, out.NewEpoch = true, st.Primary, st.Epoch
			for i := len(st.History) - 1; i >= 0; i-- {
				if st.History[i].Epoch == st.Epoch {
					t := transitionToAPI(st.History[i])
					out.Transition = &t
					break
				}
			}
			return out, nil
		}
		if st.Epoch == out.Epoch {
			if st.Pending != nil && st.Pending.Epoch == out.Epoch {
				seenPending = true
			} else if seenPending {
				return nil, conflict("the %s was cancelled by the controller (see its log and GET /v1/status); the primary is still %s", out.Kind, st.Primary)
			}
		}
		select {
		case <-ctx.Done():
			return nil, unavailable("waiting for the %s: %v", out.Kind, ctx.Err())
		case <-timer.C:
			return nil, unavailable("the %s was requested but no new primary was ready within %s; see GET /v1/status", out.Kind, api.SwitchoverWaitTimeout)
		case <-changes:
		case <-tick.C:
		}
	}
}

// handlePause and handleResume are PUT /v1/operator/pause and resume.
func (a *Agent) handlePause(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.setPaused(r, true)
}

func (a *Agent) handleResume(w http.ResponseWriter, r *http.Request) (any, error) {
	return a.setPaused(r, false)
}

func (a *Agent) setPaused(r *http.Request, paused bool) (any, error) {
	if a.cluster == nil {
		return nil, unavailable("this agent runs no raft")
	}
	ctx, cancel := context.WithTimeout(r.Context(), operatorTimeout)
	defer cancel()
	if err := a.cluster.fwd.apply(ctx, &fsm.SetPaused{Paused: paused}); err != nil {
		if errors.Is(err, errRejected) {
			return nil, conflict("%v", err)
		}
		return nil, unavailable("committing the change: %v", err)
	}
	a.logger.Info("automatic failover", "paused", paused)
	return api.PausedResponse{Paused: paused}, nil
}

// boolParam reads a flag-like query parameter: absent, 1/0, true/false.
func boolParam(v, name string) (bool, error) {
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, badRequest("query parameter %s must be 1, 0, true or false, not %q", name, v)
	}
	return b, nil
}
