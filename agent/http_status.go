package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/pgbattery/pgbattery/agent/api"
	"github.com/pgbattery/pgbattery/agent/controller"
	"github.com/pgbattery/pgbattery/agent/fsm"
	"github.com/pgbattery/pgbattery/gossip"
)

// statusProbeTimeout bounds the fresh look at every member's PostgreSQL
// that GET /v1/status takes; a node that does not answer in time is
// reported with its error instead of delaying the whole answer.
const statusProbeTimeout = 2 * time.Second

// handleStatus is GET /v1/status. Only the raft leader's controller knows
// what the controller is doing, so a follower forwards the request to the
// leader and answers from its own replica of the state only when the leader
// cannot be reached (from_leader=false then). ?local answers from this node
// without forwarding.
func (a *Agent) handleStatus(w http.ResponseWriter, r *http.Request) (any, error) {
	if a.cluster == nil {
		return nil, HTTPError{Code: http.StatusServiceUnavailable, Msg: "this agent runs no raft"}
	}
	_, local := r.URL.Query()["local"]
	if !local && !a.cluster.raft.IsLeader() {
		if st, err := a.statusFromLeader(r.Context()); err == nil {
			return st, nil
		} else {
			a.logger.Debug("status: asking the raft leader failed; answering locally", "error", err)
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), statusProbeTimeout+time.Second)
	defer cancel()
	return a.localStatus(ctx), nil
}

// statusFromLeader asks the leader's agent for its local status.
func (a *Agent) statusFromLeader(ctx context.Context) (*api.ClusterStatus, error) {
	addr, err := a.cluster.fwd.leaderAPI()
	if err != nil {
		return nil, err
	}
	var out api.ClusterStatus
	if err := a.cluster.fwd.getJSON(ctx, addr, "/v1/status?local", &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// getJSON is a short GET of another agent's API.
func (f *forwarder) getJSON(ctx context.Context, addr, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, forwardTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url(addr, path), nil)
	if err != nil {
		return err
	}
	f.auth(req)
	// Marks an agent's own call: with the token, the rate limit lets it by.
	req.Header.Set(forwardedHeader, f.c.a.config().NodeName)
	resp, err := f.client().Do(req)
	if err != nil {
		return fmt.Errorf("GET %s from %s: %w", path, addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxForwardReply))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s from %s: %s: %s", path, addr, resp.Status, errorMessage(body))
	}
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(out); err != nil {
		return fmt.Errorf("GET %s from %s: decoding the answer: %w", path, addr, err)
	}
	return nil
}

// localStatus builds the status from this node's replica of the state, its
// controller and fresh probes of every member.
func (a *Agent) localStatus(ctx context.Context) *api.ClusterStatus {
	c := a.cluster
	st := c.fsm.State()
	leaderAddr, leaderID := c.raft.Leader()
	out := &api.ClusterStatus{
		Node:         a.config().NodeName,
		FromLeader:   c.raft.IsLeader(),
		ClusterID:    st.ClusterID,
		Primary:      st.Primary,
		PrimaryReady: st.PrimaryReady(),
		Epoch:        st.Epoch,
		Timeline:     st.Timeline,
		Paused:       st.Paused,
		Sync: api.SyncState{
			Mode: st.Sync.Mode, Standbys: nonNil(st.Sync.Standbys), K: st.Sync.K,
			Voters: st.Sync.Voters, Quorum: st.Sync.Quorum,
		},
		Lease: api.LeaseState{
			Holder: st.Lease.Holder, Epoch: st.Lease.Epoch, Released: st.Lease.Released,
			ReleaseCause: st.Lease.ReleaseCause, RenewedLSN: lsnString(st.Lease.RenewedLSN),
		},
		Raft: api.RaftStatus{
			Leader: leaderID, LeaderAddress: leaderAddr, State: c.raft.State(),
			Term: c.raft.Term(), AppliedIndex: c.raft.AppliedIndex(),
		},
		Members: []api.MemberStatus{},
	}
	if st.SystemID != 0 {
		out.SystemID = strconv.FormatUint(st.SystemID, 10)
	}
	_, _, out.Writable = st.WritablePrimary()
	if p := st.Pending; p != nil {
		out.Pending = &api.Operation{Kind: p.Kind, Epoch: p.Epoch, From: p.From, Target: p.Target, Force: p.Force}
	}
	if out.FromLeader {
		cs := c.ctrl.Status()
		out.Controller = api.ControllerStatus{
			State: string(cs.State), Reason: cs.Reason, Term: cs.Term, Epoch: cs.Epoch,
			HoldDownLeftMs: cs.HoldDownLeft.Milliseconds(),
		}
	} else {
		out.Controller = api.ControllerStatus{State: "unknown", Reason: "the raft leader could not be asked; this answer is from a follower's replica of the state"}
	}
	if n := len(st.History); n > 0 {
		t := transitionToAPI(st.History[n-1])
		out.LastTransition = &t
		for i := n - 1; i >= 0; i-- {
			if st.History[i].Kind != fsm.KindBootstrap {
				t := transitionToAPI(st.History[i])
				out.LastFailover = &t
				break
			}
		}
	}
	out.Members = a.memberStatuses(ctx, st)
	return out
}

// memberStatuses probes every member in parallel and reports each one's
// answer or error.
func (a *Agent) memberStatuses(ctx context.Context, st *fsm.State) []api.MemberStatus {
	gossipOf := map[string]gossip.Member{}
	if a.gossip != nil {
		for _, m := range a.gossip.Members() {
			gossipOf[m.Name] = m
		}
	}
	names := st.MemberNames()
	rows := make([]api.MemberStatus, len(names))
	probes := make([]*controller.PGStatus, len(names))
	ctx, cancel := context.WithTimeout(ctx, statusProbeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for i, name := range names {
		m := st.Member(name)
		row := api.MemberStatus{
			Name:       name,
			Voter:      m.Voter,
			NoFailover: m.NoFailover,
			Sync:       slices.Contains(st.Sync.Standbys, name),
			Addrs:      m.Addrs,
		}
		switch {
		case m.NoPostgres:
			row.Role = gossip.RoleWitness
		case name == st.Primary:
			row.Role = gossip.RolePrimary
		default:
			row.Role = gossip.RoleReplica
		}
		if gm, ok := gossipOf[name]; ok {
			row.GossipStatus = string(gm.Status)
			row.Postgres = gm.Tags[gossip.TagPG]
		} else {
			row.GossipStatus = "unknown"
		}
		rows[i] = row
		if m.NoPostgres {
			continue
		}
		wg.Add(1)
		go func(i int, m *fsm.Member) {
			defer wg.Done()
			p, err := prober{a.cluster}.Probe(ctx, m)
			if err != nil {
				rows[i].ProbeError = err.Error()
				return
			}
			probes[i] = &p
		}(i, m)
	}
	wg.Wait()

	var primaryPos fsm.LSN
	for i, name := range names {
		if p := probes[i]; p != nil && name == st.Primary && p.Running && !p.InRecovery {
			primaryPos = p.Position()
		}
	}
	for i := range rows {
		p := probes[i]
		if p == nil {
			continue
		}
		row := &rows[i]
		row.Probed = true
		row.Running, row.Healthy, row.InRecovery, row.Writable = p.Running, p.Healthy, p.InRecovery, p.Writable
		row.Timeline = p.Timeline
		row.Upstream = p.Upstream
		if !p.Running {
			continue
		}
		row.LSN = lsnString(p.Position())
		if p.InRecovery {
			row.ReceiveLSN, row.ReplayLSN = lsnString(p.ReceiveLSN), lsnString(p.ReplayLSN)
		}
		if primaryPos != 0 {
			var lag uint64
			if primaryPos > p.Position() {
				lag = uint64(primaryPos - p.Position())
			}
			row.LagBytes = &lag
		}
	}
	return rows
}

// handleHistory is GET /v1/history: every recorded change of primary with
// its evidence, oldest first.
func (a *Agent) handleHistory(w http.ResponseWriter, r *http.Request) (any, error) {
	if a.cluster == nil {
		return nil, HTTPError{Code: http.StatusServiceUnavailable, Msg: "this agent runs no raft"}
	}
	st := a.cluster.fsm.State()
	out := make([]api.Transition, 0, len(st.History))
	for _, t := range st.History {
		out = append(out, transitionToAPI(t))
	}
	return out, nil
}

func transitionToAPI(t fsm.Transition) api.Transition {
	out := api.Transition{
		Epoch: t.Epoch, Kind: t.Kind, From: t.From, To: t.To, Reason: t.Reason,
		PromoteLSN: lsnString(t.PromoteLSN), MaybeLost: t.MaybeLost, DecidedBy: t.DecidedBy,
		DecidedAt: t.DecidedAt, Index: t.Index, Term: t.Term, WriteGapMS: t.WriteGapMS,
	}
	for _, c := range t.Candidates {
		out.Candidates = append(out.Candidates, api.Candidate{
			Node: c.Node, Reachable: c.Reachable, Healthy: c.Healthy, Timeline: c.Timeline,
			ReceiveLSN: lsnString(c.ReceiveLSN), ReplayLSN: lsnString(c.ReplayLSN), FlushLSN: lsnString(c.FlushLSN),
			Priority: c.Priority, Voter: c.Voter, Rejected: c.Rejected, Error: c.Error,
		})
	}
	return out
}

func lsnString(l fsm.LSN) string {
	if l == 0 {
		return ""
	}
	return l.String()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Health checks for load balancers (issue 7; the names Patroni users look
// for). Each answers 200 with a small JSON body when the node serves the
// role, 503 with the reason otherwise. They use only local knowledge (the
// node's replica of the state and its own PostgreSQL), so they answer even
// when the raft leader is unreachable.

type healthAnswer struct {
	Status   string `json:"status"`
	Role     string `json:"role"`
	Epoch    uint64 `json:"epoch,omitempty"`
	LagBytes *int64 `json:"lag_bytes,omitempty"`
	LagMs    *int64 `json:"lag_ms,omitempty"`
}

func unavailable(format string, args ...any) error {
	return HTTPError{Code: http.StatusServiceUnavailable, Msg: fmt.Sprintf(format, args...)}
}

// handleHealthPrimary: 200 only on the writable primary of the current
// epoch: the state names this node primary, its fence is recorded, its
// lease is not released, no switchover is draining it, and its PostgreSQL
// runs and accepts writes.
func (a *Agent) handleHealthPrimary(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.needPostgres(); err != nil {
		return nil, err
	}
	self := a.config().NodeName
	st := a.cluster.fsm.State()
	node, epoch, ok := st.WritablePrimary()
	if !ok || node != self {
		if st.Primary == self {
			return nil, unavailable("this node is the primary of epoch %d but not writable yet (fence, lease or switchover)", st.Epoch)
		}
		return nil, unavailable("this node is not the primary (the primary is %q)", st.Primary)
	}
	role, _ := a.cluster.rec.State()
	if ready, why := a.cluster.rec.Ready(); !ready || role != gossip.RolePrimary {
		if why == "" {
			why = "postgres runs as " + role
		}
		return nil, unavailable("%s", why)
	}
	return healthAnswer{Status: "ok", Role: gossip.RolePrimary, Epoch: epoch}, nil
}

// handleHealthReplica: 200 on a running standby that streams WAL. With
// max_lag (bytes, or a duration such as 10s), also only while the standby
// is at most that far behind. Byte lag is measured against the primary's
// position of its last lease renewal (in the replicated state, as Patroni
// uses the position in its DCS); time lag is the age of the last replayed
// commit while WAL is waiting to be replayed.
func (a *Agent) handleHealthReplica(w http.ResponseWriter, r *http.Request) (any, error) {
	maxBytes, maxDur, err := parseMaxLag(r.URL.Query().Get("max_lag"))
	if err != nil {
		return nil, err
	}
	if err := a.needPostgres(); err != nil {
		return nil, err
	}
	return a.replicaHealth(r.Context(), maxBytes, maxDur)
}

func (a *Agent) replicaHealth(ctx context.Context, maxBytes int64, maxDur time.Duration) (*healthAnswer, error) {
	role, _ := a.cluster.rec.State()
	if ready, why := a.cluster.rec.Ready(); !ready {
		return nil, unavailable("%s", why)
	}
	if role != gossip.RoleReplica {
		return nil, unavailable("this node is not a replica (it is %s)", role)
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	ps, err := a.cluster.rec.instance().Status(ctx)
	if err != nil {
		return nil, unavailable("asking postgres for its state: %v", err)
	}
	if ps.WALReceiver == nil || ps.WALReceiver.Status != "streaming" {
		return nil, unavailable("postgres is a standby that does not stream WAL")
	}
	out := &healthAnswer{Status: "ok", Role: gossip.RoleReplica, Epoch: a.cluster.fsm.State().Epoch}
	pos := max(ps.ReceiveLSN, ps.ReplayLSN)
	if ref := a.cluster.fsm.State().Lease.RenewedLSN; ref != 0 {
		lag := int64(0)
		if ref > pos {
			lag = int64(ref - pos)
		}
		out.LagBytes = &lag
	}
	var lagMs int64
	if ps.ReceiveLSN > ps.ReplayLSN && !ps.ReplayTimestamp.IsZero() {
		lagMs = time.Since(ps.ReplayTimestamp).Milliseconds()
	}
	out.LagMs = &lagMs
	if maxBytes >= 0 && out.LagBytes != nil && *out.LagBytes > maxBytes {
		return nil, unavailable("replica lags %d bytes behind the primary (max_lag %d)", *out.LagBytes, maxBytes)
	}
	if maxDur >= 0 && time.Duration(lagMs)*time.Millisecond > maxDur {
		return nil, unavailable("replica replays %dms behind (max_lag %s)", lagMs, maxDur)
	}
	return out, nil
}

// parseMaxLag reads ?max_lag=: bytes (a plain integer) or a Go duration.
// -1 means no bound of that kind.
func parseMaxLag(s string) (bytes int64, dur time.Duration, err error) {
	if s == "" {
		return -1, -1, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < 0 {
			return 0, 0, badRequest("max_lag must not be negative: %q", s)
		}
		return n, -1, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, 0, badRequest("max_lag must be a number of bytes or a duration such as 10s, not %q", s)
	}
	return -1, d, nil
}

// handleHealthReadOnly: 200 on the writable primary or a streaming replica:
// a node that can serve reads.
func (a *Agent) handleHealthReadOnly(w http.ResponseWriter, r *http.Request) (any, error) {
	maxBytes, maxDur, err := parseMaxLag(r.URL.Query().Get("max_lag"))
	if err != nil {
		return nil, err
	}
	if err := a.needPostgres(); err != nil {
		return nil, err
	}
	if out, err := a.handleHealthPrimary(w, r); err == nil {
		return out, nil
	}
	out, err := a.replicaHealth(r.Context(), maxBytes, maxDur)
	if err != nil {
		return nil, unavailable("neither the writable primary nor a healthy replica: %v", err)
	}
	return out, nil
}

// handleHealthSync: 200 on a streaming replica that is in the epoch's
// synchronous standby set.
func (a *Agent) handleHealthSync(w http.ResponseWriter, r *http.Request) (any, error) {
	if err := a.needPostgres(); err != nil {
		return nil, err
	}
	self := a.config().NodeName
	st := a.cluster.fsm.State()
	if !slices.Contains(st.Sync.Standbys, self) {
		return nil, unavailable("this node is not a synchronous standby (set: %v)", st.Sync.Standbys)
	}
	out, err := a.replicaHealth(r.Context(), -1, -1)
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (a *Agent) needPostgres() error {
	if a.cluster == nil || a.cluster.rec == nil {
		return unavailable("this agent runs no PostgreSQL")
	}
	return nil
}
