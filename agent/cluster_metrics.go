package agent

import (
	"context"
	"time"

	"github.com/hashicorp/go-metrics"

	"github.com/pgbattery/pgbattery/agent/fsm"
)

// clusterMetricsInterval is how often the cluster gauges are refreshed.
const clusterMetricsInterval = time.Second

// clusterMetricDefs documents the gauges emitMetrics sets (they are part
// of metricDefs, so Prometheus gets a HELP line for each).
var clusterMetricDefs = []metricDef{
	{"gauge", []string{"raft", "is_leader"}, "1 while this agent is the raft leader, else 0."},
	{"gauge", []string{"raft", "term"}, "This agent's current raft term."},
	{"gauge", []string{"raft", "commit_index"}, "The highest raft log index this agent knows to be committed."},
	{"gauge", []string{"raft", "applied_index"}, "The highest raft log index applied to this agent's copy of the cluster state."},
	{"counter", []string{"raft", "leader_changes"}, "Changes of raft leader this agent has seen."},
	{"gauge", []string{"cluster", "epoch"}, "The primary epoch: it grows by one at every change of primary."},
	{"gauge", []string{"cluster", "timeline"}, "The PostgreSQL timeline of the current primary."},
	{"gauge", []string{"cluster", "paused"}, "1 while automatic failover is paused, else 0."},
	{"gauge", []string{"cluster", "primary_ready"}, "1 while a primary holds office (fence recorded, lease not released), else 0."},
	{"gauge", []string{"cluster", "failovers"}, "Automatic and manual failovers in the cluster's history."},
	{"gauge", []string{"cluster", "switchovers"}, "Planned switchovers in the cluster's history."},
	{"gauge", []string{"sync", "standbys"}, "Synchronous standbys named on the primary (ANY K of them)."},
	{"gauge", []string{"sync", "k"}, "K of synchronous_standby_names = ANY K (...): how many standbys must confirm a commit."},
	{"gauge", []string{"sync", "quorum_held"}, "1 while at least K synchronous standbys stream from the primary, so commits are acknowledged; else 0 (read from the primary once a second)."},
	{"gauge", []string{"replica", "lag_bytes"}, "Per standby (label node): bytes of WAL the primary has flushed that the standby has not replayed."},
	{"gauge", []string{"replica", "streaming"}, "Per standby (label node): 1 while it streams from the current primary, else 0."},
}

// emitMetrics refreshes the cluster gauges until ctx ends. Every agent
// emits them from its own copy of the cluster state, so any one node's
// metrics show the whole cluster.
func (c *cluster) emitMetrics(ctx context.Context) {
	t := time.NewTicker(clusterMetricsInterval)
	defer t.Stop()
	lastLeader := ""
	for {
		_, leader := c.raft.Leader()
		if leader != "" && leader != lastLeader {
			if lastLeader != "" {
				metrics.IncrCounter([]string{"raft", "leader_changes"}, 1)
			}
			lastLeader = leader
		}
		p := c.raft.Progress()
		metrics.SetGauge([]string{"raft", "is_leader"}, boolGauge(c.raft.IsLeader()))
		metrics.SetGauge([]string{"raft", "term"}, float32(p.Term))
		metrics.SetGauge([]string{"raft", "commit_index"}, float32(p.CommitIndex))
		metrics.SetGauge([]string{"raft", "applied_index"}, float32(p.AppliedIndex))
		c.emitStateMetrics(c.fsm.State())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *cluster) emitStateMetrics(st *fsm.State) {
	metrics.SetGauge([]string{"cluster", "epoch"}, float32(st.Epoch))
	metrics.SetGauge([]string{"cluster", "timeline"}, float32(st.Timeline))
	metrics.SetGauge([]string{"cluster", "paused"}, boolGauge(st.Paused))
	metrics.SetGauge([]string{"cluster", "primary_ready"}, boolGauge(st.PrimaryReady() && !st.Lease.Released))
	var failovers, switchovers int
	for _, t := range st.History {
		switch t.Kind {
		case fsm.KindFailover, fsm.KindManual:
			failovers++
		case fsm.KindSwitchover:
			switchovers++
		}
	}
	metrics.SetGauge([]string{"cluster", "failovers"}, float32(failovers))
	metrics.SetGauge([]string{"cluster", "switchovers"}, float32(switchovers))
	metrics.SetGauge([]string{"sync", "standbys"}, float32(len(st.Sync.Standbys)))
	metrics.SetGauge([]string{"sync", "k"}, float32(st.Sync.K))

	// Lag comes from the router's reading of the primary's
	// pg_stat_replication (agent/gateway.go), when this agent runs a
	// gateway and the reading is fresh.
	var lag *lagReading
	if c.a.router != nil {
		lag = c.a.router.lag.Load()
	}
	if lag == nil || lag.epoch != st.Epoch || time.Since(lag.at) > lagStaleAfter {
		return
	}
	streaming := 0
	for _, name := range st.Sync.Standbys {
		if _, ok := lag.replay[name]; ok {
			streaming++
		}
	}
	metrics.SetGauge([]string{"sync", "quorum_held"}, boolGauge(st.Sync.K == 0 || streaming >= st.Sync.K))
	for _, name := range st.MemberNames() {
		m := st.Members[name]
		if name == st.Primary || m.NoPostgres {
			continue
		}
		labels := []metrics.Label{{Name: "node", Value: name}}
		replay, ok := lag.replay[name]
		metrics.SetGaugeWithLabels([]string{"replica", "streaming"}, boolGauge(ok), labels)
		if ok {
			var behind uint64
			if lag.flush > replay {
				behind = lag.flush - replay
			}
			metrics.SetGaugeWithLabels([]string{"replica", "lag_bytes"}, float32(behind), labels)
		}
	}
}
