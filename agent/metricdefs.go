package agent

// MetricDefinition describes one of pgbattery's own metrics, for
// documentation (the website's metrics list is generated from these).
type MetricDefinition struct {
	Kind string   // "gauge", "counter" or "summary"
	Name []string // without telemetry's metrics_prefix
	Help string   // the Prometheus HELP text
}

// MetricDefinitions returns the catalogue of metrics the agent registers
// with a HELP line (metricDefs), in its order.
func MetricDefinitions() []MetricDefinition {
	out := make([]MetricDefinition, 0, len(metricDefs))
	for _, d := range metricDefs {
		out = append(out, MetricDefinition{Kind: d.kind, Name: append([]string(nil), d.name...), Help: d.help})
	}
	return out
}
