// Package ui is the agent's web UI: one page that polls the agent's HTTP API
// every second and draws the cluster (nodes and roles, lag, raft leader,
// epoch, the history of failovers). Its files are plain HTML, CSS and
// JavaScript embedded in the binary: no build step, and nothing is loaded
// from anywhere but the agent that serves it.
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed index.html app.js style.css
var assets embed.FS

// contentSecurityPolicy lets the page load its own script and stylesheet
// and talk to its own agent, and nothing else: the UI must work on a
// network without internet access, and a node name or a failover reason
// shown on the page can never pull in anything.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// file is one asset, ready to serve.
type file struct {
	name  string
	data  []byte
	ctype string
	etag  string
}

// Handler serves the UI below prefix ("/ui/"): the page at the prefix
// itself, its assets by name. Anything else is 404. Every answer carries an
// ETag and Cache-Control: no-cache, so a browser revalidates (a cheap 304)
// and an upgraded agent's UI is seen at the next load, never a stale mix of
// old and new files.
func Handler(prefix string) http.Handler {
	files := load()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, prefix)
		if name == "" {
			name = "index.html"
		}
		f, ok := files[name]
		if !ok || !strings.HasPrefix(r.URL.Path, prefix) {
			h := w.Header()
			h.Set("Content-Type", "text/plain; charset=utf-8")
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, "no such file in the web UI: %s\n", r.URL.Path)
			return
		}
		h := w.Header()
		h.Set("Content-Type", f.ctype)
		h.Set("ETag", f.etag)
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		if f.name == "index.html" {
			h.Set("Content-Security-Policy", contentSecurityPolicy)
			h.Set("X-Frame-Options", "DENY")
		}
		// ServeContent answers HEAD, Range and If-None-Match (against the
		// ETag set above); the zero time leaves Last-Modified out, as the
		// embedded files have no modification time.
		http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.data))
	})
}

// Files lists the names of the UI's assets.
func Files() []string {
	entries, _ := fs.ReadDir(assets, ".")
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// load reads the embedded files. Reading an embedded file cannot fail, and
// a file type missing from contentTypes would be served as bytes: the
// package's tests check every file's type.
func load() map[string]file {
	out := map[string]file{}
	for _, name := range Files() {
		data, err := assets.ReadFile(name)
		if err != nil {
			continue
		}
		ctype, ok := contentTypes[path.Ext(name)]
		if !ok {
			ctype = "application/octet-stream"
		}
		sum := sha256.Sum256(data)
		out[name] = file{name: name, data: data, ctype: ctype, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
	}
	return out
}

// contentTypes is fixed here rather than asked of mime.TypeByExtension,
// whose answers depend on the host's /etc/mime.types.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
}
