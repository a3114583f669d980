package chaos

import (
	"testing"
	"time"

	"github.com/pgbattery/pgbattery/test/checker"
)

func TestFailoverGap(t *testing.T) {
	ms := func(v int) time.Duration { return time.Duration(v) * time.Millisecond }
	var ops []checker.Op
	ack := func(at int) {
		ops = append(ops, checker.Op{Kind: "write", Invoke: ms(at - 5), Complete: ms(at), Outcome: checker.OutcomeOK})
	}
	for at := 0; at <= 1000; at += 10 {
		ack(at)
	}
	ack(1049) // acknowledged just after the fault at 1000 by the dying primary
	ops = append(ops, checker.Op{Kind: "write", Invoke: ms(1050), Complete: ms(2000), Outcome: checker.OutcomeUnknown})
	for at := 5300; at <= 6000; at += 10 {
		ack(at)
	}
	if got := failoverGap(ops, ms(1000)); got != ms(5300-1049) {
		t.Fatalf("gap around a fault followed by one late ack: %v, want %v", got, ms(5300-1049))
	}
	if got := failoverGap(ops, ms(5500)); got != ms(10) {
		t.Fatalf("gap around a fault that caused none: %v, want 10ms", got)
	}
	if got := failoverGap(ops, ms(20000)); got != 0 {
		t.Fatalf("gap after the history: %v, want 0", got)
	}
}
