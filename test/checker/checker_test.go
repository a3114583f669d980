package checker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func ms2(n int) time.Duration { return time.Duration(n) * time.Millisecond }

func op(client int, kind string, invoke, complete int, outcome Outcome) Op {
	return Op{Client: client, Kind: kind, Invoke: ms2(invoke), Complete: ms2(complete), Outcome: outcome}
}

func mustOK(t *testing.T, r Result) {
	t.Helper()
	if !r.OK {
		t.Fatalf("checker rejected a good history:\n%s", r)
	}
	if _, err := json.Marshal(r); err != nil {
		t.Fatalf("result does not serialize: %v", err)
	}
}

func mustFail(t *testing.T, r Result, want string) {
	t.Helper()
	if r.OK {
		t.Fatalf("checker accepted a bad history:\n%s", r)
	}
	for _, p := range r.Problems {
		if strings.Contains(p, want) {
			return
		}
	}
	t.Fatalf("problems do not mention %q:\n%s", want, r)
}

// --- register ---

func rw(client, key int, v int64, invoke, complete int, outcome Outcome) RegisterOp {
	return RegisterOp{Op: op(client, RegisterWrite, invoke, complete, outcome), Key: key, Value: v}
}

func rr(client, key int, v int64, invoke, complete int) RegisterOp {
	return RegisterOp{Op: op(client, RegisterRead, invoke, complete, OutcomeOK), Key: key, Value: v, Found: true}
}

func rcas(client, key int, expect, v int64, swapped bool, invoke, complete int, outcome Outcome) RegisterOp {
	return RegisterOp{Op: op(client, RegisterCAS, invoke, complete, outcome), Key: key, Expect: expect, Value: v, Found: swapped}
}

func TestRegisterAcceptsLinearizable(t *testing.T) {
	h := []RegisterOp{
		rw(0, 1, 10, 0, 5, OutcomeOK),
		rr(1, 1, 10, 6, 8),
		// concurrent write and read: the read may see either value
		rw(0, 1, 11, 10, 20, OutcomeOK),
		rr(1, 1, 10, 12, 14),
		rr(2, 1, 11, 15, 16),
		rcas(1, 1, 11, 12, true, 21, 25, OutcomeOK),
		rcas(2, 1, 11, 13, false, 26, 27, OutcomeOK),
		rr(0, 1, 12, 28, 29),
		// a read that failed tells nothing; a failed write had no effect
		{Op: op(1, RegisterRead, 30, 31, OutcomeFailed), Key: 1},
		rw(2, 1, 99, 30, 31, OutcomeFailed),
		rr(0, 1, 12, 32, 33),
		// another key is independent
		rr(3, 2, 0, 0, 1),
		rw(3, 2, 5, 2, 3, OutcomeOK),
		rr(3, 2, 5, 4, 5),
	}
	mustOK(t, CheckRegister(h, RegisterOptions{}))
}

func TestRegisterUnknownWriteBothWays(t *testing.T) {
	base := []RegisterOp{
		rw(0, 1, 1, 0, 5, OutcomeOK),
		// client 1's write ends unknown (40003 at failover) ...
		rw(1, 1, 2, 10, 20, OutcomeUnknown),
		// ... and the client carries on after it
		rr(1, 1, 1, 25, 26),
	}
	applied := append(append([]RegisterOp(nil), base...), rr(0, 1, 2, 30, 31), rr(2, 1, 2, 40, 41))
	mustOK(t, CheckRegister(applied, RegisterOptions{}))
	notApplied := append(append([]RegisterOp(nil), base...), rr(0, 1, 1, 30, 31), rr(2, 1, 1, 40, 41))
	mustOK(t, CheckRegister(notApplied, RegisterOptions{}))
	// but it can't flip-flop: once seen, a later read can't go back
	flip := append(append([]RegisterOp(nil), base...), rr(0, 1, 2, 30, 31), rr(2, 1, 1, 40, 41))
	mustFail(t, CheckRegister(flip, RegisterOptions{}), "not linearizable")
}

func TestRegisterUnknownCASBothWays(t *testing.T) {
	base := []RegisterOp{
		rw(0, 1, 1, 0, 5, OutcomeOK),
		rcas(1, 1, 1, 7, false, 10, 20, OutcomeUnknown),
	}
	applied := append(append([]RegisterOp(nil), base...), rr(0, 1, 7, 30, 31))
	mustOK(t, CheckRegister(applied, RegisterOptions{}))
	notApplied := append(append([]RegisterOp(nil), base...), rr(0, 1, 1, 30, 31), rcas(0, 1, 1, 8, true, 32, 33, OutcomeOK), rr(0, 1, 8, 34, 35))
	mustOK(t, CheckRegister(notApplied, RegisterOptions{}))
}

func TestRegisterRejectsStaleReadAfterFailover(t *testing.T) {
	h := []RegisterOp{
		rw(0, 3, 1, 0, 5, OutcomeOK),
		rw(0, 3, 2, 10, 20, OutcomeOK), // acknowledged on the old primary
		// failover at 25 ms; the new primary lost the write
		rr(1, 3, 1, 30, 40),
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "viz", "register.html")
	events := []Event{{Name: "failover n1->n2", Details: "kill -9 n1", Start: ms2(25), End: ms2(28)}}
	r := CheckRegister(h, RegisterOptions{VisualizationPath: path, Events: events})
	mustFail(t, r, "key 3")
	if r.Visualization != path {
		t.Fatalf("visualization path %q, want %q", r.Visualization, path)
	}
	html, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading visualization: %v", err)
	}
	if !strings.Contains(string(html), "failover n1-\\u003en2") && !strings.Contains(string(html), "failover n1->n2") {
		t.Fatalf("visualization does not carry the failover annotation")
	}
}

func TestRegisterRejectsBadHistories(t *testing.T) {
	cases := map[string]struct {
		h    []RegisterOp
		want string
	}{
		"read of a value never written": {
			[]RegisterOp{rw(0, 1, 1, 0, 5, OutcomeOK), rr(1, 1, 42, 6, 7)}, "not linearizable"},
		"failed write observed": {
			[]RegisterOp{rw(0, 1, 5, 0, 5, OutcomeFailed), rr(1, 1, 5, 6, 7)}, "not linearizable"},
		"lost row": {
			[]RegisterOp{rw(0, 1, 1, 0, 5, OutcomeOK), {Op: op(1, RegisterRead, 6, 7, OutcomeOK), Key: 1, Found: false}}, "not linearizable"},
		"cas succeeded on a wrong value": {
			[]RegisterOp{rw(0, 1, 1, 0, 5, OutcomeOK), rcas(1, 1, 3, 4, true, 6, 7, OutcomeOK)}, "not linearizable"},
		"cas failed although it matched": {
			[]RegisterOp{rw(0, 1, 1, 0, 5, OutcomeOK), rcas(1, 1, 1, 4, false, 6, 7, OutcomeOK)}, "not linearizable"},
		"read goes back in time": {
			[]RegisterOp{rw(0, 1, 1, 0, 5, OutcomeOK), rw(0, 1, 2, 6, 8, OutcomeOK), rr(1, 1, 2, 9, 10), rr(2, 1, 1, 11, 12)}, "not linearizable"},
		"malformed outcome": {
			[]RegisterOp{{Op: op(0, RegisterRead, 0, 1, "maybe"), Key: 1}}, "malformed"},
		"malformed kind": {
			[]RegisterOp{{Op: op(0, "delete", 0, 1, OutcomeOK), Key: 1}}, "malformed"},
		"completes before invoked": {
			[]RegisterOp{rw(0, 1, 1, 5, 4, OutcomeOK)}, "malformed"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) { mustFail(t, CheckRegister(c.h, RegisterOptions{}), c.want) })
	}
}

func TestRegisterInitialValue(t *testing.T) {
	mustOK(t, CheckRegister([]RegisterOp{rr(0, 1, 7, 0, 1)}, RegisterOptions{Initial: 7}))
	mustFail(t, CheckRegister([]RegisterOp{rr(0, 1, 7, 0, 1)}, RegisterOptions{}), "not linearizable")
}

// --- bank ---

func bread(kind string, client, invoke int, balances ...int64) BankOp {
	m := map[int]int64{}
	for i, b := range balances {
		m[i] = b
	}
	return BankOp{Op: op(client, kind, invoke, invoke+1, OutcomeOK), Balances: m}
}

func btransfer(client, from, to int, amount int64, invoke int, outcome Outcome) BankOp {
	return BankOp{Op: op(client, BankTransfer, invoke, invoke+2, outcome), From: from, To: to, Amount: amount}
}

func TestBankAcceptsConstantTotal(t *testing.T) {
	h := []BankOp{
		bread(BankRead, 0, 0, 10, 10, 10),
		btransfer(1, 0, 1, 5, 1, OutcomeOK),
		bread(BankRead, 0, 4, 5, 15, 10),
		// unknown transfer, applied
		btransfer(1, 1, 2, 3, 5, OutcomeUnknown),
		bread(BankRead, 0, 8, 5, 12, 13),
		// unknown transfer, not applied
		btransfer(2, 2, 0, 1, 9, OutcomeUnknown),
		btransfer(2, 2, 0, 1, 10, OutcomeFailed),
		bread(BankRead, 0, 12, 5, 12, 13),
		// failed reads are ignored
		{Op: op(3, BankRead, 13, 14, OutcomeFailed)},
		bread(BankFinalRead, 0, 20, 5, 12, 13),
	}
	r := CheckBank(h, BankOptions{Accounts: 3, Total: 30, RequireFinal: true})
	mustOK(t, r)
	if r.Stats.Values["final_total"] != 30 || r.Stats.Values["reads_checked"] != 5 {
		t.Fatalf("unexpected stats: %+v", r.Stats.Values)
	}
}

func TestBankRejectsBadHistories(t *testing.T) {
	opts := BankOptions{Accounts: 3, Total: 30, RequireFinal: true}
	final := bread(BankFinalRead, 0, 100, 10, 10, 10)
	cases := map[string]struct {
		h    []BankOp
		want string
	}{
		"total drift":      {[]BankOp{bread(BankRead, 0, 0, 10, 10, 11), final}, "drift +1"},
		"final drift":      {[]BankOp{bread(BankFinalRead, 0, 0, 10, 5, 10)}, "drift -5"},
		"negative balance": {[]BankOp{bread(BankRead, 0, 0, 25, 10, -5), final}, "negative"},
		"missing account":  {[]BankOp{bread(BankRead, 0, 0, 10, 20), final}, "account 2 missing"},
		"extra account":    {[]BankOp{bread(BankRead, 0, 0, 10, 10, 10, 0), final}, "unexpected account 3"},
		"no final read":    {[]BankOp{bread(BankRead, 0, 0, 10, 10, 10)}, "no successful final read"},
		"bad transfer":     {[]BankOp{btransfer(0, 1, 1, 5, 0, OutcomeOK), final}, "malformed"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) { mustFail(t, CheckBank(c.h, opts), c.want) })
	}
	mustFail(t, CheckBank(nil, BankOptions{}), "bad options")
}

// --- append ---

func ap(client int, id int64, outcome Outcome) AppendOp {
	return AppendOp{Op: op(client, AppendKind, int(id), int(id)+1, outcome), ID: id}
}

func TestAppendAcceptsGoodLogs(t *testing.T) {
	h := []AppendOp{ap(0, 1, OutcomeOK), ap(1, 2, OutcomeOK), ap(0, 3, OutcomeUnknown), ap(1, 4, OutcomeUnknown), ap(1, 5, OutcomeFailed)}
	// unknown 3 applied, unknown 4 not
	r := CheckAppend(h, AppendFinal{OK: true, IDs: []int64{2, 1, 3}})
	mustOK(t, r)
	if r.Stats.Values["unknown_present"] != 1 || r.Stats.Values["unknown_absent"] != 1 || r.Stats.Values["acknowledged"] != 2 {
		t.Fatalf("unexpected stats: %+v", r.Stats.Values)
	}
	// and the other way round
	mustOK(t, CheckAppend(h, AppendFinal{OK: true, IDs: []int64{1, 2, 4}}))
	mustOK(t, CheckAppend(h, AppendFinal{OK: true, IDs: []int64{1, 2, 3, 4}}))
	mustOK(t, CheckAppend(h, AppendFinal{OK: true, IDs: []int64{1, 2}}))
}

func TestAppendRejectsBadLogs(t *testing.T) {
	h := []AppendOp{ap(0, 1, OutcomeOK), ap(1, 2, OutcomeOK), ap(0, 3, OutcomeUnknown), ap(1, 5, OutcomeFailed)}
	cases := map[string]struct {
		final AppendFinal
		want  string
	}{
		"lost acknowledged":  {AppendFinal{OK: true, IDs: []int64{1}}, "lost acknowledged id 2"},
		"duplicated":         {AppendFinal{OK: true, IDs: []int64{1, 2, 2}}, "id 2 is present 2 times"},
		"duplicated unknown": {AppendFinal{OK: true, IDs: []int64{1, 2, 3, 3}}, "id 3 is present 2 times"},
		"failed but present": {AppendFinal{OK: true, IDs: []int64{1, 2, 5}}, "certainly failed"},
		"phantom":            {AppendFinal{OK: true, IDs: []int64{1, 2, 77}}, "never appended"},
		"final read failed":  {AppendFinal{OK: false, Error: "boom"}, "final read"},
		"everything lost":    {AppendFinal{OK: true}, "lost acknowledged id 1"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) { mustFail(t, CheckAppend(h, c.final), c.want) })
	}
	mustFail(t, CheckAppend([]AppendOp{ap(0, 1, OutcomeOK), ap(1, 1, OutcomeOK)}, AppendFinal{OK: true, IDs: []int64{1}}), "appended twice")
}

// --- split brain ---

func sample(node string, start, end int, state string) ProbeSample {
	return ProbeSample{Node: node, Start: ms2(start), End: ms2(end), State: state}
}

// samples probes node every 20 ms over [from, to) with the given state.
func samples(node string, from, to int, state string) []ProbeSample {
	var out []ProbeSample
	for t := from; t < to; t += 20 {
		out = append(out, sample(node, t, t+2, state))
	}
	return out
}

func TestSplitBrainAcceptsCleanFailover(t *testing.T) {
	var h []ProbeSample
	// n1 primary until 1000 ms, then fenced; unreachable while killed
	h = append(h, samples("n1", 0, 1000, ProbeWritable)...)
	h = append(h, samples("n1", 1000, 1500, ProbeNotWritable)...)
	h = append(h, samples("n1", 1500, 3000, ProbeUnreachable)...)
	// n2 standby, promoted after the lease at 1800 ms
	h = append(h, samples("n2", 0, 1800, ProbeNotWritable)...)
	h = append(h, samples("n2", 1800, 3000, ProbeWritable)...)
	// n3 a standby throughout, with a timed-out probe in the middle
	h = append(h, samples("n3", 0, 3000, ProbeNotWritable)...)
	h = append(h, ProbeSample{Node: "n3", Start: ms2(1810), End: ms2(1960), State: ProbeUnreachable, SQLState: CodeTimeout})
	r := CheckSplitBrain(h, SplitBrainOptions{})
	mustOK(t, r)
	if r.Stats.Values["writable_spans"] != 2 {
		t.Fatalf("want 2 writable spans, got %+v", r.Stats.Values)
	}
}

func TestSplitBrainIgnoresUnreachableOldPrimary(t *testing.T) {
	// The prober can't reach n1 (its own timeouts) while n2 is writable:
	// a timeout is not "writable".
	var h []ProbeSample
	h = append(h, samples("n1", 0, 500, ProbeWritable)...)
	h = append(h, samples("n1", 500, 2000, ProbeUnreachable)...)
	h = append(h, samples("n2", 0, 1000, ProbeNotWritable)...)
	h = append(h, samples("n2", 1000, 2000, ProbeWritable)...)
	mustOK(t, CheckSplitBrain(h, SplitBrainOptions{}))
}

func TestSplitBrainRejectsTwoWritableNodes(t *testing.T) {
	var h []ProbeSample
	h = append(h, samples("n1", 0, 1200, ProbeWritable)...)
	h = append(h, samples("n2", 0, 1000, ProbeNotWritable)...)
	h = append(h, samples("n2", 1000, 2000, ProbeWritable)...)
	r := CheckSplitBrain(h, SplitBrainOptions{TolerateUncertain: true})
	mustFail(t, r, "split brain: n1 and n2 both accepted writes during [1s, 1.182s]")
	if r.Stats.Values["split_brain_ms"] < 150 {
		t.Fatalf("split brain duration %v ms, want ~182", r.Stats.Values["split_brain_ms"])
	}
}

func TestSplitBrainRejectsSingleOverlappingSamples(t *testing.T) {
	h := []ProbeSample{
		sample("n1", 0, 30, ProbeWritable),
		sample("n1", 100, 102, ProbeNotWritable),
		sample("n2", 0, 5, ProbeNotWritable),
		sample("n2", 20, 25, ProbeWritable),
		sample("n2", 100, 102, ProbeNotWritable),
	}
	r := CheckSplitBrain(h, SplitBrainOptions{})
	mustFail(t, r, "possible split brain: n1 and n2")
	if r.Stats.Values["possible_split_brains"] != 1 || r.Stats.Values["split_brains"] != 0 {
		t.Fatalf("want one possible split brain: %v", r.Stats.Values)
	}
	mustOK(t, CheckSplitBrain(h, SplitBrainOptions{TolerateUncertain: true}))
}

func TestSplitBrainSingleWriteInsideAnotherNodesSpan(t *testing.T) {
	// n2's one writable sample falls inside n1's run of writable samples:
	// certain, even with TolerateUncertain.
	var h []ProbeSample
	h = append(h, samples("n1", 0, 1000, ProbeWritable)...)
	h = append(h, sample("n2", 500, 502, ProbeWritable), sample("n2", 520, 522, ProbeNotWritable))
	mustFail(t, CheckSplitBrain(h, SplitBrainOptions{TolerateUncertain: true}), "split brain: n1 and n2 both accepted writes during [500ms, 502ms]")
}

func TestSplitBrainRejectsOldPrimaryComingBack(t *testing.T) {
	// n1 is writable, then unreachable, then writable again while n2 is
	// the primary: the second span overlaps n2's.
	var h []ProbeSample
	h = append(h, samples("n1", 0, 500, ProbeWritable)...)
	h = append(h, samples("n1", 500, 1500, ProbeUnreachable)...)
	h = append(h, samples("n1", 1500, 1600, ProbeWritable)...)
	h = append(h, samples("n2", 0, 1000, ProbeNotWritable)...)
	h = append(h, samples("n2", 1000, 2000, ProbeWritable)...)
	mustFail(t, CheckSplitBrain(h, SplitBrainOptions{}), "n1 and n2 both accepted writes during [1.5s")
	mustFail(t, CheckSplitBrain([]ProbeSample{sample("n1", 0, 1, "maybe")}, SplitBrainOptions{}), "malformed")
}

// --- write gap ---

func TestWriteGap(t *testing.T) {
	var h []Op
	for at := 0; at < 1000; at += 10 {
		h = append(h, op(0, GapWrite, at, at+1, OutcomeOK))
	}
	// failover at 1005: errors for a while, then writes resume at 1400
	h = append(h, Op{Client: 0, Kind: GapWrite, Invoke: ms2(1000), Complete: ms2(1100), Outcome: OutcomeUnknown, SQLState: "40003"})
	h = append(h, Op{Client: 0, Kind: GapWrite, Invoke: ms2(1100), Complete: ms2(1200), Outcome: OutcomeFailed, SQLState: CodeConnect})
	for at := 1400; at < 2000; at += 10 {
		h = append(h, op(0, GapWrite, at, at+1, OutcomeOK))
	}
	faults := []Event{{Name: "kill primary", Start: ms2(1005)}}
	r := CheckWriteGap(h, WriteGapOptions{Faults: faults})
	mustOK(t, r)
	if got := r.Stats.Values["max_gap_ms"]; got != 410 {
		t.Fatalf("max gap %v ms, want 410", got)
	}
	if len(r.Gaps) != 1 || r.Gaps[0].Duration != ms2(410) || !r.Gaps[0].Recovered {
		t.Fatalf("gap around the fault: %+v", r.Gaps)
	}
	if r.Stats.ErrorsBySQLState["40003"] != 1 || r.Stats.ErrorsBySQLState[CodeConnect] != 1 {
		t.Fatalf("errors by SQLSTATE: %v", r.Stats.ErrorsBySQLState)
	}
	mustFail(t, CheckWriteGap(h, WriteGapOptions{Faults: faults, MaxGap: 300 * time.Millisecond}), "exceeds")
	late := []Event{{Name: "kill again", Start: ms2(2500)}}
	mustFail(t, CheckWriteGap(h, WriteGapOptions{Faults: late}), "no acknowledged write after kill again")
}

// --- classification ---

func pgErr(severity, code string) error {
	return fmt.Errorf("running statement: %w", &pgconn.PgError{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: "x"})
}

func TestClassify(t *testing.T) {
	cases := []struct {
		err   error
		stage Stage
		want  Outcome
	}{
		{nil, StageCommit, OutcomeOK},
		{pgErr("ERROR", "40001"), StageCommit, OutcomeFailed},        // commit resolved as aborted
		{pgErr("ERROR", "40001"), StageInTransaction, OutcomeFailed}, // statement in a transaction at failover
		{pgErr("ERROR", "40003"), StageCommit, OutcomeUnknown},       // autocommit write in flight
		{pgErr("ERROR", "08007"), StageCommit, OutcomeUnknown},       // commit resolution unknown
		{pgErr("FATAL", "57P01"), StageCommit, OutcomeUnknown},       // pinned session closed
		{pgErr("FATAL", "57P01"), StageInTransaction, OutcomeFailed}, // ... before COMMIT was sent
		{pgErr("ERROR", "57014"), StageCommit, OutcomeUnknown},       // cancel may follow the commit record
		{pgErr("ERROR", "23505"), StageCommit, OutcomeFailed},        // unique violation
		{pgErr("ERROR", "25006"), StageCommit, OutcomeFailed},        // read-only transaction (fenced primary)
		{pgErr("ERROR", "40P01"), StageCommit, OutcomeFailed},        // deadlock
		{pgErr("FATAL", "40001"), StageCommit, OutcomeUnknown},       // FATAL is never proof
		{pgErr("ERROR", "XX000"), StageCommit, OutcomeUnknown},       // internal error
		{io.ErrUnexpectedEOF, StageCommit, OutcomeUnknown},           // connection lost mid-commit
		{fmt.Errorf("committing: %w", context.DeadlineExceeded), StageCommit, OutcomeUnknown},
		{fmt.Errorf("commit: %w", pgx.ErrTxCommitRollback), StageCommit, OutcomeFailed},
		{io.ErrUnexpectedEOF, StageRead, OutcomeFailed},
		{&pgconn.ConnectError{}, StageCommit, OutcomeFailed}, // nothing was sent
	}
	for _, c := range cases {
		if got := Classify(c.err, c.stage); got != c.want {
			t.Errorf("Classify(%v, stage %d) = %s, want %s", c.err, c.stage, got, c.want)
		}
	}
	if got := ErrorCode(pgErr("ERROR", "40003")); got != "40003" {
		t.Errorf("ErrorCode = %q", got)
	}
	if got := ErrorCode(fmt.Errorf("x: %w", context.DeadlineExceeded)); got != CodeTimeout {
		t.Errorf("ErrorCode(deadline) = %q", got)
	}
	if got := ErrorCode(errors.New("something")); got != CodeOther {
		t.Errorf("ErrorCode(other) = %q", got)
	}
	if got := ErrorCode(io.ErrUnexpectedEOF); got != CodeConnection {
		t.Errorf("ErrorCode(EOF) = %q", got)
	}
}

func TestResultJSONRoundTrip(t *testing.T) {
	r := CheckAppend([]AppendOp{ap(0, 1, OutcomeOK)}, AppendFinal{OK: true})
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "out", "append.json")
	if err := WriteJSON(path, r); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	if back.OK || len(back.Problems) != 1 || back.Checker != "append" {
		t.Fatalf("round trip lost data: %s", b)
	}
}
