package agent

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgbattery/pgbattery/agent/config"
	"github.com/pgbattery/pgbattery/agent/fsm"
)

// testAgent is an agent with the real handler table and, when withState,
// a cluster that has only its FSM: enough for every check a handler makes
// before it needs raft, the controller or PostgreSQL.
func testAgent(t *testing.T, withState bool) *httpServer {
	t.Helper()
	a := &Agent{logger: hclog.NewNullLogger(), cfg: &config.RuntimeConfig{NodeName: "n1"}}
	if withState {
		f := fsm.New(hclog.NewNullLogger())
		for i, cmd := range []fsm.Command{
			&fsm.UpsertMember{Member: fsm.Member{Name: "n1", ID: "n1", Voter: true}},
			&fsm.UpsertMember{Member: fsm.Member{Name: "n2", ID: "n2", Voter: true}},
			&fsm.Bootstrap{ClusterID: "c1", Node: "n1", Sync: fsm.SyncState{Mode: fsm.ModeAsync}},
		} {
			data, err := fsm.Encode(cmd)
			if err != nil {
				t.Fatal(err)
			}
			if err := f.ApplyEntry(uint64(i+1), 1, data); err != nil {
				t.Fatalf("applying %T: %v", cmd, err)
			}
		}
		a.cluster = &cluster{a: a, fsm: f}
	}
	return newHTTPServer(hclog.NewNullLogger(), "s3cret", false, a.routes())
}

func TestOperatorEndpointsInputAndToken(t *testing.T) {
	tok := map[string]string{"X-Pgbattery-Token": "s3cret"}
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		state              bool
		code               int
		errHas             string
	}{
		{"switchover without token", "PUT", "/v1/operator/switchover?to=n2", nil, true, 403, "ACL token"},
		{"switchover wrong token", "PUT", "/v1/operator/switchover", map[string]string{"X-Pgbattery-Token": "x"}, true, 403, "ACL token"},
		{"failover without token", "PUT", "/v1/operator/failover?to=n2", nil, true, 403, "ACL token"},
		{"pause without token", "PUT", "/v1/operator/pause", nil, true, 403, "ACL token"},
		{"resume without token", "PUT", "/v1/operator/resume", nil, true, 403, "ACL token"},
		{"remove-peer without token", "DELETE", "/v1/operator/raft/peer?id=n2", nil, true, 403, "ACL token"},
		{"transfer-leader without token", "PUT", "/v1/operator/raft/transfer-leader", nil, true, 403, "ACL token"},
		{"switchover GET", "GET", "/v1/operator/switchover", tok, true, 405, "not allowed"},
		{"bad force", "PUT", "/v1/operator/switchover?force=perhaps", tok, true, 400, "force"},
		{"bad wait", "PUT", "/v1/operator/switchover?wait=2", tok, true, 400, "wait"},
		{"failover without target", "PUT", "/v1/operator/failover", tok, true, 400, "needs a target"},
		{"failover with force", "PUT", "/v1/operator/failover?to=n2&force=1", tok, true, 400, "switchover only"},
		{"switchover to unknown node", "PUT", "/v1/operator/switchover?to=n9", tok, true, 404, `no member named "n9"`},
		{"failover to unknown node", "PUT", "/v1/operator/failover?to=n9", tok, true, 404, `no member named "n9"`},
		{"remove-peer without id", "DELETE", "/v1/operator/raft/peer", tok, true, 400, "missing peer ID"},
		{"replica bad max_lag", "GET", "/v1/health/replica?max_lag=lots", nil, true, 400, "max_lag"},
		{"replica negative max_lag", "GET", "/v1/health/replica?max_lag=-5", nil, true, 400, "negative"},
		{"read-only bad max_lag", "GET", "/v1/health/read-only?max_lag=1x", nil, true, 400, "max_lag"},
		// No raft, no PostgreSQL: the endpoints say so with 503.
		{"status without raft", "GET", "/v1/status", nil, false, 503, "no raft"},
		{"history without raft", "GET", "/v1/history", nil, false, 503, "no raft"},
		{"peers without raft", "GET", "/v1/operator/raft/configuration", nil, false, 503, "no raft"},
		{"progress without raft", "GET", "/v1/operator/raft/progress", nil, false, 503, "no raft"},
		{"pause without raft", "PUT", "/v1/operator/pause", tok, false, 503, "no raft"},
		{"switchover without raft", "PUT", "/v1/operator/switchover", tok, false, 503, "no raft"},
		{"primary health without postgres", "GET", "/v1/health/primary", nil, true, 503, "no PostgreSQL"},
		{"replica health without postgres", "GET", "/v1/health/replica?max_lag=1024", nil, true, 503, "no PostgreSQL"},
		{"read-only health without postgres", "GET", "/v1/health/read-only", nil, true, 503, "no PostgreSQL"},
		{"sync health without postgres", "GET", "/v1/health/sync", nil, true, 503, "no PostgreSQL"},
	}
	servers := map[bool]*httpServer{true: testAgent(t, true), false: testAgent(t, false)}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := do(t, servers[c.state], c.method, c.path, "", c.hdr)
			if code != c.code {
				t.Fatalf("status %d, want %d (body %v)", code, c.code, out)
			}
			msg, _ := out["error"].(string)
			if !strings.Contains(msg, c.errHas) {
				t.Errorf("error %q lacks %q", msg, c.errHas)
			}
		})
	}
}

func TestHistoryEndpoint(t *testing.T) {
	s := testAgent(t, true)
	code, _ := do(t, s, "GET", "/v1/history", "", nil)
	if code != 200 {
		t.Fatalf("history: %d", code)
	}
	// do decodes objects only; decode the array here.
	rec := serve(s, "GET", "/v1/history")
	body := rec.Body.String()
	if !strings.Contains(body, `"kind":"bootstrap"`) || !strings.Contains(body, `"to":"n1"`) {
		t.Errorf("history lacks the bootstrap transition: %s", body)
	}
}

func TestParseMaxLag(t *testing.T) {
	cases := []struct {
		in    string
		bytes int64
		dur   time.Duration
		bad   bool
	}{
		{"", -1, -1, false},
		{"0", 0, -1, false},
		{"1048576", 1 << 20, -1, false},
		{"10s", -1, 10 * time.Second, false},
		{"250ms", -1, 250 * time.Millisecond, false},
		{"-1", 0, 0, true},
		{"-1s", 0, 0, true},
		{"ten", 0, 0, true},
		{"10 MB", 0, 0, true},
	}
	for _, c := range cases {
		b, d, err := parseMaxLag(c.in)
		if (err != nil) != c.bad {
			t.Errorf("parseMaxLag(%q): error %v, want bad=%v", c.in, err, c.bad)
			continue
		}
		if !c.bad && (b != c.bytes || d != c.dur) {
			t.Errorf("parseMaxLag(%q) = %d, %s; want %d, %s", c.in, b, d, c.bytes, c.dur)
		}
	}
}

func TestTransitionToAPIKeepsEvidence(t *testing.T) {
	tr := transitionToAPI(fsm.Transition{
		Epoch: 3, Kind: fsm.KindSwitchover, From: "n1", To: "n2", PromoteLSN: 0x1_0000_0060,
		Candidates: []fsm.Candidate{{Node: "n3", ReceiveLSN: 0x50, Rejected: "behind"}},
	})
	if tr.PromoteLSN != "1/60" || len(tr.Candidates) != 1 || tr.Candidates[0].ReceiveLSN != "0/50" || tr.Candidates[0].Rejected != "behind" {
		t.Errorf("transition converted to %+v", tr)
	}
}

func serve(s *httpServer, method, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.mux.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}
