package agent

import (
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-metrics"
)

// The HTTP API's request rate limit: a token bucket per client IP
// (limits.http_max_rps, limits.http_burst). Load balancers probe the health
// endpoints often, from few addresses, and must never be refused for it;
// agents call each other's internal endpoints as part of failover, which
// must never wait on a limit. Both are exempt; everything else counts.

// maxLimitedClients bounds the buckets kept; when full, idle ones are
// dropped first, and if none is idle, the least recently seen.
const maxLimitedClients = 10000

// limitIdle is how long a bucket with no request is kept: by then it has
// refilled anyway.
const limitIdle = time.Minute

type bucket struct {
	tokens float64
	last   time.Time
}

// rateLimiter is a token bucket per key.
type rateLimiter struct {
	rate  float64 // tokens per second
	burst float64
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

func newRateLimiter(rps float64, burst int) *rateLimiter {
	if rps <= 0 {
		return nil
	}
	return &rateLimiter{rate: rps, burst: float64(max(burst, 1)), now: time.Now, buckets: map[string]*bucket{}}
}

// allow takes a token for key. When none is left it reports how long until
// one is.
func (l *rateLimiter) allow(key string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxLimitedClients {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(l.burst, b.tokens+el*l.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	wait := time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	return false, wait
}

// evict drops idle buckets, or the least recently used one.
func (l *rateLimiter) evict(now time.Time) {
	var oldestKey string
	var oldest time.Time
	for k, b := range l.buckets {
		if now.Sub(b.last) > limitIdle {
			delete(l.buckets, k)
			continue
		}
		if oldestKey == "" || b.last.Before(oldest) {
			oldestKey, oldest = k, b.last
		}
	}
	if len(l.buckets) >= maxLimitedClients && oldestKey != "" {
		delete(l.buckets, oldestKey)
	}
}

// rateExempt says whether a request bypasses the limit: health checks and
// metrics (probed by load balancers and monitoring), and the agents' own
// calls to each other.
func (s *httpServer) rateExempt(r *http.Request) bool {
	p := r.URL.Path
	if strings.HasPrefix(p, "/v1/health/") || p == "/v1/agent/metrics" || strings.HasPrefix(p, "/v1/internal/") {
		return true
	}
	// A request another agent forwarded to the leader was already counted
	// where it arrived. With an ACL the forwarder proves itself with the
	// token; without one, anyone may do anything anyway.
	return r.Header.Get(forwardedHeader) != "" && s.tokenOK(r)
}

// limited answers 429 when the client is over its rate.
func (s *httpServer) limited(w http.ResponseWriter, r *http.Request) bool {
	if s.limiter == nil || s.rateExempt(r) {
		return false
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ok, wait := s.limiter.allow(host)
	if ok {
		return false
	}
	metrics.IncrCounter([]string{"http", "rate_limited"}, 1)
	w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
	writeError(w, HTTPError{Code: http.StatusTooManyRequests,
		Msg: fmt.Sprintf("rate limit exceeded: at most %g requests per second (burst %g) per client; retry in %s", s.limiter.rate, s.limiter.burst, wait.Round(time.Millisecond))})
	return true
}
