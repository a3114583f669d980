package agent

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/pgbattery/pgbattery/agent/api"
	"github.com/pgbattery/pgbattery/agent/version"
)

// routes is the API's handler table, in the spirit of Consul's
// http_register.go: one line per endpoint.
func (a *Agent) routes() []route {
	return []route{
		{method: "GET", path: "/v1/agent/self", fn: a.handleSelf},
		{method: "GET", path: "/v1/agent/members", fn: a.handleMembers},
		{method: "PUT,POST", path: "/v1/agent/join", write: true, fn: a.handleJoin},
		{method: "PUT,POST", path: "/v1/agent/leave", write: true, fn: a.handleLeave},
		{method: "PUT,POST", path: "/v1/agent/force-leave/", write: true, fn: a.handleForceLeave},
		{method: "GET", path: "/v1/agent/metrics", fn: a.telemetry.handleMetrics},
		{method: "GET,PUT", path: "/v1/agent/debug/clock-jump", write: true, fn: a.handleClockJump},
		{method: "GET", path: "/v1/health/liveness", fn: a.handleLiveness},
		{method: "PUT", path: "/v1/internal/apply", write: true, fn: a.handleInternalApply},
		{method: "GET", path: "/v1/internal/pg-status", fn: a.handleInternalPGStatus},
		{method: "GET", path: "/v1/internal/doctor", fn: a.handleDoctorReport},
		{method: "GET", path: "/v1/agent/doctor", fn: a.handleDoctor},
		{method: "GET", path: "/v1/health/readiness", fn: a.handleReadiness},
		{method: "GET", path: "/v1/health/primary", fn: a.handleHealthPrimary},
		{method: "GET", path: "/v1/health/replica", fn: a.handleHealthReplica},
		{method: "GET", path: "/v1/health/read-only", fn: a.handleHealthReadOnly},
		{method: "GET", path: "/v1/health/sync", fn: a.handleHealthSync},
		{method: "GET", path: "/v1/status", fn: a.handleStatus},
		{method: "GET", path: "/v1/history", fn: a.handleHistory},
		{method: "GET", path: "/v1/operator/raft/configuration", fn: a.handleRaftConfiguration},
		{method: "GET", path: "/v1/operator/raft/progress", fn: a.handleRaftProgress},
		{method: "DELETE", path: "/v1/operator/raft/peer", write: true, fn: a.handleRaftRemovePeer},
		{method: "PUT,POST", path: "/v1/operator/raft/transfer-leader", write: true, fn: a.handleRaftTransferLeader},
		{method: "PUT,POST", path: "/v1/operator/switchover", write: true, fn: a.handleSwitchover},
		{method: "PUT,POST", path: "/v1/operator/failover", write: true, fn: a.handleFailover},
		{method: "PUT,POST", path: "/v1/operator/pause", write: true, fn: a.handlePause},
		{method: "PUT,POST", path: "/v1/operator/resume", write: true, fn: a.handleResume},
		{method: "GET,PUT,POST", path: "/v1/operator/reinit", write: true, fn: a.handleReinitRoute},
		{method: "GET,HEAD", path: uiPath, open: true, fn: uiEndpoint()},
	}
}

func (a *Agent) handleSelf(w http.ResponseWriter, r *http.Request) (any, error) {
	cfg := a.config()
	self := a.gossip.LocalMember()
	out := api.AgentSelf{
		Name:    cfg.NodeName,
		Version: version.Short(),
		Server:  cfg.Server,
		Addr:    self.Address(),
		Tags:    self.Tags,
	}
	if a.gateway != nil {
		s := a.gateway.MigrationStats()
		out.Gateway = &api.GatewayStats{
			Connections: a.gateway.Connections(),
			Migrated:    s.Migrated, Held: s.Held, PinnedClosed: s.PinnedClosed, Rerun: s.Rerun,
			Aborted: s.Aborted, Unknown: s.Unknown,
			CommitCommitted: s.CommitCommitted, CommitAborted: s.CommitAborted, CommitUnknown: s.CommitUnknown,
			Failed: s.Failed, MaxHoldMS: s.MaxHold.Milliseconds(),
		}
	}
	return out, nil
}

func (a *Agent) handleMembers(w http.ResponseWriter, r *http.Request) (any, error) {
	members := a.gossip.Members()
	out := make([]api.Member, 0, len(members))
	for _, m := range members {
		out = append(out, api.Member{Name: m.Name, Addr: m.Address(), Status: string(m.Status), Tags: m.Tags})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (a *Agent) handleJoin(w http.ResponseWriter, r *http.Request) (any, error) {
	addrs := r.URL.Query()["address"]
	if len(addrs) == 0 {
		return nil, badRequest("missing address: PUT /v1/agent/join?address=HOST[:PORT]")
	}
	for _, addr := range addrs {
		if strings.TrimSpace(addr) == "" {
			return nil, badRequest("empty address in join request")
		}
	}
	n, err := a.gossip.Join(addrs, true)
	if err != nil {
		return nil, err
	}
	return api.JoinResponse{NumJoined: n}, nil
}

func (a *Agent) handleLeave(w http.ResponseWriter, r *http.Request) (any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), 15*time.Second)
	defer cancel()
	if err := a.Leave(ctx); err != nil {
		return nil, err
	}
	// Like Consul, a left agent stops: its peers now consider it gone.
	a.shutdownSoon()
	return nil, nil
}

func (a *Agent) handleForceLeave(w http.ResponseWriter, r *http.Request) (any, error) {
	node := strings.TrimPrefix(r.URL.Path, "/v1/agent/force-leave/")
	if node == "" || strings.Contains(node, "/") {
		return nil, badRequest("missing node name: PUT /v1/agent/force-leave/NODE")
	}
	found := false
	for _, m := range a.gossip.Members() {
		if m.Name == node {
			found = true
		}
	}
	if !found {
		return nil, HTTPError{Code: http.StatusNotFound, Msg: "no member named " + node}
	}
	if err := a.gossip.ForceLeave(node); err != nil {
		return nil, err
	}
	return nil, nil
}

// handleLiveness answers 200 while the agent process serves requests: a
// Kubernetes liveness probe should restart only a wedged agent, never one
// whose PostgreSQL is down (the agent restarts that itself).
func (a *Agent) handleLiveness(w http.ResponseWriter, r *http.Request) (any, error) {
	return map[string]string{"status": "ok"}, nil
}

// handleReadiness answers 200 once the node's PostgreSQL is running and
// answers queries (always, on a witness).
func (a *Agent) handleReadiness(w http.ResponseWriter, r *http.Request) (any, error) {
	if a.cluster == nil || a.cluster.rec == nil {
		return map[string]string{"status": "ok", "postgres": "none"}, nil
	}
	role, state := a.cluster.rec.State()
	if ok, why := a.cluster.rec.Ready(); !ok {
		return nil, HTTPError{Code: http.StatusServiceUnavailable, Msg: why}
	}
	return map[string]string{"status": "ok", "role": role, "postgres": state}, nil
}
