package gateway

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	metrics "github.com/hashicorp/go-metrics"
	prometheussink "github.com/hashicorp/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// agentLikeMetrics is a go-metrics instance with the sinks the agent uses
// (in-memory and Prometheus), so the benchmark pays what the agent pays per
// request for metrics.
func agentLikeMetrics(t testing.TB) *metrics.Metrics {
	inm := metrics.NewInmemSink(10*time.Second, time.Minute)
	ps, err := prometheussink.NewPrometheusSinkFrom(prometheussink.PrometheusOpts{
		Expiration: time.Minute, Registerer: prometheus.NewRegistry(), Name: "pgbattery_bench"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := metrics.DefaultConfig("pgbattery")
	cfg.EnableRuntimeMetrics = false
	m, err := metrics.New(cfg, metrics.FanoutSink{inm, ps})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// BenchmarkForwardExtendedAgentMetrics is the gateway's CPU and allocations
// per request of pgbench -M extended -S, one request and its answer at a
// time (as a client at -c 1 sends them), with the metrics sinks the agent
// runs: the messages, the tracker and the latency sample together.
func BenchmarkForwardExtendedAgentMetrics(b *testing.B) {
	req := bytes.Join([][]byte{
		msg('P', cstr(""), cstr("SELECT abalance FROM pgbench_accounts WHERE aid = $1;"), []byte{0, 0}),
		msg('B', cstr(""), cstr(""), []byte{0, 0, 0, 1, 0, 0, 0, 5}, []byte("12345"), []byte{0, 0}),
		msg('D', []byte{'P'}, cstr("")), msg('E', cstr(""), []byte{0, 0, 0, 0}), msg('S'),
	}, nil)
	resp := bytes.Join([][]byte{
		msg('1'), msg('2'), msg('T', make([]byte, 30)), msg('D', make([]byte, 12)), msg('C', cstr("SELECT 1")), msg('Z', []byte{'I'}),
	}, nil)
	s, be, _ := newHarness(nil, 1<<20)
	s.g.cfg.Metrics = agentLikeMetrics(b)
	reqR, respR := bytes.NewReader(req), bytes.NewReader(resp)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		forwardOnce(s, be, reqR, respR, req, resp)
	}
}

// BenchmarkForwardExtendedWrite is an autocommit -M extended INSERT and its
// answer at a time: the answer's start (ParseComplete, BindComplete) is
// kept back until its CommandComplete shows no fence refused it
// (hidesFenceRejection).
func BenchmarkForwardExtendedWrite(b *testing.B) {
	req := bytes.Join([][]byte{
		msg('P', cstr(""), cstr("INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES ($1, 1, 1, 1)"), []byte{0, 0}),
		msg('B', cstr(""), cstr(""), []byte{0, 0, 0, 1, 0, 0, 0, 1}, []byte("7"), []byte{0, 0}),
		msg('E', cstr(""), []byte{0, 0, 0, 0}), msg('S'),
	}, nil)
	resp := bytes.Join([][]byte{
		msg('1'), msg('2'), msg('C', cstr("INSERT 0 1")), msg('Z', []byte{'I'}),
	}, nil)
	s, be, _ := newHarness(nil, 1<<20)
	s.track.reported["default_transaction_read_only"] = "off"
	reqR, respR := bytes.NewReader(req), bytes.NewReader(resp)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		forwardOnce(s, be, reqR, respR, req, resp)
	}
}

// BenchmarkForwardLargeQuery is one simple Query larger than the read
// buffer and its answer at a time: what recording a request for a re-run
// (record, migrate.go) costs when the request does not fit the read
// buffer.
func BenchmarkForwardLargeQuery(b *testing.B) {
	for _, size := range []int{10 << 10, 40 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			req := msg('Q', cstr("SELECT length('"+strings.Repeat("x", size)+"')"))
			resp := bytes.Join([][]byte{
				msg('T', make([]byte, 30)), msg('D', make([]byte, 12)), msg('C', cstr("SELECT 1")), msg('Z', []byte{'I'}),
			}, nil)
			s, be, _ := newHarness(nil, 1<<20)
			reqR, respR := bytes.NewReader(req), bytes.NewReader(resp)
			b.SetBytes(int64(len(req)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				forwardOnce(s, be, reqR, respR, req, resp)
			}
			if !s.recOK || !bytes.Equal(s.recorded(), req) {
				b.Fatal("the request was not recorded")
			}
		})
	}
}

// forwardOnce forwards req to the back end and resp back to the client,
// through reused readers and writers that discard the output.
func forwardOnce(s *session, be *backend, reqR, respR *bytes.Reader, req, resp []byte) {
	reqR.Reset(req)
	s.cr.Reset(reqR)
	be.w.Reset(io.Discard)
	s.clientToServer(be)
	be.w.Flush()
	respR.Reset(resp)
	be.r.Reset(respR)
	s.cw.Reset(io.Discard)
	s.serverToClient(be)
	s.cw.Flush()
}
