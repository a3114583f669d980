// Package api is the Go client of the pgbattery agent's HTTP API, and the
// JSON types the API exchanges. The CLI (package command) talks to the local
// agent only through this package; the server side (package agent) encodes
// exactly these types.
//
// # Wire protocol
//
// All bodies are JSON. A request that changes state carries the ACL token in
// the header X-Pgbattery-Token (TokenHeader); reads carry it too when the
// client has one, because acl.reads_require_token may demand it. Errors are
// answered with a meaningful HTTP status code (400 bad request, 403 missing
// or wrong token, 404 unknown node or endpoint, 405 wrong method, 409
// conflict, 500 agent failure, 503 not ready) and the body
//
//	{"error": "message"}
//
// which the client turns into a *StatusError carrying both.
//
// # Endpoints
//
//	GET /v1/agent/self
//	    200 AgentSelf: {"name": "n1", "version": "0.1.0-dev", "server": true,
//	                    "addr": "10.0.0.1:8301", "tags": {"role": "primary", ...}}
//
//	GET /v1/agent/members
//	    200 []Member: [{"name": "n1", "addr": "10.0.0.1:8301", "status": "alive",
//	                    "tags": {"role": "primary", "raft": "voter", "build": "0.1.0-dev"}}]
//	    addr is the member's gossip address as ip:port ([v6]:port for IPv6);
//	    status is one of alive, suspect, failed, left, leaving (Status* constants).
//
//	PUT /v1/agent/join?address=A&address=B
//	    200 JoinResponse: {"num_joined": 2}
//	    address is repeated once per address; each is "host", "host:port" or
//	    "[v6]:port". A join that reaches no node is an error (status 500 with
//	    the reason), not {"num_joined": 0}.
//
//	PUT /v1/agent/leave
//	    200, empty body: the local agent left the cluster gracefully. The agent
//	    process shuts down afterwards.
//
//	PUT /v1/agent/force-leave/NODE
//	    200, empty body: NODE (a failed member) is marked left. 404 if no
//	    member has that name.
//
// Member tags: the gossip package defines the tag names; the CLI reads the
// node's role from TagRole ("role"), its raft suffrage from TagRaft ("raft")
// and its build version from TagBuild ("build").
package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

const (
	// TokenHeader carries the ACL token on every request that has one.
	TokenHeader = "X-Pgbattery-Token"

	// HTTPAddrEnvName and HTTPTokenEnvName are the environment variables the
	// CLI reads when -http-addr and -token are not given.
	HTTPAddrEnvName  = "PGBATTERY_HTTP_ADDR"
	HTTPTokenEnvName = "PGBATTERY_HTTP_TOKEN"
	// HTTPCACertEnvName names a PEM CA bundle to verify an https:// agent
	// against (as Consul's CONSUL_CACERT); HTTPTLSServerNameEnvName the
	// name its certificate must carry when it is not the address's host.
	HTTPCACertEnvName        = "PGBATTERY_CACERT"
	HTTPTLSServerNameEnvName = "PGBATTERY_TLS_SERVER_NAME"
	// HTTPClientCertEnvName and HTTPClientKeyEnvName name the client
	// certificate and key for an agent with tls.verify_incoming.
	HTTPClientCertEnvName = "PGBATTERY_CLIENT_CERT"
	HTTPClientKeyEnvName  = "PGBATTERY_CLIENT_KEY"

	// DefaultAddress is where a local agent's HTTP API listens by default.
	DefaultAddress = "127.0.0.1:8432"

	// DefaultTimeout bounds every request when Config.Timeout is zero. A join
	// may contact several unreachable addresses in turn, hence not shorter.
	DefaultTimeout = 30 * time.Second

	// maxResponseBody caps how much of a response the client reads.
	maxResponseBody = 16 << 20
)

// The cluster state, history and operator endpoints (GET /v1/status, GET
// /v1/history, /v1/operator/..., /v1/health/...) are in operator.go and
// documented in full in docs/api.md.

// Member tag names read by the CLI. The gossip package owns the tag set;
// these three are the ones `pgbattery members` shows as columns.
const (
	TagRole  = "role"
	TagRaft  = "raft"
	TagBuild = "build"
)

// Member statuses as reported by GET /v1/agent/members.
const (
	StatusAlive   = "alive"
	StatusSuspect = "suspect"
	StatusFailed  = "failed"
	StatusLeft    = "left"
	StatusLeaving = "leaving"
)

// AgentSelf describes the agent answering the request.
type AgentSelf struct {
	Name    string            `json:"name"`
	Version string            `json:"version"`
	Server  bool              `json:"server"`
	Addr    string            `json:"addr"`
	Tags    map[string]string `json:"tags"`
	// Gateway counts what failovers did to this agent's gateway sessions
	// since it started (nil when the agent runs no gateway).
	Gateway *GatewayStats `json:"gateway,omitempty"`
}

// GatewayStats are one gateway's session-migration counters since the
// agent started.
type GatewayStats struct {
	Connections     int64 `json:"connections"`
	Migrated        int64 `json:"migrated"`
	Held            int64 `json:"held"`
	PinnedClosed    int64 `json:"pinned_closed"`
	Rerun           int64 `json:"rerun"`
	Aborted         int64 `json:"aborted"`
	Unknown         int64 `json:"unknown"`
	CommitCommitted int64 `json:"commit_committed"`
	CommitAborted   int64 `json:"commit_aborted"`
	CommitUnknown   int64 `json:"commit_unknown"`
	Failed          int64 `json:"failed"`
	MaxHoldMS       int64 `json:"max_hold_ms"`
}

// Member is one node of the cluster as the answering agent's gossip sees it.
type Member struct {
	Name   string            `json:"name"`
	Addr   string            `json:"addr"` // gossip address, ip:port
	Status string            `json:"status"`
	Tags   map[string]string `json:"tags"`
}

// JoinResponse answers PUT /v1/agent/join.
type JoinResponse struct {
	NumJoined int `json:"num_joined"`
}

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error string `json:"error"`
}

// StatusError is returned when the agent answers with a status other than
// 2xx. Message is the agent's {"error": ...} text, or the start of the body
// when it was not JSON.
type StatusError struct {
	StatusCode int
	Message    string
}

func (e *StatusError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("agent answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	return fmt.Sprintf("agent answered %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// IsStatus reports whether err is a *StatusError with the given code.
func IsStatus(err error, code int) bool {
	var se *StatusError
	return errors.As(err, &se) && se.StatusCode == code
}

// Config configures a Client.
type Config struct {
	// Address of the agent's HTTP API: "host:port", "http://host:port" or
	// "https://host:port". Empty means DefaultAddress.
	Address string
	// Token is sent in TokenHeader when not empty.
	Token string
	// HTTPClient is used when set (e.g. for TLS settings); its own Timeout
	// is left alone. Otherwise a client with Timeout is created.
	HTTPClient *http.Client
	// Timeout bounds each request; zero means DefaultTimeout.
	Timeout time.Duration
	// CAFile is a PEM CA bundle that an https:// agent's certificate must
	// verify against (default: the system roots); TLSServerName the name
	// it must carry (default: the host of Address). Both are ignored when
	// HTTPClient is set.
	CAFile        string
	TLSServerName string
	// ClientCert and ClientKey are presented to an agent that verifies
	// client certificates (tls.verify_incoming).
	ClientCert string
	ClientKey  string
}

// Client talks to one agent's HTTP API.
type Client struct {
	base    *url.URL
	token   string
	http    *http.Client
	timeout time.Duration
}

// NewClient checks cfg and returns a client. It does not contact the agent.
func NewClient(cfg Config) (*Client, error) {
	base, err := parseAddress(cfg.Address)
	if err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	hc := cfg.HTTPClient
	if hc == nil {
		// Each request is bounded by its context (Timeout, or longer for a
		// switchover that waits), not by a client-wide timeout.
		hc = &http.Client{}
		if cfg.CAFile != "" || cfg.TLSServerName != "" || cfg.ClientCert != "" || cfg.ClientKey != "" {
			tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TLSServerName}
			if cfg.ClientCert != "" || cfg.ClientKey != "" {
				cert, err := tls.LoadX509KeyPair(cfg.ClientCert, cfg.ClientKey)
				if err != nil {
					return nil, fmt.Errorf("loading the client certificate: %w", err)
				}
				tc.Certificates = []tls.Certificate{cert}
			}
			if cfg.CAFile != "" {
				pem, err := os.ReadFile(cfg.CAFile)
				if err != nil {
					return nil, fmt.Errorf("reading the CA file: %w", err)
				}
				tc.RootCAs = x509.NewCertPool()
				if !tc.RootCAs.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("the CA file %s holds no PEM certificate", cfg.CAFile)
				}
			}
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = tc
			hc = &http.Client{Transport: tr}
		}
	}
	return &Client{base: base, token: cfg.Token, http: hc, timeout: timeout}, nil
}

// Address returns the base URL the client talks to.
func (c *Client) Address() string { return c.base.String() }

func parseAddress(addr string) (*url.URL, error) {
	if addr == "" {
		addr = DefaultAddress
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil {
		return nil, fmt.Errorf("invalid HTTP API address %q: %w", addr, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("invalid HTTP API address %q: scheme must be http or https", addr)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("invalid HTTP API address %q: no host", addr)
	}
	if u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), "8432")
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("invalid HTTP API address %q: must not have a path", addr)
	}
	u.Path = ""
	return u, nil
}

// AgentSelf returns the identity of the agent the client talks to.
func (c *Client) AgentSelf(ctx context.Context) (*AgentSelf, error) {
	var out AgentSelf
	if err := c.do(ctx, http.MethodGet, "/v1/agent/self", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Members returns the cluster members as the agent's gossip sees them.
func (c *Client) Members(ctx context.Context) ([]Member, error) {
	var out []Member
	if err := c.do(ctx, http.MethodGet, "/v1/agent/members", nil, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Join asks the agent to join the cluster through addrs and returns how many
// nodes it reached.
func (c *Client) Join(ctx context.Context, addrs []string) (int, error) {
	if len(addrs) == 0 {
		return 0, errors.New("join: at least one address is required")
	}
	q := url.Values{"address": addrs}
	var out JoinResponse
	if err := c.do(ctx, http.MethodPut, "/v1/agent/join", q, &out); err != nil {
		return 0, err
	}
	return out.NumJoined, nil
}

// Leave makes the agent leave the cluster gracefully.
func (c *Client) Leave(ctx context.Context) error {
	return c.do(ctx, http.MethodPut, "/v1/agent/leave", nil, nil)
}

// ForceLeave marks a failed node as left.
func (c *Client) ForceLeave(ctx context.Context, node string) error {
	if node == "" {
		return errors.New("force-leave: a node name is required")
	}
	return c.do(ctx, http.MethodPut, "/v1/agent/force-leave/"+url.PathEscape(node), nil, nil)
}

// do sends one request and decodes a 2xx JSON answer into out (if not nil).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, out any) error {
	return c.doTimeout(ctx, c.timeout, method, path, query, out)
}

// doTimeout is do with its own bound on the request.
func (c *Client) doTimeout(ctx context.Context, timeout time.Duration, method, path string, query url.Values, out any) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	u := *c.base
	u.RawPath = ""
	u.Path = path
	if strings.Contains(path, "%") {
		// Keep an escaped node name escaped on the wire.
		if p, err := url.PathUnescape(path); err == nil {
			u.Path, u.RawPath = p, path
		}
	}
	u.RawQuery = query.Encode()

	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return fmt.Errorf("building %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set(TokenHeader, c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBody))
	if err != nil {
		return fmt.Errorf("%s %s: reading response: %w", method, path, err)
	}

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return statusError(resp.StatusCode, body)
	}
	if out == nil || len(body) == 0 {
		if out != nil {
			return fmt.Errorf("%s %s: empty response", method, path)
		}
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s %s: decoding response: %w", method, path, err)
	}
	return nil
}

func statusError(code int, body []byte) error {
	var er ErrorResponse
	if err := json.Unmarshal(body, &er); err == nil && er.Error != "" {
		return &StatusError{StatusCode: code, Message: er.Error}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return &StatusError{StatusCode: code, Message: msg}
}
