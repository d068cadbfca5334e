package fsm

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/cairndb/cairn/txn"
)

// TestTxnBatch (command level 3, txn/DESIGN.md "Prepares in one entry"):
// an OpTxnBatch applies each prepare in it as an entry of its own at the
// batch's index would, in order (a later one meets an earlier one's
// intents), each with its own range check, riders and result; anything but
// a prepare in it is refused on its own and applies nothing; two replicas
// applying the same batch stay identical; a write resolved from a batched
// prepare takes the batch's index as mod_index.
func TestTxnBatch(t *testing.T) {
	a, b := txnState(t), txnState(t)
	prep := func(id, key string, prio uint64) []byte {
		return mustEncode(t, tcCmd(OpTxnPrepare, key, &TxnCommand{ID: id, Anchor: []byte("anchor"), Priority: prio, Keys: wkeys(key)}))
	}
	nested := mustEncode(t, &Command{Op: OpTxnBatch, Value: EncodeTxnBatch([][]byte{prep("t9", "new", 5)})})
	batch := &Command{Op: OpTxnBatch, Time: tcCmd(OpTxnPrepare, "x", &TxnCommand{}).Time, Value: EncodeTxnBatch([][]byte{
		prep("t1", "bal", 5),
		prep("t2", "name", 5),
		prep("t3", "zz", 5), // another range's key
		mustEncode(t, put("new", "v")),
		prep("t4", "bal", 1), // meets t1's intent, placed by the same entry
		{1, 2, 3},            // not a command
		nested,
	})}
	r := mustApply(t, a, 20, batch)
	mustApply(t, b, 20, batch)
	if r.Err != nil || len(r.Items) != 7 {
		t.Fatalf("batch: err %v, %d items; want 7", r.Err, len(r.Items))
	}
	for i, want := range []txn.Vote{txn.VoteYes, txn.VoteYes} {
		if it := r.Items[i]; it.Err != nil || it.TwoPC == nil || it.TwoPC.Vote != want || it.Index != 20 ||
			len(it.TwoPC.Reads) != 1 {
			t.Fatalf("item %d: %+v %+v", i, it, it.TwoPC)
		}
	}
	if kv := r.Items[0].TwoPC.Reads[0].KV; kv == nil || string(kv.Value) != "10" {
		t.Fatalf("t1 read bal under its intent as %+v, want 10", kv)
	}
	var ws *WrongShardError
	if !errors.As(r.Items[2].Err, &ws) {
		t.Fatalf("item 2 (key out of range): %v, want wrong shard", r.Items[2].Err)
	}
	for _, i := range []int{3, 5, 6} {
		if !errors.Is(r.Items[i].Err, ErrInvalidCommand) {
			t.Fatalf("item %d: %v, want invalid command", i, r.Items[i].Err)
		}
	}
	if it := r.Items[4]; it.Err != nil || it.TwoPC.Vote != txn.VoteConflict || it.TwoPC.Blocker == nil || it.TwoPC.Blocker.TxnID != "t1" {
		t.Fatalf("item 4 (t4 on bal after t1): %+v %+v, want a conflict with t1", it, it.TwoPC)
	}
	if kv := mustGet(t, a, "new"); kv != nil {
		t.Fatalf("the refused put inside the batch wrote %+v", kv)
	}
	ins, _ := a.TxnIntents([][]byte{[]byte("bal"), []byte("name"), []byte("new")})
	if len(ins) != 2 || ins[0].TxnID != "t1" || ins[1].TxnID != "t2" || ins[0].PreparedSeq != 20 || ins[1].PreparedSeq != 20 {
		t.Fatalf("intents after the batch: %+v; want t1's and t2's at index 20", ins)
	}
	_, ha := mustHash(t, a)
	_, hb := mustHash(t, b)
	if !reflect.DeepEqual(ha, hb) {
		t.Fatal("replicas differ after the same batch")
	}

	// t1 commits and is resolved: its write takes the batch's index.
	ev := &txn.Event{Kind: txn.EvCommit, ID: "t1", Anchor: []byte("bal"), Succeeded: true,
		WriteSet: []txn.Write{{Key: []byte("bal"), Value: []byte("11")}}}
	mustApply(t, a, 21, tcCmd(OpTxnRecord, "bal", &TxnCommand{ID: "t1", Event: &txn.Event{Kind: txn.EvBegin, ID: "t1", Anchor: []byte("bal"), Now: 1}}))
	rec := mustApply(t, a, 22, tcCmd(OpTxnRecord, "bal", &TxnCommand{ID: "t1", Event: ev})).TwoPC.Record
	mustApply(t, a, 23, tcCmd(OpTxnResolve, "bal", &TxnCommand{ID: "t1", Keys: wkeys("bal"), Record: rec, PreparedIndex: true}))
	if kv := mustGet(t, a, "bal"); string(kv.Value) != "11" || kv.ModIndex != 20 {
		t.Fatalf("bal = %+v, want t1's 11 at the batch's index 20", kv)
	}
}

// TestTxnBatchCodec: a batch round-trips; an empty one, one past
// MaxTxnBatchItems, one with a key, an if or a request id, is refused.
func TestTxnBatchCodec(t *testing.T) {
	cmds := [][]byte{{1, 2}, {3}}
	got, err := DecodeTxnBatch(EncodeTxnBatch(cmds))
	if err != nil || !slices.EqualFunc(got, cmds, slices.Equal) {
		t.Fatalf("round trip: %v %v", got, err)
	}
	if _, err := DecodeTxnBatch(EncodeTxnBatch(nil)); !errors.Is(err, ErrInvalidCommand) {
		t.Errorf("empty batch: %v", err)
	}
	if _, err := DecodeTxnBatch(EncodeTxnBatch(make([][]byte, MaxTxnBatchItems+1))); !errors.Is(err, ErrInvalidCommand) {
		t.Errorf("%d commands: %v", MaxTxnBatchItems+1, err)
	}
	v := EncodeTxnBatch(cmds)
	for _, c := range []*Command{
		{Op: OpTxnBatch, Key: []byte("k"), Value: v},
		{Op: OpTxnBatch, Value: v, RequestID: "r"},
		{Op: OpTxnBatch, Value: v, Cond: &Condition{Kind: CondAbsent}},
		{Op: OpTxnBatch},
	} {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("EncodeCommand(%+v): %v, want invalid", c, err)
		}
	}
	c := &Command{Op: OpTxnBatch, Value: v, Time: 5}
	d, err := DecodeCommand(mustEncode(t, c))
	if err != nil || d.Op != OpTxnBatch || !slices.Equal(d.Value, v) {
		t.Fatalf("command round trip: %+v %v", d, err)
	}
}
