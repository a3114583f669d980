package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// JumpClock moves the node's monotonic clock (the one its primary lease
// and, on the raft leader, the failover hold-down are measured with)
// forward by d, through the agent's debug endpoint (the harness turns
// debug.clock_control on in every node's configuration). Done when the
// agent reports the offset grown by exactly d.
func (n *Node) JumpClock(t testing.TB, d time.Duration) {
	t.Helper()
	if !n.Running() {
		t.Fatalf("clock jump on %s: its agent is not running", n.Name)
	}
	before, after, err := jumpClock(n.HTTPAddr(), d)
	if err != nil {
		t.Fatalf("clock jump on %s: %v", n.Name, err)
	}
	n.c.Event("clock-jump "+n.Name, fmt.Sprintf("+%s (offset %s -> %s)", d, before, after))
}

// ClockOffset is the node's clock offset: every jump so far added up.
func (n *Node) ClockOffset() (time.Duration, error) {
	var out clockJumpReply
	if err := clockRequest(http.MethodGet, "http://"+n.HTTPAddr()+clockJumpPath, &out); err != nil {
		return 0, err
	}
	return time.Duration(out.OffsetNS), nil
}

const clockJumpPath = "/v1/agent/debug/clock-jump"

// clockJumpReply is what the endpoint answers (agent.ClockJumpResponse).
type clockJumpReply struct {
	Node     string `json:"node"`
	JumpedNS int64  `json:"jumped_ns"`
	OffsetNS int64  `json:"offset_ns"`
}

// jumpClock asks the agent at addr to jump by d and checks that it did:
// the offset after is the offset before plus d. Jumps are never retried:
// a retry after a lost answer would jump twice.
func jumpClock(addr string, d time.Duration) (before, after time.Duration, err error) {
	if d <= 0 {
		return 0, 0, fmt.Errorf("a clock jump must be forward (positive), not %s", d)
	}
	base := "http://" + addr + clockJumpPath
	var cur clockJumpReply
	if err := clockRequest(http.MethodGet, base, &cur); err != nil {
		return 0, 0, fmt.Errorf("reading the clock offset: %w", err)
	}
	var out clockJumpReply
	if err := clockRequest(http.MethodPut, base+"?by="+url.QueryEscape(d.String()), &out); err != nil {
		return 0, 0, fmt.Errorf("jumping by %s: %w", d, err)
	}
	before, after = time.Duration(cur.OffsetNS), time.Duration(out.OffsetNS)
	if out.JumpedNS != int64(d) || after != before+d {
		return before, after, fmt.Errorf("jump by %s did not take effect: the agent reports a jump of %s and the offset %s -> %s",
			d, time.Duration(out.JumpedNS), before, after)
	}
	return before, after, nil
}

func clockRequest(method, u string, out *clockJumpReply) error {
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return err
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %d: %s", method, u, resp.StatusCode, e.Error)
		}
		return fmt.Errorf("%s %s: %d", method, u, resp.StatusCode)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decoding the answer %q: %w", body, err)
	}
	return nil
}
