package ui

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/agent/api"
	"github.com/pgbattery/pgbattery/test/testutil"
)

// These tests run the page in headless Chromium against a stand-in for the
// agent's API that answers with the API's own Go types, to reach the states
// a real cluster rarely shows on demand: five members with a witness, a
// lagging and a failed standby, a paused cluster, an agent that stops
// answering, a token that is missing. test/e2e/ui_test.go runs the page
// against a real cluster and its failover.

func u64(v uint64) *uint64 { return &v }

func fixtureStatus() api.ClusterStatus {
	return api.ClusterStatus{
		Node: "n2", FromLeader: true, ClusterID: "3ea1be63c0ffee00", SystemID: "7311",
		Primary: "n1", PrimaryReady: true, Writable: true, Epoch: 3, Timeline: 2, Paused: true,
		Sync:       api.SyncState{Mode: "quorum", Standbys: []string{"n2", "n3"}, K: 1},
		Lease:      api.LeaseState{Holder: "n1", Epoch: 3, RenewedLSN: "0/5000060"},
		Controller: api.ControllerStatus{State: "paused", Term: 4, Epoch: 3},
		Raft:       api.RaftStatus{Leader: "n2", State: "Leader", Term: 4, AppliedIndex: 120},
		Members: []api.MemberStatus{
			{Name: "n1", Role: "primary", Voter: true, GossipStatus: "alive", Postgres: "running", Probed: true, Running: true, Healthy: true, Writable: true, Timeline: 2, LSN: "0/5000060", LagBytes: u64(0),
				Addrs: map[string]string{"gateway": "127.0.0.2:5432"}},
			{Name: "n2", Role: "replica", Voter: true, Sync: true, GossipStatus: "alive", Postgres: "running", Probed: true, Running: true, Healthy: true, InRecovery: true, Timeline: 2,
				LSN: "0/5000000", ReceiveLSN: "0/5000000", ReplayLSN: "0/5000000", Upstream: "n1", LagBytes: u64(0)},
			{Name: "n3", Role: "replica", Voter: true, Sync: true, GossipStatus: "alive", Postgres: "running", Probed: true, Running: true, Healthy: true, InRecovery: true, Timeline: 2,
				LSN: "0/3000000", Upstream: "n1", LagBytes: u64(32 << 20)},
			{Name: "n4", Role: "replica", GossipStatus: "failed", Postgres: "running", ProbeError: "probing n4: dial tcp 127.0.0.5:8432: connect: connection refused"},
			{Name: "w1", Role: "witness", Voter: true, GossipStatus: "alive"},
		},
	}
}

func fixtureHistory() []api.Transition {
	return []api.Transition{
		{Epoch: 1, Kind: "bootstrap", To: "n2", Reason: "first primary of the cluster", Index: 5, Term: 2},
		{Epoch: 2, Kind: "failover", From: "n2", To: "n3", Reason: "primary n2 failed; n3 holds the most WAL", PromoteLSN: "0/4000000", WriteGapMS: 2150, Index: 40, Term: 3,
			Candidates: []api.Candidate{{Node: "n3", Reachable: true, Healthy: true, ReceiveLSN: "0/4000000"}, {Node: "n1", Reachable: true, ReceiveLSN: "0/3FFFF00", Rejected: "less WAL than n3"}}},
		{Epoch: 3, Kind: "switchover", From: "n3", To: "n1", Reason: "switchover requested <b>by operator</b>", WriteGapMS: 180, Index: 70, Term: 4},
	}
}

// fakeAgent serves the UI and answers the API reads the page makes.
type fakeAgent struct {
	token       string // required on reads when set
	failAfter   int64  // close connections after this many status answers (0: never)
	statusCalls atomic.Int64
	dead        atomic.Bool
	url         string
}

func startFakeAgent(t *testing.T, fa *fakeAgent) *fakeAgent {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/ui/", Handler("/ui/"))
	answer := func(path string, v any) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if path == "/v1/status" && fa.statusCalls.Add(1) > fa.failAfter && fa.failAfter > 0 {
				fa.dead.Store(true)
			}
			if fa.dead.Load() {
				// The agent died: the connection closes without an answer.
				if hj, ok := w.(http.Hijacker); ok {
					if c, _, err := hj.Hijack(); err == nil {
						c.Close()
						return
					}
				}
			}
			if fa.token != "" && r.Header.Get(api.TokenHeader) != fa.token {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusForbidden)
				w.Write([]byte(`{"error":"permission denied: missing or wrong ACL token"}`))
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(v)
		})
	}
	answer("/v1/status", fixtureStatus())
	answer("/v1/history", fixtureHistory())
	answer("/v1/agent/self", api.AgentSelf{Name: "n2", Version: "test"})
	// Stands in for a person typing the token into the page's field: stores
	// it where the page keeps it, in this origin's local storage.
	mux.HandleFunc("/store-token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, "<!doctype html><script>localStorage.setItem('pgbattery.token', %q); document.title = 'stored';</script>", r.URL.Query().Get("token"))
	})

	ln, err := net.Listen("tcp", net.JoinHostPort(testutil.Addr(t), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	fa.url = "http://" + ln.Addr().String() + "/ui/"
	return fa
}

func TestUIRendersClusterInChromium(t *testing.T) {
	bin := testutil.Chromium(t)
	fa := startFakeAgent(t, &fakeAgent{})
	dom, err := testutil.Page{Bin: bin, URL: fa.url}.DumpDOM(t)
	if err != nil {
		t.Fatal(err)
	}
	if fa.statusCalls.Load() < 2 {
		t.Errorf("the page asked for the status %d times in 3 s of virtual time; it should poll every second", fa.statusCalls.Load())
	}
	roles := map[string]string{"n1": "primary", "n2": "replica", "n3": "replica", "n4": "replica", "w1": "witness"}
	for name, role := range roles {
		el := testutil.Elements(dom, "data-node", name)
		if len(el) != 1 {
			t.Errorf("node %s: %d cards, want 1", name, len(el))
			continue
		}
		if el[0]["data-role"] != role {
			t.Errorf("node %s shown as %q, want %q", name, el[0]["data-role"], role)
		}
	}
	if el := testutil.Elements(dom, "data-node", "n2"); len(el) == 1 && el[0]["data-leader"] != "true" {
		t.Errorf("n2, the raft leader, is not marked as such: %v", el[0])
	}
	if el := testutil.Elements(dom, "data-node", "n4"); len(el) == 1 && (el[0]["data-gossip"] != "failed" || !strings.Contains(el[0]["class"], "down")) {
		t.Errorf("failed n4 not shown as down: %v", el[0])
	}
	if el := testutil.Elements(dom, "id", "epoch"); len(el) != 1 || el[0]["data-value"] != "3" {
		t.Errorf("epoch element %v, want data-value 3", el)
	}
	// Lag: n3 is 32 MiB behind (red), n2 caught up; bars carry the bytes.
	lags := map[string]bool{}
	for _, el := range testutil.Elements(dom, "data-lag-bytes", "") {
		lags[el["data-lag-bytes"]] = true
	}
	for _, want := range []string{"0", "33554432"} {
		if !lags[want] {
			t.Errorf("no lag bar for %s bytes (bars: %v)", want, lags)
		}
	}
	if len(testutil.Elements(dom, "class", "bar-fill bad")) != 1 {
		t.Errorf("want exactly one red lag bar (n3, 32 MiB behind)")
	}
	text := testutil.Text(dom)
	for _, want := range []string{
		"32 MiB", "caught up", "ANY 1 of 2", "n2, n3",
		"failover", "n2 → n3", "write gap 2.1 s", "write gap 180 ms", "switchover requested <b>by operator</b>",
		"✓ n3 0/4000000", "less WAL than n3", "witness", "connection refused",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("page text lacks %q", want)
		}
	}
	if p := testutil.Elements(dom, "id", "paused-pill"); len(p) != 1 || hasAttr(p[0], "hidden") {
		t.Errorf("the paused cluster is not shown as paused: %v", p)
	}
	// The reason's markup is text, not markup.
	if strings.Contains(dom, "<b>by operator</b>") {
		t.Errorf("a failover reason was inserted as HTML")
	}
	entries := testutil.Elements(dom, "data-kind", "")
	var kinds []string
	for _, e := range entries {
		if e["data-epoch"] != "" {
			kinds = append(kinds, e["data-epoch"]+":"+e["data-kind"])
		}
	}
	if strings.Join(kinds, " ") != "3:switchover 2:failover 1:bootstrap" {
		t.Errorf("history entries %v, want newest first: 3:switchover 2:failover 1:bootstrap", kinds)
	}
	if b := testutil.Elements(dom, "id", "banner"); len(b) != 1 || !hasAttr(b[0], "hidden") {
		t.Errorf("the connection banner shows while the agent answers: %v", b)
	}
}

func hasAttr(m map[string]string, k string) bool { _, ok := m[k]; return ok }

func TestUIKeepsLastDataWhenAgentStopsAnswering(t *testing.T) {
	bin := testutil.Chromium(t)
	fa := startFakeAgent(t, &fakeAgent{failAfter: 1})
	dom, err := testutil.Page{Bin: bin, URL: fa.url}.DumpDOM(t)
	if err != nil {
		t.Fatal(err)
	}
	b := testutil.Elements(dom, "id", "banner")
	if len(b) != 1 || hasAttr(b[0], "hidden") || b[0]["data-state"] != "lost" {
		t.Fatalf("no connection-lost banner after the agent stopped answering: %v", b)
	}
	text := testutil.Text(dom)
	if !strings.Contains(text, "Connection lost.") || !strings.Contains(text, "Showing the last data") {
		t.Errorf("banner text does not say the connection is lost and the data is the last seen: %q", text)
	}
	if len(testutil.Elements(dom, "data-node", "")) != 5 {
		t.Errorf("the last data is no longer shown: want 5 node cards")
	}
	if m := testutil.Elements(dom, "id", "main"); len(m) != 1 || !strings.Contains(m[0]["class"], "stale") {
		t.Errorf("stale data is not marked stale: %v", m)
	}
}

func TestUIAsksForTokenOn403(t *testing.T) {
	bin := testutil.Chromium(t)
	fa := startFakeAgent(t, &fakeAgent{token: "s3cret"})
	dom, err := testutil.Page{Bin: bin, URL: fa.url}.DumpDOM(t)
	if err != nil {
		t.Fatal(err)
	}
	b := testutil.Elements(dom, "id", "banner")
	if len(b) != 1 || hasAttr(b[0], "hidden") || !strings.Contains(testutil.Text(dom), "ACL token needed.") {
		t.Fatalf("no banner asking for the token: %v", b)
	}
	if p := testutil.Elements(dom, "id", "token-panel"); len(p) != 1 || hasAttr(p[0], "hidden") {
		t.Errorf("the token form is not shown on 403: %v", p)
	}
	if len(testutil.Elements(dom, "data-node", "")) != 0 {
		t.Errorf("node cards shown without any answer")
	}
}

func TestUISendsStoredToken(t *testing.T) {
	bin := testutil.Chromium(t)
	fa := startFakeAgent(t, &fakeAgent{token: "s3cret"})
	profile := t.TempDir()
	base := strings.TrimSuffix(fa.url, "/ui/")
	if _, err := (testutil.Page{Bin: bin, URL: base + "/store-token?token=s3cret", Profile: profile, Budget: 500 * time.Millisecond}).DumpDOM(t); err != nil {
		t.Fatal(err)
	}
	dom, err := testutil.Page{Bin: bin, URL: fa.url, Profile: profile}.DumpDOM(t)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(testutil.Elements(dom, "data-node", "")); n != 5 {
		t.Fatalf("with the stored token the page shows %d node cards, want 5: %s", n, testutil.Text(dom))
	}
	if b := testutil.Elements(dom, "id", "banner"); len(b) != 1 || !hasAttr(b[0], "hidden") {
		t.Errorf("banner shown although the token was accepted: %s", testutil.Text(dom))
	}
	if tt := testutil.Elements(dom, "id", "token-toggle"); len(tt) != 1 || !strings.Contains(testutil.Text(dom), "Token ✓") {
		t.Errorf("the Token button does not show that a token is set")
	}
}
