package ui

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestHandlerServesEveryFile(t *testing.T) {
	h := Handler("/ui/")
	cases := []struct {
		path, file, ctype string
	}{
		{"/ui/", "index.html", "text/html; charset=utf-8"},
		{"/ui/index.html", "index.html", "text/html; charset=utf-8"},
		{"/ui/app.js", "app.js", "text/javascript; charset=utf-8"},
		{"/ui/style.css", "style.css", "text/css; charset=utf-8"},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			rec := get(t, h, "GET", c.path, nil)
			if rec.Code != 200 {
				t.Fatalf("status %d, want 200: %s", rec.Code, rec.Body)
			}
			want, err := os.ReadFile(c.file)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Body.String() != string(want) {
				t.Errorf("body is not %s as embedded", c.file)
			}
			hd := rec.Header()
			if got := hd.Get("Content-Type"); got != c.ctype {
				t.Errorf("Content-Type %q, want %q", got, c.ctype)
			}
			if got := hd.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q, want no-cache (revalidate, so an upgrade is seen at once)", got)
			}
			if !regexp.MustCompile(`^"[0-9a-f]{24}"$`).MatchString(hd.Get("ETag")) {
				t.Errorf("ETag %q is not a quoted content hash", hd.Get("ETag"))
			}
			if hd.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("no X-Content-Type-Options: nosniff")
			}
			if hd.Get("Last-Modified") != "" {
				t.Errorf("Last-Modified %q set for a file without a modification time", hd.Get("Last-Modified"))
			}
			csp := hd.Get("Content-Security-Policy")
			if c.file == "index.html" && !strings.Contains(csp, "default-src 'none'") {
				t.Errorf("the page has no restrictive Content-Security-Policy: %q", csp)
			}
		})
	}
}

func TestHandlerRevalidatesWithETag(t *testing.T) {
	h := Handler("/ui/")
	first := get(t, h, "GET", "/ui/app.js", nil)
	etag := first.Header().Get("ETag")
	rec := get(t, h, "GET", "/ui/app.js", map[string]string{"If-None-Match": etag})
	if rec.Code != http.StatusNotModified {
		t.Fatalf("If-None-Match with the current ETag: status %d, want 304", rec.Code)
	}
	if rec.Body.Len() != 0 {
		t.Errorf("304 with a body of %d bytes", rec.Body.Len())
	}
	rec = get(t, h, "GET", "/ui/app.js", map[string]string{"If-None-Match": `"stale"`})
	if rec.Code != 200 {
		t.Fatalf("If-None-Match with an old ETag: status %d, want 200", rec.Code)
	}
	if other := get(t, h, "GET", "/ui/style.css", nil).Header().Get("ETag"); other == etag {
		t.Errorf("two different files share the ETag %s", etag)
	}
}

func TestHandlerHeadAndMissing(t *testing.T) {
	h := Handler("/ui/")
	rec := get(t, h, "HEAD", "/ui/", nil)
	if rec.Code != 200 || rec.Body.Len() != 0 {
		t.Errorf("HEAD /ui/: status %d with %d body bytes, want 200 and none", rec.Code, rec.Body.Len())
	}
	if rec.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Errorf("HEAD /ui/: Content-Type %q", rec.Header().Get("Content-Type"))
	}
	for _, p := range []string{"/ui/nothing.js", "/ui/ui.go", "/ui/ui_test.go", "/ui/../ui.go", "/ui/app.js/", "/elsewhere/app.js"} {
		rec := get(t, h, "GET", p, nil)
		if rec.Code != 404 {
			t.Errorf("GET %s: status %d, want 404", p, rec.Code)
		}
		if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("GET %s: 404 with Content-Type %q", p, ct)
		}
	}
}

// The UI must work on a network without internet access and must never
// load anything from another origin: no URL to elsewhere in any file.
func TestAssetsAreSelfContained(t *testing.T) {
	external := regexp.MustCompile(`(?i)((src|href|action)\s*=\s*["']?\s*(https?:)?//)|url\(\s*["']?\s*(https?:)?//|@import|fetch\(\s*["'](https?:)?//|XMLHttpRequest|\beval\(|new Function\(`)
	for _, name := range Files() {
		data, err := assets.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		if m := external.Find(data); m != nil {
			t.Errorf("%s refers to another origin or evaluates code: %q", name, m)
		}
	}
	index, _ := assets.ReadFile("index.html")
	for _, ref := range regexp.MustCompile(`(?:src|href)="([^"#:]+)"`).FindAllSubmatch(index, -1) {
		if _, err := assets.ReadFile(string(ref[1])); err != nil {
			t.Errorf("index.html refers to %s, which is not embedded", ref[1])
		}
	}
	// Inline scripts and style attributes would be refused by the page's
	// Content-Security-Policy.
	if regexp.MustCompile(`<script>|<script [^>]*>[^<]|style="|onclick=`).Match(index) {
		t.Errorf("index.html has inline script or style, which its Content-Security-Policy refuses")
	}
}

// Every element the script looks up by id exists in the page.
func TestScriptFindsItsElements(t *testing.T) {
	index, _ := assets.ReadFile("index.html")
	script, _ := assets.ReadFile("app.js")
	ids := map[string]bool{}
	for _, m := range regexp.MustCompile(`\bid="([^"]+)"`).FindAllSubmatch(index, -1) {
		if ids[string(m[1])] {
			t.Errorf("index.html: id %q used twice", m[1])
		}
		ids[string(m[1])] = true
	}
	found := 0
	for _, m := range regexp.MustCompile(`\$\('([^']+)'\)|setText\('([^']+)'`).FindAllSubmatch(script, -1) {
		id := string(m[1]) + string(m[2])
		found++
		if !ids[id] {
			t.Errorf("app.js looks up #%s, which index.html lacks", id)
		}
	}
	if found < 20 {
		t.Errorf("found only %d element look-ups in app.js; has the helper been renamed?", found)
	}
}

func TestFilesLoad(t *testing.T) {
	files := load()
	for _, name := range []string{"index.html", "app.js", "style.css"} {
		f, ok := files[name]
		if !ok || len(f.data) == 0 {
			t.Errorf("%s missing or empty", name)
		}
	}
	if len(files) != len(Files()) {
		t.Errorf("%d files loaded of %d embedded", len(files), len(Files()))
	}
	for name, f := range files {
		if !strings.Contains(f.ctype, "charset=utf-8") {
			t.Errorf("%s served as %q: add its extension to contentTypes", name, f.ctype)
		}
	}
	h := Handler("/ui/")
	rec := get(t, h, "GET", "/ui/", nil)
	body, _ := io.ReadAll(rec.Body)
	if !strings.Contains(string(body), `<script src="app.js" defer></script>`) {
		t.Errorf("the page does not load app.js relative to itself")
	}
}
