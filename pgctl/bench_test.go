package pgctl

import (
	"sort"
	"syscall"
	"testing"
	"time"
)

// BenchmarkCrashDetection measures the delay between SIGKILL of the
// postmaster and pgctl reporting its exit (Config.OnExit). Restarts are
// outside the timer.
//
//	go test ./pgctl -run '^$' -bench CrashDetection -benchtime 20x
func BenchmarkCrashDetection(b *testing.B) {
	n := newTestNode(b, "bench", true)
	startNode(b, n, StartOptions{})
	var delays []time.Duration
	b.ResetTimer()
	for range b.N {
		pm := n.Postmaster()
		killed := time.Now()
		if err := syscall.Kill(pm.PID(), syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		select {
		case ex := <-n.exit:
			if ex.PID != pm.PID() {
				b.Fatalf("exit of pid %d reported, killed %d", ex.PID, pm.PID())
			}
			delays = append(delays, ex.At.Sub(killed))
		case <-time.After(10 * time.Second):
			b.Fatal("postmaster death not reported")
		}
		b.StopTimer()
		startNode(b, n, StartOptions{})
		b.StartTimer()
	}
	b.StopTimer()
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(delays[len(delays)/2]), "ms-median-detect")
	b.ReportMetric(ms(delays[len(delays)-1]), "ms-max-detect")
}
