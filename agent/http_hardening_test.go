package agent

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/pgbattery/pgbattery/agent/api"
	"github.com/pgbattery/pgbattery/agent/config"
	"github.com/pgbattery/pgbattery/agent/doctor"
	"github.com/pgbattery/pgbattery/agent/fsm"
	"github.com/pgbattery/pgbattery/test/testutil"
)

func TestRateLimiterBucket(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newRateLimiter(2, 3)
	l.now = func() time.Time { return now }
	for i := 0; i < 3; i++ {
		if ok, _ := l.allow("a"); !ok {
			t.Fatalf("request %d within the burst refused", i+1)
		}
	}
	ok, wait := l.allow("a")
	if ok || wait <= 0 || wait > 500*time.Millisecond {
		t.Fatalf("4th request: ok=%v wait=%v; want refused, retry within 500ms at 2/s", ok, wait)
	}
	if ok, _ := l.allow("b"); !ok {
		t.Fatal("another client is limited by the first one's use")
	}
	now = now.Add(500 * time.Millisecond) // one token back at 2/s
	if ok, _ := l.allow("a"); !ok {
		t.Fatal("no token after the refill time")
	}
	if ok, _ := l.allow("a"); ok {
		t.Fatal("more than the refill allowed")
	}
	now = now.Add(time.Hour) // refills to the burst, never beyond
	for i := 0; i < 3; i++ {
		if ok, _ := l.allow("a"); !ok {
			t.Fatalf("after a long pause request %d refused", i+1)
		}
	}
	if ok, _ := l.allow("a"); ok {
		t.Fatal("the bucket held more than its burst")
	}
	if newRateLimiter(0, 10) != nil {
		t.Fatal("rate 0 must mean no limiter")
	}
}

func TestRateLimiterBoundedClients(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newRateLimiter(1, 1)
	l.now = func() time.Time { return now }
	for i := 0; i < maxLimitedClients+50; i++ {
		now = now.Add(time.Microsecond)
		l.allow("c" + strconv.Itoa(i))
	}
	if n := len(l.buckets); n > maxLimitedClients {
		t.Fatalf("%d buckets kept, cap %d", n, maxLimitedClients)
	}
}

func TestHTTPRateLimit(t *testing.T) {
	s := testServer("s3cret", false)
	s.mux.Handle("/v1/health/liveness", s.wrap(route{method: "GET", path: "/v1/health/liveness", fn: func(w http.ResponseWriter, r *http.Request) (any, error) {
		return map[string]string{"status": "ok"}, nil
	}}))
	s.setRateLimit(1, 2)
	get := func(path, remote string, hdr map[string]string) *httptest.ResponseRecorder {
		req := httptest.NewRequest("GET", path, nil)
		req.RemoteAddr = remote
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		s.mux.ServeHTTP(rec, req)
		return rec
	}
	for i := 0; i < 2; i++ {
		if rec := get("/v1/read", "10.0.0.1:1000", nil); rec.Code != 200 {
			t.Fatalf("request %d within the burst: %d", i+1, rec.Code)
		}
	}
	rec := get("/v1/read", "10.0.0.1:1001", nil) // another port, same client
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("over the limit: %d (Retry-After %q), want 429 with Retry-After", rec.Code, rec.Header().Get("Retry-After"))
	}
	var e map[string]string
	if json.Unmarshal(rec.Body.Bytes(), &e) != nil || !strings.Contains(e["error"], "rate limit exceeded") {
		t.Errorf("429 body %q is not a JSON error", rec.Body.String())
	}
	if rec := get("/v1/read", "10.0.0.2:1000", nil); rec.Code != 200 {
		t.Errorf("another client: %d", rec.Code)
	}
	for i := 0; i < 20; i++ {
		if rec := get("/v1/health/liveness", "10.0.0.1:1000", nil); rec.Code != 200 {
			t.Fatalf("health check %d limited: %d", i, rec.Code)
		}
	}
	// A forwarded request proves itself with the token to pass.
	if rec := get("/v1/read", "10.0.0.1:1000", map[string]string{forwardedHeader: "n2", api.TokenHeader: "s3cret"}); rec.Code != 200 {
		t.Errorf("forwarded request with the token: %d", rec.Code)
	}
	if rec := get("/v1/read", "10.0.0.1:1000", map[string]string{forwardedHeader: "n2"}); rec.Code != http.StatusTooManyRequests {
		t.Errorf("a client claiming to be an agent without the token: %d, want 429", rec.Code)
	}
}

// reinitTestAgent is an agent whose state has a primary that recorded its
// fence, two standbys in a strict synchronous set of K=2, and a witness.
func reinitTestAgent(t *testing.T) (*httpServer, *fsm.FSM) {
	t.Helper()
	a := &Agent{logger: hclog.NewNullLogger(), cfg: &config.RuntimeConfig{NodeName: "n1"}}
	f := fsm.New(hclog.NewNullLogger())
	for i, cmd := range []fsm.Command{
		&fsm.UpsertMember{Member: fsm.Member{Name: "n1", ID: "n1", Voter: true}},
		&fsm.UpsertMember{Member: fsm.Member{Name: "n2", ID: "n2", Voter: true}},
		&fsm.UpsertMember{Member: fsm.Member{Name: "n3", ID: "n3", Voter: true}},
		&fsm.UpsertMember{Member: fsm.Member{Name: "w", ID: "w", Voter: true, NoPostgres: true}},
		&fsm.Bootstrap{ClusterID: "c1", Node: "n1", Sync: fsm.SyncState{Mode: fsm.ModeStrict, Standbys: []string{"n2", "n3"}, K: 2, Voters: []string{"n2", "n3"}, Quorum: 1}},
		&fsm.RecordFence{Node: "n1", Epoch: 1, Timeline: 1, XID: 10},
		&fsm.Reinit{Node: "n3", ID: "abc", RequestedBy: "n1"},
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
	return newHTTPServer(hclog.NewNullLogger(), "s3cret", false, a.routes()), f
}

func TestReinitEndpointRefusals(t *testing.T) {
	s, _ := reinitTestAgent(t)
	noRaft := testAgent(t, false)
	tok := map[string]string{"X-Pgbattery-Token": "s3cret"}
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		srv                *httpServer
		code               int
		errHas             string
	}{
		{"without token", "PUT", "/v1/operator/reinit?node=n2", nil, s, 403, "ACL token"},
		{"wrong token", "PUT", "/v1/operator/reinit?node=n2", map[string]string{"Authorization": "Bearer nope"}, s, 403, "ACL token"},
		{"DELETE", "DELETE", "/v1/operator/reinit?node=n2", tok, s, 405, "not allowed"},
		{"no node", "PUT", "/v1/operator/reinit", tok, s, 400, "missing node"},
		{"bad force", "PUT", "/v1/operator/reinit?node=n2&force=maybe", tok, s, 400, "force"},
		{"multi-line reason", "PUT", "/v1/operator/reinit?node=n2&reason=a%0Ab", tok, s, 400, "one line"},
		{"long reason", "PUT", "/v1/operator/reinit?node=n2&reason=" + strings.Repeat("x", maxReinitReason+1), tok, s, 400, "one line"},
		{"unknown node", "PUT", "/v1/operator/reinit?node=n9", tok, s, 404, `no member named "n9"`},
		{"the primary", "PUT", "/v1/operator/reinit?node=n1", tok, s, 409, "is the primary"},
		{"a witness", "PUT", "/v1/operator/reinit?node=w", tok, s, 409, "witness"},
		{"already pending", "PUT", "/v1/operator/reinit?node=n3", tok, s, 409, "already pending (request abc)"},
		{"needed synchronous standby", "PUT", "/v1/operator/reinit?node=n2", tok, s, 409, "use force=1"},
		{"without raft", "PUT", "/v1/operator/reinit?node=n2", tok, noRaft, 503, "no raft"},
		{"status without raft", "GET", "/v1/operator/reinit", nil, noRaft, 503, "no raft"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := do(t, c.srv, c.method, c.path, "", c.hdr)
			if code != c.code {
				t.Fatalf("status %d, want %d (body %v)", code, c.code, out)
			}
			if msg, _ := out["error"].(string); !strings.Contains(msg, c.errHas) {
				t.Errorf("error %q lacks %q", msg, c.errHas)
			}
		})
	}
}

func TestReinitStatusEndpoint(t *testing.T) {
	s, _ := reinitTestAgent(t)
	rec := serve(s, "GET", "/v1/operator/reinit") // a read: no token needed
	if rec.Code != 200 {
		t.Fatalf("GET /v1/operator/reinit: %d %s", rec.Code, rec.Body)
	}
	var st api.ReinitStatus
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Pending) != 1 || st.Pending[0].Node != "n3" || st.Pending[0].ID != "abc" || st.Pending[0].RequestedBy != "n1" || st.Recent == nil {
		t.Fatalf("reinit status %+v", st)
	}
}

func TestReinitKeepsWrites(t *testing.T) {
	st := &fsm.State{Sync: fsm.SyncState{Mode: fsm.ModeQuorum, Standbys: []string{"a", "b"}, K: 1}}
	if err := reinitKeepsWrites(st, "a"); err != nil {
		t.Errorf("ANY 1 of 2, one re-cloning: %v", err)
	}
	st.Sync.K = 2
	if err := reinitKeepsWrites(st, "a"); err == nil {
		t.Error("ANY 2 of 2, one re-cloning: commits block, want an error")
	}
	if err := reinitKeepsWrites(st, "c"); err != nil {
		t.Errorf("a node outside the set: %v", err)
	}
	st.Sync.Mode = fsm.ModeAsync
	if err := reinitKeepsWrites(st, "a"); err != nil {
		t.Errorf("async: %v", err)
	}
}

func TestDoctorEndpoints(t *testing.T) {
	s := testAgent(t, false)
	for _, c := range []struct{ path, errHas string }{
		{"/v1/agent/doctor?clock_threshold=soon", "clock_threshold"},
		{"/v1/agent/doctor?clock_threshold=-1s", "clock_threshold"},
		{"/v1/agent/doctor?min_free_wal=lots", "min_free_wal"},
		{"/v1/agent/doctor?max_slot_retained=1XB", "max_slot_retained"},
		{"/v1/agent/doctor?input=perhaps", "input"},
	} {
		code, out := do(t, s, "GET", c.path, "", nil)
		if msg, _ := out["error"].(string); code != 400 || !strings.Contains(msg, c.errHas) {
			t.Errorf("%s: %d %q, want 400 mentioning %s", c.path, code, msg, c.errHas)
		}
	}
	rec := serve(s, "GET", "/v1/internal/doctor")
	var rep doctor.Report
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &rep) != nil || rep.Node != "n1" || rep.Version == "" || time.Since(rep.Time) > time.Minute {
		t.Fatalf("self report: %d %s", rec.Code, rec.Body)
	}
	// An agent with no raft: the checks run on what it knows, and say so.
	rec = serve(s, "GET", "/v1/agent/doctor?clock_threshold=100ms&min_free_wal=2GB&input=1")
	var res doctor.Result
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &res) != nil {
		t.Fatalf("doctor: %d %s", rec.Code, rec.Body)
	}
	if res.Status != doctor.Fail || res.Options.ClockThresholdMs != 100 || res.Options.MinFreeWAL != 2<<30 || res.Input == nil || len(res.Checks) != 14 {
		t.Errorf("doctor without raft: %+v", res)
	}

	// With a replicated state but no peers to ask: every other member is
	// reported unreachable, not a crash.
	withState, _ := reinitTestAgent(t)
	rec = serve(withState, "GET", "/v1/agent/doctor?input=1")
	res = doctor.Result{}
	if rec.Code != 200 || json.Unmarshal(rec.Body.Bytes(), &res) != nil {
		t.Fatalf("doctor with state: %d %s", rec.Code, rec.Body)
	}
	var reach doctor.Check
	for _, c := range res.Checks {
		if c.ID == doctor.IDReachable {
			reach = c
		}
	}
	if reach.Status != doctor.Fail || !strings.Contains(reach.Summary, "3 of 4 agents did not answer") {
		t.Errorf("agents.reachable: %+v", reach)
	}
}

// writeServerCert writes a CA and a server certificate for ip.
func writeServerCert(t *testing.T, dir, ip string) (ca, cert, key string) {
	t.Helper()
	c := testutil.NewCA(t, "http test CA")
	cert, key = c.Issue(t, "agent", ip).WriteFiles(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	return c.WriteFile(t, filepath.Join(dir, "ca.pem")), cert, key
}

// TestHTTPServesTLS serves the API over TLS on a real listener: the CLI's
// client reaches it with the CA (https://), not without it and not over
// plain http; the agents' own client verifies the chain against the CA
// without needing the address in the certificate, and refuses another CA.
func TestHTTPServesTLS(t *testing.T) {
	ip := testutil.Addr(t)
	dir := t.TempDir()
	ca, cert, key := writeServerCert(t, dir, ip)
	tc, err := httpServerTLS(config.TLSConfig{CAFile: ca, CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	s := newHTTPServer(hclog.NewNullLogger(), "", false, []route{
		{method: "GET", path: "/v1/agent/self", fn: func(w http.ResponseWriter, r *http.Request) (any, error) {
			return api.AgentSelf{Name: "n1"}, nil
		}},
	})
	s.setTLS(tc)
	if err := s.Listen(net.JoinHostPort(ip, "0")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	addr := s.ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := api.NewClient(api.Config{Address: "https://" + addr, CAFile: ca})
	if err != nil {
		t.Fatal(err)
	}
	if self, err := c.AgentSelf(ctx); err != nil || self.Name != "n1" {
		t.Fatalf("https with the CA: %v %+v", err, self)
	}
	noCA, _ := api.NewClient(api.Config{Address: "https://" + addr})
	if _, err := noCA.AgentSelf(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("https without the CA: %v, want a certificate error", err)
	}
	plain, _ := api.NewClient(api.Config{Address: "http://" + addr})
	if _, err := plain.AgentSelf(ctx); err == nil {
		t.Error("plain http reached the TLS listener")
	}
	if _, err := api.NewClient(api.Config{Address: "https://" + addr, CAFile: filepath.Join(dir, "nope.pem")}); err == nil {
		t.Error("a missing CA file was accepted")
	}

	// The agents' client: chain against the CA, not the address.
	peerCA, _, _ := writeCA(t, t.TempDir()) // another CA
	ptc, err := peerHTTPTLS(config.TLSConfig{CAFile: ca, CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: ptc}, Timeout: 5 * time.Second}
	resp, err := hc.Get("https://" + addr + "/v1/agent/self")
	if err != nil {
		t.Fatalf("agent-to-agent over TLS: %v", err)
	}
	resp.Body.Close()
	other, err := peerHTTPTLS(config.TLSConfig{CAFile: peerCA})
	if err != nil {
		t.Fatal(err)
	}
	hc = &http.Client{Transport: &http.Transport{TLSClientConfig: other}, Timeout: 5 * time.Second}
	if resp, err := hc.Get("https://" + addr + "/v1/agent/self"); err == nil {
		resp.Body.Close()
		t.Error("an agent trusting another CA accepted this server")
	} else if !strings.Contains(err.Error(), "not from the cluster CA") {
		t.Errorf("wrong CA: %v", err)
	}
	if _, err := httpServerTLS(config.TLSConfig{CertFile: cert, KeyFile: filepath.Join(dir, "nope")}); err == nil {
		t.Error("a missing key was accepted")
	}
}

// TestHTTPVerifyIncoming: with tls.verify_incoming the API asks every
// client for a certificate from the cluster CA.
func TestHTTPVerifyIncoming(t *testing.T) {
	ip := testutil.Addr(t)
	dir := t.TempDir()
	ca, cert, key := writeServerCert(t, dir, ip)
	tc, err := httpServerTLS(config.TLSConfig{CAFile: ca, CertFile: cert, KeyFile: key, VerifyIncoming: true})
	if err != nil {
		t.Fatal(err)
	}
	s := newHTTPServer(hclog.NewNullLogger(), "", false, []route{
		{method: "GET", path: "/v1/agent/self", fn: func(w http.ResponseWriter, r *http.Request) (any, error) {
			return api.AgentSelf{Name: "n1"}, nil
		}},
	})
	s.setTLS(tc)
	if err := s.Listen(net.JoinHostPort(ip, "0")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	addr := "https://" + s.ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	noCert, _ := api.NewClient(api.Config{Address: addr, CAFile: ca})
	if _, err := noCert.AgentSelf(ctx); err == nil {
		t.Error("a client without a certificate was served")
	}
	withCert, err := api.NewClient(api.Config{Address: addr, CAFile: ca, ClientCert: cert, ClientKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if self, err := withCert.AgentSelf(ctx); err != nil || self.Name != "n1" {
		t.Errorf("a client with the CA's certificate: %v", err)
	}
	// The agents' own client presents the agent's certificate.
	ptc, err := peerHTTPTLS(config.TLSConfig{CAFile: ca, CertFile: cert, KeyFile: key})
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: ptc}, Timeout: 5 * time.Second}
	resp, err := hc.Get(addr + "/v1/agent/self")
	if err != nil {
		t.Fatalf("agent to agent with verify_incoming: %v", err)
	}
	resp.Body.Close()
	if _, err := api.NewClient(api.Config{Address: addr, ClientCert: cert, ClientKey: filepath.Join(dir, "nope")}); err == nil {
		t.Error("a missing client key was accepted")
	}
}
