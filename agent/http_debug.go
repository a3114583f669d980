package agent

import (
	"net/http"
	"time"
)

// maxClockJump bounds one jump: enough to outlast any lease or hold-down,
// small enough that a typo (hours for seconds) is refused.
const maxClockJump = time.Hour

// ClockJumpResponse is the answer of /v1/agent/debug/clock-jump: the
// clock's total offset after the request (every jump so far added up).
type ClockJumpResponse struct {
	Node string `json:"node"`
	// JumpedNS is this request's jump (0 for GET).
	JumpedNS int64 `json:"jumped_ns"`
	// OffsetNS is the offset of the agent's monotonic clock now.
	OffsetNS int64 `json:"offset_ns"`
	// Offset is OffsetNS as a Go duration ("2.5s").
	Offset string `json:"offset"`
}

// handleClockJump is /v1/agent/debug/clock-jump, for fault tests only
// (debug.clock_control): GET reads the offset of the agent's monotonic
// clock, PUT ?by=DURATION moves the clock forward. That clock measures the
// primary's lease and the raft leader's hold-down, so a jump on the
// primary ends its lease in its own eyes, and one on the leader shortens
// the hold-down it waits out.
func (a *Agent) handleClockJump(w http.ResponseWriter, r *http.Request) (any, error) {
	cfg := a.config()
	if !cfg.Debug.ClockControl {
		return nil, HTTPError{Code: http.StatusNotFound, Msg: "clock control is off: the clock-jump endpoint exists only with debug { clock_control = true } in the agent's configuration (fault tests only)"}
	}
	if a.cluster == nil || a.cluster.clock == nil {
		return nil, unavailable("this agent runs no raft, so it has no lease clock")
	}
	clock := a.cluster.clock
	out := ClockJumpResponse{Node: cfg.NodeName}
	if r.Method == http.MethodPut {
		q := r.URL.Query()
		arg := q.Get("by")
		if arg == "" {
			return nil, badRequest("missing jump: PUT /v1/agent/debug/clock-jump?by=DURATION (a positive Go duration such as 2s or 1500ms)")
		}
		by, err := time.ParseDuration(arg)
		if err != nil {
			return nil, badRequest("by=%q is not a duration (use a positive Go duration such as 2s or 1500ms)", arg)
		}
		if by > maxClockJump {
			return nil, badRequest("by=%s is more than the largest jump allowed (%s)", by, maxClockJump)
		}
		before := clock.Offset()
		offset, err := clock.Jump(by)
		if err != nil {
			return nil, badRequest("%v", err)
		}
		a.logger.Warn("monotonic clock jumped forward through the debug API: leases and hold-downs on this node are measured with it",
			"by", by, "offset_before", before, "offset", offset, "remote", r.RemoteAddr)
		out.JumpedNS = int64(by)
	}
	off := clock.Offset()
	out.OffsetNS, out.Offset = int64(off), off.String()
	return out, nil
}
