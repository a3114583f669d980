package fsm

import (
	"bytes"
	"testing"
)

// FuzzApply feeds arbitrary log entries to a bootstrapped FSM: it must
// never panic, and whatever applied must survive a snapshot round trip.
func FuzzApply(f *testing.F) {
	for _, c := range []Command{
		&RenewLease{Holder: "a", Epoch: 1, LSN: 5},
		&SetPrimary{Node: "b", Epoch: 2, ExpectLeaseVersion: 4},
		&SetSync{Epoch: 1, ExpectVersion: 4, Sync: SyncState{Mode: ModeQuorum, Standbys: []string{"b"}, K: 1, Voters: []string{"b"}, Quorum: 1}},
		&RequestOp{Op: Operation{Kind: OpSwitchover, Epoch: 1, Target: "c"}},
		&RecordFence{Node: "a", Epoch: 1, Timeline: 1, XID: 3},
	} {
		data, _ := Encode(c)
		f.Add(data)
	}
	f.Add([]byte{0xff, '{'})
	f.Fuzz(func(t *testing.T, data []byte) {
		a := cluster3(t)
		_ = a.f.ApplyEntry(a.index+1, 1, data)
		var buf bytes.Buffer
		if err := WriteSnapshot(&buf, a.f.State()); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadSnapshot(&buf); err != nil {
			t.Fatalf("state after %q does not round-trip: %v", data, err)
		}
	})
}
