package fsm

import (
	"reflect"
	"testing"
	"time"

	"github.com/cairndb/cairn/txn"
)

// TestTxnCommittedRecordOutlivesItsIntents (invariant I8, txn/DESIGN.md
// "Replying at the commit point"): a committed transaction's record is the
// only thing that says its intents on the other shards are to be applied.
// The coordinator replies at the commit point and leaves those intents to
// its background resolution, readers and the intent sweeper; if none of them
// reaches a participant (its coordinator died, the participant was down or
// its sweeper starved) until the anchor has pruned the final record after
// the dedup window, the next push of that intent finds no record and writes
// one Aborted ("no record means nobody committed"), and the participant's
// resolution drops the committed write: the transaction applied on the
// anchor's shard and not on the other. Fixed: a committed record is pruned
// only a window after it is forgotten (txn.EvForget, sent once every
// participant is resolved), so here the push finds it committed.
func TestTxnCommittedRecordOutlivesItsIntents(t *testing.T) {
	const window = time.Minute
	withWindow := func(c *Config) { c.DedupWindow = window }
	anchor, other := newFSM(t, withWindow), newFSM(t, withWindow)
	t0 := time.Unix(1000, 0).UnixNano()
	at := func(op Op, key string, tc *TxnCommand, now int64) *Command {
		c := tcCmd(op, key, tc)
		c.Time = now
		return c
	}
	const id = "t1"
	parts := []txn.Participant{{Shard: 1, Keys: wkeys("ka")}, {Shard: 2, Keys: wkeys("kb")}}
	prepA := &TxnCommand{ID: id, Anchor: []byte("ka"), Priority: 5, Keys: parts[0].Keys,
		Event: &txn.Event{Kind: txn.EvBegin, ID: id, Now: t0, Anchor: []byte("ka"), Priority: 5, Participants: parts}}
	if r := mustApply(t, anchor, 2, at(OpTxnPrepare, "ka", prepA, t0)); r.TwoPC.Vote != txn.VoteYes {
		t.Fatalf("prepare ka: %+v", r.TwoPC)
	}
	prepB := &TxnCommand{ID: id, Anchor: []byte("ka"), Priority: 5, Keys: parts[1].Keys}
	if r := mustApply(t, other, 2, at(OpTxnPrepare, "kb", prepB, t0)); r.TwoPC.Vote != txn.VoteYes {
		t.Fatalf("prepare kb: %+v", r.TwoPC)
	}
	commit := &txn.Event{Kind: txn.EvCommit, ID: id, Anchor: []byte("ka"), Now: t0, Participants: parts, Succeeded: true,
		WriteSet: []txn.Write{{Key: []byte("ka"), Value: []byte("A1")}, {Key: []byte("kb"), Value: []byte("B1")}}}
	r := mustApply(t, anchor, 3, at(OpTxnRecord, "ka", &TxnCommand{ID: id, Event: commit, ResolveHere: true}, t0))
	if r.TwoPC.Record == nil || r.TwoPC.Record.State != txn.Committed {
		t.Fatalf("commit: %+v", r.TwoPC)
	}
	// The client is told committed here. Shard 2 is not resolved yet.

	// The anchor's shard goes on: any transaction's record command after
	// the dedup window prunes the final record.
	later := t0 + int64(window) + int64(time.Second)
	hb := &txn.Event{Kind: txn.EvHeartbeat, ID: "other", Anchor: []byte("ka"), Now: later}
	mustApply(t, anchor, 4, at(OpTxnRecord, "ka", &TxnCommand{ID: "other", Event: hb}, later))

	// Shard 2's sweeper (or a reader) meets the intent: the record is read,
	// then pushed as api/txn_sweep.go does, and resolved from the answer.
	ins, err := other.TxnOldIntents(later, 10)
	if err != nil || len(ins) != 1 {
		t.Fatalf("old intents: %v %+v", err, ins)
	}
	in := ins[0]
	push := &txn.Event{Kind: txn.EvPush, ID: id, Anchor: in.Anchor, Now: later + int64(time.Second),
		Timeout: 5 * time.Second, PreparedAt: in.PreparedAt, Priority: in.Priority}
	pr := mustApply(t, anchor, 5, at(OpTxnRecord, "ka", &TxnCommand{ID: id, Event: push}, later+int64(time.Second)))
	rec := pr.TwoPC.Record
	if rec != nil && rec.State.Final() {
		mustApply(t, other, 3, at(OpTxnResolve, "kb", &TxnCommand{ID: id, Keys: wkeys("kb"), Record: rec, PreparedIndex: true}, later))
	}
	a, b := mustGet(t, anchor, "ka"), mustGet(t, other, "kb")
	if a == nil || string(a.Value) != "A1" {
		t.Fatalf("anchor key ka = %+v, want the committed A1", a)
	}
	if b == nil || string(b.Value) != "B1" {
		t.Fatalf("I8: the transaction committed (ka = A1, its client was told so), yet kb = %+v: the push after the record's pruning found no record and aborted it (record now %+v)", b, rec)
	}
}

// TestTxnPrepareRefusesOneShardReplay (invariant I7, txn/DESIGN.md
// "Exactly-once"): a request id that ran as a one-shard transaction (OpTxn,
// in the dedup table, which a split copies to both halves) and is retried
// as a multi-shard one: the anchor's begin with CheckOneShard lays no
// intent, writes the record Aborted and answers the stored result; a
// retried begin answers it again. A begin without the flag (an entry of an
// older binary) or with another request id prepares as before.
func TestTxnPrepareRefusesOneShardReplay(t *testing.T) {
	f := txnState(t)
	now := time.Unix(100, 0).UnixNano()
	req := &txn.Request{Compare: []txn.Compare{cmpv("bal", txn.TargetValue, txn.CmpEq, "10")},
		Success: []txn.Op{tget("bal"), tput("bal", "11"), tput("pear", "1")}, RequestID: "r-1"}
	c := txnCmd(req)
	c.Time = now
	first := mustApply(t, f, 4, c)
	if first.Err != nil || first.Txn == nil || !first.Txn.Succeeded {
		t.Fatalf("one-shard: %+v", first)
	}
	const id = "rid-r-1"
	begin := func(rid string, check bool) *TxnCommand {
		return &TxnCommand{ID: id, Anchor: []byte("bal"), Priority: 3, Keys: wkeys("bal"), CheckOneShard: check,
			Event: &txn.Event{Kind: txn.EvBegin, ID: id, Now: now, Anchor: []byte("bal"), Priority: 3, RequestID: rid}}
	}
	prep := func(index uint64, tc *TxnCommand) *TxnCmdResult {
		cmd := tcCmd(OpTxnPrepare, "bal", tc)
		cmd.Time = now
		r := mustApply(t, f, index, cmd)
		if r.Err != nil || r.TwoPC == nil {
			t.Fatalf("prepare %d: %+v", index, r)
		}
		return r.TwoPC
	}
	for i, index := range []uint64{5, 6} { // the begin, and its retry
		r := prep(index, begin("r-1", true))
		if r.OneShard == nil || !reflect.DeepEqual(r.OneShard.Txn, first.Txn) {
			t.Fatalf("attempt %d: prepare answered %+v (one-shard %+v), want the stored result %+v", i, r, r.OneShard, first.Txn)
		}
		if r.Vote != 0 || len(r.Reads) != 0 || r.Record == nil || r.Record.State != txn.Aborted || r.Verdict != txn.VerdictAborted {
			t.Fatalf("attempt %d: prepare %+v record %+v, want no vote and the record aborted", i, r, r.Record)
		}
		if n, err := f.CountIntents(); err != nil || n != 0 {
			t.Fatalf("attempt %d: %d keys hold intents (%v), want none", i, n, err)
		}
	}
	if rec, _, _ := f.TxnRecord(id); rec == nil || rec.State != txn.Aborted {
		t.Fatalf("record %+v, want aborted", rec)
	}
	if kv := mustGet(t, f, "bal"); string(kv.Value) != "11" || kv.Version != 2 {
		t.Fatalf("bal = %+v, want 11 written once", kv)
	}

	// Controls, on a fresh state with the same one-shard execution: a
	// begin without the flag, and one with another request id, lay their
	// intent and begin the record.
	for _, tc := range []*TxnCommand{begin("r-1", false), begin("r-2", true)} {
		f = txnState(t)
		first = mustApply(t, f, 4, c)
		if first.Err != nil {
			t.Fatal(first.Err)
		}
		r := prep(5, tc)
		if r.OneShard != nil || r.Vote != txn.VoteYes || r.Record == nil || r.Record.State != txn.Pending {
			t.Fatalf("begin %+v: %+v, want an ordinary prepare", tc.Event, r)
		}
		if n, err := f.CountIntents(); err != nil || n != 1 {
			t.Fatalf("begin %+v: %d keys hold intents (%v), want 1", tc.Event, n, err)
		}
	}
}
