package txncheck

import (
	"fmt"
	"sort"
	"strings"
)

// BankKind is a bank workload transaction.
type BankKind uint8

const (
	// Transfer moves Amount from From to To in one transaction, only if From
	// holds at least Amount (a compare), so no balance goes negative.
	Transfer BankKind = 1
	// Balances reads every account in one transaction.
	Balances BankKind = 2
)

// BankTxn is one transaction of a bank history.
type BankTxn struct {
	Kind     BankKind
	From, To string
	Amount   int64
	Balances map[string]int64 // Balances, OK: what it read (an absent account is missing from the map)
	Status   Status
	Start    int64
	End      int64
}

// BankViolation is one broken bank invariant.
type BankViolation struct {
	Kind string // "wrong-total", "negative-balance", "missing-account", "unknown-account", "bad-transfer"
	Txn  BankTxn
	Msg  string
}

func (v BankViolation) String() string { return v.Kind + ": " + v.Msg }

// CheckBank checks a bank history (Scenario S13, invariant I8): every
// balance read that completed sees every account, no negative balance and
// exactly total; every transfer is between two known accounts for a
// positive amount. A half-applied transfer (money created or destroyed) or
// a read that is not one consistent state across shards (a fractured read)
// changes some read's total. Aborted and unknown reads are skipped: their
// values are not known.
func CheckBank(accounts []string, total int64, h []BankTxn) []BankViolation {
	known := map[string]bool{}
	for _, a := range accounts {
		known[a] = true
	}
	var out []BankViolation
	for _, t := range h {
		switch t.Kind {
		case Transfer:
			if !known[t.From] || !known[t.To] || t.From == t.To || t.Amount <= 0 {
				out = append(out, BankViolation{Kind: "bad-transfer", Txn: t,
					Msg: fmt.Sprintf("transfer %d from %q to %q", t.Amount, t.From, t.To)})
			}
		case Balances:
			if t.Status != OK {
				continue
			}
			out = append(out, checkRead(known, accounts, total, t)...)
		}
	}
	return out
}

func checkRead(known map[string]bool, accounts []string, total int64, t BankTxn) []BankViolation {
	var out []BankViolation
	sum := int64(0)
	for _, a := range accounts {
		b, ok := t.Balances[a]
		if !ok {
			out = append(out, BankViolation{Kind: "missing-account", Txn: t, Msg: fmt.Sprintf("read lacks account %q", a)})
			continue
		}
		if b < 0 {
			out = append(out, BankViolation{Kind: "negative-balance", Txn: t, Msg: fmt.Sprintf("account %q holds %d", a, b)})
		}
		sum += b
	}
	for a := range t.Balances {
		if !known[a] {
			out = append(out, BankViolation{Kind: "unknown-account", Txn: t, Msg: fmt.Sprintf("read holds account %q", a)})
		}
	}
	if sum != total {
		out = append(out, BankViolation{Kind: "wrong-total", Txn: t,
			Msg: fmt.Sprintf("read at [%d, %d] sums to %d, want %d: %s", t.Start, t.End, sum, total, fmtBalances(t.Balances))})
	}
	return out
}

func fmtBalances(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}
