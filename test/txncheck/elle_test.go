package txncheck

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func ap(k string, v int) Mop       { return Mop{Kind: Append, Key: k, Value: v} }
func rd(k string, list ...int) Mop { return Mop{Kind: Read, Key: k, List: list} }
func tx(id int, s Status, start, end int64, ops ...Mop) Txn {
	return Txn{ID: id, Ops: ops, Status: s, Start: start, End: end}
}

func anomalyKinds(r Result) []string {
	var ks []string
	for _, a := range r.Anomalies {
		ks = append(ks, a.Kind)
	}
	return ks
}

// TestListAppendNegativeControls: each synthetic history holds one known
// anomaly and the checker must name it (the checker's negative controls:
// a checker that passes these could not miss the anomaly under test).
// Invariant I8: strictly serializable for the keys a transaction compares,
// reads and writes.
func TestListAppendNegativeControls(t *testing.T) {
	cases := []struct {
		name     string
		h        []Txn
		realtime bool
		want     string
	}{
		{"lost update (both read [] and append; one append is lost to the other's read)", []Txn{
			tx(1, OK, 0, 10, rd("x"), ap("x", 1)),
			tx(2, OK, 0, 10, rd("x"), ap("x", 2)),
			tx(3, OK, 20, 30, rd("x", 1, 2)),
		}, false, "G-single"},
		{"write skew (each reads both, writes one)", []Txn{
			tx(1, OK, 0, 10, rd("x"), rd("y"), ap("x", 1)),
			tx(2, OK, 0, 10, rd("x"), rd("y"), ap("y", 1)),
			tx(3, OK, 20, 30, rd("x", 1), rd("y", 1)),
		}, false, "G2"},
		{"fractured read (sees one of two atomic appends)", []Txn{
			tx(1, OK, 0, 10, ap("x", 1), ap("y", 1)),
			tx(2, OK, 0, 10, rd("x", 1), rd("y")),
			tx(3, OK, 20, 30, rd("y", 1)),
		}, false, "G-single"},
		{"aborted read", []Txn{
			tx(1, Aborted, 0, 10, ap("x", 1)),
			tx(2, OK, 0, 10, rd("x", 1)),
		}, false, "G1a"},
		{"dirty write cycle", []Txn{
			tx(1, OK, 0, 10, ap("x", 1), ap("y", 1)),
			tx(2, OK, 0, 10, ap("x", 2), ap("y", 2)),
			tx(3, OK, 20, 30, rd("x", 1, 2), rd("y", 2, 1)),
		}, false, "G0"},
		{"circular information flow", []Txn{
			tx(1, OK, 0, 10, ap("x", 1), rd("y", 1)),
			tx(2, OK, 0, 10, ap("y", 1), rd("x", 1)),
		}, false, "G1c"},
		{"stale read after a completed write (strict serializability only)", []Txn{
			tx(1, OK, 0, 10, ap("x", 1)),
			tx(2, OK, 20, 30, rd("x")),
			tx(3, OK, 40, 50, rd("x", 1)),
		}, true, "G-single-realtime"},
		{"incompatible orders", []Txn{
			tx(1, OK, 0, 10, ap("x", 1)),
			tx(2, OK, 0, 10, ap("x", 2)),
			tx(3, OK, 20, 30, rd("x", 1, 2)),
			tx(4, OK, 20, 30, rd("x", 2, 1)),
		}, false, "incompatible-order"},
		{"garbage element", []Txn{tx(1, OK, 0, 10, rd("x", 7))}, false, "garbage"},
		{"read misses own append", []Txn{tx(1, OK, 0, 10, ap("x", 1), rd("x"))}, false, "internal"},
		{"duplicate element", []Txn{tx(1, OK, 0, 10, ap("x", 1)), tx(2, OK, 20, 30, rd("x", 1, 1))}, false, "duplicate-elements"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := CheckListAppend(c.h, Options{Realtime: c.realtime})
			if !slices.Contains(anomalyKinds(r), c.want) {
				t.Fatalf("want %s, got %v\n%s", c.want, anomalyKinds(r), r)
			}
			t.Logf("%s", r)
		})
	}
	// Without real-time edges the stale read is serializable: the checker
	// tells the two levels apart.
	stale := cases[6].h
	if r := CheckListAppend(stale, Options{}); !r.Valid() {
		t.Fatalf("stale read is serializable, got %s", r)
	}
}

// TestListAppendReportsOps: a cycle names its edges with key and element
// and lists the transactions with their ops.
func TestListAppendReportsOps(t *testing.T) {
	r := CheckListAppend([]Txn{
		tx(1, OK, 0, 10, rd("x"), ap("x", 1)),
		tx(2, OK, 0, 10, rd("x"), ap("x", 2)),
		tx(3, OK, 20, 30, rd("x", 1, 2)),
	}, Options{})
	s := r.String()
	for _, want := range []string{"T1 -ww(x:2)-> T2", "T2 -rw(x:1)-> T1", "T1[ok read(x)=[] append(x,1)]"} {
		if !strings.Contains(s, want) {
			t.Fatalf("report lacks %q:\n%s", want, s)
		}
	}
}

// TestListAppendValidConcurrent: overlapping transactions whose results fit
// a serial order, with an aborted and an unknown transaction (one applied,
// one not), are accepted, strict serializability included.
func TestListAppendValidConcurrent(t *testing.T) {
	h := []Txn{
		tx(1, OK, 0, 20, rd("x"), ap("x", 1), ap("y", 1)),
		tx(2, OK, 5, 25, rd("x", 1), rd("y", 1), ap("y", 2)),
		tx(3, Aborted, 5, 15, ap("x", 9)),
		tx(4, Unknown, 10, 0, ap("x", 2)),  // applied
		tx(5, Unknown, 10, 0, ap("y", 99)), // not applied
		tx(6, OK, 30, 40, rd("x", 1, 2), rd("y", 1, 2)),
		tx(7, OK, 26, 50, rd("y", 1, 2), ap("x", 3)),
		tx(8, OK, 60, 70, rd("x", 1, 2, 3)),
	}
	if r := CheckListAppend(h, Options{Realtime: true}); !r.Valid() {
		t.Fatalf("valid history refused: %s", r)
	}
}

func seed(t *testing.T) uint64 {
	if s := os.Getenv("TXNCHECK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("TXNCHECK_SEED: %v", err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// serialHistory runs n random list-append transactions one after another
// against a model, then gives each an invocation and completion interval
// around its point in the serial order (random overlaps, consistent with
// real time). Some transactions abort (not applied) and some are unknown
// (applied or not, reads forgotten).
func serialHistory(rng *rand.Rand, n, keys int) []Txn {
	state := map[string][]int{}
	next := map[string]int{}
	h := make([]Txn, n)
	for i := range h {
		status := OK
		switch p := rng.IntN(20); {
		case p == 0:
			status = Aborted
		case p == 1:
			status = Unknown
		}
		apply := status == OK || (status == Unknown && rng.IntN(2) == 0)
		var ops []Mop
		appended := map[string]bool{}
		for range 1 + rng.IntN(4) {
			k := "k" + strconv.Itoa(rng.IntN(keys))
			if rng.IntN(2) == 0 || appended[k] {
				ops = append(ops, Mop{Kind: Read, Key: k, List: slices.Clone(state[k])})
				continue
			}
			next[k]++
			appended[k] = true
			ops = append(ops, Mop{Kind: Append, Key: k, Value: next[k]})
			if apply {
				state[k] = append(state[k], next[k])
			}
		}
		if status != OK {
			for j := range ops {
				ops[j].List = nil
			}
		}
		h[i] = Txn{ID: i, Ops: ops, Status: status}
	}
	// Serial point of transaction i is 100*i; its interval covers it.
	for i := range h {
		p := int64(100 * i)
		h[i].Start = p - rng.Int64N(400)
		h[i].End = p + 1 + rng.Int64N(400)
	}
	return h
}

// TestListAppendSerialProperty: random serial executions, then random
// interleavings consistent with that serial order, never show an anomaly
// (no false positives), while the same history with one read's result
// broken is caught (the property's own negative control).
func TestListAppendSerialProperty(t *testing.T) {
	s := seed(t)
	t.Logf("seed %d (replay with TXNCHECK_SEED=%d)", s, s)
	rng := rand.New(rand.NewPCG(s, s^0x5bd1e995))
	caught := 0
	for run := range 200 {
		h := serialHistory(rng, 10+rng.IntN(60), 1+rng.IntN(5))
		if r := CheckListAppend(h, Options{Realtime: true}); !r.Valid() {
			t.Fatalf("run %d: serial history refused:\n%s", run, r)
		}
		// Break it: drop the last element of a non-empty OK read whose key
		// a later OK read saw longer (a stale or fractured read).
		if breakOne(h) {
			if r := CheckListAppend(h, Options{Realtime: true}); r.Valid() {
				t.Fatalf("run %d: a stale read went unnoticed:\n%v", run, h)
			}
			caught++
		}
	}
	if caught < 50 {
		t.Fatalf("only %d runs could be broken; the negative control is too weak", caught)
	}
}

// breakOne makes one OK read miss the last element it saw, where that
// element's writer completed before the read began (so real time forbids
// missing it) and another read also saw the element (so the history still
// shows it was written). It reports whether it found such a read.
func breakOne(h []Txn) bool {
	writer := map[string]*Txn{}
	seen := map[string]int{}
	for i := range h {
		for _, m := range h[i].Ops {
			switch {
			case m.Kind == Append:
				writer[fmt.Sprint(m.Key, "/", m.Value)] = &h[i]
			case h[i].Status == OK:
				for _, v := range m.List {
					seen[fmt.Sprint(m.Key, "/", v)]++
				}
			}
		}
	}
	for i := len(h) - 1; i >= 0; i-- {
		if h[i].Status != OK {
			continue
		}
		for j, m := range h[i].Ops {
			if m.Kind != Read || len(m.List) == 0 {
				continue
			}
			last := fmt.Sprint(m.Key, "/", m.List[len(m.List)-1])
			if w := writer[last]; w != nil && w.Status == OK && w.End < h[i].Start && seen[last] >= 2 {
				h[i].Ops[j].List = m.List[:len(m.List)-1]
				return true
			}
		}
	}
	return false
}

// TestListAppendLarge: the checker stays fast on a history the size a
// cluster test records.
func TestListAppendLarge(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	h := serialHistory(rng, 5000, 20)
	start := time.Now()
	if r := CheckListAppend(h, Options{Realtime: true}); !r.Valid() {
		t.Fatalf("refused:\n%s", r)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("5000 transactions took %v", d)
	}
}
