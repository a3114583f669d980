package checker

import (
	"fmt"
	"sort"
)

// Bank operation kinds.
const (
	BankTransfer = "transfer"
	BankRead     = "read"
	// BankFinalRead is the read of all balances after every client stopped.
	BankFinalRead = "final-read"
)

// BankOp is a transfer between two accounts or a read of every balance in
// one snapshot.
type BankOp struct {
	Op
	From   int   `json:"from,omitempty"`
	To     int   `json:"to,omitempty"`
	Amount int64 `json:"amount,omitempty"`
	// Insufficient marks an OK transfer that moved nothing because From
	// held less than Amount.
	Insufficient bool `json:"insufficient,omitempty"`
	// Balances is what an OK read saw, by account id.
	Balances map[int]int64 `json:"balances,omitempty"`
}

// BankOptions describe the bank the history ran against.
type BankOptions struct {
	// Accounts are numbered 0..Accounts-1.
	Accounts int
	// Total is the sum of all balances, constant under transfers.
	Total int64
	// RequireFinal makes a missing or failed final read a problem.
	RequireFinal bool
}

// CheckBank checks that every snapshot read (and the final read) saw every
// account exactly, no negative balance, and the constant total. Transfers
// themselves are only checked for being well formed: with unknown outcomes
// their effect can't be replayed, but any transfer that was applied partly
// or twice, and any lost or phantom write, shows up as a drifting total in
// the reads.
//
// Stats.Values: "reads_checked", "bad_reads", "transfers_ok", "transfers_insufficient",
// "final_total" (when there is a final read), "max_drift".
func CheckBank(history []BankOp, opts BankOptions) Result {
	r := newResult("bank")
	if opts.Accounts <= 0 {
		r.problem("bad options: %d accounts", opts.Accounts)
		return r
	}
	var reads, transfers, insufficient, finals, badReads int
	var maxDrift int64
	// The final reads first, so their verdict is never crowded out of the
	// problem list by many bad snapshot reads.
	ordered := make([]BankOp, 0, len(history))
	for _, op := range history {
		if op.Kind == BankFinalRead {
			ordered = append(ordered, op)
		}
	}
	for _, op := range history {
		if op.Kind != BankFinalRead {
			ordered = append(ordered, op)
		}
	}
	for _, op := range ordered {
		r.count(op.Op)
		if err := validOp(op.Op); err != nil {
			r.problem("malformed history: %v", err)
			continue
		}
		switch op.Kind {
		case BankTransfer:
			if op.From == op.To || op.Amount <= 0 || !inRange(op.From, opts.Accounts) || !inRange(op.To, opts.Accounts) {
				r.problem("malformed history: client %d at %v: transfer %d from %d to %d", op.Client, op.Invoke, op.Amount, op.From, op.To)
				continue
			}
			if op.Outcome == OutcomeOK {
				transfers++
				if op.Insufficient {
					insufficient++
				}
			}
		case BankRead, BankFinalRead:
			if op.Kind == BankFinalRead && op.Outcome == OutcomeOK {
				finals++
			}
			if op.Outcome != OutcomeOK {
				continue
			}
			reads++
			// Detail the first few bad snapshot reads; count the rest.
			sink := &r
			if badReads >= maxBankReadDetails && op.Kind != BankFinalRead {
				scratch := newResult("")
				sink = &scratch
			}
			total, drift := checkBankSnapshot(sink, op, opts)
			if !sink.OK {
				badReads++
			}
			maxDrift = max(maxDrift, drift)
			if op.Kind == BankFinalRead {
				r.Stats.Values["final_total"] = float64(total)
			}
		default:
			r.problem("malformed history: client %d at %v: unknown bank operation %q", op.Client, op.Invoke, op.Kind)
		}
	}
	if badReads > maxBankReadDetails {
		r.problem("%d of %d successful reads saw a wrong bank (the first %d are detailed above)", badReads, reads, maxBankReadDetails)
	}
	if opts.RequireFinal && finals == 0 {
		r.problem("no successful final read of the balances")
	}
	r.Stats.Values["reads_checked"] = float64(reads)
	r.Stats.Values["bad_reads"] = float64(badReads)
	r.Stats.Values["transfers_ok"] = float64(transfers)
	r.Stats.Values["transfers_insufficient"] = float64(insufficient)
	r.Stats.Values["max_drift"] = float64(maxDrift)
	return r
}

// maxBankReadDetails bounds how many bad reads are described one by one.
const maxBankReadDetails = 20

func inRange(account, accounts int) bool { return account >= 0 && account < accounts }

// checkBankSnapshot judges one read and returns its total and how far the
// total was off.
func checkBankSnapshot(r *Result, op BankOp, opts BankOptions) (int64, int64) {
	what := fmt.Sprintf("%s by client %d at %v-%v", op.Kind, op.Client, op.Invoke, op.Complete)
	var total int64
	ids := make([]int, 0, len(op.Balances))
	for id := range op.Balances {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		bal := op.Balances[id]
		total += bal
		if !inRange(id, opts.Accounts) {
			r.problem("%s: unexpected account %d (balance %d)", what, id, bal)
		}
		if bal < 0 {
			r.problem("%s: account %d has negative balance %d", what, id, bal)
		}
	}
	for id := 0; id < opts.Accounts; id++ {
		if _, ok := op.Balances[id]; !ok {
			r.problem("%s: account %d missing", what, id)
		}
	}
	drift := total - opts.Total
	if drift != 0 {
		r.problem("%s: total %d, want %d (drift %+d)", what, total, opts.Total, drift)
	}
	if drift < 0 {
		drift = -drift
	}
	return total, drift
}
