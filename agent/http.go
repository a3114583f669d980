package agent

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// maxRequestBody bounds every request body the API reads; nothing it accepts
// is larger than a few hundred bytes.
const maxRequestBody = 64 << 10

// HTTPError is returned by handlers to answer with a specific status code.
// Anything else a handler returns is a 500.
type HTTPError struct {
	Code int
	Msg  string
}

func (e HTTPError) Error() string { return e.Msg }

func badRequest(format string, args ...any) error {
	return HTTPError{Code: http.StatusBadRequest, Msg: fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) error {
	return HTTPError{Code: http.StatusConflict, Msg: fmt.Sprintf(format, args...)}
}

// errAlreadyWritten tells the wrapper that the handler wrote the response
// itself (a streamed format such as Prometheus text).
var errAlreadyWritten = errors.New("response already written")

// endpoint is the handler shape of the API: return a value to encode as JSON
// (nil for an empty 200) or an error.
type endpoint func(w http.ResponseWriter, r *http.Request) (any, error)

// route is one entry of the API's handler table.
type route struct {
	method string // "GET", "PUT", ...; several allowed with "GET,PUT"
	path   string // exact path, or prefix when it ends in "/"
	// write: the route's mutating methods (all but GET and HEAD) need the
	// ACL token; its reads are reads like any other.
	write bool
	// open: served without a token even when reads need one. Only for the
	// web UI's static files, which hold no cluster data and must load so
	// that the page can ask for the token.
	open bool
	fn   endpoint
}

// httpServer serves the agent's HTTP API.
type httpServer struct {
	logger    hclog.Logger
	token     string
	readToken bool // reads need the token too
	mux       *http.ServeMux
	srv       *http.Server
	ln        net.Listener
	// limiter bounds each client's request rate (nil: no limit); tlsConf
	// serves the API over TLS (nil: plain HTTP). Set before Listen.
	limiter *rateLimiter
	tlsConf *tls.Config
}

// setRateLimit limits every client IP to rps requests per second with the
// given burst; rps 0 turns the limit off.
func (s *httpServer) setRateLimit(rps float64, burst int) { s.limiter = newRateLimiter(rps, burst) }

// setTLS makes Listen serve TLS with c.
func (s *httpServer) setTLS(c *tls.Config) { s.tlsConf = c }

func newHTTPServer(logger hclog.Logger, token string, readsRequireToken bool, routes []route) *httpServer {
	s := &httpServer{logger: logger, token: token, readToken: readsRequireToken, mux: http.NewServeMux()}
	for _, rt := range routes {
		s.mux.Handle(rt.path, s.wrap(rt))
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// A browser pointed at the agent gets the web UI, as in Consul.
		if r.URL.Path == "/" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			http.Redirect(w, r, uiPath, http.StatusFound)
			return
		}
		writeError(w, HTTPError{Code: http.StatusNotFound, Msg: fmt.Sprintf("no such endpoint: %s", r.URL.Path)})
	})
	s.srv = &http.Server{
		Handler:           s.mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          logger.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	return s
}

// Listen binds the API's address; Serve then runs until Shutdown.
func (s *httpServer) Listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("starting HTTP API on %s: %w", addr, err)
	}
	if s.tlsConf != nil {
		ln = tls.NewListener(ln, s.tlsConf)
	}
	s.ln = ln
	return nil
}

func (s *httpServer) Serve() error {
	err := s.srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (s *httpServer) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }

func (s *httpServer) wrap(rt route) http.Handler {
	methods := strings.Split(rt.method, ",")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		// API answers are live state: no browser or proxy may keep them.
		// (The web UI's files set their own caching.)
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if s.limited(w, r) {
			return
		}
		if rt.path != r.URL.Path && !strings.HasSuffix(rt.path, "/") {
			writeError(w, HTTPError{Code: http.StatusNotFound, Msg: fmt.Sprintf("no such endpoint: %s", r.URL.Path)})
			return
		}
		allowed := false
		for _, m := range methods {
			if r.Method == m {
				allowed = true
			}
		}
		if !allowed {
			w.Header().Set("Allow", rt.method)
			writeError(w, HTTPError{Code: http.StatusMethodNotAllowed, Msg: fmt.Sprintf("method %s not allowed on %s (use %s)", r.Method, r.URL.Path, rt.method)})
			return
		}
		mutating := rt.write && r.Method != http.MethodGet && r.Method != http.MethodHead
		if (mutating || (s.readToken && !rt.open)) && !s.tokenOK(r) {
			writeError(w, HTTPError{Code: http.StatusForbidden, Msg: "permission denied: missing or wrong ACL token"})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxRequestBody)
		out, err := rt.fn(w, r)
		if err == errAlreadyWritten {
			return
		}
		if err != nil {
			code := writeError(w, err)
			s.logger.Debug("request failed", "method", r.Method, "path", r.URL.Path, "code", code, "error", err, "took", time.Since(start))
			return
		}
		if out == nil {
			w.WriteHeader(http.StatusOK)
			return
		}
		if raw, ok := out.([]byte); ok {
			w.Write(raw)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		if _, pretty := r.URL.Query()["pretty"]; pretty {
			enc.SetIndent("", "    ")
		}
		if err := enc.Encode(out); err != nil {
			s.logger.Warn("encoding response", "path", r.URL.Path, "error", err)
		}
	})
}

// tokenOK accepts the token as X-Pgbattery-Token or as a Bearer token. With
// no token configured every request passes: the ACL is opt-in, as in Consul.
func (s *httpServer) tokenOK(r *http.Request) bool {
	if s.token == "" {
		return true
	}
	got := r.Header.Get("X-Pgbattery-Token")
	if got == "" {
		if auth := r.Header.Get("Authorization"); strings.HasPrefix(auth, "Bearer ") {
			got = strings.TrimPrefix(auth, "Bearer ")
		}
	}
	return subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) == 1
}

// writeError answers with a JSON error body and returns the status code used.
func writeError(w http.ResponseWriter, err error) int {
	code := http.StatusInternalServerError
	var he HTTPError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &he):
		code = he.Code
	case errors.As(err, &mbe):
		code = http.StatusRequestEntityTooLarge
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
	return code
}

// decodeBody reads an optional JSON body into v; an empty body leaves v as is.
func decodeBody(r *http.Request, v any) error {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return HTTPError{Code: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("request body larger than %d bytes", mbe.Limit)}
		}
		return badRequest("reading request body: %v", err)
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest("decoding request body: %v", err)
	}
	return nil
}
