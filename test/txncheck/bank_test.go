package txncheck

import (
	"math/rand/v2"
	"slices"
	"testing"
)

var accts = []string{"acct/0", "acct/1", "acct/2", "acct/3"}

func read(start, end int64, bal ...int64) BankTxn {
	m := map[string]int64{}
	for i, b := range bal {
		m[accts[i]] = b
	}
	return BankTxn{Kind: Balances, Balances: m, Status: OK, Start: start, End: end}
}

func violationKinds(vs []BankViolation) []string {
	var ks []string
	for _, v := range vs {
		ks = append(ks, v.Kind)
	}
	return ks
}

// TestBankNegativeControls (Scenario S13, invariant I8): each history
// breaks one bank invariant and the checker names it.
func TestBankNegativeControls(t *testing.T) {
	xfer := BankTxn{Kind: Transfer, From: accts[0], To: accts[1], Amount: 5, Status: OK, Start: 0, End: 10}
	cases := []struct {
		name string
		h    []BankTxn
		want string
	}{
		{"half-applied transfer: money destroyed", []BankTxn{xfer, read(20, 30, 20, 25, 25, 25)}, "wrong-total"},
		{"half-applied transfer: money created", []BankTxn{xfer, read(20, 30, 25, 30, 25, 25)}, "wrong-total"},
		{"fractured read: one shard before the transfer, one after", []BankTxn{xfer, read(5, 8, 25, 30, 25, 25)}, "wrong-total"},
		{"negative balance", []BankTxn{read(0, 10, -5, 55, 25, 25)}, "negative-balance"},
		{"missing account", []BankTxn{read(0, 10, 50, 25, 25)}, "missing-account"},
		{"unknown account", []BankTxn{{Kind: Balances, Status: OK, Balances: map[string]int64{
			accts[0]: 25, accts[1]: 25, accts[2]: 25, accts[3]: 25, "acct/x": 0}}}, "unknown-account"},
		{"transfer to itself", []BankTxn{{Kind: Transfer, From: accts[0], To: accts[0], Amount: 1, Status: OK}}, "bad-transfer"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vs := CheckBank(accts, 100, c.h)
			if !slices.Contains(violationKinds(vs), c.want) {
				t.Fatalf("want %s, got %v", c.want, vs)
			}
		})
	}
	// An aborted or unknown read is not checked: its values are not known.
	bad := read(0, 10, 0, 0, 0, 0)
	bad.Status = Unknown
	if vs := CheckBank(accts, 100, []BankTxn{bad}); len(vs) != 0 {
		t.Fatalf("unknown read checked: %v", vs)
	}
}

// TestBankSerialProperty: random transfers applied atomically (some
// aborted, some unknown and applied or not) with whole-bank reads between
// them never violate the bank invariants; the same run with one transfer
// applied to one side only is caught.
func TestBankSerialProperty(t *testing.T) {
	s := seed(t)
	t.Logf("seed %d (replay with TXNCHECK_SEED=%d)", s, s)
	rng := rand.New(rand.NewPCG(s, s^0x27d4eb2f))
	for run := range 100 {
		for _, halfApply := range []bool{false, true} {
			bal := map[string]int64{}
			for _, a := range accts {
				bal[a] = 25
			}
			var h []BankTxn
			broke := false
			for i := range 200 {
				now := int64(i * 10)
				if rng.IntN(3) == 0 {
					h = append(h, BankTxn{Kind: Balances, Balances: clone(bal), Status: OK, Start: now, End: now + 5})
					continue
				}
				from, to := accts[rng.IntN(4)], accts[rng.IntN(4)]
				if from == to {
					continue
				}
				amt := 1 + rng.Int64N(10)
				status := []Status{OK, OK, OK, Aborted, Unknown}[rng.IntN(5)]
				apply := bal[from] >= amt && (status == OK || (status == Unknown && rng.IntN(2) == 0))
				if apply {
					bal[from] -= amt
					if !(halfApply && !broke) {
						bal[to] += amt
					}
					broke = true
				}
				h = append(h, BankTxn{Kind: Transfer, From: from, To: to, Amount: amt, Status: status, Start: now, End: now + 5})
			}
			h = append(h, BankTxn{Kind: Balances, Balances: clone(bal), Status: OK, Start: 1 << 40, End: 1<<40 + 1})
			vs := CheckBank(accts, 100, h)
			switch {
			case !halfApply && len(vs) != 0:
				t.Fatalf("run %d: serial bank history refused: %v", run, vs)
			case halfApply && broke && len(vs) == 0:
				t.Fatalf("run %d: a half-applied transfer went unnoticed", run)
			}
		}
	}
}

func clone(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
