package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
)

// ReinitOptions shape a reinit request.
type ReinitOptions struct {
	// Force skips the check that the node's absence would not block
	// writes (it is a synchronous standby the mode cannot do without).
	Force bool
	// Reason is recorded with the request.
	Reason string
}

// ReinitResponse answers PUT /v1/operator/reinit: the request is recorded
// in the cluster state, and the node's agent carries it out.
type ReinitResponse struct {
	Node string `json:"node"`
	// ID names the request; GET /v1/operator/reinit shows it under
	// "pending" until the node has re-cloned, then under "recent".
	ID    string `json:"id"`
	From  string `json:"from"`
	Epoch uint64 `json:"epoch"`
}

// Reinit is a pending or finished reinit request.
type Reinit struct {
	Node        string `json:"node"`
	ID          string `json:"id"`
	RequestedBy string `json:"requested_by,omitempty"`
	Reason      string `json:"reason,omitempty"`
	Index       uint64 `json:"index"`
	Epoch       uint64 `json:"epoch"`
	// Outcome is "" while pending, then "done" or "cancelled".
	Outcome   string `json:"outcome,omitempty"`
	Detail    string `json:"detail,omitempty"`
	From      string `json:"from,omitempty"`
	DoneIndex uint64 `json:"done_index,omitempty"`
}

// ReinitStatus answers GET /v1/operator/reinit.
type ReinitStatus struct {
	Pending []Reinit `json:"pending"`
	// Recent are the last finished requests, oldest first.
	Recent []Reinit `json:"recent"`
}

// Reinit asks node to set its PostgreSQL data aside and clone it afresh
// from the primary. The answer comes once the request is recorded; follow
// it with ReinitStatus.
func (c *Client) Reinit(ctx context.Context, node string, o ReinitOptions) (*ReinitResponse, error) {
	if node == "" {
		return nil, errors.New("reinit: a node name is required")
	}
	q := url.Values{"node": {node}}
	if o.Force {
		q.Set("force", "1")
	}
	if o.Reason != "" {
		q.Set("reason", o.Reason)
	}
	var out ReinitResponse
	if err := c.do(ctx, http.MethodPut, "/v1/operator/reinit", q, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ReinitStatus lists the pending and recently finished reinit requests.
func (c *Client) ReinitStatus(ctx context.Context) (*ReinitStatus, error) {
	var out ReinitStatus
	if err := c.do(ctx, http.MethodGet, "/v1/operator/reinit", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
