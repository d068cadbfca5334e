package test

import (
	"context"
	"fmt"
	"strings"
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
	// Until the node routing the retry knows the split, it still runs it on
	// one shard (and the dedup table answers): wait for a fresh map.
	splitForTxns(t, ctx, c, cl, "trs/m", "trs/b", "trs/y")
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

// TestTxnDecideRetryAfterAnchorSplit (S14, I7, I8): a committed decide
// writes the anchor's keys directly, so the anchor's shard must hold the
// transaction's tombstone. Here a split then moves an anchor-participant key
// (zz/b) to a new shard, a single-key put writes it, and the client retries
// with the same request id: the retry's prepare of zz/b on the new shard must
// be refused by the tombstone the split copied. On the code before the fix
// the prepare found none, laid an intent, and resolving it from the committed
// record applied zz/b=1 a second time over the later put (review finding).
func TestTxnDecideRetryAfterAnchorSplit(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	cl := NewClients(t, c, 1)[0]
	ctx := Context(t, 90*time.Second)
	split := func(key string) {
		t.Helper()
		res, err := Do(ctx, "POST", c.Node(0).HTTPAddr, "/v1/cluster/shards/1/split", map[string]string{"key": key})
		if err != nil || res.Status != 200 {
			t.Fatalf("split at %s: %v %v", key, res, err)
		}
	}
	waitShards := func(a, b string) {
		WaitFor(t, 15*time.Second, "split known", func() error {
			r, err := cl.Txn().Then(client.OpPut(a, "x"), client.OpPut(b, "x")).Commit(ctx)
			if err != nil {
				return err
			}
			if len(r.Shards) != 2 {
				return fmt.Errorf("shards %v", r.Shards)
			}
			return nil
		})
	}
	split("zz/m") // shard 1: zz/a, zz/b ... ; the other: zz/z
	waitShards("zz/c", "zz/y")
	rid := fmt.Sprintf("zz-%d", time.Now().UnixNano())
	tx := cl.Txn().If(client.Compare("zz/a", client.TargetExists, "==", false)).
		Then(client.OpPut("zz/a", "1"), client.OpPut("zz/b", "1"), client.OpPut("zz/z", "1")).WithRequestID(rid)
	first, err := tx.Commit(ctx)
	if err != nil || !first.Succeeded || len(first.Shards) != 2 {
		t.Fatalf("first: %+v %v", first, err)
	}
	split("zz/b") // zz/a stays on shard 1, zz/b goes to a new shard
	waitShards("zz/a0", "zz/b0")
	if _, err := cl.Put(ctx, "zz/b", "later"); err != nil {
		t.Fatalf("put: %v", err)
	}
	retry, err := tx.Commit(ctx)
	if err != nil || !retry.Replay {
		t.Fatalf("retry: %+v %v, want a replay", retry, err)
	}
	time.Sleep(2 * time.Second)
	kv, err := cl.Get(ctx, "zz/b")
	t.Logf("zz/b = %+v %v", kv, err)
	if err != nil || string(kv.Value) != "later" {
		t.Fatalf("zz/b = %+v %v: the committed write applied a second time over a later put", kv, err)
	}
}

// TestTxnDecideCarriesNoWrittenValues (issue 13 item 7): the decide entry
// carries the other participants' states only for the keys its evaluation
// reads, and values only for value compares. A transaction that compares one
// key and deletes six 1 MB keys on another shard must commit. On the code
// before the fix every coordinator answered txn_aborted (coordinator): the
// decide shipped the six old values back and exceeded the entry and
// forwarding limits (review finding).
func TestTxnDecideCarriesNoWrittenValues(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	cls := NewClients(t, c, 3)
	cl := cls[0]
	ctx := Context(t, 120*time.Second)
	splitForTxns(t, ctx, c, cl, "zz/m", "zz/c", "zz/y")
	big := strings.Repeat("v", 1000000)
	var ops []client.TxnOp
	for i := 0; i < 6; i++ {
		k := fmt.Sprintf("zz/z%d", i)
		if _, err := cl.Put(ctx, k, big); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
		ops = append(ops, client.OpDelete(k))
	}
	for i, x := range cls {
		a := fmt.Sprintf("zz/a%d", i)
		start := time.Now()
		r, err := x.Txn().If(client.Compare(a, client.TargetExists, "==", false)).
			Then(append([]client.TxnOp{client.OpPut(a, "1")}, ops...)...).Commit(ctx)
		t.Logf("via node %d: %+v err=%v (%v)", i, r, err, time.Since(start))
		if err == nil {
			return
		}
	}
	t.Fatal("no coordinator could commit a 7-op transaction deleting 6 MB on the other shard")
}

// TestTxnReadOnlyRetryReadsAgain (txn/DESIGN.md "Exactly-once"): a
// transaction that writes nothing has nothing to apply twice, so its request
// id does not make a retry a replay; the retry reads again and answers the
// values. The Go client retries an outcome_unknown with the same request id,
// and a multi-shard replay carries no gets: TestS13Bank's whole-bank read
// was answered "committed, replay" with no accounts (CI at 488e478, seed
// 1796008358017460246: 'read lacks account "bank/a0" ... sums to 0').
func TestTxnReadOnlyRetryReadsAgain(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	cl := NewClients(t, c, 1)[0]
	ctx := Context(t, 60*time.Second)
	splitForTxns(t, ctx, c, cl, "tro/m", "tro/b", "tro/y")
	for _, k := range []string{"tro/a", "tro/z"} {
		if _, err := cl.Put(ctx, k, "1"); err != nil {
			t.Fatal(err)
		}
	}
	rid := fmt.Sprintf("tro-%d", time.Now().UnixNano())
	read := func() *client.TxnResponse {
		var out *client.TxnResponse
		WaitFor(t, 10*time.Second, "a two-shard read", func() error {
			r, err := cl.Txn().Then(client.OpGet("tro/a"), client.OpGet("tro/z")).WithRequestID(rid).Commit(ctx)
			if err != nil {
				return err
			}
			if len(r.Shards) != 2 {
				return fmt.Errorf("the read ran on shards %v", r.Shards)
			}
			out = r
			return nil
		})
		return out
	}
	values := func(r *client.TxnResponse) string {
		var vs []string
		for _, o := range r.Results {
			if o.KV == nil {
				vs = append(vs, o.Key+"=<none>")
			} else {
				vs = append(vs, o.Key+"="+o.KV.Value)
			}
		}
		return strings.Join(vs, " ")
	}
	if first := read(); first.Replay || values(first) != "tro/a=1 tro/z=1" {
		t.Fatalf("first read: replay=%v %q", first.Replay, values(first))
	}
	if _, err := cl.Put(ctx, "tro/a", "2"); err != nil {
		t.Fatal(err)
	}
	if again := read(); again.Replay || values(again) != "tro/a=2 tro/z=1" {
		t.Fatalf("the retry of a read-only transaction answered replay=%v %q, want the values read again (tro/a=2 tro/z=1)", again.Replay, values(again))
	}
}

// splitForTxns splits shard 1 at key `at` and waits until the client's
// transactions see it: one writing lo and hi (either side of `at`) runs on
// two shards.
func splitForTxns(t *testing.T, ctx context.Context, c *Cluster, cl *client.Client, at, lo, hi string) {
	t.Helper()
	res, err := Do(ctx, "POST", c.Node(0).HTTPAddr, "/v1/cluster/shards/1/split", map[string]string{"key": at})
	if err != nil || res.Status != 200 {
		t.Fatalf("split at %s: %v %v", at, res, err)
	}
	WaitFor(t, 15*time.Second, "the split known to the router", func() error {
		r, err := cl.Txn().Then(client.OpPut(lo, "x"), client.OpPut(hi, "x")).Commit(ctx)
		if err != nil {
			return err
		}
		if len(r.Shards) != 2 {
			return fmt.Errorf("a transaction on %s and %s ran on shards %v", lo, hi, r.Shards)
		}
		return nil
	})
}
