package agent

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/pgbattery/pgbattery/agent/config"
)

// The web UI's files load without a token even when reads need one (the
// page asks for the token itself), while the API it reads stays protected;
// API answers are never cached, the UI's files are revalidated.
func TestUIRouteAndHeaders(t *testing.T) {
	a := &Agent{logger: hclog.NewNullLogger(), cfg: &config.RuntimeConfig{NodeName: "n1"}}
	s := newHTTPServer(hclog.NewNullLogger(), "s3cret", true, a.routes())
	tok := map[string]string{"X-Pgbattery-Token": "s3cret"}
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		code               int // 3: any redirect
		ctype, cache, loc  string
	}{
		{"page without token", "GET", "/ui/", nil, 200, "text/html; charset=utf-8", "no-cache", ""},
		{"script without token", "GET", "/ui/app.js", nil, 200, "text/javascript; charset=utf-8", "no-cache", ""},
		{"stylesheet without token", "GET", "/ui/style.css", nil, 200, "text/css; charset=utf-8", "no-cache", ""},
		{"HEAD of the page", "HEAD", "/ui/", nil, 200, "text/html; charset=utf-8", "no-cache", ""},
		{"unknown UI file", "GET", "/ui/nope.js", nil, 404, "text/plain; charset=utf-8", "no-store", ""},
		{"POST to the UI", "POST", "/ui/", nil, 405, "application/json", "no-store", ""},
		{"root redirects to the UI", "GET", "/", nil, 302, "", "", "/ui/"},
		{"UI without its slash", "GET", "/ui", nil, 3, "", "", "/ui/"}, // ServeMux's own redirect; its code varies with Go
		{"API read without token", "GET", "/v1/health/liveness", nil, 403, "application/json", "no-store", ""},
		{"API read with token", "GET", "/v1/health/liveness", tok, 200, "application/json", "no-store", ""},
		{"unknown path", "GET", "/nothing", nil, 404, "application/json", "", ""},
		{"POST to root", "POST", "/", nil, 404, "application/json", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(c.method, c.path, nil)
			for k, v := range c.hdr {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			s.mux.ServeHTTP(rec, req)
			if rec.Code != c.code && !(c.code == 3 && rec.Code/100 == 3) {
				t.Fatalf("status %d, want %d: %s", rec.Code, c.code, rec.Body)
			}
			h := rec.Header()
			if c.ctype != "" && h.Get("Content-Type") != c.ctype {
				t.Errorf("Content-Type %q, want %q", h.Get("Content-Type"), c.ctype)
			}
			if c.cache != "" && h.Get("Cache-Control") != c.cache {
				t.Errorf("Cache-Control %q, want %q", h.Get("Cache-Control"), c.cache)
			}
			if c.loc != "" && h.Get("Location") != c.loc {
				t.Errorf("Location %q, want %q", h.Get("Location"), c.loc)
			}
			if c.code == 200 && c.method == "GET" && strings.HasPrefix(c.path, "/ui/") && h.Get("ETag") == "" {
				t.Errorf("no ETag on a UI file")
			}
		})
	}
}
