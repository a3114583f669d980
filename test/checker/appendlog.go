package checker

import "sort"

// AppendKind is the kind of every AppendOp.
const AppendKind = "append"

// AppendOp inserts one id into the log. Every attempt uses a fresh id.
type AppendOp struct {
	Op
	ID int64 `json:"id"`
}

// AppendFinal is the read of the whole log after every client stopped.
type AppendFinal struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// IDs are every row's id, duplicates included, in any order.
	IDs []int64 `json:"ids"`
}

// CheckAppend checks an append-only log against its final contents: no
// acknowledged id lost, no id present twice, no id present whose append
// certainly failed, no id present that nobody appended. Ids with unknown
// outcome may be present or absent.
//
// Stats.Values: "acknowledged", "unknown_present", "unknown_absent",
// "lost", "duplicated", "final_rows".
func CheckAppend(history []AppendOp, final AppendFinal) Result {
	r := newResult("append")
	attempts := make(map[int64]AppendOp, len(history))
	for _, op := range history {
		r.count(op.Op)
		if err := validOp(op.Op); err != nil {
			r.problem("malformed history: %v", err)
			continue
		}
		if op.Kind != AppendKind {
			r.problem("malformed history: client %d at %v: unknown append operation %q", op.Client, op.Invoke, op.Kind)
			continue
		}
		if prev, dup := attempts[op.ID]; dup {
			r.problem("malformed history: id %d appended twice (clients %d and %d)", op.ID, prev.Client, op.Client)
			continue
		}
		attempts[op.ID] = op
	}
	if !final.OK {
		r.problem("final read of the log failed: %s", final.Error)
		return r
	}
	present := make(map[int64]int, len(final.IDs))
	for _, id := range final.IDs {
		present[id]++
	}
	r.Stats.Values["final_rows"] = float64(len(final.IDs))

	var acked, unknownPresent, unknownAbsent, lost, duplicated int
	ids := make([]int64, 0, len(attempts))
	for id := range attempts {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		op := attempts[id]
		n := present[id]
		switch op.Outcome {
		case OutcomeOK:
			acked++
			if n == 0 {
				lost++
				r.problem("lost acknowledged id %d (appended by client %d, acknowledged at %v)", id, op.Client, op.Complete)
			}
		case OutcomeUnknown:
			if n > 0 {
				unknownPresent++
			} else {
				unknownAbsent++
			}
		case OutcomeFailed:
			if n > 0 {
				r.problem("id %d is present although its append certainly failed (client %d at %v: %s %s)", id, op.Client, op.Invoke, op.SQLState, op.Error)
			}
		}
	}
	seen := make([]int64, 0, len(present))
	for id := range present {
		seen = append(seen, id)
	}
	sort.Slice(seen, func(i, j int) bool { return seen[i] < seen[j] })
	for _, id := range seen {
		n := present[id]
		if n > 1 {
			duplicated++
			r.problem("id %d is present %d times", id, n)
		}
		if _, ok := attempts[id]; !ok {
			r.problem("id %d is present but was never appended", id)
		}
	}
	r.Stats.Values["acknowledged"] = float64(acked)
	r.Stats.Values["unknown_present"] = float64(unknownPresent)
	r.Stats.Values["unknown_absent"] = float64(unknownAbsent)
	r.Stats.Values["lost"] = float64(lost)
	r.Stats.Values["duplicated"] = float64(duplicated)
	return r
}
