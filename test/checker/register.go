package checker

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// Register operation kinds.
const (
	RegisterRead  = "read"
	RegisterWrite = "write"
	RegisterCAS   = "cas"
)

// RegisterOp is one operation on a register keyed by Key.
type RegisterOp struct {
	Op
	Key int `json:"key"`
	// Value is the value written (write), the new value (cas) or the value
	// read (read, when Found).
	Value int64 `json:"value"`
	// Expect is the value a cas compares against.
	Expect int64 `json:"expect,omitempty"`
	// Found is, for an OK read, whether the key's row existed, and for an
	// OK cas, whether the swap happened.
	Found bool `json:"found"`
}

// RegisterOptions configure CheckRegister.
type RegisterOptions struct {
	// Initial is every key's value before the history began (the
	// workload's setup writes it).
	Initial int64
	// Timeout bounds porcupine's search; zero means DefaultRegisterTimeout.
	// A search that runs out of time is a problem (undecided is not OK).
	Timeout time.Duration
	// VisualizationPath, if set, is where the porcupine HTML visualization
	// is written when the history is not linearizable (or undecided).
	VisualizationPath string
	// Events (failovers, faults) are annotated in the visualization.
	Events []Event
}

// DefaultRegisterTimeout bounds a linearizability search unless
// RegisterOptions.Timeout says otherwise.
const DefaultRegisterTimeout = time.Minute

type registerInput struct {
	kind   string
	key    int
	value  int64
	expect int64
}

type registerOutput struct {
	value   int64
	found   bool
	unknown bool
}

type registerMeta struct {
	client  int
	outcome Outcome
	err     string
}

// registerModel is a single register per partition (key); partitioning by
// key makes the search linear in the number of keys rather than exponential.
// Operations with unknown outcome are modelled as having taken effect; the
// open end porcupine gives them (return at the end of the history) lets the
// search place them after everything, where "took effect" and "did not" are
// indistinguishable, so both possibilities are accepted.
func registerModel(initial int64) porcupine.Model {
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[int][]porcupine.Operation{}
			var keys []int
			for _, op := range history {
				k := op.Input.(registerInput).key
				if _, ok := byKey[k]; !ok {
					keys = append(keys, k)
				}
				byKey[k] = append(byKey[k], op)
			}
			sort.Ints(keys)
			out := make([][]porcupine.Operation, 0, len(keys))
			for _, k := range keys {
				out = append(out, byKey[k])
			}
			return out
		},
		Init: func() interface{} { return initial },
		Step: func(state, input, output interface{}) (bool, interface{}) {
			st := state.(int64)
			in := input.(registerInput)
			out := output.(registerOutput)
			switch in.kind {
			case RegisterRead:
				return out.found && out.value == st, st
			case RegisterWrite:
				return true, in.value
			case RegisterCAS:
				if out.unknown {
					if st == in.expect {
						return true, in.value
					}
					return true, st
				}
				if out.found {
					return st == in.expect, in.value
				}
				return st != in.expect, st
			}
			return false, st
		},
		DescribeOperation: func(input, output interface{}) string {
			in := input.(registerInput)
			out := output.(registerOutput)
			switch in.kind {
			case RegisterRead:
				if !out.found {
					return fmt.Sprintf("read(k%d) -> missing", in.key)
				}
				return fmt.Sprintf("read(k%d) -> %d", in.key, out.value)
			case RegisterWrite:
				if out.unknown {
					return fmt.Sprintf("write(k%d, %d) -> ?", in.key, in.value)
				}
				return fmt.Sprintf("write(k%d, %d)", in.key, in.value)
			default:
				res := "fail"
				switch {
				case out.unknown:
					res = "?"
				case out.found:
					res = "ok"
				}
				return fmt.Sprintf("cas(k%d, %d -> %d) -> %s", in.key, in.expect, in.value, res)
			}
		},
		DescribeState: func(state interface{}) string { return fmt.Sprint(state.(int64)) },
		DescribeOperationMetadata: func(info interface{}) string {
			m, ok := info.(registerMeta)
			if !ok {
				return ""
			}
			s := fmt.Sprintf("client %d, %s", m.client, m.outcome)
			if m.err != "" {
				s += ": " + m.err
			}
			return s
		},
	}
}

// CheckRegister checks that a register history is linearizable with
// porcupine. Failed operations and reads without an OK answer are left out
// (they had no effect, or told us nothing); writes and compare-and-sets with
// unknown outcome get an open end. A client whose operation ended unknown
// continues under a fresh porcupine client id, as a crashed process would,
// so its later operations do not overlap the open-ended one in the
// visualization.
//
// Stats.Values: "keys", "checked_ops" (operations given to porcupine),
// "open_ended" (unknown writes and cas), "check_seconds".
func CheckRegister(history []RegisterOp, opts RegisterOptions) Result {
	r := newResult("register")
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultRegisterTimeout
	}
	ops := append([]RegisterOp(nil), history...)
	sort.SliceStable(ops, func(i, j int) bool {
		if ops[i].Client != ops[j].Client {
			return ops[i].Client < ops[j].Client
		}
		return ops[i].Invoke < ops[j].Invoke
	})

	// The open end lies after every recorded time.
	var end time.Duration
	for _, op := range ops {
		end = max(end, op.Invoke, op.Complete)
	}
	for _, ev := range opts.Events {
		end = max(end, ev.Start, ev.End)
	}
	end += time.Second

	var (
		porOps    []porcupine.Operation
		keys      = map[int]bool{}
		openEnded int
		nextID    int
		ids       = map[int]int{}
	)
	for _, op := range ops {
		if _, ok := ids[op.Client]; !ok {
			ids[op.Client] = -1
		}
	}
	clientIDs := make([]int, 0, len(ids))
	for c := range ids {
		clientIDs = append(clientIDs, c)
	}
	sort.Ints(clientIDs)
	for _, c := range clientIDs {
		ids[c] = nextID
		nextID++
	}

	for _, op := range ops {
		r.count(op.Op)
		if err := validOp(op.Op); err != nil {
			r.problem("malformed history: %v", err)
			continue
		}
		switch op.Kind {
		case RegisterRead, RegisterWrite, RegisterCAS:
		default:
			r.problem("malformed history: client %d at %v: unknown register operation %q", op.Client, op.Invoke, op.Kind)
			continue
		}
		keys[op.Key] = true
		if op.Outcome == OutcomeFailed || (op.Kind == RegisterRead && op.Outcome != OutcomeOK) {
			continue
		}
		in := registerInput{kind: op.Kind, key: op.Key, value: op.Value, expect: op.Expect}
		out := registerOutput{value: op.Value, found: op.Found}
		ret := op.Complete
		id := ids[op.Client]
		if op.Outcome == OutcomeUnknown {
			out = registerOutput{unknown: true}
			ret = end
			openEnded++
			// Later operations of this client run as a new process.
			ids[op.Client] = nextID
			nextID++
		}
		porOps = append(porOps, porcupine.Operation{
			ClientId: id,
			Input:    in,
			Call:     int64(op.Invoke),
			Output:   out,
			Return:   int64(ret),
			Metadata: registerMeta{client: op.Client, outcome: op.Outcome, err: op.Error},
		})
	}
	r.Stats.Values["keys"] = float64(len(keys))
	r.Stats.Values["checked_ops"] = float64(len(porOps))
	r.Stats.Values["open_ended"] = float64(openEnded)
	if !r.OK {
		return r
	}

	model := registerModel(opts.Initial)
	started := time.Now()
	verdict, info := porcupine.CheckOperationsVerbose(model, porOps, opts.Timeout)
	r.Stats.Values["check_seconds"] = time.Since(started).Seconds()
	switch verdict {
	case porcupine.Ok:
		return r
	case porcupine.Unknown:
		r.problem("linearizability undecided: porcupine ran out of time after %v", opts.Timeout)
	default:
		r.problem("history is not linearizable%s", describeIllegal(model, porOps, info))
	}
	if opts.VisualizationPath != "" {
		if err := writeVisualization(model, info, opts, end); err != nil {
			r.problem("writing the visualization: %v", err)
		} else {
			r.Visualization = opts.VisualizationPath
		}
	}
	return r
}

// describeIllegal names the keys whose histories could not be linearized and
// the operation the longest linearizable prefix stopped before, so the report
// says where to look even without the visualization.
func describeIllegal(model porcupine.Model, ops []porcupine.Operation, info porcupine.LinearizationInfo) string {
	var s string
	partitions := model.Partition(ops)
	for i, partials := range info.PartialLinearizationsOperations() {
		if i >= len(partitions) || len(partitions[i]) == 0 {
			continue
		}
		var longest []porcupine.Operation
		for _, lin := range partials {
			if len(lin) > len(longest) {
				longest = lin
			}
		}
		if len(longest) == len(partitions[i]) {
			continue // this key linearized
		}
		key := partitions[i][0].Input.(registerInput).key
		s += fmt.Sprintf("; key %d: only %d of its %d ops linearize", key, len(longest), len(partitions[i]))
		if len(longest) > 0 {
			last := longest[len(longest)-1]
			s += fmt.Sprintf(" (last: %s)", model.DescribeOperation(last.Input, last.Output))
		}
	}
	return s
}

func writeVisualization(model porcupine.Model, info porcupine.LinearizationInfo, opts RegisterOptions, end time.Duration) error {
	annotations := make([]porcupine.Annotation, 0, len(opts.Events)+1)
	for _, ev := range opts.Events {
		annotations = append(annotations, porcupine.Annotation{
			Tag:             "events",
			Start:           int64(ev.Start),
			End:             int64(max(ev.End, ev.Start)),
			Description:     ev.Name,
			Details:         fmt.Sprintf("%s at %v: %s", ev.Name, ev.Start, ev.Details),
			BackgroundColor: "#f7c8c8",
		})
	}
	annotations = append(annotations, porcupine.Annotation{
		Tag:         "events",
		Start:       int64(end),
		Description: "end (open-ended ops return here)",
	})
	info.AddAnnotations(annotations)
	if err := os.MkdirAll(filepath.Dir(opts.VisualizationPath), 0o755); err != nil {
		return err
	}
	return porcupine.VisualizePath(model, info, opts.VisualizationPath)
}
