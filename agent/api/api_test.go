package api

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// recorder is an httptest handler that records the last request and answers
// with a canned status and body.
type recorder struct {
	method, path, rawPath, token string
	query                        map[string][]string
	status                       int
	body                         string
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.method, r.path, r.rawPath = req.Method, req.URL.Path, req.URL.RawPath
	r.token = req.Header.Get(TokenHeader)
	r.query = req.URL.Query()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(r.status)
	_, _ = w.Write([]byte(r.body))
}

// newServer starts an httptest server on the test's own loopback address.
func newServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(testutil.Addr(t), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func newTestClient(t *testing.T, rec *recorder, token string) *Client {
	t.Helper()
	srv := newServer(t, rec)
	c, err := NewClient(Config{Address: srv.URL, Token: token, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestAgentSelf(t *testing.T) {
	rec := &recorder{status: 200, body: `{"name":"n1","version":"0.1.0-dev","server":true,"addr":"127.0.0.2:8301","tags":{"role":"primary"}}`}
	c := newTestClient(t, rec, "s3cret")
	self, err := c.AgentSelf(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := &AgentSelf{Name: "n1", Version: "0.1.0-dev", Server: true, Addr: "127.0.0.2:8301", Tags: map[string]string{"role": "primary"}}
	if !reflect.DeepEqual(self, want) {
		t.Fatalf("got %+v, want %+v", self, want)
	}
	if rec.method != "GET" || rec.path != "/v1/agent/self" || rec.token != "s3cret" {
		t.Fatalf("request: %s %s token %q", rec.method, rec.path, rec.token)
	}
}

func TestMembers(t *testing.T) {
	rec := &recorder{status: 200, body: `[{"name":"a","addr":"127.0.0.2:8301","status":"alive","tags":{"role":"primary","raft":"voter","build":"0.1.0"}},{"name":"b","addr":"127.0.0.3:8301","status":"failed","tags":{}}]`}
	c := newTestClient(t, rec, "")
	ms, err := c.Members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Name != "a" || ms[0].Tags[TagRaft] != "voter" || ms[1].Status != StatusFailed {
		t.Fatalf("members: %+v", ms)
	}
	if rec.token != "" {
		t.Fatalf("token sent without one configured: %q", rec.token)
	}
}

func TestJoin(t *testing.T) {
	rec := &recorder{status: 200, body: `{"num_joined":2}`}
	c := newTestClient(t, rec, "tok")
	n, err := c.Join(context.Background(), []string{"127.0.0.2", "[::1]:8301"})
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("num_joined %d", n)
	}
	if rec.method != "PUT" || rec.path != "/v1/agent/join" {
		t.Fatalf("request %s %s", rec.method, rec.path)
	}
	if got := rec.query["address"]; !reflect.DeepEqual(got, []string{"127.0.0.2", "[::1]:8301"}) {
		t.Fatalf("address query %v", got)
	}
	if _, err := c.Join(context.Background(), nil); err == nil {
		t.Fatal("join with no address succeeded")
	}
}

func TestLeaveAndForceLeave(t *testing.T) {
	rec := &recorder{status: 200}
	c := newTestClient(t, rec, "tok")
	if err := c.Leave(context.Background()); err != nil {
		t.Fatal(err)
	}
	if rec.method != "PUT" || rec.path != "/v1/agent/leave" || rec.token != "tok" {
		t.Fatalf("leave request %s %s %q", rec.method, rec.path, rec.token)
	}
	if err := c.ForceLeave(context.Background(), "node/1 x"); err != nil {
		t.Fatal(err)
	}
	if rec.path != "/v1/agent/force-leave/node/1 x" || rec.rawPath != "/v1/agent/force-leave/node%2F1%20x" {
		t.Fatalf("force-leave path %q raw %q", rec.path, rec.rawPath)
	}
}

func TestErrorResponses(t *testing.T) {
	cases := []struct {
		status int
		body   string
		want   string
	}{
		{403, `{"error":"permission denied: missing token"}`, "agent answered 403 Forbidden: permission denied: missing token"},
		{404, `{"error":"no member named \"x\""}`, `agent answered 404 Not Found: no member named "x"`},
		{500, `boom`, "agent answered 500 Internal Server Error: boom"},
		{503, ``, "agent answered 503 Service Unavailable"},
	}
	for _, tc := range cases {
		rec := &recorder{status: tc.status, body: tc.body}
		c := newTestClient(t, rec, "")
		err := c.ForceLeave(context.Background(), "x")
		if err == nil || err.Error() != tc.want {
			t.Errorf("status %d: got %v, want %q", tc.status, err, tc.want)
		}
		var se *StatusError
		if !errors.As(err, &se) || se.StatusCode != tc.status || !IsStatus(err, tc.status) {
			t.Errorf("status %d: not a StatusError with that code: %#v", tc.status, err)
		}
	}
}

func TestBadJSONAndEmptyBody(t *testing.T) {
	c := newTestClient(t, &recorder{status: 200, body: `{"name":`}, "")
	if _, err := c.AgentSelf(context.Background()); err == nil || !strings.Contains(err.Error(), "decoding response") {
		t.Fatalf("got %v", err)
	}
	c = newTestClient(t, &recorder{status: 200}, "")
	if _, err := c.Members(context.Background()); err == nil || !strings.Contains(err.Error(), "empty response") {
		t.Fatalf("got %v", err)
	}
}

func TestTimeout(t *testing.T) {
	block := make(chan struct{})
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(block) })
	c, err := NewClient(Config{Address: srv.URL, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Leave(context.Background()); err == nil {
		t.Fatal("request to a hanging server succeeded")
	}
}

func TestParseAddress(t *testing.T) {
	good := map[string]string{
		"":                     "http://127.0.0.1:8432",
		"127.0.0.2:9000":       "http://127.0.0.2:9000",
		"127.0.0.2":            "http://127.0.0.2:8432",
		"https://example.com":  "https://example.com:8432",
		"http://[::1]:8432":    "http://[::1]:8432",
		"http://127.0.0.3:1/":  "http://127.0.0.3:1",
		"localhost:8432":       "http://localhost:8432",
		"https://10.1.2.3:443": "https://10.1.2.3:443",
	}
	for in, want := range good {
		u, err := parseAddress(in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if u.String() != want {
			t.Errorf("%q: got %s, want %s", in, u, want)
		}
	}
	for _, bad := range []string{"ftp://x:1", "http://", "http://x:1/v1", "http://[::1"} {
		if _, err := parseAddress(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestJSONFieldNames(t *testing.T) {
	b, _ := json.Marshal(Member{Name: "a", Addr: "1.2.3.4:1", Status: "alive", Tags: map[string]string{}})
	if string(b) != `{"name":"a","addr":"1.2.3.4:1","status":"alive","tags":{}}` {
		t.Fatalf("member JSON %s", b)
	}
	b, _ = json.Marshal(JoinResponse{NumJoined: 3})
	if string(b) != `{"num_joined":3}` {
		t.Fatalf("join JSON %s", b)
	}
}
