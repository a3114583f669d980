package agent

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgbattery/pgbattery/agent/config"
	"github.com/pgbattery/pgbattery/agent/lease"
)

func clockTestAgent(t *testing.T, enabled bool, logs *bytes.Buffer) (*httpServer, *lease.SkewClock) {
	t.Helper()
	logger := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Info})
	cfg := &config.RuntimeConfig{NodeName: "n1", Debug: config.DebugConfig{ClockControl: enabled}}
	a := &Agent{logger: logger, cfg: cfg}
	clock := lease.NewSkewClock(lease.NewSystemClock())
	a.cluster = &cluster{a: a, clock: clock}
	return newHTTPServer(hclog.NewNullLogger(), "s3cret", false, a.routes()), clock
}

func TestClockJumpEndpoint(t *testing.T) {
	var logs bytes.Buffer
	s, clock := clockTestAgent(t, true, &logs)
	tok := map[string]string{"X-Pgbattery-Token": "s3cret"}
	const path = "/v1/agent/debug/clock-jump"

	code, out := do(t, s, "PUT", path+"?by=1500ms", "", tok)
	if code != 200 || out["offset"] != "1.5s" || out["offset_ns"] != float64(1500*time.Millisecond) || out["jumped_ns"] != float64(1500*time.Millisecond) || out["node"] != "n1" {
		t.Fatalf("jump: %d %v", code, out)
	}
	if clock.Offset() != 1500*time.Millisecond {
		t.Fatalf("the agent's clock offset is %s after a 1.5s jump", clock.Offset())
	}
	if code, out := do(t, s, "PUT", path+"?by=2s", "", tok); code != 200 || out["offset"] != "3.5s" {
		t.Fatalf("second jump: %d %v, want the offsets to add up to 3.5s", code, out)
	}
	if code, out := do(t, s, "GET", path, "", nil); code != 200 || out["offset"] != "3.5s" || out["jumped_ns"] != float64(0) {
		t.Fatalf("GET: %d %v", code, out)
	}
	if !strings.Contains(logs.String(), "[WARN]") || !strings.Contains(logs.String(), "monotonic clock jumped forward") || strings.Count(logs.String(), "clock jumped") != 2 {
		t.Fatalf("jumps not logged at WARN once each:\n%s", logs.String())
	}

	cases := []struct {
		name, method, query string
		hdr                 map[string]string
		code                int
		errHas              string
	}{
		{"negative", "PUT", "?by=-1s", tok, 400, "never goes backwards"},
		{"not a duration", "PUT", "?by=soon", tok, 400, "not a duration"},
		{"no unit", "PUT", "?by=5", tok, 400, "not a duration"},
		{"missing", "PUT", "", tok, 400, "missing jump"},
		{"too large", "PUT", "?by=2h", tok, 400, "largest jump"},
		{"without token", "PUT", "?by=1s", nil, 403, "ACL token"},
		{"POST", "POST", "?by=1s", tok, 405, "not allowed"},
	}
	for _, c := range cases {
		code, out := do(t, s, c.method, path+c.query, "", c.hdr)
		msg, _ := out["error"].(string)
		if code != c.code || !strings.Contains(msg, c.errHas) {
			t.Errorf("%s: %d %q, want %d containing %q", c.name, code, msg, c.code, c.errHas)
		}
	}
	if clock.Offset() != 3500*time.Millisecond {
		t.Fatalf("refused requests moved the clock: offset %s", clock.Offset())
	}
}

func TestClockJumpEndpointOffByDefault(t *testing.T) {
	var logs bytes.Buffer
	s, clock := clockTestAgent(t, false, &logs)
	tok := map[string]string{"X-Pgbattery-Token": "s3cret"}
	for _, method := range []string{"GET", "PUT"} {
		code, out := do(t, s, method, "/v1/agent/debug/clock-jump?by=10s", "", tok)
		msg, _ := out["error"].(string)
		if code != 404 || !strings.Contains(msg, "clock_control = true") {
			t.Fatalf("%s with clock control off: %d %q, want 404 naming the option", method, code, msg)
		}
	}
	if clock.Offset() != 0 || logs.Len() != 0 {
		t.Fatalf("clock moved (%s) or logged while off: %s", clock.Offset(), logs.String())
	}
}
