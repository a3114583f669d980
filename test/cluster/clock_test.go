package cluster

import (
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/testutil"
)

// fakeClockAgent answers the clock-jump endpoint as the agent does, or,
// with ignore, accepts jumps without applying them (a broken agent the
// fault must not report as done).
func fakeClockAgent(t *testing.T, enabled, ignore bool) string {
	t.Helper()
	var mu sync.Mutex
	var offset time.Duration
	mux := http.NewServeMux()
	mux.HandleFunc(clockJumpPath, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if !enabled {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(map[string]string{"error": "clock control is off"})
			return
		}
		var jumped time.Duration
		if r.Method == http.MethodPut {
			d, err := time.ParseDuration(r.URL.Query().Get("by"))
			if err != nil || d < 0 {
				w.WriteHeader(http.StatusBadRequest)
				json.NewEncoder(w).Encode(map[string]string{"error": "bad by"})
				return
			}
			jumped = d
			if !ignore {
				offset += d
			}
		}
		json.NewEncoder(w).Encode(map[string]any{"node": "x", "jumped_ns": int64(jumped), "offset_ns": int64(offset)})
	})
	ln, err := net.Listen("tcp", net.JoinHostPort(testutil.Addr(t), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func TestJumpClockVerifies(t *testing.T) {
	addr := fakeClockAgent(t, true, false)
	before, after, err := jumpClock(addr, 2*time.Second)
	if err != nil || before != 0 || after != 2*time.Second {
		t.Fatalf("first jump: %s -> %s, %v", before, after, err)
	}
	before, after, err = jumpClock(addr, 300*time.Millisecond)
	if err != nil || before != 2*time.Second || after != 2300*time.Millisecond {
		t.Fatalf("second jump: %s -> %s, %v", before, after, err)
	}
	if _, _, err := jumpClock(addr, -time.Second); err == nil || !strings.Contains(err.Error(), "forward") {
		t.Fatalf("a backward jump was sent: %v", err)
	}

	if _, _, err := jumpClock(fakeClockAgent(t, true, true), time.Second); err == nil || !strings.Contains(err.Error(), "did not take effect") {
		t.Fatalf("a jump the agent did not apply passed as done: %v", err)
	}
	if _, _, err := jumpClock(fakeClockAgent(t, false, false), time.Second); err == nil || !strings.Contains(err.Error(), "404: clock control is off") {
		t.Fatalf("a disabled endpoint: %v", err)
	}
}
