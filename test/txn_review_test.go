package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
)

// TestTxnReplayAcrossSplit (invariant I7, txn/DESIGN.md "Exactly-once"): a
// retry with the same request id answers the first attempt's outcome and
// applies nothing again, even when a split between the attempts makes the
// transaction span two shards. The first attempt ran on one shard and is
// remembered in that shard's dedup table (copied to both halves by the
// split); the retry runs the multi-shard protocol, whose exactly-once is the
// transaction record, which the first attempt never wrote. Fixed: the
// anchor's begin looks the request id up in its shard's dedup table
// (fsm.TxnCommand.CheckOneShard), aborts the record and lays no intent, and
// the coordinator answers the stored result as a replay and resolves what
// the other prepares laid.
func TestTxnReplayAcrossSplit(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	cl := NewClients(t, c, 1)[0]
	ctx := Context(t, 60*time.Second)
	rid := fmt.Sprintf("trs-%d", time.Now().UnixNano())
	tx := cl.Txn().If(client.Compare("trs/a", client.TargetExists, "==", false)).
		Then(client.OpPut("trs/a", "1"), client.OpPut("trs/z", "1")).
		WithRequestID(rid)
	first, err := tx.Commit(ctx)
	if err != nil || !first.Succeeded || len(first.Shards) != 1 {
		t.Fatalf("first attempt: %+v %v", first, err)
	}
	// The control: the same retry before the split is a replay.
	again, err := tx.Commit(ctx)
	if err != nil || again.Succeeded != first.Succeeded {
		t.Fatalf("retry before the split: %+v %v, first %+v", again, err, first)
	}
	res, err := Do(ctx, "POST", c.Node(0).HTTPAddr, "/v1/cluster/shards/1/split", map[string]string{"key": "trs/m"})
	if err != nil || res.Status != 200 {
		t.Fatalf("split: %v %v", res, err)
	}
	// Until the node routing the retry knows the split, it still runs it on
	// one shard (and the dedup table answers): wait for a fresh map.
	WaitFor(t, 10*time.Second, "the split known to the router", func() error {
		r, err := cl.Txn().Then(client.OpPut("trs/b", "x"), client.OpPut("trs/y", "x")).Commit(ctx)
		if err != nil {
			return err
		}
		if len(r.Shards) != 2 {
			return fmt.Errorf("a transaction on trs/b and trs/y ran on shards %v", r.Shards)
		}
		return nil
	})
	retry, err := tx.Commit(ctx)
	if err != nil {
		t.Fatalf("retry after the split: %v", err)
	}
	kv, gerr := cl.Get(ctx, "trs/a")
	if retry.Succeeded != first.Succeeded {
		t.Fatalf("I7: the retry after the split answered %+v, the first attempt %+v (trs/a now %+v %v): the retry ran again as a new two-shard transaction", retry, first, kv, gerr)
	}
	if gerr != nil || kv.Version != 1 {
		t.Fatalf("trs/a = %+v %v after the retry, want version 1 (written once)", kv, gerr)
	}
	if !retry.Replay || len(retry.Results) != len(first.Results) {
		t.Fatalf("the retry after the split answered %+v, want a replay of the first attempt's results %+v", retry, first)
	}
	for i := range first.Results {
		if retry.Results[i].ModIndex != first.Results[i].ModIndex || retry.Results[i].Key != first.Results[i].Key {
			t.Fatalf("the retry's result %d is %+v, the first attempt's %+v", i, retry.Results[i], first.Results[i])
		}
	}
	// A third attempt meets the aborted record the second left: it answers
	// the same replay, not txn_aborted.
	third, err := tx.Commit(ctx)
	if err != nil || !third.Replay || third.Succeeded != first.Succeeded {
		t.Fatalf("a third attempt after the split: %+v %v, the first %+v", third, err, first)
	}
	// The retries' prepares on the other shard laid intents: resolved.
	WaitFor(t, 10*time.Second, "no intent left", func() error {
		if n := countIntents(t, c); n != 0 {
			return fmt.Errorf("%d keys hold intents", n)
		}
		return nil
	})
	if kv, err := cl.Get(ctx, "trs/z"); err != nil || kv.Version != 1 {
		t.Fatalf("trs/z = %+v %v after the retries, want version 1 (written once)", kv, err)
	}
}
