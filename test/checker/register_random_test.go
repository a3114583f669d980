package checker

import (
	"math/rand/v2"
	"testing"
	"time"
)

// simulateRegister builds a history from a sequential execution: operation
// i takes effect at 10*i ms, and its invocation and completion lie up to 25
// ms either side, so neighbours overlap. Writes and compare-and-sets marked
// unknown take effect (applied) or not, as asked.
func simulateRegister(seed uint64, n int, applyUnknown bool) []RegisterOp {
	rng := rand.New(rand.NewPCG(seed, 7))
	state := map[int]int64{}
	var out []RegisterOp
	var next int64 = 1
	for i := 0; i < n; i++ {
		p := time.Duration(100+10*i) * time.Millisecond
		op := RegisterOp{Key: rng.IntN(3)}
		op.Client = i % 5
		op.Invoke = p - time.Duration(rng.IntN(25))*time.Millisecond
		op.Complete = p + time.Duration(rng.IntN(25))*time.Millisecond
		op.Outcome = OutcomeOK
		unknown := rng.IntN(10) == 0
		switch rng.IntN(3) {
		case 0:
			op.Kind = RegisterRead
			op.Value, op.Found = state[op.Key], true
		case 1:
			op.Kind = RegisterWrite
			op.Value = next
			next++
			if unknown {
				op.Outcome = OutcomeUnknown
				if !applyUnknown {
					break
				}
			}
			state[op.Key] = op.Value
		default:
			op.Kind = RegisterCAS
			op.Value = next
			next++
			op.Expect = state[op.Key]
			if rng.IntN(3) == 0 {
				op.Expect = -1 // will not match
			}
			if unknown {
				op.Outcome = OutcomeUnknown
				if !applyUnknown {
					break
				}
			}
			if state[op.Key] == op.Expect {
				state[op.Key], op.Found = op.Value, true
			}
		}
		out = append(out, op)
	}
	return out
}

func TestRegisterRandomHistories(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		for _, applied := range []bool{true, false} {
			h := simulateRegister(seed, 300, applied)
			r := CheckRegister(h, RegisterOptions{Timeout: 20 * time.Second})
			if !r.OK {
				t.Fatalf("seed %d, unknown applied=%v: a sequentially generated history was rejected:\n%s", seed, applied, r)
			}
			// Now corrupt one OK read after the first quarter into a value
			// nobody wrote: it must be rejected.
			for i := len(h) / 4; i < len(h); i++ {
				if h[i].Kind == RegisterRead && h[i].Outcome == OutcomeOK {
					h[i].Value = -999
					break
				}
			}
			if r := CheckRegister(h, RegisterOptions{Timeout: 20 * time.Second}); r.OK {
				t.Fatalf("seed %d: a history with a read of a value never written was accepted", seed)
			}
		}
	}
}
