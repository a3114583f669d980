package checker

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Outcome is what a client knows about whether an operation took effect.
type Outcome string

const (
	// OutcomeOK means the operation completed and was acknowledged.
	OutcomeOK Outcome = "ok"
	// OutcomeFailed means the operation certainly had no effect.
	OutcomeFailed Outcome = "failed"
	// OutcomeUnknown means the operation may or may not have had an effect.
	OutcomeUnknown Outcome = "unknown"
)

// Clock hands out times as durations since its origin. Go's time.Since uses
// the monotonic clock reading, so times from one Clock are comparable across
// goroutines and immune to wall-clock jumps. Workloads, probers and the
// harness that records fault times must share one Clock.
type Clock struct {
	origin time.Time
}

// NewClock returns a Clock whose origin is now.
func NewClock() *Clock { return &Clock{origin: time.Now()} }

// Now returns the time elapsed since the clock's origin.
func (c *Clock) Now() time.Duration { return time.Since(c.origin) }

// At converts a time.Time taken in this process (with its monotonic reading)
// to the clock's scale.
func (c *Clock) At(t time.Time) time.Duration { return t.Sub(c.origin) }

// Origin returns the wall-clock time of the clock's origin, for reports.
func (c *Clock) Origin() time.Time { return c.origin }

// Op is what every recorded operation carries. Workload-specific operation
// types embed it.
type Op struct {
	Client int    `json:"client"`
	Kind   string `json:"kind"`
	// Invoke is when the client started the operation, Complete when it
	// got the answer or gave up (for OutcomeUnknown the operation may have
	// taken effect at any time after Invoke, also after Complete).
	Invoke   time.Duration `json:"invoke"`
	Complete time.Duration `json:"complete"`
	Outcome  Outcome       `json:"outcome"`
	// Error and SQLState describe why the operation did not end OK.
	// SQLState holds a PostgreSQL SQLSTATE or one of the pseudo-codes of
	// ErrorCode ("connection", "timeout", ...).
	Error    string `json:"error,omitempty"`
	SQLState string `json:"sqlstate,omitempty"`
}

// Event is something that happened to the system under test during a history
// (a fault injected, a failover observed). Checkers use events for
// annotations and to measure what happened around them.
type Event struct {
	Name    string        `json:"name"`
	Details string        `json:"details,omitempty"`
	Start   time.Duration `json:"start"`
	// End is optional; zero (or anything before Start) means a point in time.
	End time.Duration `json:"end,omitempty"`
}

// Stats are the numbers a checker reports along with its verdict.
type Stats struct {
	Ops     int `json:"ops"`
	OK      int `json:"ok"`
	Failed  int `json:"failed"`
	Unknown int `json:"unknown"`
	// ErrorsBySQLState counts operations that did not end OK by SQLSTATE
	// (or ErrorCode pseudo-code).
	ErrorsBySQLState map[string]int `json:"errors_by_sqlstate,omitempty"`
	// Values holds the checker-specific figures each checker documents.
	Values map[string]float64 `json:"values,omitempty"`
}

// Result is a checker's verdict. It is JSON-serializable as is.
type Result struct {
	Checker  string   `json:"checker"`
	OK       bool     `json:"ok"`
	Problems []string `json:"problems,omitempty"`
	// ProblemsOmitted counts problems beyond MaxProblems that were not
	// listed.
	ProblemsOmitted int   `json:"problems_omitted,omitempty"`
	Stats           Stats `json:"stats"`
	// Gaps are the write gaps around fault events (CheckWriteGap only).
	Gaps []Gap `json:"gaps,omitempty"`
	// Visualization is the path of the HTML visualization written for a
	// failed linearizability check, if any.
	Visualization string `json:"visualization,omitempty"`
}

// MaxProblems caps how many problems a Result lists, so that a badly broken
// run still produces a readable report.
const MaxProblems = 100

func newResult(name string) Result {
	return Result{Checker: name, OK: true, Stats: Stats{ErrorsBySQLState: map[string]int{}, Values: map[string]float64{}}}
}

func (r *Result) problem(format string, args ...any) {
	r.OK = false
	if len(r.Problems) >= MaxProblems {
		r.ProblemsOmitted++
		return
	}
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

func (r *Result) count(op Op) {
	r.Stats.Ops++
	switch op.Outcome {
	case OutcomeOK:
		r.Stats.OK++
	case OutcomeFailed:
		r.Stats.Failed++
	case OutcomeUnknown:
		r.Stats.Unknown++
	}
	if op.Outcome != OutcomeOK {
		code := op.SQLState
		if code == "" {
			code = "none"
		}
		r.Stats.ErrorsBySQLState[code]++
	}
}

// validOp reports what is wrong with an operation's bookkeeping, if anything.
// Checkers refuse to judge malformed histories rather than guess.
func validOp(op Op) error {
	switch op.Outcome {
	case OutcomeOK, OutcomeFailed, OutcomeUnknown:
	default:
		return fmt.Errorf("client %d %s at %v: invalid outcome %q", op.Client, op.Kind, op.Invoke, op.Outcome)
	}
	if op.Complete < op.Invoke {
		return fmt.Errorf("client %d %s: completes at %v before it was invoked at %v", op.Client, op.Kind, op.Complete, op.Invoke)
	}
	if op.Client < 0 {
		return fmt.Errorf("%s at %v: negative client id %d", op.Kind, op.Invoke, op.Client)
	}
	return nil
}

// String renders a result for logs: the verdict, stats and the problems.
func (r Result) String() string {
	var b strings.Builder
	verdict := "OK"
	if !r.OK {
		verdict = "FAILED"
	}
	fmt.Fprintf(&b, "%s: %s (ops %d: ok %d, failed %d, unknown %d)", r.Checker, verdict, r.Stats.Ops, r.Stats.OK, r.Stats.Failed, r.Stats.Unknown)
	if len(r.Stats.ErrorsBySQLState) > 0 {
		codes := make([]string, 0, len(r.Stats.ErrorsBySQLState))
		for c := range r.Stats.ErrorsBySQLState {
			codes = append(codes, c)
		}
		sort.Strings(codes)
		b.WriteString(" errors:")
		for _, c := range codes {
			fmt.Fprintf(&b, " %s=%d", c, r.Stats.ErrorsBySQLState[c])
		}
	}
	if len(r.Stats.Values) > 0 {
		keys := make([]string, 0, len(r.Stats.Values))
		for k := range r.Stats.Values {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, " %s=%g", k, r.Stats.Values[k])
		}
	}
	for _, p := range r.Problems {
		b.WriteString("\n  - ")
		b.WriteString(p)
	}
	if r.ProblemsOmitted > 0 {
		fmt.Fprintf(&b, "\n  - ... and %d more", r.ProblemsOmitted)
	}
	if r.Visualization != "" {
		fmt.Fprintf(&b, "\n  visualization: %s", r.Visualization)
	}
	return b.String()
}

// WriteJSON writes v (a Result, a history, samples) as indented JSON to
// path, creating its directory; for run artefacts.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("creating the directory of %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
