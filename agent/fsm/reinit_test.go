package fsm

import (
	"bytes"
	"fmt"
	"io"
	"reflect"
	"testing"
)

func TestReinitRequestAndDone(t *testing.T) {
	a := cluster3(t)
	a.mustApply(&UpsertMember{Member: Member{Name: "w", Voter: true, NoPostgres: true}})

	a.mustReject(&Reinit{Node: "a", ID: "r0"}, "is the primary")
	a.mustReject(&Reinit{Node: "zz", ID: "r0"}, "not a member")
	a.mustReject(&Reinit{Node: "w", ID: "r0"}, "runs no PostgreSQL")
	a.mustReject(&Reinit{Node: "b"}, "needs a node and a request id")

	a.mustApply(&Reinit{Node: "b", ID: "r1", RequestedBy: "c", Reason: "diverged"})
	reqIndex := a.index
	st := a.f.State()
	req, ok := st.Reinit["b"]
	if !ok || req.ID != "r1" || req.Index != reqIndex || req.Epoch != 1 || req.RequestedBy != "c" || req.Reason != "diverged" {
		t.Fatalf("pending request: %+v (ok %v)", req, ok)
	}
	a.mustReject(&Reinit{Node: "b", ID: "r2"}, "already pending")
	// A done report for another request (a stale agent's) is refused.
	a.mustReject(&Reinit{Node: "b", ID: "r0", Done: true}, "no reinit request r0")
	a.mustReject(&Reinit{Node: "c", ID: "r1", Done: true}, "no reinit request r1")

	a.mustApply(&Reinit{Node: "b", ID: "r1", Done: true, From: "a", Detail: "cloned"})
	st = a.f.State()
	if len(st.Reinit) != 0 || len(st.ReinitLog) != 1 {
		t.Fatalf("after done: pending %v log %v", st.Reinit, st.ReinitLog)
	}
	rec := st.ReinitLog[0]
	if rec.ID != "r1" || rec.Node != "b" || rec.Outcome != ReinitDone || rec.From != "a" || rec.DoneIndex != a.index || rec.Index != reqIndex {
		t.Fatalf("record: %+v", rec)
	}
	// Done twice: the second is refused, nothing changes.
	a.mustReject(&Reinit{Node: "b", ID: "r1", Done: true}, "no reinit request")
	// A new request for the same node is accepted again.
	a.mustApply(&Reinit{Node: "b", ID: "r3"})
}

func TestReinitCancelledWhenNodeBecomesPrimary(t *testing.T) {
	a := cluster3(t)
	a.mustApply(&Reinit{Node: "b", ID: "r1"})
	a.mustApply(&Reinit{Node: "c", ID: "r2"})
	cur := a.f.State().Lease.Version
	a.mustApply(&SetPrimary{Node: "b", Epoch: 2, ExpectLeaseVersion: cur, Kind: KindFailover,
		Sync: SyncState{Mode: ModeQuorum, Standbys: []string{"c"}, K: 1, Voters: []string{"c"}, Quorum: 1}})
	st := a.f.State()
	if _, ok := st.Reinit["b"]; ok {
		t.Fatal("the new primary's reinit request is still pending")
	}
	if _, ok := st.Reinit["c"]; !ok {
		t.Fatal("another node's request was dropped")
	}
	if n := len(st.ReinitLog); n != 1 || st.ReinitLog[0].Outcome != ReinitCancelled || st.ReinitLog[0].ID != "r1" {
		t.Fatalf("log: %+v", st.ReinitLog)
	}
	a.mustReject(&Reinit{Node: "b", ID: "r1", Done: true}, "no reinit request")
}

func TestReinitLogBoundedAndSnapshotted(t *testing.T) {
	a := cluster3(t)
	for i := 0; i < MaxReinitLog+5; i++ {
		id := fmt.Sprintf("r%d", i)
		a.mustApply(&Reinit{Node: "c", ID: id})
		a.mustApply(&Reinit{Node: "c", ID: id, Done: true})
	}
	a.mustApply(&Reinit{Node: "b", ID: "pending"})
	st := a.f.State()
	if len(st.ReinitLog) != MaxReinitLog || st.ReinitLog[MaxReinitLog-1].ID != fmt.Sprintf("r%d", MaxReinitLog+4) {
		t.Fatalf("log not bounded to the newest %d: %d entries", MaxReinitLog, len(st.ReinitLog))
	}
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, st); err != nil {
		t.Fatal(err)
	}
	f2 := New(nil)
	if err := f2.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	if got := f2.State(); !reflect.DeepEqual(got.Reinit, st.Reinit) || !reflect.DeepEqual(got.ReinitLog, st.ReinitLog) {
		t.Fatalf("restored reinit state differs: %+v / %+v", got.Reinit, got.ReinitLog)
	}
	// Clone is deep: changing the clone's map leaves the original alone.
	c := st.Clone()
	delete(c.Reinit, "b")
	if _, ok := st.Reinit["b"]; !ok {
		t.Fatal("Clone shares the reinit map")
	}
}
