package agent

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func testServer(token string, readsNeedToken bool) *httpServer {
	return newHTTPServer(hclog.NewNullLogger(), token, readsNeedToken, []route{
		{method: "GET", path: "/v1/read", fn: func(w http.ResponseWriter, r *http.Request) (any, error) {
			return map[string]int{"n": 1}, nil
		}},
		{method: "PUT,POST", path: "/v1/write", write: true, fn: func(w http.ResponseWriter, r *http.Request) (any, error) {
			var body struct{ Name string }
			if err := decodeBody(r, &body); err != nil {
				return nil, err
			}
			if body.Name == "taken" {
				return nil, conflict("name %q is taken", body.Name)
			}
			return nil, nil
		}},
		{method: "PUT", path: "/v1/prefix/", write: true, fn: func(w http.ResponseWriter, r *http.Request) (any, error) {
			return strings.TrimPrefix(r.URL.Path, "/v1/prefix/"), nil
		}},
	})
}

func do(t *testing.T, s *httpServer, method, path, body string, hdr map[string]string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	s.mux.ServeHTTP(rec, req)
	var out map[string]any
	json.Unmarshal(rec.Body.Bytes(), &out)
	return rec.Code, out
}

func TestHTTPWrapper(t *testing.T) {
	s := testServer("s3cret", false)
	cases := []struct {
		name, method, path, body string
		hdr                      map[string]string
		code                     int
		errHas                   string
	}{
		{"read without token", "GET", "/v1/read", "", nil, 200, ""},
		{"write without token", "PUT", "/v1/write", "", nil, 403, "ACL token"},
		{"write with wrong token", "PUT", "/v1/write", "", map[string]string{"X-Pgbattery-Token": "nope"}, 403, "ACL token"},
		{"write with token header", "PUT", "/v1/write", "", map[string]string{"X-Pgbattery-Token": "s3cret"}, 200, ""},
		{"write with bearer token", "POST", "/v1/write", "", map[string]string{"Authorization": "Bearer s3cret"}, 200, ""},
		{"wrong method", "DELETE", "/v1/read", "", nil, 405, "not allowed"},
		{"unknown endpoint", "GET", "/v1/nothing", "", nil, 404, "no such endpoint"},
		{"exact path only", "GET", "/v1/read/more", "", nil, 404, "no such endpoint"},
		{"bad JSON body", "PUT", "/v1/write", "{", map[string]string{"X-Pgbattery-Token": "s3cret"}, 400, "decoding request body"},
		{"unknown JSON field", "PUT", "/v1/write", `{"Nme":"x"}`, map[string]string{"X-Pgbattery-Token": "s3cret"}, 400, "unknown field"},
		{"conflict", "PUT", "/v1/write", `{"Name":"taken"}`, map[string]string{"X-Pgbattery-Token": "s3cret"}, 409, "taken"},
		{"body too large", "PUT", "/v1/write", `{"Name":"` + strings.Repeat("x", maxRequestBody) + `"}`, map[string]string{"X-Pgbattery-Token": "s3cret"}, 413, "larger than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out := do(t, s, c.method, c.path, c.body, c.hdr)
			if code != c.code {
				t.Fatalf("status %d, want %d (body %v)", code, c.code, out)
			}
			if c.errHas != "" {
				msg, _ := out["error"].(string)
				if !strings.Contains(msg, c.errHas) {
					t.Errorf("error %q lacks %q", msg, c.errHas)
				}
			}
		})
	}
}

func TestHTTPReadsRequireToken(t *testing.T) {
	s := testServer("s3cret", true)
	if code, _ := do(t, s, "GET", "/v1/read", "", nil); code != 403 {
		t.Errorf("read without token: %d, want 403", code)
	}
	if code, _ := do(t, s, "GET", "/v1/read", "", map[string]string{"X-Pgbattery-Token": "s3cret"}); code != 200 {
		t.Errorf("read with token: %d, want 200", code)
	}
}

func TestHTTPNoTokenConfigured(t *testing.T) {
	s := testServer("", false)
	if code, _ := do(t, s, "PUT", "/v1/write", "", nil); code != 200 {
		t.Errorf("write with no ACL configured: %d, want 200", code)
	}
}
