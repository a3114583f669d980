package agent

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-metrics"
	prometheussink "github.com/hashicorp/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgbattery/pgbattery/agent/config"
)

// telemetry owns the process's metric sinks. memberlist, serf and raft all
// report to hashicorp/go-metrics' global instance, so the sinks are
// installed there (design §3): one place, every library's metrics.
type telemetry struct {
	inmem    *metrics.InmemSink
	registry *prometheus.Registry // nil when Prometheus is off
	promSink *prometheussink.PrometheusSink
}

// metricDef documents one pgbattery metric. Every metric the agent emits is
// listed here so Prometheus gets a HELP line for it and docs can list them.
type metricDef struct {
	kind string // "gauge", "counter", "summary"
	name []string
	help string
}

// gomaxprocsGauge reports the Go scheduler's size (startProcsSizer).
var gomaxprocsGauge = []string{"runtime", "gomaxprocs"}

// metricDefs is the catalogue of pgbattery's own metrics (names without the
// metrics_prefix).
var metricDefs = slices.Concat([]metricDef{
	{"counter", []string{"postgres", "crashes"}, "Times the node's PostgreSQL died without being asked to stop."},
	{"counter", []string{"postgres", "hangs"}, "Times the node's PostgreSQL stopped answering for failover.postgres_hang_timeout and was killed."},
	{"gauge", []string{"postgres", "running"}, "1 while the node's PostgreSQL is running and answers queries, else 0."},
	{"gauge", []string{"postgres", "is_primary"}, "1 while the node's PostgreSQL runs as a primary, else 0."},
	{"counter", []string{"postgres", "fenced"}, "Fencing events: the node's PostgreSQL was made read-only and its sessions ended (lease lapsed, another primary named, step-down, shutdown)."},
	{"counter", []string{"postgres", "action_errors"}, "Reconciler actions on the local PostgreSQL that failed (and are retried)."},
	{"counter", []string{"postgres", "reinits"}, "Re-clones of this node's data requested with pgbattery reinit."},
	{"summary", []string{"postgres", "switchover_drain_ms"}, "How long a switchover waited for running transactions on the old primary, in milliseconds."},
	{"gauge", gomaxprocsGauge, "The Go scheduler's GOMAXPROCS: one while the agent's load fits in one core, the runtime's default above (agent/procs)."},
	{"counter", []string{"http", "requests"}, "HTTP API requests served."},
	{"counter", []string{"http", "rate_limited"}, "HTTP API requests refused with 429 (limits.http_max_rps)."},
	{"counter", []string{"fsm", "apply", "undecodable"}, "Raft log entries this agent could not decode."},
	{"gauge", []string{"controller", "blocked"}, "1 while the controller cannot fail over safely (no eligible candidate), else 0. Set on the raft leader."},
	{"counter", []string{"controller", "failover", "blocked"}, "Times the controller found no safe candidate for a failover."},
	{"counter", []string{"controller", "failover"}, "Failovers this agent decided as raft leader."},
	{"counter", []string{"controller", "switchover"}, "Switchovers this agent carried out as raft leader."},
	{"gauge", []string{"failover", "last_write_gap_ms"}, "The last change of primary this agent decided: milliseconds from the old primary's last lease renewal (or release) to the new primary's fence record, an upper bound of the write gap."},
	{"gauge", []string{"gateway", "connections"}, "Client connections open on a gateway listener (label listener)."},
	{"counter", []string{"gateway", "accepted"}, "Client connections accepted by a gateway listener."},
	{"counter", []string{"gateway", "errors"}, "Client connections a gateway listener ended with an error."},
	{"counter", []string{"gateway", "bytes_in"}, "Bytes received from clients by a gateway listener."},
	{"counter", []string{"gateway", "bytes_out"}, "Bytes sent to clients by a gateway listener."},
	{"summary", []string{"gateway", "request_ms"}, "Latency of client requests through the gateway, from the request to ReadyForQuery, in milliseconds."},
	{"counter", []string{"gateway", "sessions_migrated"}, "Client sessions moved to a new primary without the client noticing."},
	{"counter", []string{"gateway", "sessions_held"}, "Client requests held while no primary was writable."},
	{"counter", []string{"gateway", "sessions_pinned_closed"}, "Client sessions closed with 57P01 at a failover because they could not be moved (temp tables, advisory locks, WITH HOLD cursors)."},
	{"counter", []string{"gateway", "commits_resolved"}, "COMMITs in flight at a failover, resolved on the new primary (label outcome: committed, aborted, unknown)."},
	{"counter", []string{"gateway", "failover_errors"}, "Errors a failover cost clients (label sqlstate)."},
	{"summary", []string{"gateway", "hold_ms"}, "How long client requests were held while no primary was writable, in milliseconds."},
	{"summary", []string{"gateway", "migrate_ms"}, "How long moving one session to the new primary took, in milliseconds."},
	{"counter", []string{"gateway", "sessions_untracked"}, "Client sessions whose state the gateway could not follow (they cannot be moved at a failover)."},
	{"counter", []string{"gossip", "event", "suspect"}, "Gossip suspected a node (label peer): it stopped answering pings."},
	{"counter", []string{"gossip", "event", "failed"}, "Gossip declared a node failed (label peer)."},
	{"counter", []string{"gossip", "event", "alive"}, "A suspected node was heard from again (label peer)."},
	{"counter", []string{"gossip", "event", "join"}, "A node joined the gossip pool (label peer)."},
	{"counter", []string{"gossip", "event", "leave"}, "A node left the gossip pool gracefully (label peer)."},
	{"counter", []string{"gossip", "event", "update"}, "A node's gossip tags changed (label peer)."},
	{"counter", []string{"gossip", "event", "dropped"}, "Gossip events dropped because the consumer was too slow."},
	{"summary", []string{"gossip", "probe", "rtt_ms"}, "Round-trip time of the suspicion prober's pings (label peer), in milliseconds."},
}, clusterMetricDefs)

// setupTelemetry installs the global go-metrics instance with an in-memory
// sink (for /v1/agent/metrics), Prometheus when prometheus_retention_time is
// set, and statsd/statsite when their addresses are.
func setupTelemetry(cfg config.TelemetryConfig, nodeName string, logger hclog.Logger) (*telemetry, error) {
	t := &telemetry{inmem: metrics.NewInmemSink(10*time.Second, time.Minute)}
	fanout := metrics.FanoutSink{t.inmem}

	if cfg.PrometheusRetentionTime > 0 {
		t.registry = prometheus.NewRegistry()
		opts := prometheussink.PrometheusOpts{
			Expiration: cfg.PrometheusRetentionTime,
			Registerer: t.registry,
			Name:       "pgbattery_agent",
		}
		for _, d := range metricDefs {
			name := append([]string{cfg.MetricsPrefix}, d.name...)
			switch d.kind {
			case "gauge":
				opts.GaugeDefinitions = append(opts.GaugeDefinitions, prometheussink.GaugeDefinition{Name: name, Help: d.help})
			case "counter":
				opts.CounterDefinitions = append(opts.CounterDefinitions, prometheussink.CounterDefinition{Name: name, Help: d.help})
			case "summary":
				opts.SummaryDefinitions = append(opts.SummaryDefinitions, prometheussink.SummaryDefinition{Name: name, Help: d.help})
			}
		}
		sink, err := prometheussink.NewPrometheusSinkFrom(opts)
		if err != nil {
			return nil, fmt.Errorf("setting up the Prometheus sink: %w", err)
		}
		t.promSink = sink
		fanout = append(fanout, sink)
	}
	if cfg.StatsdAddress != "" {
		sink, err := metrics.NewStatsdSink(cfg.StatsdAddress)
		if err != nil {
			return nil, fmt.Errorf("setting up the statsd sink for %s: %w", cfg.StatsdAddress, err)
		}
		fanout = append(fanout, sink)
	}
	if cfg.StatsiteAddress != "" {
		sink, err := metrics.NewStatsiteSink(cfg.StatsiteAddress)
		if err != nil {
			return nil, fmt.Errorf("setting up the statsite sink for %s: %w", cfg.StatsiteAddress, err)
		}
		fanout = append(fanout, sink)
	}

	mc := metrics.DefaultConfig(cfg.MetricsPrefix)
	mc.HostName = nodeName
	// A hostname inside the metric name breaks every dashboard's queries;
	// a label does not.
	mc.EnableHostname = false
	mc.EnableHostnameLabel = !cfg.DisableHostname
	mc.EnableRuntimeMetrics = true
	if _, err := metrics.NewGlobal(mc, fanout); err != nil {
		return nil, fmt.Errorf("setting up telemetry: %w", err)
	}
	logger.Debug("telemetry ready", "prometheus", t.registry != nil, "statsd", cfg.StatsdAddress, "statsite", cfg.StatsiteAddress)
	return t, nil
}

// startCleanup expires old Prometheus series until ctx ends (the sink runs
// its own goroutine, stopped by ctx).
func (t *telemetry) startCleanup(ctx context.Context) {
	if t.promSink != nil {
		t.promSink.RunBackgroundCleanup(ctx)
	}
}

// handleMetrics serves GET /v1/agent/metrics: go-metrics' JSON summary, or
// the Prometheus text format with ?format=prometheus.
func (t *telemetry) handleMetrics(w http.ResponseWriter, r *http.Request) (any, error) {
	if r.URL.Query().Get("format") == "prometheus" {
		if t.registry == nil {
			return nil, HTTPError{Code: http.StatusBadRequest, Msg: "Prometheus metrics are off: set telemetry { prometheus_retention_time } in the agent's config"}
		}
		promhttp.HandlerFor(t.registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}).ServeHTTP(w, r)
		return nil, errAlreadyWritten
	}
	return t.inmem.DisplayMetrics(w, r)
}
