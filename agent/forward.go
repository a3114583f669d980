package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/pgbattery/pgbattery/agent/api"
	"github.com/pgbattery/pgbattery/agent/controller"
	"github.com/pgbattery/pgbattery/agent/fsm"
	"github.com/pgbattery/pgbattery/gossip"
)

// Agent-to-agent calls go over the agents' HTTP APIs: a command forwarded
// to the raft leader, and the controller's fresh probe of a node's
// PostgreSQL. Both are small and latency-bound, so the client keeps
// connections alive and every call has a short timeout.
const (
	forwardTimeout  = 3 * time.Second
	maxForwardReply = 1 << 20
)

// errRejected marks a command the FSM refused (its condition did not hold).
var errRejected = errors.New("rejected by the cluster state")

// forwarder applies commands through the raft leader from any agent, and
// probes peers.
type forwarder struct {
	c    *cluster
	once sync.Once
	hc   *http.Client
}

func (f *forwarder) client() *http.Client {
	f.once.Do(func() {
		tr := &http.Transport{
			DialContext:           (&net.Dialer{Timeout: time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
			ResponseHeaderTimeout: forwardTimeout,
			TLSHandshakeTimeout:   forwardTimeout,
		}
		if cfg := f.c.a.config(); httpTLSEnabled(cfg) {
			tc, err := peerHTTPTLS(cfg.TLS)
			if err != nil {
				// The agent checked the same files at start-up; calls
				// fail (and say why) rather than fall back to plaintext.
				f.c.a.logger.Error("configuring TLS for calls to other agents", "error", err)
				tc = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			tr.TLSClientConfig = tc
		}
		f.hc = &http.Client{Timeout: forwardTimeout, Transport: tr}
	})
	return f.hc
}

// apply commits cmd through the leader and returns nil once it applied
// without rejection.
func (f *forwarder) apply(ctx context.Context, cmd fsm.Command) error {
	data, err := fsm.Encode(cmd)
	if err != nil {
		return err
	}
	if f.c.raft.IsLeader() {
		if _, err := f.c.raft.Apply(ctx, data); err != nil {
			if fsm.IsRejected(err) {
				return fmt.Errorf("%w: %v", errRejected, err)
			}
			return err
		}
		return nil
	}
	addr, err := f.leaderAPI()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, f.url(addr, "/v1/internal/apply"), bytes.NewReader(data))
	if err != nil {
		return err
	}
	f.auth(req)
	resp, err := f.client().Do(req)
	if err != nil {
		return fmt.Errorf("forwarding %s to the leader at %s: %w", cmd.MessageType(), addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxForwardReply))
	switch resp.StatusCode {
	case http.StatusOK:
		return nil
	case http.StatusConflict:
		return fmt.Errorf("%w: %s", errRejected, errorMessage(body))
	default:
		return fmt.Errorf("forwarding %s to the leader at %s: %s: %s", cmd.MessageType(), addr, resp.Status, errorMessage(body))
	}
}

// Renew and Release implement lease.Renewer.
func (f *forwarder) Renew(ctx context.Context, cmd *fsm.RenewLease) error { return f.apply(ctx, cmd) }
func (f *forwarder) Release(ctx context.Context, cmd *fsm.ReleaseLease) error {
	return f.apply(ctx, cmd)
}

// leaderAPI finds the HTTP address of the raft leader's agent.
func (f *forwarder) leaderAPI() (string, error) {
	_, id := f.c.raft.Leader()
	if id == "" {
		return "", errors.New("no raft leader is known")
	}
	return f.apiAddr(id)
}

// apiAddr is a node's HTTP address, from the FSM or, for a node the FSM
// does not list yet, from gossip.
func (f *forwarder) apiAddr(node string) (string, error) {
	if m := f.c.fsm.State().Member(node); m != nil && m.Addrs["http"] != "" {
		return m.Addrs["http"], nil
	}
	for _, m := range f.c.a.gossip.Members() {
		if m.Name == node && m.Tags[gossip.TagAPI] != "" {
			return m.Tags[gossip.TagAPI], nil
		}
	}
	return "", fmt.Errorf("no HTTP address known for node %s", node)
}

func (f *forwarder) auth(req *http.Request) {
	if tok := f.c.a.config().ACL.Token; tok != "" {
		req.Header.Set(api.TokenHeader, tok)
	}
}

// probe asks a peer's agent for its PostgreSQL state.
func (f *forwarder) probe(ctx context.Context, m *fsm.Member) (controller.PGStatus, error) {
	var st controller.PGStatus
	addr := m.Addrs["http"]
	if addr == "" {
		var err error
		if addr, err = f.apiAddr(m.Name); err != nil {
			return st, err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url(addr, "/v1/internal/pg-status"), nil)
	if err != nil {
		return st, err
	}
	f.auth(req)
	resp, err := f.client().Do(req)
	if err != nil {
		return st, fmt.Errorf("probing %s: %w", m.Name, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxForwardReply))
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("probing %s: %s: %s", m.Name, resp.Status, errorMessage(body))
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("probing %s: decoding the answer: %w", m.Name, err)
	}
	return st, nil
}

func errorMessage(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return e.Error
	}
	if len(body) > 200 {
		body = body[:200]
	}
	return string(bytes.TrimSpace(body))
}

// handleInternalApply is PUT /v1/internal/apply: a command forwarded by
// another agent to this one, the raft leader.
func (a *Agent) handleInternalApply(w http.ResponseWriter, r *http.Request) (any, error) {
	if a.cluster == nil {
		return nil, HTTPError{Code: http.StatusServiceUnavailable, Msg: "this agent runs no raft"}
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, HTTPError{Code: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("command larger than %d bytes", mbe.Limit)}
		}
		return nil, badRequest("reading command: %v", err)
	}
	if _, err := fsm.Decode(data); err != nil {
		return nil, badRequest("decoding command: %v", err)
	}
	if !a.cluster.raft.IsLeader() {
		return nil, HTTPError{Code: http.StatusServiceUnavailable, Msg: "not the raft leader"}
	}
	ctx, cancel := context.WithTimeout(r.Context(), forwardTimeout)
	defer cancel()
	if _, err := a.cluster.raft.Apply(ctx, data); err != nil {
		if fsm.IsRejected(err) {
			return nil, conflict("%v", err)
		}
		return nil, HTTPError{Code: http.StatusServiceUnavailable, Msg: err.Error()}
	}
	return nil, nil
}

// handleInternalPGStatus is GET /v1/internal/pg-status: this node's
// PostgreSQL, asked fresh, for the controller on the leader.
func (a *Agent) handleInternalPGStatus(w http.ResponseWriter, r *http.Request) (any, error) {
	if a.cluster == nil || a.cluster.rec == nil {
		return controller.PGStatus{}, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), forwardTimeout)
	defer cancel()
	return a.cluster.rec.pgStatus(ctx), nil
}
