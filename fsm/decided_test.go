package fsm

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/cairndb/cairn/txn"
)

// TestDecidedCacheBounded: the kept answers stay within their entry and byte
// bounds, oldest out first, and an answer too large to keep is not kept.
func TestDecidedCacheBounded(t *testing.T) {
	var d decidedCache
	base := decidedBytes.Load() // other tests' replicas, if any are open
	req := &txn.Request{Success: []txn.Op{tput("k", "v")}}
	answer := func(n int) *TxnCmdResult {
		return &TxnCmdResult{Reads: []TxnRead{{Key: []byte("k"), KV: &KV{Key: []byte("k"), Value: bytes.Repeat([]byte("v"), n)}}}}
	}
	for i := range 2 * decidedMaxEntries {
		d.put(&TxnCommand{ID: fmt.Sprintf("t%04d", i), Request: req}, answer(10))
	}
	if len(d.m) != decidedMaxEntries || len(d.order)-d.head != decidedMaxEntries {
		t.Fatalf("%d answers kept (%d in order), want %d", len(d.m), len(d.order)-d.head, decidedMaxEntries)
	}
	var res TxnCmdResult
	if d.get(&TxnCommand{ID: "t0000", Request: req}, &res) {
		t.Fatal("the oldest answer is still kept")
	}
	if !d.get(&TxnCommand{ID: fmt.Sprintf("t%04d", 2*decidedMaxEntries-1), Request: req}, &res) || len(res.Reads) != 1 {
		t.Fatalf("the newest answer is not kept: %+v", res)
	}
	for i := range 16 {
		d.put(&TxnCommand{ID: fmt.Sprintf("b%02d", i), Request: req}, answer(decidedMaxBytes/10))
	}
	if d.bytes > decidedMaxBytes {
		t.Fatalf("%d bytes kept, bound %d", d.bytes, decidedMaxBytes)
	}
	d.put(&TxnCommand{ID: "huge", Request: req}, answer(decidedMaxBytes/4))
	if d.get(&TxnCommand{ID: "huge", Request: req}, &res) {
		t.Fatal("an answer of a quarter of the bound was kept")
	}
	// Answers older than decidedMaxAge go at the next put.
	for _, a := range d.m {
		a.at = a.at.Add(-decidedMaxAge - time.Second)
	}
	d.put(&TxnCommand{ID: "fresh", Request: req}, answer(10))
	if len(d.m) != 1 || !d.get(&TxnCommand{ID: "fresh", Request: req}, &res) {
		t.Fatalf("%d answers kept after the others aged out, want only the fresh one", len(d.m))
	}
	// The node's budget: every cache of the process together (no other
	// test of this package runs in parallel with this one).
	if held := decidedBytes.Load() - base; held != int64(d.bytes) {
		t.Fatalf("the process holds %d bytes for this cache, which counts %d", held, d.bytes)
	}
	decidedBytes.Add(decidedNodeBytes)
	d.put(&TxnCommand{ID: "over", Request: req}, answer(10))
	decidedBytes.Add(-decidedNodeBytes)
	if d.get(&TxnCommand{ID: "over", Request: req}, &res) {
		t.Fatal("an answer was kept over the node's budget")
	}
	d.clear()
	if decidedBytes.Load() != base || len(d.m) != 0 {
		t.Fatalf("after clear the process holds %d bytes for this cache", decidedBytes.Load()-base)
	}
}

// TestDecidedCacheNodeBudgetKeepsFreshAnswers: when the node's budget is
// spent, aged answers of any replica (idle ones too) make room, and a
// replica makes room from its own oldest, so the fresh answers — the ones a
// coordinator asks for again within seconds — are kept; an aged answer is
// never served. The cache of a closed replica keeps nothing.
func TestDecidedCacheNodeBudgetKeepsFreshAnswers(t *testing.T) {
	req := &txn.Request{Success: []txn.Op{tput("k", "v")}}
	answer := func(n int) *TxnCmdResult {
		return &TxnCmdResult{Reads: []TxnRead{{Key: []byte("k"), KV: &KV{Key: []byte("k"), Value: bytes.Repeat([]byte("v"), n)}}}}
	}
	base := decidedBytes.Load()
	// Idle replicas full of aged answers hold the whole node budget.
	idle := make([]*decidedCache, decidedNodeBytes/decidedMaxBytes+1)
	for i := range idle {
		idle[i] = &decidedCache{}
		for j := 0; decidedBytes.Load()-base < int64(i+1)*decidedMaxBytes*9/10 && j < decidedMaxEntries; j++ {
			idle[i].put(&TxnCommand{ID: fmt.Sprintf("i%d-%d", i, j), Request: req}, answer(decidedMaxBytes/64))
		}
		for _, a := range idle[i].m {
			a.at = a.at.Add(-time.Hour)
		}
	}
	defer func() {
		for _, c := range idle {
			c.clear()
		}
	}()
	var res TxnCmdResult
	if idle[0].get(&TxnCommand{ID: "i0-0", Request: req}, &res) {
		t.Fatal("an answer an hour old was served")
	}
	var active decidedCache
	defer active.clear()
	active.put(&TxnCommand{ID: "fresh", Request: req}, answer(decidedMaxBytes/64))
	if !active.get(&TxnCommand{ID: "fresh", Request: req}, &res) {
		t.Fatalf("a fresh answer was not kept while idle replicas held %d bytes of aged ones", decidedBytes.Load()-base)
	}
	// A closed replica's cache keeps nothing (an apply racing Close).
	var closed decidedCache
	closed.clear()
	closed.put(&TxnCommand{ID: "late", Request: req}, answer(10))
	if closed.get(&TxnCommand{ID: "late", Request: req}, &res) || closed.bytes != 0 {
		t.Fatal("a closed cache kept an answer")
	}
}
