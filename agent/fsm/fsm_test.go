package fsm

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// applier feeds commands to an FSM through raft.Log entries, as raft does.
type applier struct {
	t     *testing.T
	f     *FSM
	index uint64
	term  uint64
}

func newApplier(t *testing.T) *applier {
	return &applier{t: t, f: New(nil), term: 1}
}

func (a *applier) apply(c Command) error {
	a.t.Helper()
	data, err := Encode(c)
	if err != nil {
		a.t.Fatalf("encoding %T: %v", c, err)
	}
	a.index++
	res := a.f.Apply(&raft.Log{Index: a.index, Term: a.term, Type: raft.LogCommand, Data: data})
	if res == nil {
		return nil
	}
	return res.(error)
}

func (a *applier) mustApply(c Command) {
	a.t.Helper()
	if err := a.apply(c); err != nil {
		a.t.Fatalf("applying %T: %v", c, err)
	}
}

func (a *applier) mustReject(c Command, want string) {
	a.t.Helper()
	before := a.f.State()
	err := a.apply(c)
	if err == nil {
		a.t.Fatalf("%T applied, want rejection containing %q", c, want)
	}
	if !IsRejected(err) {
		a.t.Fatalf("%T: error %v is not a RejectedError", c, err)
	}
	if !strings.Contains(err.Error(), want) {
		a.t.Fatalf("%T rejected with %q, want it to mention %q", c, err, want)
	}
	after := a.f.State()
	b, aa := *before, *after
	b.Index, b.Term, aa.Index, aa.Term = 0, 0, 0, 0
	if !reflect.DeepEqual(&b, &aa) {
		a.t.Fatalf("rejected %T changed the state", c)
	}
}

// cluster3 bootstraps a cluster with members a, b, c and primary a.
func cluster3(t *testing.T) *applier {
	a := newApplier(t)
	for i, n := range []string{"a", "b", "c"} {
		a.mustApply(&UpsertMember{Member: Member{Name: n, ID: n, Voter: true, FailoverPriority: i,
			Addrs: map[string]string{"raft": "127.0.0.2:8300"}, Tags: map[string]string{"dc": "x"}}})
	}
	a.mustApply(&Bootstrap{ClusterID: "c1", Node: "a", Reason: "test",
		Sync: SyncState{Mode: ModeQuorum, Standbys: []string{"b", "c"}, K: 1, Voters: []string{"b", "c"}, Quorum: 2}})
	return a
}

func TestBootstrapOnce(t *testing.T) {
	a := cluster3(t)
	st := a.f.State()
	if st.ClusterID != "c1" || st.Primary != "a" || st.Epoch != 1 || st.Lease.Holder != "a" || st.Lease.Epoch != 1 {
		t.Fatalf("after bootstrap: %+v", st)
	}
	if st.Lease.GrantedIndex != a.index || st.Lease.Version != a.index || st.Sync.Version != a.index || st.Sync.Epoch != 1 {
		t.Fatalf("lease/sync positions: %+v %+v", st.Lease, st.Sync)
	}
	if len(st.History) != 1 || st.History[0].Kind != KindBootstrap || st.History[0].To != "a" {
		t.Fatalf("history: %+v", st.History)
	}
	a.mustReject(&Bootstrap{ClusterID: "c2", Node: "b"}, "already bootstrapped")

	b := newApplier(t)
	b.mustReject(&Bootstrap{ClusterID: "x", Node: "nobody"}, "not a member")
	b.mustApply(&UpsertMember{Member: Member{Name: "w", NoPostgres: true}})
	b.mustReject(&Bootstrap{ClusterID: "x", Node: "w"}, "runs no PostgreSQL")
	b.mustReject(&Bootstrap{Node: "w"}, "empty cluster id")
}

func TestSystemID(t *testing.T) {
	a := cluster3(t)
	a.mustReject(&SetSystemID{}, "system identifier 0")
	a.mustApply(&SetSystemID{SystemID: 7321938173912839123})
	a.mustApply(&SetSystemID{SystemID: 7321938173912839123})
	a.mustReject(&SetSystemID{SystemID: 5}, "already has system identifier")
	if got := a.f.State().SystemID; got != 7321938173912839123 {
		t.Fatalf("system id %d", got)
	}
}

func TestMembers(t *testing.T) {
	a := cluster3(t)
	a.mustReject(&UpsertMember{}, "without a name")
	a.mustApply(&UpsertMember{Member: Member{Name: "b", NoFailover: true}})
	if !a.f.State().Member("b").NoFailover {
		t.Fatal("update not applied")
	}
	a.mustReject(&RemoveMember{Name: "a"}, "is the primary")
	a.mustReject(&RemoveMember{Name: "zz"}, "not a member")
	a.mustApply(&RemoveMember{Name: "c"})
	if a.f.State().Member("c") != nil || !reflect.DeepEqual(a.f.State().MemberNames(), []string{"a", "b"}) {
		t.Fatalf("members: %v", a.f.State().MemberNames())
	}
}

func TestLeaseRenewRelease(t *testing.T) {
	a := cluster3(t)
	a.mustApply(&RenewLease{Holder: "a", Epoch: 1, LSN: 500})
	a.mustApply(&RenewLease{Holder: "a", Epoch: 1, LSN: 400}) // reordered report: keep the highest
	st := a.f.State()
	if st.Lease.RenewedIndex != a.index || st.Lease.Version != a.index || st.Lease.RenewedLSN != 500 {
		t.Fatalf("renewal not recorded: %+v", st.Lease)
	}
	a.mustReject(&RenewLease{Holder: "b", Epoch: 1}, "does not hold the lease")
	a.mustReject(&RenewLease{Holder: "a", Epoch: 2}, "does not hold the lease")
	a.mustApply(&ReleaseLease{Holder: "a", Epoch: 1, FinalLSN: 99, Cause: "PostgreSQL died"})
	st = a.f.State()
	if !st.Lease.Released || st.Lease.FinalLSN != 99 || st.Lease.ReleasedIndex != a.index {
		t.Fatalf("release not recorded: %+v", st.Lease)
	}
	a.mustReject(&RenewLease{Holder: "a", Epoch: 1}, "was released")
	a.mustReject(&ReleaseLease{Holder: "a", Epoch: 1}, "was released")
}

func TestSetPrimaryCompareAndSet(t *testing.T) {
	a := cluster3(t)
	a.mustApply(&RenewLease{Holder: "a", Epoch: 1})
	seen := a.f.State().Lease.Version

	// A decision taken before a later renewal must not apply.
	a.mustApply(&RenewLease{Holder: "a", Epoch: 1})
	a.mustReject(&SetPrimary{Node: "b", Epoch: 2, ExpectLeaseVersion: seen, Kind: KindFailover}, "lease of a changed")

	// Wrong epochs: stale (same) and skipping.
	cur := a.f.State().Lease.Version
	a.mustReject(&SetPrimary{Node: "b", Epoch: 1, ExpectLeaseVersion: cur}, "current epoch is 1")
	a.mustReject(&SetPrimary{Node: "b", Epoch: 3, ExpectLeaseVersion: cur}, "current epoch is 1")
	a.mustReject(&SetPrimary{Node: "zz", Epoch: 2, ExpectLeaseVersion: cur}, "not a member")

	a.mustApply(&SetPrimary{Node: "b", Epoch: 2, ExpectLeaseVersion: cur, Kind: KindFailover, Reason: "lease ended",
		Candidates: []Candidate{{Node: "b", ReceiveLSN: 10}, {Node: "c", ReceiveLSN: 5, Rejected: "less WAL"}},
		PromoteLSN: 10, Sync: SyncState{Mode: ModeQuorum, Standbys: []string{"c"}, K: 1, Voters: []string{"c"}, Quorum: 1, FloorLSN: 10}})
	st := a.f.State()
	if st.Primary != "b" || st.Epoch != 2 || st.Lease.Holder != "b" || st.Lease.Epoch != 2 || st.Lease.Released || st.Lease.RenewedIndex != 0 {
		t.Fatalf("after failover: primary %s epoch %d lease %+v", st.Primary, st.Epoch, st.Lease)
	}
	if st.Sync.Epoch != 2 || st.Sync.FloorLSN != 10 || st.Sync.Version != a.index {
		t.Fatalf("sync of new epoch: %+v", st.Sync)
	}
	h := st.History[len(st.History)-1]
	if h.Epoch != 2 || h.From != "a" || h.To != "b" || len(h.Candidates) != 2 || h.Candidates[1].Rejected != "less WAL" || h.Index != a.index {
		t.Fatalf("history entry: %+v", h)
	}
	// The same decision arriving twice (a stale leader's copy) is refused.
	a.mustReject(&SetPrimary{Node: "c", Epoch: 2, ExpectLeaseVersion: cur}, "current epoch is 2")
	// The old holder can no longer renew.
	a.mustReject(&RenewLease{Holder: "a", Epoch: 1}, "does not hold the lease")
}

func TestRecordFence(t *testing.T) {
	a := cluster3(t)
	if a.f.State().PrimaryReady() {
		t.Fatal("ready before fence")
	}
	a.mustReject(&RecordFence{Node: "b", Epoch: 1, Timeline: 1, XID: 5}, "not the primary")
	a.mustReject(&RecordFence{Node: "a", Epoch: 2, Timeline: 1, XID: 5}, "not the primary")
	a.mustApply(&RecordFence{Node: "a", Epoch: 1, Timeline: 3, XID: 731, SwitchLSN: 42})
	st := a.f.State()
	f, ok := st.FenceFor(1)
	if !ok || f.XID != 731 || f.Timeline != 3 || !st.PrimaryReady() || st.Timeline != 3 {
		t.Fatalf("fence: %+v ok=%v timeline=%d", f, ok, st.Timeline)
	}
	a.mustReject(&RecordFence{Node: "a", Epoch: 1, Timeline: 3, XID: 800}, "already recorded")
	a.mustApply(&SetPrimary{Node: "b", Epoch: 2, ExpectLeaseVersion: st.Lease.Version})
	a.mustReject(&RecordFence{Node: "b", Epoch: 2, Timeline: 2, XID: 900}, "older than the cluster's")
	a.mustApply(&RecordFence{Node: "b", Epoch: 2, Timeline: 4, XID: 900})
	if f, _ := a.f.State().FenceFor(1); f.XID != 731 {
		t.Fatal("earlier epoch's fence lost")
	}
}

func TestFencesAndHistoryBounded(t *testing.T) {
	a := cluster3(t)
	nodes := []string{"a", "b", "c"}
	for e := uint64(1); e < MaxHistory+20; e++ {
		st := a.f.State()
		a.mustApply(&RecordFence{Node: st.Primary, Epoch: e, Timeline: uint32(e), XID: e})
		a.mustApply(&SetPrimary{Node: nodes[e%3], Epoch: e + 1, ExpectLeaseVersion: a.f.State().Lease.Version, Kind: KindFailover})
	}
	st := a.f.State()
	if len(st.History) != MaxHistory || len(st.Fences) != MaxFences {
		t.Fatalf("history %d fences %d", len(st.History), len(st.Fences))
	}
	if st.History[len(st.History)-1].Epoch != st.Epoch {
		t.Fatal("newest history entry dropped")
	}
}

func TestSetSync(t *testing.T) {
	a := cluster3(t)
	st := a.f.State()
	v := st.Sync.Version
	a.mustReject(&SetSync{Epoch: 2, ExpectVersion: v}, "current epoch is 1")
	a.mustReject(&SetSync{Epoch: 1, ExpectVersion: v - 1, Sync: SyncState{Mode: ModeQuorum, Standbys: []string{"b"}, K: 1, Voters: []string{"b"}, Quorum: 1}}, "sync configuration changed")
	a.mustReject(&SetSync{Epoch: 1, ExpectVersion: v, Sync: SyncState{Mode: ModeQuorum, Standbys: []string{"b"}, K: 1, Voters: []string{"c"}, Quorum: 1}}, "missing from the failover voters")
	a.mustReject(&SetSync{Epoch: 1, ExpectVersion: v, Sync: SyncState{Mode: ModeQuorum, Standbys: []string{"b"}, K: 2, Voters: []string{"b"}, Quorum: 1}}, "ANY 2 of 1")
	a.mustApply(&SetSync{Epoch: 1, ExpectVersion: v, Sync: SyncState{Mode: ModeQuorum, Standbys: []string{"b"}, K: 1, Voters: []string{"b", "c"}, Quorum: 2}})
	st = a.f.State()
	if st.Sync.Steady() || st.Sync.Guarantee() != 1 || st.Sync.Version != a.index {
		t.Fatalf("widened sync: %+v", st.Sync)
	}
	a.mustApply(&SetSync{Epoch: 1, ExpectVersion: st.Sync.Version, Sync: SyncState{Mode: ModeQuorum, Standbys: []string{"b"}, K: 1, Voters: []string{"b"}, Quorum: 1}})
	if !a.f.State().Sync.Steady() {
		t.Fatal("narrowed sync should be steady")
	}
}

func TestPausedAndOperations(t *testing.T) {
	a := cluster3(t)
	a.mustApply(&SetPaused{Paused: true})
	if !a.f.State().Paused {
		t.Fatal("not paused")
	}
	a.mustReject(&RequestOp{Op: Operation{Kind: "dance", Epoch: 1}}, "unknown operation")
	a.mustReject(&RequestOp{Op: Operation{Kind: OpSwitchover, Epoch: 2}}, "current epoch is 1")
	a.mustReject(&RequestOp{Op: Operation{Kind: OpSwitchover, Epoch: 1, Target: "a"}}, "already the primary")
	a.mustReject(&RequestOp{Op: Operation{Kind: OpFailover, Epoch: 1}}, "needs a target")
	a.mustApply(&RequestOp{Op: Operation{Kind: OpSwitchover, Epoch: 1, Target: "b"}})
	st := a.f.State()
	if st.Pending == nil || st.Pending.From != "a" || st.Pending.Index != a.index {
		t.Fatalf("pending: %+v", st.Pending)
	}
	a.mustReject(&RequestOp{Op: Operation{Kind: OpSwitchover, Epoch: 1, Target: "c"}}, "already pending")
	a.mustReject(&CancelOp{Epoch: 2}, "no operation pending")
	a.mustApply(&CancelOp{Epoch: 1, Reason: "test"})
	a.mustApply(&RequestOp{Op: Operation{Kind: OpSwitchover, Epoch: 1, Target: "b"}})
	// A new primary clears the pending operation.
	a.mustApply(&SetPrimary{Node: "b", Epoch: 2, ExpectLeaseVersion: a.f.State().Lease.Version, Kind: KindSwitchover})
	if a.f.State().Pending != nil {
		t.Fatal("pending operation survived the change of primary")
	}
	a.mustApply(&AnnotateHistory{Epoch: 2, WriteGapMS: 310})
	if h := a.f.State().History; h[len(h)-1].WriteGapMS != 310 {
		t.Fatal("annotation lost")
	}
	a.mustReject(&AnnotateHistory{Epoch: 9}, "no history entry")
}

func TestUnknownAndMalformedEntries(t *testing.T) {
	a := cluster3(t)
	before := a.f.State()
	for _, data := range [][]byte{nil, {0}, {200, '{', '}'}, {byte(SetPrimaryType), 'x'}, append([]byte{byte(RenewLeaseType)}, `{"holder": 5}`...)} {
		a.index++
		res := a.f.Apply(&raft.Log{Index: a.index, Term: 1, Type: raft.LogCommand, Data: data})
		err, ok := res.(error)
		if !ok || err == nil {
			t.Fatalf("entry %q applied without error", data)
		}
		if IsRejected(err) {
			t.Fatalf("entry %q: decoding failure reported as a rejection: %v", data, err)
		}
	}
	if _, err := Decode([]byte{200}); !errors.Is(err, ErrUnknownType) {
		t.Fatalf("unknown type: %v", err)
	}
	after := a.f.State()
	if after.Index != a.index {
		t.Fatalf("applied index not advanced past refused entries: %d", after.Index)
	}
	if after.Epoch != before.Epoch || after.Primary != before.Primary {
		t.Fatal("refused entries changed the state")
	}
	// Non-command raft entries are ignored.
	if res := a.f.Apply(&raft.Log{Index: a.index + 1, Type: raft.LogConfiguration}); res != nil {
		t.Fatalf("configuration entry: %v", res)
	}
}

func TestEveryTypeRoundTrips(t *testing.T) {
	for typ, mk := range commandTable {
		c := mk()
		if c.MessageType() != typ {
			t.Fatalf("table entry %d builds a %s", typ, c.MessageType())
		}
		data, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		back, err := Decode(data)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if !reflect.DeepEqual(back, Command(c)) {
			t.Fatalf("%s does not round-trip", typ)
		}
		if strings.HasPrefix(typ.String(), "unknown") {
			t.Fatalf("type %d has no name", typ)
		}
	}
}

type bufSink struct {
	bytes.Buffer
	cancelled, closed bool
}

func (s *bufSink) ID() string    { return "test" }
func (s *bufSink) Cancel() error { s.cancelled = true; return nil }
func (s *bufSink) Close() error  { s.closed = true; return nil }

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	a := cluster3(t)
	a.mustApply(&SetSystemID{SystemID: 1<<63 + 12345})
	a.mustApply(&RecordFence{Node: "a", Epoch: 1, Timeline: 1, XID: 77})
	a.mustApply(&RenewLease{Holder: "a", Epoch: 1})
	a.mustApply(&SetPaused{Paused: true})
	a.mustApply(&RequestOp{Op: Operation{Kind: OpSwitchover, Epoch: 1, Target: "c"}})
	want := a.f.State()

	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// The snapshot is a point in time: later changes do not leak in.
	a.mustApply(&SetPaused{Paused: false})
	var sink bufSink
	if err := snap.Persist(&sink); err != nil || !sink.closed {
		t.Fatalf("persist: %v closed=%v", err, sink.closed)
	}
	snap.Release()

	f2 := New(nil)
	ch, cancel := f2.Subscribe()
	defer cancel()
	if err := f2.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got := f2.State(); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored state differs:\n got %+v\nwant %+v", got, want)
	}
	select {
	case <-ch:
	case <-time.After(time.Second):
		t.Fatal("restore did not notify subscribers")
	}
}

func TestSnapshotVersionRefused(t *testing.T) {
	cases := map[string]string{
		`{"version": 2, "state": {}}`:  "format version 2 is not supported",
		`{"version": 0, "state": {}}`:  "format version 0 is not supported",
		`{"state": {}}`:                "no format version",
		`not json`:                     "reading FSM snapshot",
		`{"version": 1, "state": [1]}`: "reading FSM snapshot state",
	}
	for in, want := range cases {
		f := New(nil)
		err := f.Restore(io.NopCloser(strings.NewReader(in)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("restore %q: %v, want %q", in, err, want)
		}
	}
}

func TestSubscribeCoalescesAndReadersAreSafe(t *testing.T) {
	a := cluster3(t)
	ch, cancel := a.f.Subscribe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 1000; i++ {
			st := a.f.State()
			_ = st.Member("a")
			_ = st.Lease.Version
		}
	}()
	for i := 0; i < 50; i++ {
		a.mustApply(&RenewLease{Holder: "a", Epoch: 1})
	}
	<-done
	select {
	case <-ch:
	default:
		t.Fatal("no notification")
	}
	select {
	case <-ch:
		t.Fatal("notifications did not coalesce")
	default:
	}
	cancel()
	a.mustApply(&RenewLease{Holder: "a", Epoch: 1})
	select {
	case <-ch:
		t.Fatal("notified after cancel")
	default:
	}
}

func TestWritablePrimary(t *testing.T) {
	a := cluster3(t)
	if _, _, ok := a.f.State().WritablePrimary(); ok {
		t.Fatal("routable before the fence is recorded")
	}
	a.mustApply(&RecordFence{Node: "a", Epoch: 1, Timeline: 1, XID: 9})
	if n, e, ok := a.f.State().WritablePrimary(); !ok || n != "a" || e != 1 {
		t.Fatalf("%s %d %v", n, e, ok)
	}
	a.mustApply(&RequestOp{Op: Operation{Kind: OpSwitchover, Epoch: 1, Target: "b"}})
	if _, _, ok := a.f.State().WritablePrimary(); ok {
		t.Fatal("routable while stepping down")
	}
	a.mustApply(&CancelOp{Epoch: 1})
	a.mustApply(&ReleaseLease{Holder: "a", Epoch: 1})
	if _, e, ok := a.f.State().WritablePrimary(); ok || e != 1 {
		t.Fatal("routable after release")
	}
	var nilState *State
	if _, _, ok := nilState.WritablePrimary(); ok {
		t.Fatal("nil state routable")
	}
}

// TestLSNEncoding: LSNs go into the log and snapshots in PostgreSQL's
// notation, and the plain numbers earlier agents wrote still decode, so an
// upgraded agent replays its own log and snapshots.
func TestLSNEncoding(t *testing.T) {
	data, err := Encode(&RenewLease{Holder: "a", Epoch: 1, LSN: 0x16B374D848})
	if err != nil || !bytes.Contains(data, []byte(`"lsn":"16/B374D848"`)) {
		t.Fatalf("encoded %q, %v; want the LSN as text", data, err)
	}
	for _, payload := range []string{`{"holder":"a","epoch":1,"lsn":"16/B374D848"}`, `{"holder":"a","epoch":1,"lsn":97500059720}`} {
		c, err := Decode(append([]byte{byte(RenewLeaseType)}, payload...))
		if err != nil || c.(*RenewLease).LSN != 0x16B374D848 {
			t.Fatalf("decoding %s: %+v, %v", payload, c, err)
		}
	}
	old := `{"version":1,"state":{"epoch":2,"lease":{"holder":"a","epoch":2,"renewed_lsn":50331744},` +
		`"history":[{"epoch":2,"kind":"failover","to":"a","promote_lsn":50331744,"candidates":[{"node":"a","receive_lsn":50331744}]}]}}`
	st, err := ReadSnapshot(strings.NewReader(old))
	if err != nil {
		t.Fatalf("reading a snapshot with numeric LSNs: %v", err)
	}
	if st.Lease.RenewedLSN != 0x3000060 || len(st.History) != 1 || st.History[0].PromoteLSN != 0x3000060 ||
		len(st.History[0].Candidates) != 1 || st.History[0].Candidates[0].ReceiveLSN != 0x3000060 {
		t.Fatalf("numeric LSNs read as %+v", st)
	}
	var buf bytes.Buffer
	if err := WriteSnapshot(&buf, st); err != nil || !strings.Contains(buf.String(), `"renewed_lsn":"0/3000060"`) {
		t.Fatalf("snapshot written as %s, %v; want LSNs as text", buf.String(), err)
	}
}
