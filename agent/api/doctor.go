package api

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/pgbattery/pgbattery/agent/doctor"
)

// DoctorOptions are the thresholds of GET /v1/agent/doctor; zero values
// leave the agent's defaults.
type DoctorOptions struct {
	ClockThreshold time.Duration
	// MinFreeWAL and MaxSlotRetained are sizes: bytes, or e.g. "1GB".
	MinFreeWAL      string
	MaxSlotRetained string
	// Input asks for the gathered reports too.
	Input bool
}

// Doctor runs the cluster health checks on the agent (which gathers every
// member's report) and returns the findings. The call succeeds whatever the
// checks found: Result.Status says.
func (c *Client) Doctor(ctx context.Context, o DoctorOptions) (*doctor.Result, error) {
	q := url.Values{}
	if o.ClockThreshold > 0 {
		q.Set("clock_threshold", o.ClockThreshold.String())
	}
	if o.MinFreeWAL != "" {
		q.Set("min_free_wal", o.MinFreeWAL)
	}
	if o.MaxSlotRetained != "" {
		q.Set("max_slot_retained", o.MaxSlotRetained)
	}
	if o.Input {
		q.Set("input", "1")
	}
	var out doctor.Result
	if err := c.do(ctx, http.MethodGet, "/v1/agent/doctor", q, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
