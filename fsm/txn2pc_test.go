package fsm

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/cairndb/cairn/internal/wire"
	"github.com/cairndb/cairn/txn"
)

func tcCmd(op Op, key string, tc *TxnCommand) *Command {
	return &Command{Op: op, Key: []byte(key), Value: EncodeTxnCommand(tc), Time: time.Unix(1000, 0).UnixNano()}
}

func wkeys(ks ...string) []txn.KeyIntent {
	var out []txn.KeyIntent
	for _, k := range ks {
		out = append(out, txn.KeyIntent{Key: []byte(k), Access: txn.AccessWrite})
	}
	return out
}

// TestTxn2PCParticipant walks one shard through a multi-shard transaction
// (invariant I8): the anchor's prepare begins the record and places intents
// with the reads under them; single-key writes, reads and a one-shard txn
// meet the intent; another transaction's prepare conflicts; the commit
// applies on the record; resolution applies the write set, drops the
// intents and leaves a tombstone that refuses a late prepare.
func TestTxn2PCParticipant(t *testing.T) {
	f := txnState(t)
	const id = "t1"
	begin := &txn.Event{Kind: txn.EvBegin, ID: id, Now: 1, Anchor: []byte("bal"), Priority: 5}
	prep := &TxnCommand{ID: id, Anchor: []byte("bal"), Priority: 5, Event: begin,
		Keys:   []txn.KeyIntent{{Key: []byte("bal"), Access: txn.AccessWrite}, {Key: []byte("name"), Access: txn.AccessRead}},
		Fences: []txn.Write{{Key: []byte("bal"), Fence: &txn.Fence{Lock: "L"}}}}
	r := mustApply(t, f, 4, tcCmd(OpTxnPrepare, "bal", prep))
	if r.Err != nil || r.TwoPC.Vote != txn.VoteYes || r.TwoPC.Verdict != txn.VerdictOK || r.TwoPC.Record.State != txn.Pending {
		t.Fatalf("prepare: %+v %+v", r, r.TwoPC)
	}
	if len(r.TwoPC.Reads) != 2 || string(r.TwoPC.Reads[0].KV.Value) != "10" || len(r.TwoPC.Tokens) != 1 {
		t.Fatalf("reads under intents: %+v", r.TwoPC)
	}
	// A retried prepare is yes again and keeps one intent per key.
	if r := mustApply(t, f, 5, tcCmd(OpTxnPrepare, "bal", prep)); r.TwoPC.Vote != txn.VoteYes {
		t.Fatalf("retried prepare: %+v", r.TwoPC)
	}
	if n := countBucket(t, f, bucketIntents); n != 2 {
		t.Fatalf("%d keys hold intents, want 2", n)
	}
	var ie *IntentError
	for i, c := range []*Command{put("bal", "x"), {Op: OpDelete, Key: []byte("name")},
		txnCmd(&txn.Request{Success: []txn.Op{tget("bal")}})} {
		if r := mustApply(t, f, uint64(6+i), c); !errors.As(r.Err, &ie) || ie.Intent.TxnID != id {
			t.Fatalf("command %d met no intent: %+v", i, r)
		}
	}
	if _, err := f.Get([]byte("bal")); !errors.As(err, &ie) {
		t.Fatalf("a read of a write-intent key: %v", err)
	}
	if kv, err := f.Get([]byte("name")); err != nil || string(kv.Value) != "bob" {
		t.Fatalf("a read of a read-intent key: %v %v", kv, err)
	}
	// Another transaction conflicts, nothing placed.
	other := &TxnCommand{ID: "t2", Anchor: []byte("name"), Priority: 9, Keys: wkeys("name")}
	if r := mustApply(t, f, 9, tcCmd(OpTxnPrepare, "name", other)); r.TwoPC.Vote != txn.VoteConflict || r.TwoPC.Blocker.TxnID != id {
		t.Fatalf("conflicting prepare: %+v", r.TwoPC)
	}
	// Commit on the record, then resolve.
	ws := []txn.Write{{Key: []byte("bal"), Value: []byte("4")}}
	commit := &TxnCommand{ID: id, Event: &txn.Event{Kind: txn.EvCommit, ID: id, Anchor: []byte("bal"), WriteSet: ws, Succeeded: true}}
	r = mustApply(t, f, 10, tcCmd(OpTxnRecord, "bal", commit))
	if r.TwoPC.Verdict != txn.VerdictCommitted || r.TwoPC.Record.State != txn.Committed {
		t.Fatalf("commit: %+v", r.TwoPC)
	}
	rec, _, err := f.TxnRecord(id)
	if err != nil || rec.State != txn.Committed || !reflect.DeepEqual(rec.WriteSet, ws) {
		t.Fatalf("stored record %+v %v", rec, err)
	}
	res := &TxnCommand{ID: id, Keys: prep.Keys, Record: rec}
	r = mustApply(t, f, 11, tcCmd(OpTxnResolve, "bal", res))
	if r.Err != nil || len(r.TwoPC.Written) != 1 || r.TwoPC.Written[0].KV.ModIndex != 11 {
		t.Fatalf("resolve: %+v %+v", r, r.TwoPC)
	}
	if kv := mustGet(t, f, "bal"); string(kv.Value) != "4" {
		t.Fatalf("bal = %q after the commit", kv.Value)
	}
	if n := countBucket(t, f, bucketIntents); n != 0 {
		t.Fatalf("%d keys still hold intents", n)
	}
	// Resolution is idempotent, and the tombstone refuses a late prepare.
	if r := mustApply(t, f, 12, tcCmd(OpTxnResolve, "bal", res)); r.Err != nil || len(r.TwoPC.Written) != 0 {
		t.Fatalf("second resolve: %+v", r.TwoPC)
	}
	late := *prep
	late.Event = nil
	if r := mustApply(t, f, 13, tcCmd(OpTxnPrepare, "bal", &late)); r.TwoPC.Vote != txn.VotePrevented {
		t.Fatalf("late prepare: %+v", r.TwoPC)
	}
	// A begin on a final record refuses the prepare.
	if r := mustApply(t, f, 14, tcCmd(OpTxnPrepare, "bal", prep)); r.TwoPC.Verdict != txn.VerdictCommitted || r.TwoPC.Vote != 0 {
		t.Fatalf("begin on a committed record: %+v", r.TwoPC)
	}
}

// TestTxnResolveWritesPrepareIndex (txn/DESIGN.md "Replying at the commit
// point"): the prepare answers the index of the entry that laid each intent
// (a retried prepare the first one's), and a resolve with PreparedIndex
// writes exactly that index as the key's mod_index (and create_index for a
// key it creates), with the version the key's state under the intent gives:
// the values the coordinator already told its client. A resolve without it
// (an entry of an older log) keeps the resolve entry's index.
func TestTxnResolveWritesPrepareIndex(t *testing.T) {
	for _, prepIdx := range []bool{true, false} {
		f := txnState(t) // bal: mod 1, version 1
		const id = "t1"
		prep := &TxnCommand{ID: id, Anchor: []byte("bal"), Priority: 5, Keys: wkeys("bal", "new", "name"),
			Event: &txn.Event{Kind: txn.EvBegin, ID: id, Now: 1, Anchor: []byte("bal"), Priority: 5}}
		r := mustApply(t, f, 7, tcCmd(OpTxnPrepare, "bal", prep))
		prep.Event = nil
		r2 := mustApply(t, f, 9, tcCmd(OpTxnPrepare, "bal", prep)) // a retry: the first index stands
		for _, rr := range []*Result{r, r2} {
			if rr.TwoPC.Vote != txn.VoteYes || len(rr.TwoPC.Reads) != 3 {
				t.Fatalf("prepare: %+v", rr.TwoPC)
			}
			for _, rd := range rr.TwoPC.Reads {
				if rd.Seq != 7 {
					t.Fatalf("prepare read %s seq %d, want 7", rd.Key, rd.Seq)
				}
			}
		}
		ws := []txn.Write{{Key: []byte("bal"), Value: []byte("4")}, {Key: []byte("new"), Value: []byte("n")},
			{Key: []byte("name"), Delete: true}}
		commit := &TxnCommand{ID: id, Event: &txn.Event{Kind: txn.EvCommit, ID: id, Anchor: []byte("bal"), WriteSet: ws, Succeeded: true}}
		rec := mustApply(t, f, 10, tcCmd(OpTxnRecord, "bal", commit)).TwoPC.Record
		r = mustApply(t, f, 12, tcCmd(OpTxnResolve, "bal", &TxnCommand{ID: id, Keys: prep.Keys, Record: rec, PreparedIndex: prepIdx}))
		want := uint64(12)
		if prepIdx {
			want = 7
		}
		bal, nw := mustGet(t, f, "bal"), mustGet(t, f, "new")
		if bal.ModIndex != want || bal.CreateIndex != 1 || bal.Version != 2 || string(bal.Value) != "4" {
			t.Fatalf("PreparedIndex=%v: bal %+v, want mod_index %d create_index 1 version 2", prepIdx, bal, want)
		}
		if nw.ModIndex != want || nw.CreateIndex != want || nw.Version != 1 {
			t.Fatalf("PreparedIndex=%v: new %+v, want mod_index = create_index = %d", prepIdx, nw, want)
		}
		if len(r.TwoPC.Written) != 3 || r.TwoPC.Written[0].KV.ModIndex != want || r.TwoPC.Written[2].Deleted != 1 {
			t.Fatalf("written %+v", r.TwoPC.Written)
		}
		// A CAS on the index the coordinator answered succeeds.
		cas := put("bal", "5")
		cas.Cond = &Condition{Kind: CondModIndex, ModIndex: want}
		if r := mustApply(t, f, 13, cas); r.Err != nil || r.KV.ModIndex != 13 {
			t.Fatalf("CAS on mod_index %d: %+v", want, r)
		}
	}
}

// TestTxn2PCAbortAndPush: a push by a higher priority aborts a Pending
// record; resolving the aborted record drops the intents and writes nothing.
func TestTxn2PCAbortAndPush(t *testing.T) {
	f := txnState(t)
	prep := &TxnCommand{ID: "t1", Anchor: []byte("bal"), Priority: 1, Keys: wkeys("bal"),
		Event: &txn.Event{Kind: txn.EvBegin, ID: "t1", Now: 100, Anchor: []byte("bal"), Priority: 1}}
	mustApply(t, f, 4, tcCmd(OpTxnPrepare, "bal", prep))
	idx := uint64(4)
	push := func(prio uint64, now int64) *TxnCmdResult {
		idx++
		ev := &txn.Event{Kind: txn.EvPush, ID: "t1", Anchor: []byte("bal"), Now: now, Timeout: time.Second,
			PusherPriority: prio, PusherID: "t9"}
		return mustApply(t, f, idx, tcCmd(OpTxnRecord, "bal", &TxnCommand{ID: "t1", Event: ev})).TwoPC
	}
	if r := push(0, 200); r.Verdict != txn.VerdictWait {
		t.Fatalf("priority 0 push: %+v", r)
	}
	r := push(7, 300)
	if r.Verdict != txn.VerdictAborted || r.Record.Cause != txn.CausePushed {
		t.Fatalf("outranking push: %+v", r)
	}
	mustApply(t, f, 9, tcCmd(OpTxnResolve, "bal", &TxnCommand{ID: "t1", Keys: wkeys("bal"), Record: r.Record}))
	if kv := mustGet(t, f, "bal"); string(kv.Value) != "10" || countBucket(t, f, bucketIntents) != 0 {
		t.Fatalf("after the abort: %+v", kv)
	}
}

// TestTxn2PCSplit: a split moves intents with their keys and records with
// their anchor to the child; tombstones go to both halves.
func TestTxn2PCSplit(t *testing.T) {
	var exported bytes.Buffer
	var childRange Range
	f := newFSM(t, func(c *Config) {
		c.OnSplit = func(child Range, _ []Server, export func(io.Writer) error) error {
			childRange = child
			return export(&exported)
		}
	})
	mustApply(t, f, 1, put("bal", "10"))
	mustApply(t, f, 2, put("name", "bob"))
	mustApply(t, f, 4, put("pear", "1"))
	prep := &TxnCommand{ID: "t1", Anchor: []byte("pear"), Priority: 1, Keys: wkeys("bal", "pear"),
		Event: &txn.Event{Kind: txn.EvBegin, ID: "t1", Now: 1, Anchor: []byte("pear"), Priority: 1}}
	if r := mustApply(t, f, 5, tcCmd(OpTxnPrepare, "pear", prep)); r.TwoPC.Vote != txn.VoteYes {
		t.Fatalf("prepare: %+v", r.TwoPC)
	}
	mustApply(t, f, 6, tcCmd(OpTxnResolve, "bal", &TxnCommand{ID: "gone", Keys: wkeys("bal"),
		Record: &txn.Record{ID: "gone", State: txn.Aborted, Anchor: []byte("bal"), Epoch: 1}}))
	if r := mustApply(t, f, 7, &Command{Op: OpSplit, Key: []byte("m"), Epoch: testRange.Epoch, ChildID: 42,
		Servers: testServers}); r.Err != nil {
		t.Fatal(r.Err)
	}
	child := mustOpen(t, filepath.Join(t.TempDir(), "child.db"), func(cfg *Config) { cfg.Initial = childRange })
	if err := child.Restore(io.NopCloser(bytes.NewReader(exported.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if rec, _, _ := child.TxnRecord("t1"); rec == nil {
		t.Fatal("the record did not move with its anchor")
	}
	if rec, _, _ := f.TxnRecord("t1"); rec != nil {
		t.Fatal("the parent kept a record whose anchor left")
	}
	for _, c := range []struct {
		f    *FSM
		key  string
		want int
	}{{f, "bal", 1}, {child, "pear", 1}} {
		ins, err := c.f.TxnIntents([][]byte{[]byte(c.key)})
		if err != nil || len(ins) != c.want {
			t.Fatalf("intents on %s: %v %v", c.key, ins, err)
		}
	}
	if n := countBucket(t, child, bucketTombstones); n != 1 {
		t.Fatalf("child tombstones %d, want 1", n)
	}
}

func TestTxnCommandCodec(t *testing.T) {
	tc := &TxnCommand{ID: "x", Anchor: []byte("a"), Priority: 3, Keys: wkeys("a", "b"),
		Fences:   []txn.Write{{Key: []byte("a"), Fence: &txn.Fence{Lock: "L"}}},
		Unlocked: [][]byte{[]byte("c")}, PreparedIndex: true, ResolveHere: true, CheckOneShard: true,
		Batch: []*TxnCommand{{ID: "y", Keys: wkeys("d"), Record: &txn.Record{ID: "y", State: txn.Committed, Epoch: 1}}},
		Event: &txn.Event{Kind: txn.EvPush, ID: "x", Now: 5, Anchor: []byte("a"), Priority: 2, PusherPriority: 9,
			PusherID: "y", Timeout: time.Second, PreparedAt: 4, WriteSet: []txn.Write{{Key: []byte("a"), Value: []byte("v")}}}}
	got, err := DecodeTxnCommand(EncodeTxnCommand(tc))
	if err != nil || !reflect.DeepEqual(got, tc) {
		t.Fatalf("round trip: %+v %+v %v", got, got.Event, err)
	}
	// The decide's fields (13 request, 14 states, 15 tokens).
	dec := &TxnCommand{ID: "x", Anchor: []byte("a"), Keys: wkeys("a"),
		Request: &txn.Request{Compare: []txn.Compare{cmpv("a", txn.TargetValue, txn.CmpEq, "1")}, Success: []txn.Op{tput("a", "2"), tput("z", "3")}},
		States:  []TxnRead{{Key: []byte("z"), KV: &KV{Key: []byte("z"), Value: []byte("v"), CreateIndex: 2, ModIndex: 3, Version: 2}}, {Key: []byte("y")}},
		Tokens:  []txn.Write{{Key: []byte("z"), Fence: &txn.Fence{Lock: "L", Token: 7}}},
		Event:   &txn.Event{Kind: txn.EvDecide, ID: "x", Now: 5, Anchor: []byte("a"), Priority: 2}}
	enc := EncodeTxnCommand(dec)
	got, err = DecodeTxnCommand(enc)
	if err != nil || !reflect.DeepEqual(got, dec) {
		t.Fatalf("decide round trip: %+v %v", got, err)
	}
	const golden = "010a017812016122050a0161100232110809120d010a017810011a0161380a40026a21010a0a0a016110011801220131120808021201611a01321208080212017a1a0133" +
		"720e0a017a10011a017620022803300272030a01797a080a017a12014c1807"
	if h := hex.EncodeToString(enc); h != golden {
		t.Errorf("decide encoding changed (field numbers are never reused):\n got %s\nwant %s", h, golden)
	}
	// An unknown field (a newer binary's) is skipped.
	if got, err := DecodeTxnCommand(wire.AppendUint(slices.Clone(enc), 99, 1)); err != nil || !reflect.DeepEqual(got, dec) {
		t.Fatalf("unknown field: %+v %v", got, err)
	}
	for _, b := range [][]byte{nil, {9}, {1}, EncodeTxnCommand(&TxnCommand{})} {
		if _, err := DecodeTxnCommand(b); !errors.Is(err, ErrInvalidCommand) {
			t.Errorf("DecodeTxnCommand(%x) = %v", b, err)
		}
	}
}

// FuzzDecodeTxnCommand: the decoder of a 2PC command's value never panics
// and what it accepts encodes again to something it accepts.
func FuzzDecodeTxnCommand(f *testing.F) {
	f.Add(EncodeTxnCommand(&TxnCommand{ID: "x", Anchor: []byte("a"), Keys: wkeys("a")}))
	f.Add(EncodeTxnCommand(&TxnCommand{ID: "x", Record: &txn.Record{ID: "x", State: txn.Committed, Epoch: 2}}))
	f.Add(EncodeTxnCommand(&TxnCommand{ID: "x", Request: &txn.Request{Success: []txn.Op{tput("a", "1")}},
		States: []TxnRead{{Key: []byte("b"), KV: &KV{Key: []byte("b"), Value: []byte("v"), ModIndex: 1}}},
		Tokens: []txn.Write{{Key: []byte("b"), Fence: &txn.Fence{Lock: "L", Token: 2}}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		tc, err := DecodeTxnCommand(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("error %v does not wrap ErrInvalidCommand", err)
			}
			return
		}
		if _, err := DecodeTxnCommand(EncodeTxnCommand(tc)); err != nil {
			t.Fatalf("re-encoded command refused: %v", err)
		}
	})
}

// TestTxnScanMeetsIntents: a scan whose window holds a write intent meets it
// (even on a key the transaction creates), one with read intents only does
// not; a page that ends before the intent is served.
func TestTxnScanMeetsIntents(t *testing.T) {
	f := txnState(t)
	prep := &TxnCommand{ID: "t1", Anchor: []byte("new"), Priority: 1,
		Keys: []txn.KeyIntent{{Key: []byte("name"), Access: txn.AccessRead}, {Key: []byte("new"), Access: txn.AccessWrite}}}
	mustApply(t, f, 4, tcCmd(OpTxnPrepare, "new", prep))
	var ie *IntentError
	if _, _, err := f.Scan(nil, nil, 0, false); !errors.As(err, &ie) || string(ie.Key) != "new" {
		t.Fatalf("scan over a write intent: %v", err)
	}
	if kvs, _, err := f.Scan([]byte("name"), []byte("namf"), 0, false); err != nil || len(kvs) != 1 {
		t.Fatalf("scan over a read intent: %v %v", kvs, err)
	}
	if kvs, more, err := f.Scan(nil, nil, 1, false); err != nil || !more || string(kvs[0].Key) != "bal" {
		t.Fatalf("a page before the intent: %v %v %v", kvs, more, err)
	}
}

// TestTxnPruning: final records and tombstones are dropped once the dedup
// window has passed in proposer time (I3), not before; live records stay.
func TestTxnPruning(t *testing.T) {
	f := txnState(t)
	at := func(c *Command, d time.Duration) *Command { c.Time += int64(d); return c }
	begin := func(id string) *TxnCommand {
		return &TxnCommand{ID: id, Event: &txn.Event{Kind: txn.EvBegin, ID: id, Anchor: []byte("bal"), Priority: 1}}
	}
	mustApply(t, f, 4, tcCmd(OpTxnRecord, "bal", begin("done")))
	mustApply(t, f, 5, tcCmd(OpTxnRecord, "bal", begin("live")))
	abort := &TxnCommand{ID: "done", Event: &txn.Event{Kind: txn.EvAbort, ID: "done", Anchor: []byte("bal")}}
	r := mustApply(t, f, 6, tcCmd(OpTxnRecord, "bal", abort))
	mustApply(t, f, 7, tcCmd(OpTxnResolve, "bal", &TxnCommand{ID: "done", Keys: wkeys("bal"), Record: r.TwoPC.Record}))
	if countBucket(t, f, bucketRecords) != 2 || countBucket(t, f, bucketTombstones) != 1 {
		t.Fatal("setup")
	}
	hb := &TxnCommand{ID: "live", Event: &txn.Event{Kind: txn.EvHeartbeat, ID: "live", Anchor: []byte("bal"), Now: 5}}
	mustApply(t, f, 8, at(tcCmd(OpTxnRecord, "bal", hb), DefaultDedupWindow-time.Second))
	if countBucket(t, f, bucketRecords) != 2 || countBucket(t, f, bucketTombstones) != 1 {
		t.Fatal("pruned inside the window")
	}
	mustApply(t, f, 9, at(tcCmd(OpTxnRecord, "bal", hb), DefaultDedupWindow+time.Second))
	if countBucket(t, f, bucketRecords) != 1 || countBucket(t, f, bucketTombstones) != 0 || countBucket(t, f, bucketTxnGC) != 0 {
		t.Fatalf("after the window: records %d tombstones %d", countBucket(t, f, bucketRecords), countBucket(t, f, bucketTombstones))
	}
	if rec, _, _ := f.TxnRecord("live"); rec == nil {
		t.Fatal("a live record was pruned")
	}
}

// TestTxnIntentBlocksExpiry: a key a transaction read must still be there
// at its commit, so the leader's expiry meets the intent (and retries later).
func TestTxnIntentBlocksExpiry(t *testing.T) {
	f := txnState(t)
	mustApply(t, f, 4, &Command{Op: OpPut, Key: []byte("k"), Value: []byte("v"), TTL: time.Second})
	prep := &TxnCommand{ID: "t1", Anchor: []byte("bal"), Keys: []txn.KeyIntent{{Key: []byte("k"), Access: txn.AccessRead}}}
	mustApply(t, f, 5, tcCmd(OpTxnPrepare, "k", prep))
	r := mustApply(t, f, 6, &Command{Op: OpExpire, Key: []byte("k"), ModIndex: 4})
	var ie *IntentError
	if !errors.As(r.Err, &ie) || mustGet(t, f, "k") == nil {
		t.Fatalf("expiry under a read intent: %+v", r)
	}
}

// TestTxnRecordResolvesHere: a record event with ResolveHere that makes the
// record final resolves, in the same entry, the transaction's intents on the
// participants' keys this shard owns (with the prepare's index), leaves the
// tombstone, and touches no key of another shard; without the flag (the
// control) the intents stay for a resolve. An abort drops them.
func TestTxnRecordResolvesHere(t *testing.T) {
	for _, c := range []struct {
		name         string
		here, commit bool
	}{{"commit here", true, true}, {"commit, no flag", false, true}, {"abort here", true, false}} {
		t.Run(c.name, func(t *testing.T) {
			f := txnState(t)
			const id = "t1"
			parts := []txn.Participant{{Shard: 7, Keys: []txn.KeyIntent{{Key: []byte("bal"), Access: txn.AccessWrite},
				{Key: []byte("name"), Access: txn.AccessRead}}}, {Shard: 9, Keys: wkeys("z1")}}
			prep := &TxnCommand{ID: id, Anchor: []byte("bal"), Priority: 5, Keys: parts[0].Keys,
				Event: &txn.Event{Kind: txn.EvBegin, ID: id, Now: 1, Anchor: []byte("bal"), Priority: 5, Participants: parts}}
			if r := mustApply(t, f, 6, tcCmd(OpTxnPrepare, "bal", prep)); r.TwoPC.Vote != txn.VoteYes {
				t.Fatalf("prepare: %+v", r.TwoPC)
			}
			ev := &txn.Event{Kind: txn.EvAbort, ID: id, Anchor: []byte("bal"), Cause: txn.CauseCoordinator}
			if c.commit {
				ev = &txn.Event{Kind: txn.EvCommit, ID: id, Anchor: []byte("bal"), Succeeded: true,
					WriteSet: []txn.Write{{Key: []byte("bal"), Value: []byte("4")}, {Key: []byte("z1"), Value: []byte("x")}}}
			}
			r := mustApply(t, f, 8, tcCmd(OpTxnRecord, "bal", &TxnCommand{ID: id, Event: ev, ResolveHere: c.here}))
			if !r.TwoPC.Record.State.Final() {
				t.Fatalf("record: %+v", r.TwoPC)
			}
			intents := countBucket(t, f, bucketIntents)
			if !c.here {
				if intents != 2 || len(r.TwoPC.Resolved) != 0 {
					t.Fatalf("no flag: %d intent keys, resolved %q", intents, r.TwoPC.Resolved)
				}
				return
			}
			if intents != 0 || len(r.TwoPC.Resolved) != 2 {
				t.Fatalf("%d intent keys left, resolved %q", intents, r.TwoPC.Resolved)
			}
			bal := mustGet(t, f, "bal")
			if c.commit && (string(bal.Value) != "4" || bal.ModIndex != 6 || len(r.TwoPC.Written) != 1 || r.TwoPC.Written[0].KV.ModIndex != 6) {
				t.Fatalf("bal %+v, written %+v: want 4 at the prepare's index 6", bal, r.TwoPC.Written)
			}
			if !c.commit && (string(bal.Value) != "10" || len(r.TwoPC.Written) != 0) {
				t.Fatalf("aborted, yet bal %+v, written %+v", bal, r.TwoPC.Written)
			}
			late := *prep
			late.Event = nil
			if r := mustApply(t, f, 9, tcCmd(OpTxnPrepare, "bal", &late)); r.TwoPC.Vote != txn.VotePrevented {
				t.Fatalf("late prepare after the resolution: %+v", r.TwoPC)
			}
			// A second final event changes nothing and resolves nothing.
			if r := mustApply(t, f, 10, tcCmd(OpTxnRecord, "bal", &TxnCommand{ID: id, Event: ev, ResolveHere: true})); len(r.TwoPC.Resolved) != 0 {
				t.Fatalf("repeated event resolved %q", r.TwoPC.Resolved)
			}
		})
	}
}

// TestTxnResolveBatch: one resolve entry resolves several transactions
// (Batch), each from its own final record; a batch with a key outside the
// range applies nothing (WrongShardError), nor one whose record is not final.
func TestTxnResolveBatch(t *testing.T) {
	f := txnState(t)
	recs := map[string]*txn.Record{}
	for i, c := range []struct{ id, key, value string }{{"t1", "bal", "1"}, {"t2", "name", "eve"}, {"t3", "new", "n"}} {
		prep := &TxnCommand{ID: c.id, Anchor: []byte(c.key), Priority: 5, Keys: wkeys(c.key),
			Event: &txn.Event{Kind: txn.EvBegin, ID: c.id, Now: 1, Anchor: []byte(c.key), Priority: 5}}
		if r := mustApply(t, f, uint64(10+2*i), tcCmd(OpTxnPrepare, c.key, prep)); r.TwoPC.Vote != txn.VoteYes {
			t.Fatalf("prepare %s: %+v", c.id, r.TwoPC)
		}
		ev := &txn.Event{Kind: txn.EvCommit, ID: c.id, Anchor: []byte(c.key), Succeeded: true,
			WriteSet: []txn.Write{{Key: []byte(c.key), Value: []byte(c.value)}}}
		recs[c.id] = mustApply(t, f, uint64(11+2*i), tcCmd(OpTxnRecord, c.key, &TxnCommand{ID: c.id, Event: ev})).TwoPC.Record
	}
	one := func(id, key string) *TxnCommand {
		return &TxnCommand{ID: id, Keys: wkeys(key), Record: recs[id], PreparedIndex: true}
	}
	// Refused as a whole: a key of another range, a record not final.
	bad := one("t1", "bal")
	bad.Batch = []*TxnCommand{one("t2", "name"), {ID: "t9", Keys: wkeys("zz"), Record: recs["t1"]}}
	if r := mustApply(t, f, 20, tcCmd(OpTxnResolve, "bal", bad)); !errors.As(r.Err, new(*WrongShardError)) {
		t.Fatalf("a batch with a key of another range: %+v", r)
	}
	bad.Batch = []*TxnCommand{{ID: "t2", Keys: wkeys("name"), Record: &txn.Record{ID: "t2", State: txn.Pending}}}
	if r := mustApply(t, f, 21, tcCmd(OpTxnResolve, "bal", bad)); !errors.Is(r.Err, ErrInvalidCommand) {
		t.Fatalf("a batch with a record not final: %+v", r)
	}
	if n := countBucket(t, f, bucketIntents); n != 3 {
		t.Fatalf("a refused batch resolved something: %d intent keys left, want 3", n)
	}
	all := one("t1", "bal")
	all.Batch = []*TxnCommand{one("t2", "name"), one("t3", "new")}
	r := mustApply(t, f, 22, tcCmd(OpTxnResolve, "bal", all))
	if r.Err != nil || len(r.TwoPC.Written) != 3 || countBucket(t, f, bucketIntents) != 0 {
		t.Fatalf("batch: %+v %+v", r, r.TwoPC)
	}
	for i, c := range []struct{ key, value string }{{"bal", "1"}, {"name", "eve"}, {"new", "n"}} {
		if kv := mustGet(t, f, c.key); string(kv.Value) != c.value || kv.ModIndex != uint64(10+2*i) {
			t.Fatalf("%s = %+v, want %s at its prepare's index %d", c.key, kv, c.value, 10+2*i)
		}
	}
	if n := countBucket(t, f, bucketTombstones); n != 3 {
		t.Fatalf("%d tombstones, want one per transaction", n)
	}
}

// TestTxnForgottenRecordPruning (I8, txn/DESIGN.md "Forgetting a committed
// record"): a committed record is dropped after the dedup window only once
// it is forgotten (counted from the forget), so a committed record whose
// intents may remain on another shard is never dropped, and a forgotten one
// does not stay for ever; aborted records are dropped after the window as
// before. A forget on an aborted or missing record changes nothing. A
// committed record queued by an older binary (at its commit) is kept until
// forgotten. TxnSweepRecords (no live record picked) lists exactly the committed records not
// forgotten whose heartbeat is old enough.
func TestTxnForgottenRecordPruning(t *testing.T) {
	f := txnState(t)
	t0 := time.Unix(1000, 0).UnixNano()
	idx := uint64(3)
	apply := func(id string, ev *txn.Event, at int64) *TxnCmdResult {
		t.Helper()
		ev.ID, ev.Anchor, ev.Now = id, []byte("bal"), at
		c := tcCmd(OpTxnRecord, "bal", &TxnCommand{ID: id, Event: ev})
		c.Time = at
		idx++
		r := mustApply(t, f, idx, c)
		if r.Err != nil {
			t.Fatalf("%v on %s: %v", ev.Kind, id, r.Err)
		}
		return r.TwoPC
	}
	writes := []txn.Write{{Key: []byte("bal"), Value: bytes.Repeat([]byte("1"), 64<<10)}}
	for _, id := range []string{"kept", "forgot", "aborted"} {
		apply(id, &txn.Event{Kind: txn.EvBegin, Priority: 1}, t0)
	}
	apply("kept", &txn.Event{Kind: txn.EvCommit, WriteSet: writes, Succeeded: true}, t0)
	apply("forgot", &txn.Event{Kind: txn.EvCommit, WriteSet: writes, Succeeded: true}, t0)
	apply("aborted", &txn.Event{Kind: txn.EvAbort, Cause: txn.CauseCoordinator}, t0)
	if n := countBucket(t, f, bucketTxnGC); n != 1 {
		t.Fatalf("%d records queued for pruning after two commits and an abort, want 1 (the abort)", n)
	}
	unforgotten := func(before int64) []string {
		t.Helper()
		recs, _, err := f.TxnSweepRecords(nil, math.MinInt64, before, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range recs {
			ids = append(ids, r.ID)
		}
		return ids
	}
	if got := unforgotten(t0 + 1); !reflect.DeepEqual(got, []string{"forgot", "kept"}) {
		t.Fatalf("unforgotten records: %v", got)
	}
	if got := unforgotten(t0); len(got) != 0 {
		t.Fatalf("unforgotten records with a heartbeat before t0: %v", got)
	}

	tForget := t0 + int64(30*time.Second)
	if r := apply("forgot", &txn.Event{Kind: txn.EvForget}, tForget); r.Verdict != txn.VerdictCommitted || !r.Record.Forgotten {
		t.Fatalf("forget: %+v", r)
	}
	// The forgotten record is kept for the dedup window without the
	// values: nothing applies them again.
	if _, size := storedRecord(t, f, "forgot"); size > 1024 {
		t.Fatalf("a forgotten record of a 64 KiB write takes %d bytes, want the keys without the values", size)
	}
	if rec, _ := storedRecord(t, f, "forgot"); len(rec.WriteSet) != 1 || string(rec.WriteSet[0].Key) != "bal" {
		t.Fatalf("the forgotten record's write set: %+v, want the written key", rec.WriteSet)
	}
	apply("forgot", &txn.Event{Kind: txn.EvForget}, tForget+1) // a retried forget queues nothing more
	apply("aborted", &txn.Event{Kind: txn.EvForget}, tForget)
	if r := apply("nope", &txn.Event{Kind: txn.EvForget}, tForget); r.Verdict != txn.VerdictMissing || r.Record != nil {
		t.Fatalf("forget on no record: %+v", r)
	}
	if got := unforgotten(t0 + 1); !reflect.DeepEqual(got, []string{"kept"}) {
		t.Fatalf("unforgotten records after a forget: %v", got)
	}
	if n := countBucket(t, f, bucketTxnGC); n != 2 {
		t.Fatalf("%d queued for pruning, want 2 (the abort, the forget)", n)
	}
	// An older binary queued "kept" at its commit.
	f.flush("test") // bbolt allows one write transaction at a time
	if err := f.db.Update(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketTxnGC).Put(txnGCKey(t0, 'r', "kept"), []byte{})
	}); err != nil {
		t.Fatal(err)
	}

	has := func(id string) bool {
		rec, _, err := f.TxnRecord(id)
		if err != nil {
			t.Fatal(err)
		}
		return rec != nil
	}
	window := int64(DefaultDedupWindow)
	apply("other", &txn.Event{Kind: txn.EvHeartbeat}, t0+window+int64(time.Second))
	if has("aborted") || !has("kept") || !has("forgot") {
		t.Fatalf("one window after t0: aborted %v (want dropped), kept %v, forgot %v (want both kept)",
			has("aborted"), has("kept"), has("forgot"))
	}
	apply("other", &txn.Event{Kind: txn.EvHeartbeat}, tForget+window+int64(time.Second))
	if has("forgot") || !has("kept") {
		t.Fatalf("one window after the forget: forgot %v (want dropped), kept %v (want kept: never forgotten)", has("forgot"), has("kept"))
	}
	if n := countBucket(t, f, bucketTxnGC); n != 0 {
		t.Fatalf("%d left queued", n)
	}
	tLate := t0 + 10*window
	apply("kept", &txn.Event{Kind: txn.EvForget}, tLate)
	apply("other", &txn.Event{Kind: txn.EvHeartbeat}, tLate+window+int64(time.Second))
	if n := countBucket(t, f, bucketRecords); has("kept") || n != 0 {
		t.Fatalf("after its late forget and a window: kept %v, %d records left", has("kept"), n)
	}
}

// TestTxnSweepScansResume: the sweeper's scans of old intents and of
// unforgotten records resume after the last key they looked at, so entries
// it cannot end now (a dead anchor or participant) do not hide the rest:
// successive calls visit every entry once, then start again.
func TestTxnSweepScansResume(t *testing.T) {
	f := txnState(t)
	t0 := time.Unix(1000, 0).UnixNano()
	idx := uint64(3)
	keys := []string{"k1", "k2", "k3", "k4", "k5"}
	for _, k := range keys {
		idx++
		prep := &TxnCommand{ID: "t-" + k, Anchor: []byte(k), Priority: 1, Keys: wkeys(k),
			Event: &txn.Event{Kind: txn.EvBegin, ID: "t-" + k, Now: t0, Anchor: []byte(k), Priority: 1}}
		if r := mustApply(t, f, idx, tcCmd(OpTxnPrepare, k, prep)); r.TwoPC.Vote != txn.VoteYes {
			t.Fatalf("prepare %s: %+v", k, r.TwoPC)
		}
		idx++
		commit := &TxnCommand{ID: "t-" + k, Event: &txn.Event{Kind: txn.EvCommit, ID: "t-" + k, Anchor: []byte(k), Now: t0,
			WriteSet: []txn.Write{{Key: []byte(k), Value: []byte("v")}}, Succeeded: true}}
		mustApply(t, f, idx, tcCmd(OpTxnRecord, k, commit))
	}
	before := time.Unix(2000, 0).UnixNano()
	var seen []string
	var after []byte
	for i := 0; i < 3; i++ {
		ins, next, err := f.TxnOldIntentsAfter(after, before, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range ins {
			seen = append(seen, string(in.Key))
		}
		if (i < 2) != (next != nil) {
			t.Fatalf("call %d: next %q", i, next)
		}
		after = next
	}
	if !reflect.DeepEqual(seen, keys) {
		t.Fatalf("old intents over three calls: %v, want %v", seen, keys)
	}
	seen, after = nil, nil
	for i := 0; i < 3; i++ {
		recs, next, err := f.TxnSweepRecords(after, math.MinInt64, before, 0, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			seen = append(seen, r.ID)
		}
		if (i < 2) != (next != nil) {
			t.Fatalf("call %d: next %q", i, next)
		}
		after = next
	}
	if want := []string{"t-k1", "t-k2", "t-k3", "t-k4", "t-k5"}; !reflect.DeepEqual(seen, want) {
		t.Fatalf("unforgotten records over three calls: %v, want %v", seen, want)
	}
	// The old call (from the first key) is unchanged.
	if ins, err := f.TxnOldIntents(before, 2); err != nil || len(ins) != 2 || string(ins[0].Key) != "k1" {
		t.Fatalf("TxnOldIntents: %v %+v", err, ins)
	}
}

// storedRecord is a record as the FSM stores it, and its encoded size.
func storedRecord(t *testing.T, f *FSM, id string) (*txn.Record, int) {
	t.Helper()
	var rec *txn.Record
	size := 0
	err := f.view(func(tx *bbolt.Tx) error {
		v := tx.Bucket(bucketRecords).Get([]byte(id))
		if v == nil {
			return fmt.Errorf("no record %q", id)
		}
		size = len(v)
		var err error
		rec, err = txn.DecodeRecord(v)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec, size
}
