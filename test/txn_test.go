package test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/cairndb/cairn/api"
	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/txn"
)

// TestTxnOneShard is issue 13 items 1, 2, 7, 9, 10 for one shard, end to end
// on a real cluster through the Go client and raw HTTP: compares and both
// branches, gets that read the state inside the entry, a stale fence that
// fails the whole transaction with nothing written, bad input refused with
// nothing written, and a retry with the same request id answered with the
// original outcome (invariants I7, I11).
func TestTxnOneShard(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"txo/y"}})
	cl := NewClients(t, c, 1)[0]
	ctx := Context(t, 30*time.Second)
	addr := c.HTTPAddrs()[1]

	mustPut := func(k, v string) {
		if _, err := cl.Put(ctx, k, v); err != nil {
			t.Fatalf("put %s: %v", k, err)
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
	mustPut("txo/a", "10")
	mustPut("txo/b", "0")

	// Success branch: integer compare, writes, a get of the state before.
	res, err := cl.Txn().
		If(client.Compare("txo/a", client.TargetValue, ">=", 9), client.Compare("txo/c", client.TargetExists, "==", false)).
		Then(client.OpGet("txo/a"), client.OpPut("txo/a", "3"), client.OpPut("txo/b", "7", client.TxnTTL(time.Hour)), client.OpDelete("txo/x")).
		Else(client.OpGet("txo/a")).
		Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Succeeded || len(res.Results) != 4 || len(res.Shards) != 1 {
		t.Fatalf("answer %+v", res)
	}
	if r := res.Results[0]; r.KV == nil || r.KV.Value != "10" {
		t.Fatalf("get in txn saw %+v, want 10", r.KV)
	}
	if r := res.Results[1]; r.ModIndex == 0 || r.ModIndex != res.Index || r.Version != 2 {
		t.Fatalf("put result %+v (entry index %d)", r, res.Index)
	}
	if value("txo/a") != "3" || value("txo/b") != "7" {
		t.Fatalf("after the success branch: a=%s b=%s", value("txo/a"), value("txo/b"))
	}
	// Failure branch: the compare is false, only the failure ops run.
	res, err = cl.Txn().If(client.Compare("txo/a", client.TargetValue, ">", 5)).
		Then(client.OpPut("txo/a", "never")).Else(client.OpGet("txo/a"), client.OpGet("txo/nope")).Commit(ctx)
	if err != nil || res.Succeeded || res.Results[0].KV.Value != "3" || res.Results[1].Found {
		t.Fatalf("failure branch: %+v %v", res, err)
	}

	// A stale fence fails the whole transaction (409 stale_token); nothing
	// of it is written (invariant I11).
	if _, err := cl.Put(ctx, "txo/r", "v", client.WithFence("L", 9)); err != nil {
		t.Fatal(err)
	}
	_, err = cl.Txn().Then(client.OpPut("txo/a", "fenced-out"), client.OpPut("txo/r", "w", client.TxnFence("L", 8))).Commit(ctx)
	if !errors.Is(err, client.ErrStaleToken) {
		t.Fatalf("stale fence: %v, want stale_token", err)
	}
	if value("txo/a") != "3" || value("txo/r") != "v" {
		t.Fatal("a write of a transaction refused for its fence landed")
	}

	// Bad input: 400 invalid_argument, nothing written.
	for _, body := range []string{
		`{}`,
		`{"success":[{"op":"put","key":"txo/a","value":"1"},{"op":"put","key":"txo/a","value":"2"}]}`,
		`{"compare":[{"key":"txo/a","target":"nope","op":"==","value":"1"}],"success":[{"op":"put","key":"txo/a","value":"1"}]}`,
		`{"success":[{"op":"put","key":"txo/a","value":"1","bogus":1}]}`,
	} {
		r, err := Do(ctx, "POST", addr, "/v1/txn", body)
		if err != nil || r.Status != 400 || r.Code() != "invalid_argument" {
			t.Fatalf("bad input %s: %v %v", body, r, err)
		}
	}
	if value("txo/a") != "3" {
		t.Fatal("a refused transaction wrote")
	}

	// Exactly-once (I7): the same request id twice is one application, and
	// the retry gets the original answer (its get included).
	body := (`{"compare":[{"key":"txo/a","target":"value","op":"==","value":"3"}],
		"success":[{"op":"get","key":"txo/a"},{"op":"put","key":"txo/a","value":"4"}],
		"failure":[{"op":"get","key":"txo/a"}],"request_id":"txo-once"}`)
	first, err := Do(ctx, "POST", addr, "/v1/txn", body)
	if err != nil || first.Status != 200 {
		t.Fatalf("first: %v %v", first, err)
	}
	mustPut("txo/a", "3") // the compare would hold again
	again, err := Do(ctx, "POST", c.HTTPAddrs()[2], "/v1/txn", body)
	if err != nil || again.Status != 200 || string(again.Body) != string(first.Body) {
		t.Fatalf("retry answered %v, want the original %s", again, first.Body)
	}
	if value("txo/a") != "3" {
		t.Fatalf("the retry applied again: a=%s", value("txo/a"))
	}

	// Keys on two shards are not one entry: a record id, two shards.
	res, err = cl.Txn().Then(client.OpPut("txo/a", "1"), client.OpPut("txo/z", "1")).Commit(ctx)
	if err != nil || res.ID == "" || len(res.Shards) != 2 {
		t.Fatalf("two-shard transaction: %+v %v", res, err)
	}
}

// TestTxnOneShardLinearizable: single-key get/put/CAS mixed with one-shard
// two-key transactions (moves and two-key reads) from concurrent clients,
// while the nemesis kills, isolates and pauses nodes; porcupine checks the
// pair model (invariants I1, I2, I7; issue 13's porcupine check for one
// shard).
func TestTxnOneShardLinearizable(t *testing.T) {
	seed := testSeed(t)
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"tl/g2"}, Delayable: true})
	clients := NewClients(t, c, 6)
	const duration = 6 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	nem := &Nemesis{C: c, Seed: seed, Shards: []uint64{1, 2}, Interval: time.Second,
		Faults: []Fault{FaultKill, FaultIsolateLeader, FaultTransferPause}}
	var wg sync.WaitGroup
	stop := nem.Start(context.Background(), duration-time.Second, &wg)
	defer stop()
	rec := runTxnLinWorkload(ctx, t, seed, clients, []string{"tl/g0", "tl/g1", "tl/g2", "tl/g3"})
	wg.Wait()
	t.Logf("faults: %s", nem.Summary())
	if rec.n["move/ok"] < 20 || rec.n["read2/ok"] < 20 {
		t.Fatalf("too few transactions succeeded: %v", rec.n)
	}
	checkTxnLin(t, rec)
}

// TestTxnTwoShardLinearizable: the pair model again, with each pair's two
// keys on different shards, so every move and two-key read is a two-phase
// commit (issue 13: "a porcupine check of single-key get/put/CAS mixed with
// two-key transactions under faults"; invariants I2, I8). Single-key
// operations meet the transactions' intents.
func TestTxnTwoShardLinearizable(t *testing.T) {
	seed := testSeed(t)
	groups := []string{"t2/g0", "t2/g1", "t2/g2"}
	var splits []string
	for _, g := range groups {
		splits = append(splits, g+"/b")
	}
	c := StartCluster(t, ClusterConfig{InitialSplits: splits, Delayable: true})
	clients := NewClients(t, c, 6)
	const duration = 6 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	// After the faulted window the workload goes on, faults over, until the
	// history holds enough successes to prove something (a loaded machine
	// can spend the window on failovers and intents of killed coordinators,
	// which wait out the record timeout), for at most 30 s more.
	outer, cancelOuter := context.WithTimeout(context.Background(), duration+30*time.Second)
	defer cancelOuter()
	nem := &Nemesis{C: c, Seed: seed, Shards: []uint64{1, 2, 3, 4}, Interval: time.Second,
		Faults: []Fault{FaultKill, FaultIsolateLeader}}
	var wg sync.WaitGroup
	stop := nem.Start(context.Background(), duration-time.Second, &wg)
	defer stop()
	rec := runTxnLinWorkloadUntil(ctx, outer, t, seed, clients, groups, func(n map[string]int) bool {
		return n["move/ok"] >= 10 && n["read2/ok"] >= 10
	})
	wg.Wait()
	t.Logf("faults: %s", nem.Summary())
	if rec.n["move/ok"] < 10 || rec.n["read2/ok"] < 10 {
		t.Fatalf("too few transactions succeeded: %v", rec.n)
	}
	checkTxnLin(t, rec)
}

// TestTxnTwoShardLinearizableNegativeControl: with the knob that skips
// read intents (compared and read keys go unlocked), a two-key read can see
// one shard after a transaction's resolution and the other before it; the
// pair model must then find the history not linearizable. A pause before
// every resolution but the first widens that window so the control is
// reliable.
func TestTxnTwoShardLinearizableNegativeControl(t *testing.T) {
	seed := testSeed(t)
	groups := []string{"t2n/g0", "t2n/g1"}
	knobs := &api.TxnKnobs{SkipReadIntents: true, BeforeAction: func(_ string, a txn.Action) error {
		if a.Kind == txn.ActResolve && a.Shard%2 == 0 {
			time.Sleep(50 * time.Millisecond)
		}
		return nil
	}}
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"t2n/g0/b", "t2n/g1/a", "t2n/g1/b"}, TxnKnobs: knobs})
	clients := NewClients(t, c, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	rec := runTxnLinWorkload(ctx, t, seed, clients, groups)
	h := rec.history()
	res := porcupine.CheckOperationsTimeout(txnLinModel(), h, 60*time.Second)
	t.Logf("negative control: %d operations %v: %v", len(h), rec.n, res)
	if res != porcupine.Illegal {
		t.Fatalf("negative control: with read intents skipped the history was judged %v, want illegal", res)
	}
}
