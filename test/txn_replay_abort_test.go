package test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairndb/cairn/api"
	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/txn"
)

// TestTxnRetryAbortedAfterOneShardCommit (I7): a request id that committed
// as a one-shard transaction, retried after a split spread its keys over two
// shards, must answer the stored outcome even when the retry's record is
// aborted under it and its coordinator learns that from a begin (not from
// its decide, which looks the request id up). Before, the retry answered
// txn_aborted, which invites a caller to run a committed transaction again
// as a new one (review finding under client.Txn.CommitRetry).
func TestTxnRetryAbortedAfterOneShardCommit(t *testing.T) {
	rid := fmt.Sprintf("gap-%d", time.Now().UnixNano())
	id := txn.IDForRequest(rid)
	var armed atomic.Bool
	var slept, aborted atomic.Bool
	var c *Cluster
	knobs := &api.TxnKnobs{BeforeAction: func(tid string, a txn.Action) error {
		if tid != id || !armed.Load() {
			return nil
		}
		switch {
		case a.Kind == txn.ActPrepare && slept.CompareAndSwap(false, true):
			// The prepares outlive a heartbeat interval: the coordinator
			// begins the record before it decides.
			time.Sleep(2500 * time.Millisecond)
		case a.Kind == txn.ActBegin && aborted.CompareAndSwap(false, true):
			// Before the begin lands, a pusher aborts the record.
			ev := &txn.Event{Kind: txn.EvAbort, ID: id, Anchor: []byte("gap/a"), Cause: txn.CauseConflict,
				Now: time.Now().UnixNano()}
			cmd, err := fsm.EncodeCommand(&fsm.Command{Op: fsm.OpTxnRecord, Key: ev.Anchor,
				Value: fsm.EncodeTxnCommand(&fsm.TxnCommand{ID: id, Event: ev})})
			if err != nil {
				return err
			}
			res, err := Do(Context(t, 10*time.Second), "POST", c.Node(0).HTTPAddr, "/internal/v1/txn/propose",
				map[string]any{"key": []byte("gap/a"), "cmd": cmd})
			if err != nil || res.Status != 200 {
				t.Errorf("abort the record: %v %v", res, err)
			}
		}
		return nil
	}}
	c = StartCluster(t, ClusterConfig{TxnKnobs: knobs})
	cl := NewClients(t, c, 1)[0]
	ctx := Context(t, 90*time.Second)

	tx := cl.Txn().Then(client.OpPut("gap/a", "1"), client.OpPut("gap/z", "1")).WithRequestID(rid)
	first, err := tx.Commit(ctx)
	if err != nil || !first.Succeeded || len(first.Shards) != 1 {
		t.Fatalf("first, on one shard: %+v %v", first, err)
	}
	splitForTxns(t, ctx, c, cl, "gap/m", "gap/b", "gap/y")
	armed.Store(true)
	retry, err := tx.Commit(ctx)
	if !slept.Load() || !aborted.Load() {
		t.Fatalf("the retry did not take the path under test (slept %v, aborted %v): %+v %v", slept.Load(), aborted.Load(), retry, err)
	}
	if err != nil || !retry.Succeeded || !retry.Replay {
		t.Fatalf("retry of a committed request id: %+v %v, want the stored outcome (a replay)", retry, err)
	}
}
