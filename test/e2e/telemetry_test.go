package e2e

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgbattery/pgbattery/agent"
)

func TestTelemetryPrometheusAndStatsd(t *testing.T) {
	p := newNode(t, "tele", nodeOpts{postgres: true})
	udp, err := net.ListenPacket("udp", net.JoinHostPort(p.addr, "8125"))
	if err != nil {
		t.Fatalf("listening for statsd: %v", err)
	}
	defer udp.Close()
	p.appendConfig(fmt.Sprintf(`
telemetry {
  prometheus_retention_time = "1m"
  statsd_address            = %q
  disable_hostname          = true
}`, udp.LocalAddr().String()))
	p.start()
	waitFor(t, 3*time.Minute, "PostgreSQL to be ready", func() bool { return p.get("/v1/health/readiness", nil) == 200 })

	// Prometheus text format, parsed by Prometheus' own parser.
	var families map[string]*dto.MetricFamily
	waitFor(t, 30*time.Second, "pgbattery_postgres_running = 1 in Prometheus output", func() bool {
		resp, err := http.Get("http://" + p.httpAddr() + "/v1/agent/metrics?format=prometheus")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			t.Fatalf("Prometheus output does not parse: %v", err)
		}
		families = fams
		f, ok := fams["pgbattery_postgres_running"]
		return ok && len(f.Metric) > 0 && f.Metric[0].GetGauge().GetValue() == 1
	})
	for _, name := range []string{"pgbattery_postgres_running", "pgbattery_postgres_is_primary", "pgbattery_postgres_crashes"} {
		f, ok := families[name]
		if !ok {
			t.Errorf("metric %s missing", name)
			continue
		}
		if f.GetHelp() == "" || strings.HasPrefix(f.GetHelp(), name) {
			t.Errorf("metric %s has no real HELP text: %q", name, f.GetHelp())
		}
	}
	// Every metric of pgbattery's catalogue is exported with its HELP
	// text, and the cluster gauges carry the cluster's state.
	for _, d := range agent.MetricDefinitions() {
		name := "pgbattery_" + strings.Join(d.Name, "_")
		f, ok := families[name]
		if !ok {
			t.Errorf("catalogued metric %s missing from the Prometheus output", name)
			continue
		}
		if f.GetHelp() != d.Help {
			t.Errorf("metric %s: HELP %q, want %q", name, f.GetHelp(), d.Help)
		}
	}
	waitFor(t, 30*time.Second, "the cluster gauges", func() bool {
		resp, err := http.Get("http://" + p.httpAddr() + "/v1/agent/metrics?format=prometheus")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			return false
		}
		gauge := func(name string) float64 {
			if f, ok := fams[name]; ok && len(f.Metric) > 0 {
				return f.Metric[0].GetGauge().GetValue()
			}
			return -1
		}
		return gauge("pgbattery_cluster_epoch") >= 1 && gauge("pgbattery_raft_term") >= 1 &&
			gauge("pgbattery_raft_is_leader") == 1 && gauge("pgbattery_cluster_primary_ready") == 1
	})
	if _, ok := families["pgbattery_memberlist_gossip"]; !ok {
		found := false
		for name := range families {
			if strings.HasPrefix(name, "pgbattery_memberlist_") || strings.HasPrefix(name, "pgbattery_serf_") {
				found = true
			}
		}
		if !found {
			t.Errorf("no memberlist/serf metric in the Prometheus output: library metrics are not reaching our sinks")
		}
	}

	// statsd lines arrive over UDP.
	udp.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 65536)
	n, _, err := udp.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no statsd packet within 30s: %v", err)
	}
	if !strings.Contains(string(buf[:n]), "pgbattery.") {
		t.Errorf("statsd packet lacks the pgbattery prefix: %q", buf[:n])
	}
}
