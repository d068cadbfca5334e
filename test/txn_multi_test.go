package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairndb/cairn/api"
	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/txn"
)

// countIntents sums the keys holding intents over every live node's
// replicas that are members of their range (each counts its own copy; a
// replica a move left behind is not updated any more).
func countIntents(t *testing.T, c *Cluster) int {
	t.Helper()
	return sumOverReplicas(t, c, (*fsm.FSM).CountIntents)
}

// sumOverReplicas adds up count over every live node's replica of every
// range the node is a replica of.
func sumOverReplicas(t *testing.T, c *Cluster, count func(*fsm.FSM) (int, error)) int {
	t.Helper()
	n := 0
	for _, nd := range c.LiveNodes() {
		for _, rng := range nd.Ranges() {
			if rep, ok := nd.Replica(rng.ID); ok && slices.Contains(rng.Replicas, nd.ID()) {
				k, err := count(rep.FSM())
				if err != nil {
					t.Fatal(err)
				}
				n += k
			}
		}
	}
	return n
}

// TestTxnMultiShard: a transaction over two shards (issue 13 items 3, 5,
// 8; invariant I8): both branches, gets read under the intents, a stale
// fence refused as a whole, exactly-once by request id, GET /v1/txn/{id},
// and no intent left behind.
func TestTxnMultiShard(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"txm/m"}})
	cl := NewClients(t, c, 1)[0]
	ctx := Context(t, 60*time.Second)
	for k, v := range map[string]string{"txm/a": "10", "txm/z": "0"} {
		if _, err := cl.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	value := func(k string) string {
		kv, err := cl.Get(ctx, k)
		if errors.Is(err, client.ErrNotFound) {
			return "<absent>"
		}
		if err != nil {
			t.Fatalf("get %s: %v", k, err)
		}
		return kv.Value
	}
	// A transfer: compare on one shard, writes on both.
	res, err := cl.Txn().If(client.Compare("txm/a", client.TargetValue, ">=", 4)).
		Then(client.OpPut("txm/a", "6"), client.OpPut("txm/z", "4"), client.OpGet("txm/z")).
		Else(client.OpGet("txm/a")).Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Succeeded || len(res.Shards) != 2 || res.ID == "" || len(res.Results) != 3 {
		t.Fatalf("answer %+v", res)
	}
	if res.Results[0].ModIndex == 0 || res.Results[2].KV == nil || res.Results[2].KV.Value != "0" {
		t.Fatalf("results %+v", res.Results)
	}
	if value("txm/a") != "6" || value("txm/z") != "4" {
		t.Fatalf("after commit: a=%s z=%s", value("txm/a"), value("txm/z"))
	}
	// The failure branch over two shards.
	res, err = cl.Txn().If(client.Compare("txm/a", client.TargetValue, ">=", 100)).
		Then(client.OpPut("txm/a", "x"), client.OpPut("txm/z", "x")).
		Else(client.OpGet("txm/a"), client.OpGet("txm/z")).Commit(ctx)
	if err != nil || res.Succeeded || res.Results[0].KV.Value != "6" || res.Results[1].KV.Value != "4" {
		t.Fatalf("failure branch: %+v %v", res, err)
	}
	// Inspection.
	r, err := Do(ctx, "GET", c.HTTPAddrs()[2], "/v1/txn/"+res.ID, nil)
	if err != nil || r.Status != 200 {
		t.Fatalf("inspect: %v %v", r, err)
	}
	var rec map[string]any
	if err := json.Unmarshal(r.Body, &rec); err != nil || rec["state"] != "committed" {
		t.Fatalf("inspect body %s", r.Body)
	}
	// A stale fence on one shard refuses the whole transaction.
	if _, err := cl.Put(ctx, "txm/z", "4", client.WithFence("L", 5)); err != nil {
		t.Fatal(err)
	}
	_, err = cl.Txn().Then(client.OpPut("txm/a", "fenced"), client.OpPut("txm/z", "fenced", client.TxnFence("L", 4))).Commit(ctx)
	if !errors.Is(err, client.ErrStaleToken) {
		t.Fatalf("stale fence: %v", err)
	}
	if value("txm/a") != "6" || value("txm/z") != "4" {
		t.Fatal("a write of a transaction refused for its fence landed")
	}
	// Exactly-once (I7): the same request id twice applies once.
	once := cl.Txn().If(client.Compare("txm/a", client.TargetValue, "==", 6)).
		Then(client.OpPut("txm/a", "7"), client.OpPut("txm/z", "3")).WithRequestID("txm-once")
	if res, err := once.Commit(ctx); err != nil || !res.Succeeded {
		t.Fatalf("first: %+v %v", res, err)
	}
	if _, err := cl.Put(ctx, "txm/a", "6"); err != nil {
		t.Fatal(err)
	}
	res, err = once.Commit(ctx)
	if err != nil || !res.Succeeded || !res.Replay {
		t.Fatalf("retry: %+v %v", res, err)
	}
	if value("txm/a") != "6" || value("txm/z") != "3" {
		t.Fatalf("the retry applied again: a=%s z=%s", value("txm/a"), value("txm/z"))
	}
	WaitFor(t, 10*time.Second, "no intent left", func() error {
		if n := countIntents(t, c); n != 0 {
			return errors.New("intents remain")
		}
		return nil
	})
	_ = context.Background
}

// TestTxnModIndexAtCommitPoint (txn/DESIGN.md "Replying at the commit
// point"): a two-shard transaction is answered when its record commits, its
// intents resolved after; each put's answer carries the mod_index (and
// create_index, version) the key then has, read afterwards, and a CAS on it
// succeeds — with the coordinator's background resolution running, and
// stopped right after the reply (a coordinator dying there), when the
// reader's CAS resolves the intent itself. A retry of the request id answers
// the recorded outcome, and no intent is left.
func TestTxnModIndexAtCommitPoint(t *testing.T) {
	var mu sync.Mutex
	stopResolve := false
	knobs := &api.TxnKnobs{BeforeAction: func(_ string, a txn.Action) error {
		mu.Lock()
		defer mu.Unlock()
		if stopResolve && a.Kind == txn.ActResolve {
			return errors.New("stopped after the reply")
		}
		return nil
	}}
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"tmi/m"}, TxnKnobs: knobs})
	cl := NewClients(t, c, 1)[0]
	ctx := Context(t, 60*time.Second)
	for i, stop := range []bool{false, true} {
		mu.Lock()
		stopResolve = stop
		mu.Unlock()
		a, z, gone, fresh := fmt.Sprintf("tmi/a%d", i), fmt.Sprintf("tmi/z%d", i), fmt.Sprintf("tmi/y%d", i), fmt.Sprintf("tmi/b%d", i)
		for _, k := range []string{a, z, gone, a} { // a: version 2
			if _, err := cl.Put(ctx, k, "old"); err != nil {
				t.Fatal(err)
			}
		}
		before, err := cl.Get(ctx, a)
		if err != nil {
			t.Fatal(err)
		}
		rid := fmt.Sprintf("tmi-%d-%d", i, time.Now().UnixNano())
		tx := cl.Txn().If(client.Compare(a, client.TargetValue, "==", "old")).
			Then(client.OpPut(a, "new"), client.OpPut(z, "new"), client.OpDelete(gone), client.OpPut(fresh, "new")).
			WithRequestID(rid)
		res, err := tx.Commit(ctx)
		if err != nil || !res.Succeeded || len(res.Results) != 4 {
			t.Fatalf("stop=%v: commit answered %+v %v", stop, res, err)
		}
		if stop {
			if n := countIntents(t, c); n == 0 {
				t.Fatal("no intent left by the stopped coordinator: the case tests nothing")
			}
		}
		ra, rz, rg, rf := res.Results[0], res.Results[1], res.Results[2], res.Results[3]
		if ra.Version != before.Version+1 || ra.CreateIndex != before.CreateIndex || ra.ModIndex <= before.ModIndex {
			t.Fatalf("stop=%v: put %s answered %+v, key was %+v", stop, a, ra, before)
		}
		if rf.Version != 1 || rf.CreateIndex != rf.ModIndex || rg.Deleted != 1 {
			t.Fatalf("stop=%v: put %s answered %+v, delete %+v", stop, fresh, rf, rg)
		}
		// A CAS on the answered mod_index succeeds (on the stopped case it
		// meets the intent and resolves it first).
		if _, err := cl.Put(ctx, z, "cas", client.IfModIndex(rz.ModIndex)); err != nil {
			t.Fatalf("stop=%v: CAS on %s at the answered mod_index %d: %v", stop, z, rz.ModIndex, err)
		}
		for _, r := range []client.TxnOpResult{ra, rf} {
			kv, err := cl.Get(ctx, r.Key)
			if err != nil {
				t.Fatal(err)
			}
			if kv.Value != "new" || kv.ModIndex != r.ModIndex || kv.CreateIndex != r.CreateIndex || kv.Version != r.Version {
				t.Fatalf("stop=%v: %s read %+v, the answer said %+v", stop, r.Key, kv, r)
			}
			if _, err := cl.Put(ctx, r.Key, "cas", client.IfModIndex(r.ModIndex)); err != nil {
				t.Fatalf("stop=%v: CAS on %s at the answered mod_index %d: %v", stop, r.Key, r.ModIndex, err)
			}
		}
		if _, err := cl.Get(ctx, gone); !errors.Is(err, client.ErrNotFound) {
			t.Fatalf("stop=%v: deleted key %s: %v", stop, gone, err)
		}
		// The retry answers the recorded outcome, applying nothing again.
		res, err = tx.Commit(ctx)
		if err != nil || !res.Succeeded || !res.Replay {
			t.Fatalf("stop=%v: retry %+v %v", stop, res, err)
		}
		if kv, err := cl.Get(ctx, a); err != nil || kv.Value != "cas" {
			t.Fatalf("stop=%v: after the retry %s = %+v %v", stop, a, kv, err)
		}
		WaitFor(t, 10*time.Second, "no intent left", func() error {
			if n := countIntents(t, c); n != 0 {
				return fmt.Errorf("%d intent keys remain", n)
			}
			return nil
		})
		// I8: the coordinator that resolved every participant forgets the
		// record (its shard drops it after the dedup window), well before
		// the sweeper would (2 x txnTimeout after its heartbeat); one stopped
		// before resolving does not: the record must outlive the intents
		// that readers resolved here, until the sweeper forgets it (TestS14).
		forgotten := func() error {
			r, err := Do(ctx, "GET", c.HTTPAddrs()[0], "/v1/txn/"+txn.IDForRequest(rid), nil)
			if err != nil || r.Status != 200 || !strings.Contains(string(r.Body), `"state":"committed"`) {
				return fmt.Errorf("record: %v %v", r, err)
			}
			if !strings.Contains(string(r.Body), `"forgotten":true`) {
				return fmt.Errorf("not forgotten: %s", r.Body)
			}
			return nil
		}
		if !stop {
			WaitFor(t, 5*time.Second, "the coordinator forgets the record", forgotten)
		} else if err := forgotten(); err == nil || !strings.Contains(err.Error(), "not forgotten") {
			t.Fatalf("stop=%v: a coordinator stopped before resolving: %v, want the record committed and not forgotten", stop, err)
		}
	}
}

// TestTxnBackgroundResolutionEndsWithNode: the resolutions a coordinator
// runs after its reply (api txnBackground, the per-shard resolve batcher)
// end with their node: closing every node under a load of two-shard
// transactions leaves none of their goroutines behind. A knob holds each
// background resolution a moment, so some are always under way at the close
// (without the server's Close ending them, the check fails).
func TestTxnBackgroundResolutionEndsWithNode(t *testing.T) {
	knobs := &api.TxnKnobs{BeforeAction: func(_ string, a txn.Action) error {
		if a.Kind == txn.ActResolve {
			time.Sleep(300 * time.Millisecond)
		}
		return nil
	}}
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"tbg/m"}, TxnKnobs: knobs})
	cls := NewClients(t, c, 8)
	ctx := Context(t, 60*time.Second)
	for i := range 16 {
		for _, k := range []string{fmt.Sprintf("tbg/a%d", i), fmt.Sprintf("tbg/z%d", i)} {
			if _, err := cls[0].Put(ctx, k, "0"); err != nil {
				t.Fatal(err)
			}
		}
	}
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var committed atomic.Int64
	for i := range 16 {
		wg.Go(func() {
			for lctx.Err() == nil {
				a, z := fmt.Sprintf("tbg/a%d", i), fmt.Sprintf("tbg/z%d", i)
				if _, err := cls[i%len(cls)].Txn().Then(client.OpPut(a, "x"), client.OpPut(z, "x")).Commit(lctx); err == nil {
					committed.Add(1)
				}
			}
		})
	}
	time.Sleep(time.Second)
	c.Close() // under load: resolutions are queued or in flight
	stop()
	wg.Wait()
	if committed.Load() == 0 {
		t.Fatal("no transaction committed: the case tests nothing")
	}
	buf := make([]byte, 1<<22)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, f := range []string{"api.(*txnBackground).spawn", "api.(*Server).drainResolves", "api.(*Server).resolveBatched"} {
		if strings.Contains(stacks, f) {
			t.Fatalf("a goroutine in %s outlived its node (%d committed):\n%s", f, committed.Load(), stacks)
		}
	}
}

// TestTxnSyncResolveAnswersAlike: with the knob that resolves before the
// reply (the path a coordinator takes when a participant does not report
// its prepare's index), a two-shard put's answer comes from what resolution
// wrote (the commit entry's for the anchor's key, a resolve's for the
// other), and it is the key's mod_index and create_index read afterwards.
func TestTxnSyncResolveAnswersAlike(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"tsr/m"}, TxnKnobs: &api.TxnKnobs{SyncResolve: true}})
	cl := NewClients(t, c, 1)[0]
	ctx := Context(t, 30*time.Second)
	res, err := cl.Txn().Then(client.OpPut("tsr/a", "1"), client.OpPut("tsr/z", "2")).Commit(ctx)
	if err != nil || !res.Succeeded || len(res.Results) != 2 {
		t.Fatalf("commit: %+v %v", res, err)
	}
	for _, r := range res.Results {
		kv, err := cl.Get(ctx, r.Key)
		if err != nil || kv.ModIndex != r.ModIndex || kv.CreateIndex != r.ModIndex || kv.Version != 1 {
			t.Fatalf("%s read %+v %v, the answer said %+v", r.Key, kv, err, r)
		}
	}
	WaitFor(t, 10*time.Second, "no intent left", func() error {
		if n := countIntents(t, c); n != 0 {
			return fmt.Errorf("%d intent keys remain", n)
		}
		return nil
	})
}

// TestTxnPreparesShareCalls (api/txn_propose_batch.go): prepares for a shard
// led by another node share their node-to-node calls. 64 two-shard
// transactions started at once, coordinated on the leader of their anchors'
// shard, send their other prepares to another node's leader: before, one call
// each (64, and the resolutions' calls on top); now the prepares queued
// behind a call in flight go out together in the next. Every transaction
// still commits on both shards and leaves no intent.
func TestTxnPreparesShareCalls(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"tpb/m"}})
	cl := NewClients(t, c, 1)[0]
	ctx := Context(t, 90*time.Second)
	const n = 64
	for i := range n {
		for _, k := range []string{fmt.Sprintf("tpb/a%02d", i), fmt.Sprintf("tpb/z%02d", i)} {
			if _, err := cl.Put(ctx, k, "0"); err != nil {
				t.Fatal(err)
			}
		}
	}
	lb := leadersApart(t, c, "tpb/a00", "tpb/z00")
	calls := func() float64 {
		v, _ := metricValue(t, c.Node(lb).HTTPAddr, `cairn_http_request_duration_seconds_count{code="200",method="POST",route="internal"}`)
		return v
	}
	before := calls()
	concurrentTxns(t, c, n, func(i int) error {
		a, z := fmt.Sprintf("tpb/a%02d", i), fmt.Sprintf("tpb/z%02d", i)
		res, err := cl.Txn().If(client.Compare(a, client.TargetModIndex, ">", 0), client.Compare(z, client.TargetModIndex, ">", 0)).
			Then(client.OpPut(a, "1"), client.OpPut(z, "1")).Commit(ctx)
		if err == nil && (!res.Succeeded || len(res.Shards) != 2) {
			err = fmt.Errorf("transaction %d: %+v", i, res)
		}
		return err
	})
	got := calls() - before
	t.Logf("%d two-shard transactions: %.0f node-to-node calls to the other shard's leader", n, got)
	if got >= n {
		t.Fatalf("%.0f node-to-node calls for %d transactions' prepares and resolutions: the prepares did not share calls", got, n)
	}
	// cairn_txn_batch_size shows it too: every other-shard prepare went out
	// in a batch, and every resolution in a batch or riding in another
	// transaction's entry (txn_riders.go; with the forgets that ride too),
	// fewer batches than transactions.
	for _, kinds := range [][]string{{"prepare"}, {"resolve", "rider"}} {
		var sum, count float64
		for i := range c.Nodes() {
			for _, kind := range kinds {
				v, _ := metricValue(t, c.Node(i).HTTPAddr, `cairn_txn_batch_size_sum{kind="`+kind+`"}`)
				w, _ := metricValue(t, c.Node(i).HTTPAddr, `cairn_txn_batch_size_count{kind="`+kind+`"}`)
				sum, count = sum+v, count+w
			}
		}
		kind := strings.Join(kinds, "+")
		t.Logf("%s: %.0f transactions in %.0f batches", kind, sum, count)
		if sum < n || count >= sum {
			t.Fatalf("cairn_txn_batch_size{kind=%q}: %.0f transactions in %.0f batches, want at least %d in fewer batches", kind, sum, count, n)
		}
	}
	for i := range n {
		for _, k := range []string{fmt.Sprintf("tpb/a%02d", i), fmt.Sprintf("tpb/z%02d", i)} {
			if kv, err := cl.Get(ctx, k); err != nil || kv.Value != "1" {
				t.Fatalf("%s after commit: %+v %v", k, kv, err)
			}
		}
	}
}

// leadersApart makes the shards of keys a and b (two shards) led by
// different nodes and returns the index of b's leader.
func leadersApart(t *testing.T, c *Cluster, a, b string) int {
	t.Helper()
	shardOf := func(key string) uint64 {
		for _, r := range c.Node(0).Node.Ranges() {
			if r.Contains([]byte(key)) {
				return r.ID
			}
		}
		t.Fatalf("no range holds %s", key)
		return 0
	}
	anchor, other := shardOf(a), shardOf(b)
	if anchor == other {
		t.Fatalf("%s and %s on one shard %d", a, b, anchor)
	}
	la, lb := c.WaitLeader(anchor, 10*time.Second), c.WaitLeader(other, 10*time.Second)
	if la == lb {
		to := (lb + 1) % 3
		rep, ok := c.Node(lb).Node.Replica(other)
		if !ok {
			t.Fatalf("node %d has no replica of shard %d", lb, other)
		}
		if err := rep.TransferLeader(c.Node(to).ID, c.Node(to).RaftAddr); err != nil {
			t.Fatalf("transfer shard %d to %s: %v", other, c.Node(to).ID, err)
		}
		lb = c.WaitLeader(other, 10*time.Second, la)
	}
	return lb
}

// TestTxnDecideAnswerLost: the anchor's decide commits but its answer is
// lost (a leader change while committing, here a knob). The coordinator
// decides again, learns the record committed, and answers every result: the
// anchor's get and put as the committing entry applied them, and the other
// shard's get as its prepare read it; nothing applies twice.
func TestTxnDecideAnswerLost(t *testing.T) {
	knobs, lost := loseFirstDecideAnswers()
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"tdl/m"}, TxnKnobs: knobs})
	cl := NewClients(t, c, 1)[0]
	ctx := Context(t, 60*time.Second)
	for k, v := range map[string]string{"tdl/a": "1", "tdl/b": "anchor-side", "tdl/z": "other-side"} {
		if _, err := cl.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	before, err := cl.Get(ctx, "tdl/a")
	if err != nil {
		t.Fatal(err)
	}
	res, err := cl.Txn().If(client.Compare("tdl/a", client.TargetValue, "==", "1")).
		Then(client.OpPut("tdl/a", "2"), client.OpGet("tdl/b"), client.OpGet("tdl/z")).Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := lost(); n != 1 {
		t.Fatalf("%d transactions lost a decide answer, want 1", n)
	}
	if res.Replay || !res.Succeeded || len(res.Shards) != 2 || len(res.Results) != 3 {
		t.Fatalf("answer after a lost decide answer: %+v", res)
	}
	put, b, z := res.Results[0], res.Results[1], res.Results[2]
	if put.Version != before.Version+1 || put.CreateIndex != before.CreateIndex || put.ModIndex <= before.ModIndex {
		t.Errorf("put result %+v after %+v", put, before)
	}
	if b.KV == nil || b.KV.Value != "anchor-side" || z.KV == nil || z.KV.Value != "other-side" {
		t.Errorf("get results %+v %+v", b.KV, z.KV)
	}
	after, err := cl.Get(ctx, "tdl/a")
	if err != nil || after.Value != "2" || after.Version != before.Version+1 || after.ModIndex != put.ModIndex {
		t.Fatalf("tdl/a after the transaction: %+v %v (put answered %+v)", after, err, put)
	}
}

// TestTxnStaleDecideAnswerLost: a decide refused for a stale fence writes
// the record aborted; when its answer is lost, the coordinator learns the
// abort from the record, and the client must still hear stale_token (the
// retry of a new transaction would only be refused again), not
// txn_aborted. Both places a fence is checked at the decide: the anchor's
// key against its shard, and the other shard's key against the token its
// prepare answered. Nothing is written.
func TestTxnStaleDecideAnswerLost(t *testing.T) {
	knobs, lost := loseFirstDecideAnswers()
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"tsl/m"}, TxnKnobs: knobs})
	cl := NewClients(t, c, 1)[0]
	ctx := Context(t, 60*time.Second)
	if _, err := cl.Put(ctx, "tsl/a", "0", client.WithFence("A", 5)); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Put(ctx, "tsl/z", "0", client.WithFence("Z", 5)); err != nil {
		t.Fatal(err)
	}
	for _, tx := range []*client.Txn{
		cl.Txn().Then(client.OpPut("tsl/a", "x", client.TxnFence("A", 4)), client.OpPut("tsl/z", "x")), // the anchor's
		cl.Txn().Then(client.OpPut("tsl/a", "y"), client.OpPut("tsl/z", "y", client.TxnFence("Z", 4))), // the other shard's
	} {
		if _, err := tx.Commit(ctx); !errors.Is(err, client.ErrStaleToken) {
			t.Errorf("a stale fence, its decide's answer lost: %v, want stale_token", err)
		}
	}
	if n := lost(); n != 2 {
		t.Fatalf("%d transactions lost a decide answer, want 2", n)
	}
	for _, k := range []string{"tsl/a", "tsl/z"} {
		if kv, err := cl.Get(ctx, k); err != nil || kv.Value != "0" {
			t.Fatalf("%s after refused transactions: %+v %v", k, kv, err)
		}
	}
}

// loseFirstDecideAnswers is a knob that loses the answer of each
// transaction's first decide, and how many transactions it did that to.
func loseFirstDecideAnswers() (*api.TxnKnobs, func() int) {
	var lost sync.Map
	knobs := &api.TxnKnobs{LoseDecideAnswer: func(id string) bool {
		_, again := lost.LoadOrStore(id, true)
		return !again
	}}
	return knobs, func() int {
		n := 0
		lost.Range(func(any, any) bool { n++; return true })
		return n
	}
}

// TestTxnSharedCallLargeAnswers (api/txn_propose_batch.go): a prepare
// answers the values of the keys it locks, which its command does not show,
// so the leader answers a shared call only up to 4 MiB and marks the rest
// "send alone". Eight transactions started at once each read a 1 MiB value
// on the other shard: every one commits and answers its own value.
func TestTxnSharedCallLargeAnswers(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"tpl/m"}})
	cl := NewClients(t, c, 1)[0]
	ctx := Context(t, 90*time.Second)
	const n = 8
	big := func(i int) string { return strings.Repeat(string(rune('a'+i)), 1<<20-64) }
	for i := range n {
		if _, err := cl.Put(ctx, fmt.Sprintf("tpl/a%d", i), "0"); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.Put(ctx, fmt.Sprintf("tpl/z%d", i), big(i)); err != nil {
			t.Fatal(err)
		}
	}
	leadersApart(t, c, "tpl/a0", "tpl/z0")
	concurrentTxns(t, c, n, func(i int) error {
		a, z := fmt.Sprintf("tpl/a%d", i), fmt.Sprintf("tpl/z%d", i)
		res, err := cl.Txn().If(client.Compare(a, client.TargetModIndex, ">", 0)).
			Then(client.OpPut(a, "1"), client.OpGet(z)).Commit(ctx)
		switch {
		case err != nil:
		case !res.Succeeded || len(res.Shards) != 2 || len(res.Results) != 2 || res.Results[1].KV == nil:
			err = fmt.Errorf("transaction %d: %+v", i, res)
		case res.Results[1].KV.Value != big(i):
			err = fmt.Errorf("transaction %d read %d bytes of %s, not its own value", i, len(res.Results[1].KV.Value), z)
		}
		return err
	})
}

// concurrentTxns runs txn(0..n-1) all at once, fails the test on an error,
// and waits until every transaction's intents are resolved.
func concurrentTxns(t *testing.T, c *Cluster, n int, txn func(i int) error) {
	t.Helper()
	start := make(chan struct{})
	errs := make(chan error, n)
	for i := range n {
		go func() {
			<-start
			errs <- txn(i)
		}()
	}
	close(start)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	WaitFor(t, 15*time.Second, "no intent left", func() error {
		if k := countIntents(t, c); k != 0 {
			return fmt.Errorf("%d intents remain", k)
		}
		return nil
	})
}
