package fsm

import (
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/cairndb/cairn/txn"
)

// TestTxnRiders (command level 2, txn/DESIGN.md "Riders"): a prepare or a
// record entry carries other transactions' resolutions and forgets and
// applies each exactly as its own entry would, before its own command and
// whatever that command's outcome; a rider this shard does not own, or that
// is neither a resolution from a final record nor a forget, is skipped and
// answered by position; replicas applying the same entries stay identical.
func TestTxnRiders(t *testing.T) {
	a, b := txnState(t), txnState(t)
	apply := func(index uint64, c *Command) *Result {
		t.Helper()
		r := mustApply(t, a, index, c)
		mustApply(t, b, index, c)
		return r
	}
	// t1 writes bal, t2 writes name; both commit (records here). f1 is a
	// committed record to forget.
	recs := map[string]*txn.Record{}
	for i, c := range []struct{ id, key, value string }{{"t1", "bal", "11"}, {"t2", "name", "eve"}} {
		prep := &TxnCommand{ID: c.id, Anchor: []byte(c.key), Priority: 5, Keys: wkeys(c.key),
			Event: &txn.Event{Kind: txn.EvBegin, ID: c.id, Now: 1, Anchor: []byte(c.key), Priority: 5}}
		if r := apply(uint64(10+2*i), tcCmd(OpTxnPrepare, c.key, prep)); r.TwoPC.Vote != txn.VoteYes {
			t.Fatalf("prepare %s: %+v", c.id, r.TwoPC)
		}
		ev := &txn.Event{Kind: txn.EvCommit, ID: c.id, Anchor: []byte(c.key), Succeeded: true,
			WriteSet: []txn.Write{{Key: []byte(c.key), Value: []byte(c.value)}}}
		recs[c.id] = apply(uint64(11+2*i), tcCmd(OpTxnRecord, c.key, &TxnCommand{ID: c.id, Event: ev})).TwoPC.Record
	}
	apply(14, tcCmd(OpTxnRecord, "bal", &TxnCommand{ID: "f1", Event: &txn.Event{Kind: txn.EvBegin, ID: "f1", Anchor: []byte("bal"), Now: 1}}))
	apply(15, tcCmd(OpTxnRecord, "bal", &TxnCommand{ID: "f1", Event: &txn.Event{Kind: txn.EvCommit, ID: "f1", Anchor: []byte("bal"), Now: 2}}))
	resolve := func(id string, keys ...string) *TxnCommand {
		return &TxnCommand{ID: id, Keys: wkeys(keys...), Record: recs[id], PreparedIndex: true}
	}
	forget := func(id, anchor string) *TxnCommand {
		return &TxnCommand{ID: id, Event: &txn.Event{Kind: txn.EvForget, ID: id, Anchor: []byte(anchor), Now: 3}}
	}

	// A prepare of t3 on "new" carries: t1's resolution; t2's with a key of
	// another range (refused: nothing of it applies); f1's forget; a
	// resolution from a record that is not final (refused); a forget whose
	// anchor is elsewhere (refused).
	host := &TxnCommand{ID: "t3", Anchor: []byte("new"), Priority: 5, Keys: wkeys("new"), Riders: []*TxnCommand{
		resolve("t1", "bal"), resolve("t2", "name", "zz"), forget("f1", "bal"),
		{ID: "t9", Keys: wkeys("name"), Record: &txn.Record{ID: "t9", State: txn.Pending}}, forget("f2", "zz")}}
	r := apply(20, tcCmd(OpTxnPrepare, "new", host))
	if r.Err != nil || r.TwoPC.Vote != txn.VoteYes {
		t.Fatalf("host prepare: %+v %+v", r, r.TwoPC)
	}
	if r.TwoPC.Riders != 5 || !slices.Equal(r.TwoPC.RidersRefused, []int{1, 3, 4}) {
		t.Fatalf("riders answered %d, refused %v; want 5, [1 3 4]", r.TwoPC.Riders, r.TwoPC.RidersRefused)
	}
	if kv := mustGet(t, a, "bal"); string(kv.Value) != "11" || kv.ModIndex != 10 {
		t.Fatalf("bal = %+v, want t1's 11 at its prepare's index 10", kv)
	}
	if rec, _, _ := a.TxnRecord("f1"); !rec.Forgotten {
		t.Fatalf("f1 not forgotten by its rider: %+v", rec)
	}
	if ins, _ := a.TxnIntents([][]byte{[]byte("name"), []byte("new"), []byte("bal")}); len(ins) != 2 ||
		ins[0].TxnID != "t2" || ins[1].TxnID != "t3" || ins[1].PreparedSeq != 20 {
		t.Fatalf("intents after the host prepare: %+v; want t2's on name (its rider was refused), t3's on new", ins)
	}

	// A host that does not go through (t4's prepare conflicts with t3's
	// intent) still applies its riders and says so.
	conflict := &TxnCommand{ID: "t4", Anchor: []byte("new"), Priority: 1, Keys: wkeys("new"), Riders: []*TxnCommand{resolve("t2", "name")}}
	r = apply(21, tcCmd(OpTxnPrepare, "new", conflict))
	if r.TwoPC.Vote != txn.VoteConflict || r.TwoPC.Riders != 1 || len(r.TwoPC.RidersRefused) != 0 {
		t.Fatalf("conflicting host: %+v", r.TwoPC)
	}
	if kv := mustGet(t, a, "name"); string(kv.Value) != "eve" || kv.ModIndex != 12 {
		t.Fatalf("name = %+v, want t2's eve at index 12", kv)
	}

	// A record entry (here t3's abort) carries riders too; a rider already
	// applied applies again as a no-op.
	abort := &TxnCommand{ID: "t3", ResolveHere: true, Event: &txn.Event{Kind: txn.EvAbort, ID: "t3", Anchor: []byte("new"), Now: 4,
		Participants: []txn.Participant{{Shard: 7, Keys: wkeys("new")}}},
		Riders: []*TxnCommand{resolve("t1", "bal"), forget("f1", "bal")}}
	r = apply(22, tcCmd(OpTxnRecord, "new", abort))
	if r.Err != nil || r.TwoPC.Verdict != txn.VerdictAborted || r.TwoPC.Riders != 2 || len(r.TwoPC.RidersRefused) != 0 {
		t.Fatalf("record host: %+v %+v", r, r.TwoPC)
	}
	if kv := mustGet(t, a, "bal"); string(kv.Value) != "11" || kv.ModIndex != 10 {
		t.Fatalf("bal after a repeated rider = %+v", kv)
	}
	if n := countBucket(t, a, bucketIntents); n != 0 {
		t.Fatalf("%d keys still hold intents", n)
	}
	// An entry without riders answers none.
	if r := apply(23, tcCmd(OpTxnRecord, "bal", forget("f1", "bal"))); r.TwoPC.Riders != 0 || r.TwoPC.RidersRefused != nil {
		t.Fatalf("no riders: %+v", r.TwoPC)
	}
	_, ha := mustHash(t, a)
	_, hb := mustHash(t, b)
	if !reflect.DeepEqual(ha, hb) {
		t.Fatal("replicas differ after the same entries with riders")
	}
}

// TestTxnRidersCodec: riders round-trip as field 16; a rider inside a rider
// or inside a batch is refused.
func TestTxnRidersCodec(t *testing.T) {
	tc := &TxnCommand{ID: "x", Anchor: []byte("a"), Keys: wkeys("a"), Riders: []*TxnCommand{
		{ID: "y", Keys: wkeys("d"), Record: &txn.Record{ID: "y", State: txn.Committed, Epoch: 1}, PreparedIndex: true},
		{ID: "z", Event: &txn.Event{Kind: txn.EvForget, ID: "z", Anchor: []byte("a"), Now: 3}}}}
	got, err := DecodeTxnCommand(EncodeTxnCommand(tc))
	if err != nil || !reflect.DeepEqual(got, tc) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	inner := &TxnCommand{ID: "y", Riders: []*TxnCommand{{ID: "z"}}}
	for _, bad := range []*TxnCommand{
		{ID: "x", Riders: []*TxnCommand{inner}},
		{ID: "x", Batch: []*TxnCommand{inner}},
	} {
		if _, err := DecodeTxnCommand(EncodeTxnCommand(bad)); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("nested rider decoded: %v", err)
		}
	}
}
