package checker

import (
	"fmt"
	"sort"
	"time"
)

// What a probe of one node found.
const (
	// ProbeWritable: the node said it is not in recovery, its transactions
	// are not read-only, and it accepted a real write (rolled back), all
	// within the probe's timeout.
	ProbeWritable = "writable"
	// ProbeNotWritable: the node answered, and refused writes or reported
	// itself in recovery or read-only.
	ProbeNotWritable = "not-writable"
	// ProbeUnreachable: no answer within the timeout, or the connection
	// failed. The prober's own timeouts land here, never in ProbeWritable.
	ProbeUnreachable = "unreachable"
)

// ProbeSample is one probe of one node's PostgreSQL.
type ProbeSample struct {
	Node string `json:"node"`
	// The probe's request was sent at Start and its answer (or the
	// prober giving up) came at End; a write the node accepted was accepted
	// at some instant within [Start, End].
	Start time.Duration `json:"start"`
	End   time.Duration `json:"end"`
	State string        `json:"state"`
	// InRecovery and ReadOnly are what the node reported, when it answered.
	InRecovery bool   `json:"in_recovery,omitempty"`
	ReadOnly   bool   `json:"read_only,omitempty"`
	Error      string `json:"error,omitempty"`
	SQLState   string `json:"sqlstate,omitempty"`
}

// SplitBrainOptions configure CheckSplitBrain.
type SplitBrainOptions struct {
	// MaxBridge is the longest gap between two consecutive writable samples
	// of a node across which the node counts as writable throughout. Zero
	// means DefaultMaxBridge. Any not-writable or unreachable sample in
	// between breaks the span regardless.
	MaxBridge time.Duration
	// TolerateUncertain accepts overlaps that are only possible, not
	// certain: two nodes' writes that fell within one probe round trip of
	// each other without either node being known writable at the other's
	// write (see CheckSplitBrain). They are still listed in Stats. Leave it
	// off unless a scenario (switchover storms on a loaded machine) needs
	// it.
	TolerateUncertain bool
}

// DefaultMaxBridge is SplitBrainOptions.MaxBridge unless set: a few probe
// intervals of the prober's ≤ 50 ms.
const DefaultMaxBridge = 250 * time.Millisecond

type writableSpan struct {
	node       string
	start, end time.Duration // from the first sample's Start to the last one's End
	// The core runs from the first sample's End to the last one's Start:
	// the node accepted a write at or before its beginning and at or
	// after its end, so (interpolating) it was writable throughout.
	// Empty for a single sample.
	coreStart, coreEnd time.Duration
	samples            int
}

func (s writableSpan) hasCore() bool { return s.samples > 1 && s.coreStart <= s.coreEnd }

// certainlyOverlaps says whether two nodes' spans prove one instant at which
// both accepted writes: their cores meet, or one node's only write fell
// inside the other's core.
func certainlyOverlaps(a, b writableSpan) bool {
	switch {
	case a.hasCore() && b.hasCore():
		return a.coreStart <= b.coreEnd && b.coreStart <= a.coreEnd
	case a.hasCore():
		return a.coreStart <= b.start && b.end <= a.coreEnd
	case b.hasCore():
		return b.coreStart <= a.start && a.end <= b.coreEnd
	}
	return false
}

// CheckSplitBrain reports every period during which two nodes accepted
// writes. A node's writable samples, consecutive in its own sequence and no
// more than MaxBridge apart, form a span during which it accepted writes.
//
// Two nodes' spans that overlap are a split brain. It is certain when the
// spans prove one instant at which both nodes were writable: between a
// span's first and last sample the node is taken as writable throughout, so
// two such inner periods that meet, or a write of one node inside the other's
// inner period, are certain. Spans that overlap only at their edges are a
// possible split brain: each write happened somewhere inside its probe's
// round trip, so the two writes may have been a round trip apart. A
// correct cluster produces neither as long as the probe timeout is shorter
// than the lease (an old primary stops accepting writes a lease before a new
// one is promoted) and a switchover's gap between fence and promotion is
// longer than a probe round trip. Both fail the check unless
// TolerateUncertain is set, which lets possible ones pass.
//
// Stats.Values: "nodes", "samples", "writable_samples",
// "unreachable_samples", "writable_spans", "max_sample_gap_ms" (the longest
// time between consecutive probe starts of one node: how well sampling
// kept up), "split_brains" and "split_brain_ms" (certain overlaps, and
// their total duration), "possible_split_brains" and
// "possible_split_brain_ms".
func CheckSplitBrain(samples []ProbeSample, opts SplitBrainOptions) Result {
	r := newResult("split-brain")
	if opts.MaxBridge <= 0 {
		opts.MaxBridge = DefaultMaxBridge
	}
	byNode := map[string][]ProbeSample{}
	var writable, unreachable int
	for _, s := range samples {
		r.Stats.Ops++
		switch s.State {
		case ProbeWritable:
			writable++
			r.Stats.OK++
		case ProbeNotWritable:
			r.Stats.OK++
		case ProbeUnreachable:
			unreachable++
			r.Stats.Unknown++
			code := s.SQLState
			if code == "" {
				code = "none"
			}
			r.Stats.ErrorsBySQLState[code]++
		default:
			r.problem("malformed samples: node %q at %v: unknown state %q", s.Node, s.Start, s.State)
			continue
		}
		if s.End < s.Start || s.Node == "" {
			r.problem("malformed samples: node %q: sample [%v, %v]", s.Node, s.Start, s.End)
			continue
		}
		byNode[s.Node] = append(byNode[s.Node], s)
	}
	nodes := make([]string, 0, len(byNode))
	for n := range byNode {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)

	var spans []writableSpan
	var maxGap time.Duration
	for _, n := range nodes {
		ss := byNode[n]
		sort.SliceStable(ss, func(i, j int) bool { return ss[i].Start < ss[j].Start })
		var cur *writableSpan
		for i, s := range ss {
			if i > 0 {
				maxGap = max(maxGap, s.Start-ss[i-1].Start)
			}
			if s.State != ProbeWritable {
				if cur != nil {
					spans = append(spans, *cur)
					cur = nil
				}
				continue
			}
			if cur != nil && s.Start-cur.end <= opts.MaxBridge {
				cur.end = max(cur.end, s.End)
				cur.coreEnd = s.Start
				cur.samples++
				continue
			}
			if cur != nil {
				spans = append(spans, *cur)
			}
			cur = &writableSpan{node: n, start: s.Start, end: s.End, coreStart: s.End, coreEnd: s.Start, samples: 1}
		}
		if cur != nil {
			spans = append(spans, *cur)
		}
	}

	sort.SliceStable(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	var certainTotal, possibleTotal time.Duration
	var certain, possible int
	var active []writableSpan
	for _, sp := range spans {
		kept := active[:0]
		for _, a := range active {
			if a.end >= sp.start {
				kept = append(kept, a)
			}
		}
		active = kept
		for _, a := range active {
			if a.node == sp.node {
				continue
			}
			x, y := a, sp
			if x.node > y.node {
				x, y = y, x
			}
			from, to := max(a.start, sp.start), min(a.end, sp.end)
			detail := fmt.Sprintf("(%s writable over [%v, %v] in %d samples, %s over [%v, %v] in %d samples)",
				x.node, x.start, x.end, x.samples, y.node, y.start, y.end, y.samples)
			if certainlyOverlaps(a, sp) {
				certain++
				certainTotal += to - from
				r.problem("split brain: %s and %s both accepted writes during [%v, %v] %s", x.node, y.node, from, to, detail)
				continue
			}
			possible++
			possibleTotal += to - from
			if !opts.TolerateUncertain {
				r.problem("possible split brain: %s and %s accepted writes within one probe round trip of each other, during [%v, %v] %s", x.node, y.node, from, to, detail)
			}
		}
		active = append(active, sp)
	}
	r.Stats.Values["nodes"] = float64(len(nodes))
	r.Stats.Values["samples"] = float64(len(samples))
	r.Stats.Values["writable_samples"] = float64(writable)
	r.Stats.Values["unreachable_samples"] = float64(unreachable)
	r.Stats.Values["writable_spans"] = float64(len(spans))
	r.Stats.Values["max_sample_gap_ms"] = ms(maxGap)
	r.Stats.Values["split_brains"] = float64(certain)
	r.Stats.Values["split_brain_ms"] = ms(certainTotal)
	r.Stats.Values["possible_split_brains"] = float64(possible)
	r.Stats.Values["possible_split_brain_ms"] = ms(possibleTotal)
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// String renders a sample for logs.
func (s ProbeSample) String() string {
	return fmt.Sprintf("%s [%v, %v] %s %s", s.Node, s.Start, s.End, s.State, s.Error)
}
