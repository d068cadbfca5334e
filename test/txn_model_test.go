package test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/cairndb/cairn/client"
)

// A porcupine model of single-key get/put/CAS mixed with two-key
// transactions (issue 13, "a porcupine check of single-key get/put/CAS mixed
// with two-key transactions"). Keys come in pairs (a group: "<g>/a",
// "<g>/b"); a transaction touches both keys of one group, so the history is
// partitioned by group and each partition is a pair of registers.

// txnLinOp names an operation of the pair model.
type txnLinOp string

const (
	tlGet   txnLinOp = "get"   // single key
	tlPut   txnLinOp = "put"   // single key
	tlCAS   txnLinOp = "cas"   // single key, put with if value / if absent
	tlMove  txnLinOp = "move"  // txn: if a == Expect (or a absent): put a=Value, b=Value2; else get a, get b
	tlRead2 txnLinOp = "read2" // txn: get a, get b
)

type txnLinInput struct {
	Op           txnLinOp
	Group        string
	Key          int // 0: a, 1: b (single-key ops)
	Value        string
	Value2       string
	Expect       string
	ExpectAbsent bool
}

type txnLinOutput struct {
	OK      bool      // cas, move: the condition held
	Found   [2]bool   // get: Found[Key]; move (failure branch) and read2: both keys
	Values  [2]string // as Found
	Unknown bool      // the write's outcome is unknown
}

type pairState struct {
	v [2]string
	p [2]bool
}

func (s pairState) String() string {
	f := func(i int) string {
		if !s.p[i] {
			return "<absent>"
		}
		return fmt.Sprintf("%q", s.v[i])
	}
	return fmt.Sprintf("a=%s b=%s", f(0), f(1))
}

func (s pairState) holds(present bool, value string, expectAbsent bool, expect string) bool {
	if expectAbsent {
		return !present
	}
	return present && value == expect
}

func txnLinModel() porcupine.Model {
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			by := map[string][]porcupine.Operation{}
			for _, op := range h {
				g := op.Input.(txnLinInput).Group
				by[g] = append(by[g], op)
			}
			var out [][]porcupine.Operation
			for _, g := range sortedKeys(by) {
				out = append(out, by[g])
			}
			return out
		},
		Init: func() any { return pairState{} },
		Step: func(state, input, output any) (bool, any) {
			s, in, out := state.(pairState), input.(txnLinInput), output.(txnLinOutput)
			switch in.Op {
			case tlGet:
				if out.Unknown {
					return true, s
				}
				k := in.Key
				return out.Found[k] == s.p[k] && (!s.p[k] || out.Values[k] == s.v[k]), s
			case tlPut:
				n := s
				n.v[in.Key], n.p[in.Key] = in.Value, true
				return true, n
			case tlCAS:
				ok := s.holds(s.p[in.Key], s.v[in.Key], in.ExpectAbsent, in.Expect)
				n := s
				if ok {
					n.v[in.Key], n.p[in.Key] = in.Value, true
				}
				if out.Unknown {
					return true, n
				}
				return ok == out.OK, n
			case tlMove:
				ok := s.holds(s.p[0], s.v[0], in.ExpectAbsent, in.Expect)
				n := s
				if ok {
					n = pairState{v: [2]string{in.Value, in.Value2}, p: [2]bool{true, true}}
				}
				if out.Unknown {
					return true, n
				}
				if ok != out.OK {
					return false, s
				}
				return ok || (out.Found == s.p && sameValues(s, out)), n
			case tlRead2:
				if out.Unknown {
					return true, s
				}
				return out.Found == s.p && sameValues(s, out), s
			}
			return false, s
		},
		Equal: func(a, b any) bool { return a.(pairState) == b.(pairState) },
		DescribeOperation: func(input, output any) string {
			in, out := input.(txnLinInput), output.(txnLinOutput)
			return fmt.Sprintf("%s %s k%d %q/%q exp=%q absent=%v -> ok=%v found=%v %q unknown=%v",
				in.Op, in.Group, in.Key, in.Value, in.Value2, in.Expect, in.ExpectAbsent, out.OK, out.Found, out.Values, out.Unknown)
		},
		DescribeState: func(state any) string { return state.(pairState).String() },
	}
}

func tlop(client int, call, ret int64, in txnLinInput, out txnLinOutput) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func sameValues(s pairState, out txnLinOutput) bool {
	for i := range 2 {
		if s.p[i] && out.Values[i] != s.v[i] {
			return false
		}
	}
	return true
}

// TestTxnLinModel: hand-built histories the pair model must accept and
// reject — its negative controls (a torn two-key read, a lost transaction
// write, a transaction that ran its success branch on a false compare).
func TestTxnLinModel(t *testing.T) {
	in := func(op txnLinOp, key int, v, v2, exp string, absent bool) txnLinInput {
		return txnLinInput{Op: op, Group: "g", Key: key, Value: v, Value2: v2, Expect: exp, ExpectAbsent: absent}
	}
	both := func(a, b string) txnLinOutput {
		return txnLinOutput{Found: [2]bool{true, true}, Values: [2]string{a, b}}
	}
	cases := []struct {
		name string
		ops  []porcupine.Operation
		want bool
	}{
		{"move then read2", []porcupine.Operation{
			tlop(0, 0, 10, in(tlMove, 0, "1", "1", "", true), txnLinOutput{OK: true}),
			tlop(1, 20, 30, in(tlRead2, 0, "", "", "", false), both("1", "1")),
		}, true},
		{"move failure branch reads both", []porcupine.Operation{
			tlop(0, 0, 10, in(tlPut, 0, "x", "", "", false), txnLinOutput{}),
			tlop(0, 20, 30, in(tlMove, 0, "1", "1", "y", false), txnLinOutput{OK: false, Found: [2]bool{true, false}, Values: [2]string{"x", ""}}),
		}, true},
		{"single put concurrent with read2", []porcupine.Operation{
			tlop(0, 0, 10, in(tlMove, 0, "1", "1", "", true), txnLinOutput{OK: true}),
			tlop(1, 20, 60, in(tlPut, 1, "2", "", "", false), txnLinOutput{}),
			tlop(2, 30, 40, in(tlRead2, 0, "", "", "", false), both("1", "1")),
			tlop(2, 70, 80, in(tlRead2, 0, "", "", "", false), both("1", "2")),
		}, true},
		{"unknown move that applied", []porcupine.Operation{
			tlop(0, 0, 10, in(tlMove, 0, "1", "1", "", true), txnLinOutput{Unknown: true}),
			tlop(1, 20, 30, in(tlGet, 1, "", "", "", false), txnLinOutput{Found: [2]bool{false, true}, Values: [2]string{"", "1"}}),
		}, true},
		// Negative controls.
		{"torn read2: new a, old b", []porcupine.Operation{
			tlop(0, 0, 10, in(tlMove, 0, "1", "1", "", true), txnLinOutput{OK: true}),
			tlop(0, 20, 30, in(tlMove, 0, "2", "2", "1", false), txnLinOutput{OK: true}),
			tlop(1, 40, 50, in(tlRead2, 0, "", "", "", false), both("2", "1")),
		}, false},
		{"half-applied move seen by single gets", []porcupine.Operation{
			tlop(0, 0, 10, in(tlMove, 0, "1", "1", "", true), txnLinOutput{OK: true}),
			tlop(1, 20, 30, in(tlGet, 1, "", "", "", false), txnLinOutput{}),
		}, false},
		{"success branch on a false compare", []porcupine.Operation{
			tlop(0, 0, 10, in(tlPut, 0, "x", "", "", false), txnLinOutput{}),
			tlop(0, 20, 30, in(tlMove, 0, "1", "1", "y", false), txnLinOutput{OK: true}),
		}, false},
		{"failure branch reads a stale value", []porcupine.Operation{
			tlop(0, 0, 10, in(tlPut, 0, "x", "", "", false), txnLinOutput{}),
			tlop(0, 20, 30, in(tlPut, 0, "z", "", "", false), txnLinOutput{}),
			tlop(0, 40, 50, in(tlMove, 0, "1", "1", "y", false), txnLinOutput{OK: false, Found: [2]bool{true, false}, Values: [2]string{"x", ""}}),
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(txnLinModel(), tc.ops); got != tc.want {
				t.Fatalf("linearizable = %v, want %v", got, tc.want)
			}
		})
	}
}

// txnLinRecorder records a pair-model history; writes whose outcome is
// unknown get a return after the end of the history.
type txnLinRecorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
	open  []porcupine.Operation
	n     map[string]int
}

func newTxnLinRecorder() *txnLinRecorder {
	return &txnLinRecorder{start: time.Now(), n: map[string]int{}}
}

func (r *txnLinRecorder) now() int64 { return time.Since(r.start).Nanoseconds() }

func (r *txnLinRecorder) record(client int, in txnLinInput, call int64, out txnLinOutput, err error) {
	ret := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	op := porcupine.Operation{ClientId: client, Input: in, Call: call, Return: ret, Output: out}
	read := in.Op == tlGet || in.Op == tlRead2
	switch {
	case err == nil:
		r.ops = append(r.ops, op)
		r.n[string(in.Op)+"/ok"]++
	case read || definiteFailure(err):
		r.n[string(in.Op)+"/failed"]++ // observed nothing / wrote nothing
	default:
		op.Output = txnLinOutput{Unknown: true}
		r.open = append(r.open, op)
		r.n[string(in.Op)+"/unknown"]++
	}
}

// definiteFailure: an answer that says nothing was written.
func definiteFailure(err error) bool {
	return errors.Is(err, client.ErrInvalidArgument) || errors.Is(err, client.ErrTxnAborted) ||
		errors.Is(err, client.ErrStaleToken)
}

func (r *txnLinRecorder) history() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := slices.Clone(r.ops)
	var end int64
	for _, o := range r.ops {
		end = max(end, o.Return)
	}
	for _, o := range r.open {
		end = max(end, o.Call)
	}
	for _, o := range r.open {
		o.Return = end + 1
		out = append(out, o)
	}
	return out
}

// runTxnLinWorkload runs clients mixing single-key get/put/cas with move
// and read2 transactions over groups, until ctx ends; it returns the history.
func runTxnLinWorkload(ctx context.Context, t *testing.T, seed uint64, clients []*client.Client, groups []string) *txnLinRecorder {
	return runTxnLinWorkloadUntil(ctx, ctx, t, seed, clients, groups, nil)
}

// runTxnLinWorkloadUntil runs the workload until window ends and then, with
// the faults over, on until enough says the history holds enough
// successes or outer ends (one history throughout). Operations run under
// outer, so the window's end cuts none short.
func runTxnLinWorkloadUntil(window, outer context.Context, t *testing.T, seed uint64, clients []*client.Client,
	groups []string, enough func(n map[string]int) bool) *txnLinRecorder {
	rec := newTxnLinRecorder()
	done := func() bool {
		if window.Err() == nil {
			return false
		}
		if outer.Err() != nil || enough == nil {
			return true
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return enough(rec.n)
	}
	ctx := outer
	var wg sync.WaitGroup
	for ci, c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(ci)))
			for seq := 0; !done() && seq < 100000; seq++ {
				in := txnLinInput{Group: groups[rng.IntN(len(groups))], Key: rng.IntN(2),
					Value: fmt.Sprintf("c%d-%d", ci, seq), Value2: fmt.Sprintf("c%d-%d'", ci, seq)}
				switch p := rng.IntN(10); {
				case p < 2:
					in.Op = tlGet
				case p < 4:
					in.Op = tlPut
				case p < 5:
					in.Op = tlCAS
				case p < 8:
					in.Op = tlMove
				default:
					in.Op = tlRead2
				}
				if in.Op == tlCAS || in.Op == tlMove {
					// Expect what a fresh read says, so conditions often hold.
					kv, err := c.Get(ctx, in.Group+"/"+"ab"[in.Key:in.Key+1])
					if in.Op == tlMove {
						kv, err = c.Get(ctx, in.Group+"/a")
					}
					if err == nil {
						in.Expect = kv.Value
					} else {
						in.ExpectAbsent = true
					}
				}
				opCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				call := rec.now()
				out, err := doTxnLin(opCtx, c, in)
				cancel()
				rec.record(ci, in, call, out, err)
			}
		})
	}
	wg.Wait()
	return rec
}

func doTxnLin(ctx context.Context, c *client.Client, in txnLinInput) (txnLinOutput, error) {
	var out txnLinOutput
	a, b := in.Group+"/a", in.Group+"/b"
	key := []string{a, b}[in.Key]
	cond := client.Compare(a, client.TargetValue, "==", in.Expect)
	if in.ExpectAbsent {
		cond = client.Compare(a, client.TargetExists, "==", false)
	}
	switch in.Op {
	case tlGet:
		kv, err := c.Get(ctx, key)
		if errors.Is(err, client.ErrNotFound) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out.Found[in.Key], out.Values[in.Key] = true, kv.Value
		return out, nil
	case tlPut:
		_, err := c.Put(ctx, key, in.Value)
		return out, err
	case tlCAS:
		opt := client.IfValue(in.Expect)
		if in.ExpectAbsent {
			opt = client.IfAbsent()
		}
		_, err := c.Put(ctx, key, in.Value, opt)
		if errors.Is(err, client.ErrConditionFailed) {
			return out, nil
		}
		out.OK = err == nil
		return out, err
	case tlMove, tlRead2:
		tx := c.Txn().Else(client.OpGet(a), client.OpGet(b)).Then(client.OpPut(a, in.Value), client.OpPut(b, in.Value2))
		if in.Op == tlRead2 {
			tx = c.Txn().Then(client.OpGet(a), client.OpGet(b))
		} else {
			tx.If(cond)
		}
		res, err := tx.Commit(ctx)
		if err != nil {
			return out, err
		}
		out.OK = res.Succeeded
		if in.Op == tlRead2 || !res.Succeeded {
			if len(res.Results) != 2 {
				return out, fmt.Errorf("txn answered %d results, want 2", len(res.Results))
			}
			for i, r := range res.Results {
				if r.KV != nil {
					out.Found[i], out.Values[i] = true, r.KV.Value
				}
			}
		}
		return out, nil
	}
	return out, fmt.Errorf("unknown op %s", in.Op)
}

func checkTxnLin(t *testing.T, rec *txnLinRecorder) {
	t.Helper()
	h := rec.history()
	t.Logf("pair-model history: %d operations, %v", len(h), rec.n)
	res, info := porcupine.CheckOperationsVerbose(txnLinModel(), h, 60*time.Second)
	switch res {
	case porcupine.Illegal:
		path, err := writeVisualization(t, txnLinModel(), info)
		t.Errorf("single-key ops mixed with two-key transactions are NOT linearizable; visualization %s %v", path, err)
	case porcupine.Unknown:
		t.Logf("!!! porcupine timed out: this run proves nothing")
	}
}
