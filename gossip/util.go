package gossip

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-metrics"
)

var errShutdown = errors.New("gossip: shut down")

func randRead(b []byte) (int, error) { return rand.Read(b) }

func log10(x float64) float64 { return math.Log10(x) }

// NormalizeJoinAddr turns "host", "host:port", "[v6]:port", "v6" or
// "[v6]" into host:port, with DefaultPort when none is given.
func NormalizeJoinAddr(s string) (string, error) {
	orig := s
	s = strings.TrimSpace(s)
	if s == "" {
		return "", errors.New("empty join address")
	}
	if host, port, err := net.SplitHostPort(s); err == nil {
		if host == "" {
			return "", fmt.Errorf("join address %q has no host", orig)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return "", fmt.Errorf("join address %q: port %q is not a number in 1-65535", orig, port)
		}
		return net.JoinHostPort(strings.Trim(host, "[]"), port), nil
	}
	bare := s
	if strings.HasPrefix(bare, "[") && strings.HasSuffix(bare, "]") {
		bare = bare[1 : len(bare)-1]
	}
	if ip := net.ParseIP(bare); ip != nil {
		return net.JoinHostPort(ip.String(), strconv.Itoa(DefaultPort)), nil
	}
	if strings.ContainsAny(s, "[]:/ ") {
		return "", fmt.Errorf("join address %q is neither host, host:port nor [ipv6]:port", orig)
	}
	return net.JoinHostPort(s, strconv.Itoa(DefaultPort)), nil
}

// sink reports our metrics to the configured go-metrics instance, or to
// go-metrics' global one (where serf and memberlist report too).
type sink struct{ m *metrics.Metrics }

// metricPrefix begins our metric names; the agent's telemetry adds its
// metrics_prefix ("pgbattery") in front, as for every library's metrics.
var metricPrefix = []string{"gossip"}

func (s sink) key(k ...string) []string {
	return append(append([]string(nil), metricPrefix...), k...)
}

func (s sink) incr(peer string, k ...string) {
	labels := []metrics.Label{{Name: "peer", Value: peer}}
	if s.m != nil {
		s.m.IncrCounterWithLabels(s.key(k...), 1, labels)
		return
	}
	metrics.IncrCounterWithLabels(s.key(k...), 1, labels)
}

func (s sink) rtt(peer string, d time.Duration) {
	labels := []metrics.Label{{Name: "peer", Value: peer}}
	ms := float32(d.Seconds() * 1000)
	if s.m != nil {
		s.m.AddSampleWithLabels(s.key("probe", "rtt_ms"), ms, labels)
		return
	}
	metrics.AddSampleWithLabels(s.key("probe", "rtt_ms"), ms, labels)
}
