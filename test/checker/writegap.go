package checker

import (
	"sort"
	"time"
)

// GapWrite is the kind of the write-gap probe's operations.
const GapWrite = "write"

// Gap is the time without acknowledged writes around one event.
type Gap struct {
	Event string        `json:"event"`
	At    time.Duration `json:"at"`
	// LastAckBefore is the last acknowledgement at or before At (or the
	// history's first invocation if there was none), FirstAckAfter the first
	// after it; Recovered is false if there was none, and Duration then runs
	// to the end of the history.
	LastAckBefore time.Duration `json:"last_ack_before"`
	FirstAckAfter time.Duration `json:"first_ack_after,omitempty"`
	Recovered     bool          `json:"recovered"`
	Duration      time.Duration `json:"duration"`
	DurationMS    float64       `json:"duration_ms"`
}

// WriteGapOptions configure CheckWriteGap.
type WriteGapOptions struct {
	// Faults are the events to measure the gap around, at their Start:
	// record it once the fault has certainly taken effect (a write in
	// flight while the fault was being injected may still be acknowledged
	// after the injection began).
	Faults []Event
	// MaxGap, if positive, makes any gap between acknowledgements longer
	// than it a problem. Zero only measures.
	MaxGap time.Duration
}

// CheckWriteGap measures a write-gap probe's history: the longest time
// between two acknowledged writes, the gap around each fault, and errors by
// SQLSTATE. It fails only when writes never resumed after a fault, or a gap
// exceeds a MaxGap that was asked for.
//
// Stats.Values: "acked", "max_gap_ms", "max_gap_start_ms", "gap_p50_ms",
// "gap_p99_ms" (over all gaps between consecutive acknowledgements).
func CheckWriteGap(history []Op, opts WriteGapOptions) Result {
	r := newResult("write-gap")
	var acks []time.Duration
	var first, end time.Duration = -1, 0
	for _, op := range history {
		r.count(op)
		if err := validOp(op); err != nil {
			r.problem("malformed history: %v", err)
			continue
		}
		if first < 0 || op.Invoke < first {
			first = op.Invoke
		}
		end = max(end, op.Complete)
		if op.Outcome == OutcomeOK {
			acks = append(acks, op.Complete)
		}
	}
	if first < 0 {
		first = 0
	}
	sort.Slice(acks, func(i, j int) bool { return acks[i] < acks[j] })
	r.Stats.Values["acked"] = float64(len(acks))

	var gaps []time.Duration
	var maxGap, maxGapStart time.Duration
	for i := 1; i < len(acks); i++ {
		g := acks[i] - acks[i-1]
		gaps = append(gaps, g)
		if g > maxGap {
			maxGap, maxGapStart = g, acks[i-1]
		}
	}
	if len(gaps) > 0 {
		sorted := append([]time.Duration(nil), gaps...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
		r.Stats.Values["gap_p50_ms"] = ms(percentile(sorted, 0.50))
		r.Stats.Values["gap_p99_ms"] = ms(percentile(sorted, 0.99))
	}
	r.Stats.Values["max_gap_ms"] = ms(maxGap)
	r.Stats.Values["max_gap_start_ms"] = ms(maxGapStart)
	if opts.MaxGap > 0 && maxGap > opts.MaxGap {
		r.problem("write gap of %v starting at %v exceeds %v", maxGap, maxGapStart, opts.MaxGap)
	}

	for _, f := range opts.Faults {
		g := Gap{Event: f.Name, At: f.Start, LastAckBefore: first}
		i := sort.Search(len(acks), func(i int) bool { return acks[i] > f.Start })
		if i > 0 {
			g.LastAckBefore = acks[i-1]
		}
		if i < len(acks) {
			g.FirstAckAfter, g.Recovered = acks[i], true
			g.Duration = acks[i] - g.LastAckBefore
		} else {
			g.Duration = max(end, f.Start) - g.LastAckBefore
			r.problem("no acknowledged write after %s at %v (last acknowledgement at %v)", f.Name, f.Start, g.LastAckBefore)
		}
		g.DurationMS = ms(g.Duration)
		r.Gaps = append(r.Gaps, g)
	}
	return r
}

// percentile picks the nearest-rank percentile of sorted values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p*float64(len(sorted))+0.5) - 1
	rank = min(max(rank, 0), len(sorted)-1)
	return sorted[rank]
}
