package agent

import (
	"context"
	"fmt"
	"net/http"
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

// metricDefs is the catalogue of pgbattery's own metrics (names without the
// metrics_prefix).
var metricDefs = []metricDef{
	{"counter", []string{"postgres", "crashes"}, "Times the node's PostgreSQL died without being asked to stop."},
	{"gauge", []string{"postgres", "running"}, "1 while the node's PostgreSQL is running and answers queries, else 0."},
	{"gauge", []string{"postgres", "is_primary"}, "1 while the node's PostgreSQL runs as a primary, else 0."},
	{"counter", []string{"http", "requests"}, "HTTP API requests served."},
}

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
