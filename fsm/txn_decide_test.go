package fsm

import (
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/cairndb/cairn/txn"
)

// The anchor decides (txn/DESIGN.md "The anchor decides"): the compare
// path's one commit entry on the anchor's shard. Its request: compare
// "bal" (anchor, this shard) and "other" (another shard, whose prepare read
// it under an intent: States), put both.
const decideID = "t-dec"

// otherKey is the other participant's key: outside testRange (it ends at
// "y"), except where a test makes it this shard's.
var otherKey = "zo"

func decideReq(rid string) *txn.Request {
	return &txn.Request{Compare: []txn.Compare{cmpv("bal", txn.TargetValue, txn.CmpEq, "10"), cmpv(otherKey, txn.TargetExists, txn.CmpEq, "false")},
		Success: []txn.Op{tput("bal", "11"), tput(otherKey, "1"), tget("name")}, Failure: []txn.Op{tget("bal")}, RequestID: rid}
}

func decideParts() []txn.Participant {
	return []txn.Participant{
		{Shard: 7, Epoch: 3, Keys: []txn.KeyIntent{{Key: []byte("bal"), Access: txn.AccessWrite}, {Key: []byte("name"), Access: txn.AccessRead}}},
		{Shard: 9, Epoch: 1, Keys: []txn.KeyIntent{{Key: []byte(otherKey), Access: txn.AccessWrite}}},
	}
}

func decideCmd(req *txn.Request, states []TxnRead) *TxnCommand {
	if states != nil && states[0].KV == nil {
		states = []TxnRead{{Key: []byte(otherKey)}}
	}
	ps := decideParts()
	return &TxnCommand{ID: decideID, Anchor: []byte("bal"), Priority: 3, Keys: ps[0].Keys, Request: req, States: states,
		CheckOneShard: req.RequestID != "",
		Event: &txn.Event{Kind: txn.EvDecide, ID: decideID, Now: time.Unix(1000, 0).UnixNano(), Anchor: []byte("bal"),
			Participants: ps, Priority: 3, RequestID: req.RequestID}}
}

func decide(t *testing.T, f *FSM, index uint64, tc *TxnCommand) *TxnCmdResult {
	t.Helper()
	r := mustApply(t, f, index, tcCmd(OpTxnRecord, "bal", tc))
	if r.Err != nil || r.TwoPC == nil {
		t.Fatalf("decide %d: %+v", index, r)
	}
	return r.TwoPC
}

var otherAbsent = []TxnRead{{}} // otherKey absent (decideCmd names it)

// TestTxnDecideCommits: the decide evaluates over the anchor's keys as it
// applies and the other participant's state from the command, writes the
// record Committed with the write set (the commit point), applies the
// anchor's writes directly at its own index (no intent), answers the
// anchor's reads and the keys it resolved; a retry answers committed and
// applies nothing again (I7, I8).
func TestTxnDecideCommits(t *testing.T) {
	f := txnState(t)
	r := decide(t, f, 4, decideCmd(decideReq(""), otherAbsent))
	if r.Verdict != txn.VerdictCommitted || r.Record == nil || r.Record.State != txn.Committed || !r.Record.Succeeded {
		t.Fatalf("decide: %+v", r)
	}
	want := []txn.Write{{Key: []byte("bal"), Value: []byte("11")}, {Key: []byte(otherKey), Value: []byte("1")}}
	if !reflect.DeepEqual(r.Record.WriteSet, want) || len(r.Record.Participants) != 2 {
		t.Fatalf("record %+v", r.Record)
	}
	if len(r.Written) != 1 || r.Written[0].KV.ModIndex != 4 || r.Written[0].KV.Version != 2 {
		t.Fatalf("written %+v", r.Written)
	}
	if len(r.Reads) != 2 || string(r.Reads[0].KV.Value) != "10" || string(r.Reads[1].KV.Value) != "bob" || len(r.Resolved) != 2 {
		t.Fatalf("reads %+v resolved %q", r.Reads, r.Resolved)
	}
	if kv := mustGet(t, f, "bal"); string(kv.Value) != "11" || kv.ModIndex != 4 {
		t.Fatalf("bal = %+v", kv)
	}
	if n := countBucket(t, f, bucketIntents); n != 0 {
		t.Fatalf("%d keys hold intents after a decide", n)
	}
	// The same decide again (its answer was lost): committed, nothing
	// applied again, and the committing entry's results, which this
	// replica kept (decided.go).
	first := r
	r = decide(t, f, 5, decideCmd(decideReq(""), otherAbsent))
	if r.Verdict != txn.VerdictCommitted || !reflect.DeepEqual(r.Reads, first.Reads) ||
		!reflect.DeepEqual(r.Written, first.Written) || !reflect.DeepEqual(r.Resolved, first.Resolved) {
		t.Fatalf("retried decide: %+v, want the results of %+v", r, first)
	}
	if kv := mustGet(t, f, "bal"); kv.Version != 2 {
		t.Fatalf("bal written twice: %+v", kv)
	}
	// A decide that asks something else (other states: another
	// coordinator's reads) gets the outcome only: the kept results answer
	// only the request and states they were computed from.
	other := []TxnRead{{Key: []byte(otherKey), KV: &KV{Key: []byte(otherKey), Value: []byte("x"), ModIndex: 6, CreateIndex: 6, Version: 1}}}
	r = decide(t, f, 6, decideCmd(decideReq(""), other))
	if r.Verdict != txn.VerdictCommitted || len(r.Written) != 0 || len(r.Reads) != 0 || len(r.Resolved) != 0 {
		t.Fatalf("decide with other states: %+v", r)
	}
	// A replica that did not apply the committing entry (a restart, a
	// snapshot) has no results: the outcome only.
	f.decided = decidedCache{}
	r = decide(t, f, 7, decideCmd(decideReq(""), otherAbsent))
	if r.Verdict != txn.VerdictCommitted || len(r.Written) != 0 || len(r.Reads) != 0 {
		t.Fatalf("retried decide on a replica without the results: %+v", r)
	}
	// The other participant's state decides too: "other" exists, so the
	// failure branch, which writes nothing here.
	g := txnState(t)
	r = decide(t, g, 4, decideCmd(decideReq(""), []TxnRead{{Key: []byte(otherKey), KV: &KV{Key: []byte(otherKey), Value: []byte("x"), ModIndex: 2, CreateIndex: 2, Version: 1}}}))
	if r.Verdict != txn.VerdictCommitted || r.Record.Succeeded || len(r.Record.WriteSet) != 0 || len(r.Written) != 0 {
		t.Fatalf("failure branch: %+v %+v", r, r.Record)
	}
	// A state missing from the command is refused, nothing written.
	h := txnState(t)
	if res := mustApply(t, h, 4, tcCmd(OpTxnRecord, "bal", decideCmd(decideReq(""), nil))); !errors.Is(res.Err, ErrInvalidCommand) {
		t.Fatalf("decide without the other's state: %+v", res)
	}
	if rec, _, _ := h.TxnRecord(decideID); rec != nil {
		t.Fatalf("record %+v written by a refused decide", rec)
	}
}

// TestTxnDecideConflict: another transaction's intent on an anchor key
// refuses the decide with the blocker; nothing is written, no record.
// Its read intent on a key the decide only reads does not.
func TestTxnDecideConflict(t *testing.T) {
	f := txnState(t)
	other := &TxnCommand{ID: "t-other", Anchor: []byte("bal"), Priority: 9, Keys: []txn.KeyIntent{{Key: []byte("name"), Access: txn.AccessRead}, {Key: []byte("bal"), Access: txn.AccessWrite}}}
	if r := mustApply(t, f, 4, tcCmd(OpTxnPrepare, "bal", other)); r.TwoPC.Vote != txn.VoteYes {
		t.Fatalf("other prepare: %+v", r.TwoPC)
	}
	r := decide(t, f, 5, decideCmd(decideReq(""), otherAbsent))
	if r.Vote != txn.VoteConflict || r.Blocker == nil || r.Blocker.TxnID != "t-other" || string(r.Blocker.Key) != "bal" || r.Verdict != 0 {
		t.Fatalf("decide over an intent: %+v", r)
	}
	if rec, _, _ := f.TxnRecord(decideID); rec != nil {
		t.Fatalf("record %+v written by a refused decide", rec)
	}
	// The blocker resolved (aborted), its read intent on "name" left: the
	// decide commits.
	mustApply(t, f, 6, tcCmd(OpTxnResolve, "bal", &TxnCommand{ID: "t-other", Keys: wkeys("bal"),
		Record: &txn.Record{ID: "t-other", State: txn.Aborted, Anchor: []byte("bal"), Epoch: 1}}))
	if r := decide(t, f, 7, decideCmd(decideReq(""), otherAbsent)); r.Verdict != txn.VerdictCommitted {
		t.Fatalf("decide after the blocker left: %+v", r)
	}
}

// TestTxnDecideWrongShard: an anchor key, or the anchor itself, outside the
// range: wrong_shard, nothing written.
func TestTxnDecideWrongShard(t *testing.T) {
	f := txnState(t)
	tc := decideCmd(decideReq(""), otherAbsent)
	tc.Keys = append(tc.Keys, txn.KeyIntent{Key: []byte("zz"), Access: txn.AccessWrite}) // testRange ends at "y"
	var ws *WrongShardError
	if r := mustApply(t, f, 4, tcCmd(OpTxnRecord, "bal", tc)); !errors.As(r.Err, &ws) {
		t.Fatalf("decide with a key out of range: %+v", r)
	}
	if rec, _, _ := f.TxnRecord(decideID); rec != nil {
		t.Fatalf("record %+v", rec)
	}
	if kv := mustGet(t, f, "bal"); kv.Version != 1 {
		t.Fatalf("bal written: %+v", kv)
	}
}

// TestTxnDecideFindsFinalRecord: a push that found no record wrote it
// Aborted (the intent expired on the other shard): the decide answers
// aborted and applies nothing. A Staging record (the fast path's) is
// refused.
func TestTxnDecideFindsFinalRecord(t *testing.T) {
	f := txnState(t)
	push := &TxnCommand{ID: decideID, Event: &txn.Event{Kind: txn.EvPush, ID: decideID, Anchor: []byte("bal"),
		Now: time.Unix(1000, 0).UnixNano(), PreparedAt: time.Unix(900, 0).UnixNano(), Timeout: 5 * time.Second, Priority: 3}}
	if r := mustApply(t, f, 4, tcCmd(OpTxnRecord, "bal", push)); r.TwoPC.Verdict != txn.VerdictAborted {
		t.Fatalf("push: %+v", r.TwoPC)
	}
	r := decide(t, f, 5, decideCmd(decideReq(""), otherAbsent))
	if r.Verdict != txn.VerdictAborted || r.Record.State != txn.Aborted || len(r.Written) != 0 {
		t.Fatalf("decide after the abort: %+v", r)
	}
	if kv := mustGet(t, f, "bal"); kv.Version != 1 {
		t.Fatalf("bal written: %+v", kv)
	}
	g := txnState(t)
	stage := &TxnCommand{ID: decideID, Event: &txn.Event{Kind: txn.EvStage, ID: decideID, Anchor: []byte("bal"), Now: 1}}
	mustApply(t, g, 4, tcCmd(OpTxnRecord, "bal", stage))
	if r := decide(t, g, 5, decideCmd(decideReq(""), otherAbsent)); r.Verdict != txn.VerdictStale || len(r.Written) != 0 {
		t.Fatalf("decide on staging: %+v", r)
	}
	// From Pending (a begin while the prepares waited): commits.
	h := txnState(t)
	begin := &TxnCommand{ID: decideID, Event: &txn.Event{Kind: txn.EvBegin, ID: decideID, Anchor: []byte("bal"), Now: 1}}
	mustApply(t, h, 4, tcCmd(OpTxnRecord, "bal", begin))
	if r := decide(t, h, 5, decideCmd(decideReq(""), otherAbsent)); r.Verdict != txn.VerdictCommitted || len(r.Written) != 1 {
		t.Fatalf("decide from pending: %+v", r)
	}
}

// TestTxnDecideReplaysOneShard: the request id already ran as a one-shard
// transaction here (before a split spread its keys): the decide writes the
// record Aborted, applies nothing and answers the stored result; so does
// its retry (I7). Without the flag it decides normally.
func TestTxnDecideReplaysOneShard(t *testing.T) {
	f := txnState(t)
	one := &txn.Request{Compare: []txn.Compare{cmpv("bal", txn.TargetValue, txn.CmpEq, "10")},
		Success: []txn.Op{tput("bal", "11")}, RequestID: "r-1"}
	oc := txnCmd(one)
	oc.Time = time.Unix(1000, 0).UnixNano()
	first := mustApply(t, f, 4, oc)
	if first.Err != nil || first.Txn == nil {
		t.Fatalf("one-shard: %+v", first)
	}
	for i, index := range []uint64{5, 6} {
		r := decide(t, f, index, decideCmd(decideReq("r-1"), otherAbsent))
		if r.OneShard == nil || !reflect.DeepEqual(r.OneShard.Txn, first.Txn) || r.Verdict != txn.VerdictAborted || len(r.Written) != 0 {
			t.Fatalf("attempt %d: %+v", i, r)
		}
	}
	if kv := mustGet(t, f, "bal"); string(kv.Value) != "11" || kv.Version != 2 {
		t.Fatalf("bal = %+v, want written once", kv)
	}
	g := txnState(t)
	mustApply(t, g, 4, oc)
	tc := decideCmd(decideReq("r-1"), otherAbsent)
	tc.CheckOneShard = false
	if r := decide(t, g, 5, tc); r.OneShard != nil || r.Verdict != txn.VerdictAborted && r.Verdict != txn.VerdictCommitted {
		t.Fatalf("without the flag: %+v", r)
	}
}

// TestTxnDecideStaleFence (I11): a fenced write of the branch with a stale
// token — on the anchor's key (this shard's fence) or on the other
// participant's (the token its prepare answered, in the command) — aborts
// the record, writes nothing and answers the stale token, again when the
// decide repeats (its answer lost: fsm/decided.go).
func TestTxnDecideStaleFence(t *testing.T) {
	for _, onAnchor := range []bool{true, false} {
		f := txnState(t)
		req := decideReq("")
		tc := decideCmd(req, otherAbsent)
		if onAnchor {
			mustApply(t, f, 4, &Command{Op: OpPut, Key: []byte("bal"), Value: []byte("10"), Fence: &Fence{Lock: "L", Token: 5}})
			req.Success[0].Fence = &txn.Fence{Lock: "L", Token: 3}
		} else {
			mustApply(t, f, 4, put("name", "bob"))
			req.Success[1].Fence = &txn.Fence{Lock: "L", Token: 3}
			tc.Tokens = []txn.Write{{Key: []byte(otherKey), Fence: &txn.Fence{Lock: "L", Token: 5}}}
		}
		before := mustGet(t, f, "bal")
		r := decide(t, f, 5, tc)
		if r.Stale == nil || r.Stale.Accepted != 5 || r.Stale.Token != 3 || r.Verdict != txn.VerdictAborted || r.Record.State != txn.Aborted || len(r.Written) != 0 {
			t.Fatalf("anchor %v: %+v", onAnchor, r)
		}
		if kv := mustGet(t, f, "bal"); kv.Version != before.Version {
			t.Fatalf("anchor %v: bal written: %+v", onAnchor, kv)
		}
		// The same decide again (its answer was lost): the record is
		// final and nothing changes, and the replica that applied the
		// refusal answers its stale token again; one that did not (a
		// restart) answers the abort only.
		r = decide(t, f, 6, tc)
		if r.Stale == nil || r.Stale.Accepted != 5 || r.Stale.Token != 3 || r.Verdict != txn.VerdictAborted || len(r.Written) != 0 {
			t.Fatalf("anchor %v: repeated decide: %+v", onAnchor, r)
		}
		f.decided = decidedCache{}
		if r = decide(t, f, 7, tc); r.Stale != nil || r.Verdict != txn.VerdictAborted {
			t.Fatalf("anchor %v: repeated decide on a replica without the answer: %+v", onAnchor, r)
		}
	}
}

// TestTxnDecideResolvesOwnIntents: intents of this transaction on other
// keys this shard owns (a participant a split left here) are resolved by
// the decide, with their prepare's index; one on an anchor key is replaced
// by the direct write, not applied twice.
func TestTxnDecideResolvesOwnIntents(t *testing.T) {
	otherKey = "other" // this shard's
	defer func() { otherKey = "zo" }()
	f := txnState(t)
	mine := &TxnCommand{ID: decideID, Anchor: []byte("bal"), Priority: 3, Keys: wkeys("other", "bal")}
	if r := mustApply(t, f, 4, tcCmd(OpTxnPrepare, "bal", mine)); r.TwoPC.Vote != txn.VoteYes {
		t.Fatalf("prepare: %+v", r.TwoPC)
	}
	r := decide(t, f, 5, decideCmd(decideReq(""), otherAbsent))
	if r.Verdict != txn.VerdictCommitted || len(r.Written) != 2 || len(r.Resolved) != 3 {
		t.Fatalf("decide: %+v", r)
	}
	if kv := mustGet(t, f, "other"); string(kv.Value) != "1" || kv.ModIndex != 4 {
		t.Fatalf("other = %+v, want 1 at the prepare's index 4", kv)
	}
	if kv := mustGet(t, f, "bal"); string(kv.Value) != "11" || kv.ModIndex != 5 || kv.Version != 2 {
		t.Fatalf("bal = %+v, want written once at 5", kv)
	}
	if n := countBucket(t, f, bucketIntents); n != 0 {
		t.Fatalf("%d keys hold intents", n)
	}
	if n := countBucket(t, f, bucketTombstones); n != 1 {
		t.Fatalf("%d tombstones, want 1", n)
	}
}

// TestTxnDecideDeterministic (I3): two replicas applying the same decide
// entries (a conflict, then the commit) end with the same state.
func TestTxnDecideDeterministic(t *testing.T) {
	a, b := txnState(t), txnState(t)
	for _, f := range []*FSM{a, b} {
		mustApply(t, f, 4, tcCmd(OpTxnPrepare, "bal", &TxnCommand{ID: "t-other", Anchor: []byte("bal"), Priority: 9, Keys: wkeys("bal")}))
		decide(t, f, 5, decideCmd(decideReq("rq"), otherAbsent))
		mustApply(t, f, 6, tcCmd(OpTxnResolve, "bal", &TxnCommand{ID: "t-other", Keys: wkeys("bal"),
			Record: &txn.Record{ID: "t-other", State: txn.Aborted, Anchor: []byte("bal"), Epoch: 1}}))
		decide(t, f, 7, decideCmd(decideReq("rq"), otherAbsent))
	}
	_, ha := mustHash(t, a)
	_, hb := mustHash(t, b)
	if !reflect.DeepEqual(ha, hb) {
		t.Fatal("replicas differ after the same decide entries")
	}
}

// TestTxnForgetBatch: one record entry forgets many committed records; a
// batch with anything but forgets, or an anchor out of range, applies
// nothing.
func TestTxnForgetBatch(t *testing.T) {
	f := txnState(t)
	for i, id := range []string{"f1", "f2", "f3"} {
		c := &TxnCommand{ID: id, Event: &txn.Event{Kind: txn.EvBegin, ID: id, Anchor: []byte("bal"), Now: 1}}
		mustApply(t, f, uint64(4+2*i), tcCmd(OpTxnRecord, "bal", c))
		c = &TxnCommand{ID: id, Event: &txn.Event{Kind: txn.EvCommit, ID: id, Anchor: []byte("bal"), Now: 2}}
		mustApply(t, f, uint64(5+2*i), tcCmd(OpTxnRecord, "bal", c))
	}
	forget := func(id, anchor string) *TxnCommand {
		return &TxnCommand{ID: id, Event: &txn.Event{Kind: txn.EvForget, ID: id, Anchor: []byte(anchor), Now: 3}}
	}
	bad := forget("f1", "bal")
	bad.Batch = []*TxnCommand{forget("f2", "bal"), forget("f3", "zz")}
	var ws *WrongShardError
	if r := mustApply(t, f, 20, tcCmd(OpTxnRecord, "bal", bad)); !errors.As(r.Err, &ws) {
		t.Fatalf("batch with a foreign anchor: %+v", r)
	}
	notForget := forget("f1", "bal")
	notForget.Batch = []*TxnCommand{{ID: "f2", Event: &txn.Event{Kind: txn.EvAbort, ID: "f2", Anchor: []byte("bal")}}}
	if r := mustApply(t, f, 21, tcCmd(OpTxnRecord, "bal", notForget)); !errors.Is(r.Err, ErrInvalidCommand) {
		t.Fatalf("batch with an abort: %+v", r)
	}
	for _, id := range []string{"f1", "f2", "f3"} {
		if rec, _, _ := f.TxnRecord(id); rec.Forgotten || rec.State != txn.Committed {
			t.Fatalf("%s after refused batches: %+v", id, rec)
		}
	}
	good := forget("f1", "bal")
	good.Batch = []*TxnCommand{forget("f2", "bal"), forget("f3", "bal")}
	if r := mustApply(t, f, 22, tcCmd(OpTxnRecord, "bal", good)); r.Err != nil || r.TwoPC.Verdict != txn.VerdictCommitted {
		t.Fatalf("forget batch: %+v", r)
	}
	for _, id := range []string{"f1", "f2", "f3"} {
		if rec, _, _ := f.TxnRecord(id); !rec.Forgotten {
			t.Fatalf("%s not forgotten: %+v", id, rec)
		}
	}
}

// TestTxnAbortAnswersOneShard: a coordinator's abort with CheckOneShard
// (a retry whose prepare met an earlier attempt's tombstone never reaches
// the decide) applies as any abort and answers the one-shard execution of
// the request id; without the flag it answers none (I7).
func TestTxnAbortAnswersOneShard(t *testing.T) {
	f := txnState(t)
	one := &txn.Request{Success: []txn.Op{tput("bal", "11")}, RequestID: "r-9"}
	oc := txnCmd(one)
	oc.Time = time.Unix(1000, 0).UnixNano()
	first := mustApply(t, f, 4, oc)
	for i, check := range []bool{false, true} {
		ab := &TxnCommand{ID: decideID, ResolveHere: true, CheckOneShard: check, Event: &txn.Event{Kind: txn.EvAbort,
			ID: decideID, Anchor: []byte("bal"), Cause: txn.CauseCoordinator, RequestID: "r-9", Now: oc.Time}}
		r := mustApply(t, f, uint64(5+i), tcCmd(OpTxnRecord, "bal", ab))
		if r.TwoPC.Verdict != txn.VerdictAborted || (r.TwoPC.OneShard != nil) != check {
			t.Fatalf("abort (check %v): %+v", check, r.TwoPC)
		}
		if check && !reflect.DeepEqual(r.TwoPC.OneShard.Txn, first.Txn) {
			t.Fatalf("abort answered %+v, want %+v", r.TwoPC.OneShard, first)
		}
	}
}

// TestTxnLiveRecordsPicksLiveOnly: the record sweep's scan, asked for live records only (it peeks at
// each record and decodes only the ones it picks) lists the Pending and
// Staging records, not the final ones.
func TestTxnLiveRecordsPicksLiveOnly(t *testing.T) {
	f := txnState(t)
	ev := func(kind txn.EventKind, id string) *Command {
		return tcCmd(OpTxnRecord, "bal", &TxnCommand{ID: id, Event: &txn.Event{Kind: kind, ID: id, Anchor: []byte("bal"), Now: 1,
			WriteSet: []txn.Write{{Key: []byte("bal"), Value: []byte("1")}}, Succeeded: true}})
	}
	mustApply(t, f, 4, ev(txn.EvBegin, "p"))
	mustApply(t, f, 5, ev(txn.EvStage, "s"))
	mustApply(t, f, 6, ev(txn.EvAbort, "a"))
	mustApply(t, f, 7, ev(txn.EvBegin, "c"))
	mustApply(t, f, 8, ev(txn.EvCommit, "c"))
	recs, _, err := f.TxnSweepRecords(nil, math.MaxInt64, math.MinInt64, 0, 0) // every live record, no committed one
	if err != nil || len(recs) != 2 || recs[0].ID != "p" || recs[0].State != txn.Pending || recs[1].ID != "s" || recs[1].State != txn.Staging {
		t.Fatalf("live records %+v %v, want p (pending) and s (staging)", recs, err)
	}
}

// TestTxnDecideLeavesTombstone: a decide that commits leaves the
// transaction's tombstone on the anchor's shard, as the commit entry's
// ResolveHere did before the anchor decided. Without it, a later prepare of
// the same transaction on an anchor key (a retry with the same request id,
// routed after a split moved that key to a shard that copied this one's
// tombstones) lays an intent, and resolving it from the committed record
// applies the write a second time, over a later single-key write (I7, I8).
// Review finding; on the code before the fix: `committed write applied
// twice: bal = "11" (lost update of 99)`.
func TestTxnDecideLeavesTombstone(t *testing.T) {
	f := txnState(t)
	r := decide(t, f, 4, decideCmd(decideReq("rq"), otherAbsent))
	if r.Verdict != txn.VerdictCommitted {
		t.Fatalf("decide %+v", r)
	}
	if n := countBucket(t, f, bucketTombstones); n != 1 {
		t.Fatalf("%d tombstones after a committed decide, want 1", n)
	}
	mustApply(t, f, 5, put("bal", "99")) // a later single-key write
	p := mustApply(t, f, 6, tcCmd(OpTxnPrepare, "bal", &TxnCommand{ID: decideID, Anchor: []byte("bal"), Priority: 3, Keys: wkeys("bal")}))
	if p.TwoPC == nil || p.TwoPC.Vote != txn.VotePrevented {
		t.Fatalf("late prepare of a decided transaction: %+v, want prevented", p.TwoPC)
	}
	mustApply(t, f, 7, tcCmd(OpTxnResolve, "bal", &TxnCommand{ID: decideID, Keys: wkeys("bal"), Record: r.Record, PreparedIndex: true}))
	if kv := mustGet(t, f, "bal"); string(kv.Value) != "99" {
		t.Fatalf("committed write applied twice: bal = %q (lost update of 99)", kv.Value)
	}
}
