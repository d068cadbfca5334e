package api

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairndb/cairn/txn"
)

// TestTxnUseRouting: after a split moved some of a transaction's keys
// (reroute), a participant whose shard and keys are unchanged keeps its
// vote, and every other one (the split shard's, the new shard's, the
// anchor's when its keys changed) is prepared or decided afresh.
func TestTxnUseRouting(t *testing.T) {
	w := func(ks ...string) []txn.KeyIntent {
		out := make([]txn.KeyIntent, 0, len(ks))
		for _, k := range ks {
			out = append(out, txn.KeyIntent{Key: []byte(k), Access: txn.AccessWrite})
		}
		return out
	}
	old := txn.Routing{Anchor: []byte("a"), AnchorShard: 1, Participants: []txn.Participant{
		{Shard: 1, Epoch: 1, Keys: w("a")},
		{Shard: 2, Epoch: 1, Keys: w("n", "z")},
		{Shard: 4, Epoch: 1, Keys: w("zz")},
	}}
	// Shard 2 split at "y": "z" is on the new shard 3.
	now := txn.Routing{Anchor: []byte("a"), AnchorShard: 1, Participants: []txn.Participant{
		{Shard: 1, Epoch: 1, Keys: w("a")},
		{Shard: 2, Epoch: 2, Keys: w("n")},
		{Shard: 3, Epoch: 2, Keys: w("z")},
		{Shard: 4, Epoch: 1, Keys: w("zz")},
	}}
	if sameRouting(&old, &now) || !sameRouting(&old, &old) {
		t.Fatal("sameRouting does not tell the routings apart")
	}
	epochOnly := old
	epochOnly.Participants = append([]txn.Participant(nil), old.Participants...)
	epochOnly.Participants[1].Epoch = 2
	if !sameRouting(&old, &epochOnly) {
		t.Fatal("sameRouting counts an epoch that moved alone (a membership change) as a new routing")
	}
	c := &txnCoord{s: &Server{txnm: newTxnMetrics(prometheus.NewRegistry())}, rt: old}
	c.st = txn.CoordState{AnchorShard: 1, Parts: []txn.PartState{
		{Shard: 1, Status: txn.PartUnsent},
		{Shard: 2, Status: txn.PartWrongShard, Attempts: 1},
		{Shard: 4, Status: txn.PartYes, Attempts: 1},
	}}
	c.useRouting(now)
	want := []txn.PartState{
		{Shard: 1, Status: txn.PartUnsent},
		{Shard: 2, Status: txn.PartUnsent},
		{Shard: 3, Status: txn.PartUnsent},
		{Shard: 4, Status: txn.PartYes, Attempts: 1},
	}
	if len(c.st.Parts) != len(want) {
		t.Fatalf("parts %+v, want %+v", c.st.Parts, want)
	}
	for i := range want {
		if c.st.Parts[i] != want[i] {
			t.Fatalf("part %d is %+v, want %+v (all: %+v)", i, c.st.Parts[i], want[i], c.st.Parts)
		}
	}
	if c.reroutes != 1 || c.rt.Participant(3) == nil || c.st.AnchorShard != 1 {
		t.Fatalf("routing not taken: reroutes %d, rt %+v", c.reroutes, c.rt)
	}
	// An earlier prepare of shard 2 may have laid intents (a wrong_shard
	// after a lost answer): the participants that now hold its keys start
	// unknown, so an abort still resolves them.
	c = &txnCoord{s: c.s, rt: old}
	c.st = txn.CoordState{AnchorShard: 1, Parts: []txn.PartState{
		{Shard: 1, Status: txn.PartUnsent},
		{Shard: 2, Status: txn.PartWrongShard, Attempts: 2},
		{Shard: 4, Status: txn.PartYes, Attempts: 1},
	}}
	c.useRouting(now)
	for i, want := range []txn.PartStatus{txn.PartUnsent, txn.PartUnknown, txn.PartUnknown, txn.PartYes} {
		if c.st.Parts[i].Status != want {
			t.Fatalf("after a possibly prepared shard split: part %d is %+v, want status %d (all: %+v)",
				i, c.st.Parts[i], want, c.st.Parts)
		}
	}
	final := c.st
	final.Record, final.Replied = txn.RecAborted, true
	var resolved []uint64
	for _, a := range txn.Plan(&final) {
		if a.Kind == txn.ActResolve {
			resolved = append(resolved, a.Shard)
		}
	}
	if fmt.Sprint(resolved) != "[2 3 4]" {
		t.Fatalf("an abort after the routing resolves shards %v, want [2 3 4]", resolved)
	}

	// The anchor's key moved (its shard split with the key in the child):
	// the anchor shard follows it, and its participant decides afresh.
	moved := now
	moved.AnchorShard = 5
	moved.Participants = []txn.Participant{
		{Shard: 2, Epoch: 2, Keys: w("n")},
		{Shard: 3, Epoch: 2, Keys: w("z")},
		{Shard: 4, Epoch: 1, Keys: w("zz")},
		{Shard: 5, Epoch: 1, Keys: w("a")},
	}
	c.st.Parts[1].Status = txn.PartYes
	c.useRouting(moved)
	if c.st.AnchorShard != 5 || c.st.Parts[0].Status != txn.PartYes || c.st.Parts[3].Status != txn.PartUnsent {
		t.Fatalf("after the anchor moved: anchor %d, parts %+v", c.st.AnchorShard, c.st.Parts)
	}
}
