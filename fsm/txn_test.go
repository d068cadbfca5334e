package fsm

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/cairndb/cairn/txn"
)

func txnCmd(r *txn.Request) *Command {
	return &Command{Op: OpTxn, Key: txn.AnchorKey(r), Value: txn.EncodeRequest(r), RequestID: r.RequestID}
}

func cmpv(key string, target txn.Target, op txn.CmpOp, value string) txn.Compare {
	return txn.Compare{Key: []byte(key), Target: target, Op: op, Value: []byte(value)}
}

func tput(key, value string) txn.Op {
	return txn.Op{Kind: txn.OpPut, Key: []byte(key), Value: []byte(value)}
}

func tget(key string) txn.Op { return txn.Op{Kind: txn.OpGet, Key: []byte(key)} }

func tdel(key string) txn.Op { return txn.Op{Kind: txn.OpDelete, Key: []byte(key)} }

// txnState: "bal"="10" (index 1), "name"="bob" (index 2, then 3: version 2,
// create index 2); "missing" is absent.
func txnState(t *testing.T) *FSM {
	f := newFSM(t)
	mustApply(t, f, 1, put("bal", "10"))
	mustApply(t, f, 2, put("name", "al"))
	mustApply(t, f, 3, put("name", "bob"))
	return f
}

// TestTxnCompares is the apply table of every compare target and operator
// on a one-shard transaction (issue 13 items 1, 2): integers compare as
// integers, other values as bytes, and an absent key's value compare is
// false whatever the operator.
func TestTxnCompares(t *testing.T) {
	const (
		V = txn.TargetValue
		M = txn.TargetModIndex
		C = txn.TargetCreateIndex
		N = txn.TargetVersion
		E = txn.TargetExists
	)
	cases := []struct {
		c    txn.Compare
		want bool
	}{
		{cmpv("bal", V, txn.CmpEq, "10"), true},
		{cmpv("bal", V, txn.CmpNe, "10"), false},
		{cmpv("bal", V, txn.CmpGt, "9"), true}, // integers: 10 > 9 (bytes would say "10" < "9")
		{cmpv("bal", V, txn.CmpLt, "9"), false},
		{cmpv("bal", V, txn.CmpGe, "10"), true},
		{cmpv("bal", V, txn.CmpLe, "-3"), false},
		{cmpv("bal", V, txn.CmpLt, "9x"), true}, // one side not an integer: bytes, "10" < "9x"
		{cmpv("name", V, txn.CmpLt, "carl"), true},
		{cmpv("name", V, txn.CmpGe, "bob"), true},
		{cmpv("name", V, txn.CmpGt, "bob"), false},
		{cmpv("missing", V, txn.CmpEq, ""), false}, // absent has no value
		{cmpv("missing", V, txn.CmpNe, "x"), false},
		{cmpv("missing", V, txn.CmpLt, "x"), false},
		{cmpv("bal", M, txn.CmpEq, "1"), true},
		{cmpv("name", M, txn.CmpEq, "3"), true},
		{cmpv("name", M, txn.CmpGt, "2"), true},
		{cmpv("name", M, txn.CmpLe, "2"), false},
		{cmpv("missing", M, txn.CmpEq, "0"), true}, // mod_index 0 means absent
		{cmpv("name", C, txn.CmpEq, "2"), true},
		{cmpv("name", C, txn.CmpNe, "2"), false},
		{cmpv("missing", C, txn.CmpEq, "0"), true},
		{cmpv("name", N, txn.CmpEq, "2"), true},
		{cmpv("bal", N, txn.CmpLt, "2"), true},
		{cmpv("missing", N, txn.CmpGe, "1"), false},
		{cmpv("bal", E, txn.CmpEq, "true"), true},
		{cmpv("bal", E, txn.CmpNe, "true"), false},
		{cmpv("missing", E, txn.CmpEq, "false"), true},
		{cmpv("missing", E, txn.CmpEq, "true"), false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s_%s_%s_%s", tc.c.Key, tc.c.Target, tc.c.Op, tc.c.Value), func(t *testing.T) {
			f := txnState(t)
			req := &txn.Request{Compare: []txn.Compare{tc.c},
				Success: []txn.Op{tput("out", "success")}, Failure: []txn.Op{tput("out", "failure")}}
			r := mustApply(t, f, 4, txnCmd(req))
			if r.Err != nil || r.Txn == nil {
				t.Fatalf("result %+v", r)
			}
			if r.Txn.Succeeded != tc.want {
				t.Fatalf("succeeded = %v, want %v", r.Txn.Succeeded, tc.want)
			}
			want := map[bool]string{true: "success", false: "failure"}[tc.want]
			if kv := mustGet(t, f, "out"); kv == nil || string(kv.Value) != want || kv.ModIndex != 4 {
				t.Fatalf("out = %+v, want %q at 4", kv, want)
			}
		})
	}
}

// TestTxnBranches: all compares must hold; the branch taken runs all its ops
// in the one entry; its gets see the state before its writes.
func TestTxnBranches(t *testing.T) {
	f := txnState(t)
	req := &txn.Request{
		Compare: []txn.Compare{cmpv("bal", txn.TargetValue, txn.CmpGe, "5"), cmpv("missing", txn.TargetExists, txn.CmpEq, "false")},
		Success: []txn.Op{tget("bal"), tput("bal", "5"), tput("dst", "5"), tdel("name"), tdel("nope"), tget("missing")},
		Failure: []txn.Op{tput("failed", "1")},
	}
	r := mustApply(t, f, 4, txnCmd(req))
	if r.Err != nil || !r.Txn.Succeeded || len(r.Txn.Ops) != 6 {
		t.Fatalf("result %+v %+v", r, r.Txn)
	}
	ops := r.Txn.Ops
	if ops[0].KV == nil || string(ops[0].KV.Value) != "10" || ops[0].KV.ModIndex != 1 {
		t.Fatalf("get bal saw %+v, want the value before the txn", ops[0].KV)
	}
	if ops[1].KV == nil || ops[1].KV.ModIndex != 4 || ops[1].KV.Version != 2 || ops[1].KV.CreateIndex != 1 {
		t.Fatalf("put bal: %+v", ops[1].KV)
	}
	if ops[2].KV == nil || ops[2].KV.Version != 1 || ops[2].KV.CreateIndex != 4 {
		t.Fatalf("put dst: %+v", ops[2].KV)
	}
	if ops[3].Deleted != 1 || ops[4].Deleted != 0 || ops[5].KV != nil {
		t.Fatalf("deletes/get missing: %+v %+v %+v", ops[3], ops[4], ops[5])
	}
	for k, want := range map[string]string{"bal": "5", "dst": "5", "name": "", "failed": ""} {
		kv := mustGet(t, f, k)
		if (want == "") != (kv == nil) || (kv != nil && string(kv.Value) != want) {
			t.Fatalf("%s = %+v, want %q", k, kv, want)
		}
	}
	// One compare false: the failure branch, nothing of the success branch.
	req.Compare[0] = cmpv("bal", txn.TargetValue, txn.CmpGe, "6")
	req.Success = []txn.Op{tput("bal", "0")}
	r = mustApply(t, f, 5, txnCmd(req))
	if r.Err != nil || r.Txn.Succeeded || len(r.Txn.Ops) != 1 {
		t.Fatalf("failure branch: %+v", r)
	}
	if kv := mustGet(t, f, "bal"); string(kv.Value) != "5" {
		t.Fatalf("bal = %q after the failure branch", kv.Value)
	}
	if kv := mustGet(t, f, "failed"); kv == nil {
		t.Fatal("the failure branch's put did not apply")
	}
}

// TestTxnDuplicateWriteRefused: an OpTxn entry that writes one key twice in
// a branch is refused whole at apply, nothing written. The apply of a put
// relies on it: it puts over the state the compares loaded, which a first
// write of the same key would have made stale (a second put would count
// the version from the old state).
func TestTxnDuplicateWriteRefused(t *testing.T) {
	f := txnState(t)
	req := &txn.Request{
		Compare: []txn.Compare{cmpv("bal", txn.TargetModIndex, txn.CmpGt, "0")},
		Success: []txn.Op{tput("bal", "1"), tput("bal", "2")},
	}
	cmd := &Command{Op: OpTxn, Key: []byte("bal"), Value: txn.EncodeRequest(req)}
	r := mustApply(t, f, 4, cmd)
	if !errors.Is(r.Err, ErrInvalidCommand) || r.Txn != nil {
		t.Fatalf("a txn writing bal twice applied: %+v %+v", r, r.Txn)
	}
	if kv := mustGet(t, f, "bal"); string(kv.Value) != "10" || kv.Version != 1 {
		t.Fatalf("bal = %+v after a refused txn, want the value 10 at version 1", kv)
	}
}

// TestTxnTTL: a put with a ttl in a txn is expired by the leader like a
// single put's (the entry reports it through OnTTL).
func TestTxnTTL(t *testing.T) {
	var got []TTLEntry
	f := newFSM(t, func(c *Config) { c.OnTTL = func(e TTLEntry) { got = append(got, e) } })
	req := &txn.Request{Success: []txn.Op{{Kind: txn.OpPut, Key: []byte("k"), Value: []byte("v"), TTL: time.Minute}}}
	if r := mustApply(t, f, 1, txnCmd(req)); r.Err != nil {
		t.Fatal(r.Err)
	}
	if len(got) != 1 || string(got[0].Key) != "k" || got[0].TTL != time.Minute || got[0].ModIndex != 1 {
		t.Fatalf("OnTTL: %+v", got)
	}
	if kv := mustGet(t, f, "k"); kv.TTL != time.Minute {
		t.Fatalf("stored ttl %v", kv.TTL)
	}
}

// TestTxnFenceFailureWritesNothing: one write under a stale token refuses the
// whole transaction (invariant I11); no other write of it lands, and no
// token of it is registered.
func TestTxnFenceFailureWritesNothing(t *testing.T) {
	f := txnState(t)
	mustApply(t, f, 4, &Command{Op: OpPut, Key: []byte("res"), Value: []byte("v"), Fence: &Fence{Lock: "L", Token: 9}})
	req := &txn.Request{Success: []txn.Op{
		{Kind: txn.OpPut, Key: []byte("other"), Value: []byte("x"), Fence: &txn.Fence{Lock: "M", Token: 3}},
		tput("bal", "0"),
		{Kind: txn.OpDelete, Key: []byte("res"), Fence: &txn.Fence{Lock: "L", Token: 8}},
	}}
	r := mustApply(t, f, 5, txnCmd(req))
	var st *StaleTokenError
	if !errors.As(r.Err, &st) || st.Accepted != 9 || st.Token != 8 || r.Txn != nil {
		t.Fatalf("result %+v, want a stale token error", r)
	}
	if kv := mustGet(t, f, "bal"); string(kv.Value) != "10" || mustGet(t, f, "other") != nil {
		t.Fatal("a write of a refused transaction landed")
	}
	if n := countBucket(t, f, bucketFence); n != 1 {
		t.Fatalf("fence bucket has %d entries, want 1 (token M/3 must not be registered)", n)
	}
	// The same token as accepted passes, and registers the other lock's.
	req.Success[2].Fence.Token = 9
	if r := mustApply(t, f, 6, txnCmd(req)); r.Err != nil || !r.Txn.Succeeded {
		t.Fatalf("fenced txn at the accepted token: %+v", r)
	}
	if n := countBucket(t, f, bucketFence); n != 2 {
		t.Fatalf("fence bucket has %d entries, want 2", n)
	}
}

// TestTxnWrongShard: a key outside the range refuses the transaction, even
// when the anchor is inside (invariant I5), with nothing written.
func TestTxnWrongShard(t *testing.T) {
	f := txnState(t)
	req := &txn.Request{Success: []txn.Op{tput("bal", "0"), tput("zed", "1")}}
	r := mustApply(t, f, 4, txnCmd(req))
	var ws *WrongShardError
	if !errors.As(r.Err, &ws) || string(ws.Key) != "zed" {
		t.Fatalf("result %+v, want wrong shard on zed", r)
	}
	if kv := mustGet(t, f, "bal"); string(kv.Value) != "10" {
		t.Fatal("a write of a wrong-shard transaction landed")
	}
	req = &txn.Request{Compare: []txn.Compare{cmpv("a-out", txn.TargetExists, txn.CmpEq, "false")}, Success: []txn.Op{tput("bal", "0")}}
	if r := mustApply(t, f, 5, txnCmd(req)); !errors.As(r.Err, &ws) {
		t.Fatalf("a compare outside the range: %+v", r)
	}
}

// TestTxnDedup: a retry with the same request id gets the original answer,
// gets' values included, and applies nothing a second time (invariant I7).
func TestTxnDedup(t *testing.T) {
	f := txnState(t)
	req := &txn.Request{Compare: []txn.Compare{cmpv("bal", txn.TargetValue, txn.CmpEq, "10")},
		Success: []txn.Op{tget("bal"), tput("bal", "11"), tdel("name")}, RequestID: "t-1"}
	c := txnCmd(req)
	c.Time = time.Unix(100, 0).UnixNano()
	first := mustApply(t, f, 4, c)
	if first.Err != nil || !first.Txn.Succeeded {
		t.Fatalf("first: %+v", first)
	}
	mustApply(t, f, 5, put("bal", "50"))
	again := mustApply(t, f, 6, c)
	if !reflect.DeepEqual(first, again) {
		t.Fatalf("retry got %+v %+v, want the original %+v %+v", again, again.Txn, first, first.Txn)
	}
	if kv := mustGet(t, f, "bal"); string(kv.Value) != "50" {
		t.Fatalf("bal = %q: the retry applied again", kv.Value)
	}
	// A refused (stale) transaction's answer is remembered too.
	mustApply(t, f, 7, &Command{Op: OpPut, Key: []byte("res"), Value: []byte("v"), Fence: &Fence{Lock: "L", Token: 9}})
	sreq := &txn.Request{Success: []txn.Op{{Kind: txn.OpPut, Key: []byte("res"), Value: []byte("w"), Fence: &txn.Fence{Lock: "L", Token: 2}}}, RequestID: "t-2"}
	sc := txnCmd(sreq)
	sc.Time = c.Time
	s1 := mustApply(t, f, 8, sc)
	s2 := mustApply(t, f, 9, sc)
	var st *StaleTokenError
	if !errors.As(s1.Err, &st) || !reflect.DeepEqual(s1, s2) {
		t.Fatalf("stale txn retry: %+v vs %+v", s1, s2)
	}
}

// TestTxnDeterministic: two replicas applying the same entries end with the
// same state (invariant I3).
func TestTxnDeterministic(t *testing.T) {
	a, b := txnState(t), txnState(t)
	req := &txn.Request{Compare: []txn.Compare{cmpv("bal", txn.TargetValue, txn.CmpGt, "3")},
		Success: []txn.Op{tput("bal", "3"), tput("x", "7"), tget("name")}, RequestID: "d"}
	for _, f := range []*FSM{a, b} {
		mustApply(t, f, 4, txnCmd(req))
	}
	_, ha := mustHash(t, a)
	_, hb := mustHash(t, b)
	if !reflect.DeepEqual(ha, hb) {
		t.Fatal("replicas differ after the same txn entries")
	}
}

func TestTxnCommandRejects(t *testing.T) {
	for name, c := range map[string]*Command{
		"no value":  {Op: OpTxn, Key: []byte("k")},
		"with if":   {Op: OpTxn, Key: []byte("k"), Value: []byte{1}, Cond: &Condition{Kind: CondAbsent}},
		"oversized": {Op: OpTxn, Key: []byte("k"), Value: make([]byte, maxTxnCommandSize+1)},
	} {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("%s: EncodeCommand err = %v", name, err)
		}
	}
	f := newFSM(t)
	r := mustApply(t, f, 1, &Command{Op: OpTxn, Key: []byte("k"), Value: []byte{9, 9}})
	if !errors.Is(r.Err, ErrInvalidCommand) {
		t.Fatalf("garbage request: %+v", r)
	}
}
