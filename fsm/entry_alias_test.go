package fsm

import (
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/lock"
	"github.com/cairndb/cairn/txn"
)

// TestApplyKeepsNothingOfTheEntry: apply decodes a transaction, lock or
// batch command's Value without copying it (decodeCommand, nestedValue), so
// nothing apply keeps may point into the entry's bytes: raft holds them in
// its log cache, and a proposer's buffer is its own. One replica's entries
// are overwritten right after each applies; its results, state and reads
// must equal a replica's whose entries were left alone. Each kind of
// command whose Value is an encoding is here: a one-shard transaction, a
// batch of prepares, a prepare with riders, a begin, a commit, a resolve
// (its record carries the values it writes) and a lock acquire.
func TestApplyKeepsNothingOfTheEntry(t *testing.T) {
	prep := func(id, key string) []byte {
		return mustEncode(t, tcCmd(OpTxnPrepare, key, &TxnCommand{ID: id, Anchor: []byte("anchor"), Priority: 5, Keys: wkeys(key)}))
	}
	commit := &txn.Event{Kind: txn.EvCommit, ID: "t1", Anchor: []byte("bal"), Succeeded: true,
		WriteSet: []txn.Write{{Key: []byte("bal"), Value: []byte("eleven")}}}
	steps := []func(prev []*Result) *Command{
		func([]*Result) *Command {
			return txnCmd(&txn.Request{RequestID: "r1", Compare: []txn.Compare{cmpv("name", txn.TargetValue, txn.CmpEq, "bob")},
				Success: []txn.Op{tput("name", "carol"), tget("name")}})
		},
		func([]*Result) *Command {
			return &Command{Op: OpTxnBatch, Time: time.Unix(1000, 0).UnixNano(),
				Value: EncodeTxnBatch([][]byte{prep("t1", "bal"), prep("t2", "other")})}
		},
		func([]*Result) *Command {
			return tcCmd(OpTxnRecord, "bal", &TxnCommand{ID: "t1", Event: &txn.Event{Kind: txn.EvBegin, ID: "t1", Anchor: []byte("bal"), Now: 1}})
		},
		func([]*Result) *Command { return tcCmd(OpTxnRecord, "bal", &TxnCommand{ID: "t1", Event: commit}) },
		func(prev []*Result) *Command {
			return tcCmd(OpTxnResolve, "bal", &TxnCommand{ID: "t1", Keys: wkeys("bal"), Record: prev[3].TwoPC.Record, PreparedIndex: true})
		},
		func([]*Result) *Command {
			return lockCommand(t, lock.Acquire{Name: "lk", Owner: "o-1", TTL: 10 * time.Second, Limit: 1, WaiterID: "w1"}, lockNow)
		},
	}
	run := func(scribble bool) ([]*Result, *FSM) {
		f := txnState(t)
		var out []*Result
		for i, s := range steps {
			l := &raft.Log{Index: uint64(10 + i), Term: 1, Type: raft.LogCommand, Data: mustEncode(t, s(out))}
			r, ok := f.Apply(l).(*Result)
			if !ok || r == nil {
				t.Fatalf("step %d: Apply returned %T", i, r)
			}
			if scribble {
				for j := range l.Data {
					l.Data[j] = 0xA5
				}
			}
			out = append(out, r)
		}
		return out, f
	}
	want, clean := run(false)
	got, scribbled := run(true)
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("step %d: result %+v after its entry was overwritten, want %+v", i, got[i], want[i])
		}
	}
	if r := want[3]; r.Err != nil || r.TwoPC == nil || r.TwoPC.Record == nil || r.TwoPC.Record.State != txn.Committed {
		t.Fatalf("the commit step did not commit: %+v", r)
	}
	if kv := mustGet(t, scribbled, "bal"); kv == nil || string(kv.Value) != "eleven" {
		t.Fatalf("bal = %+v, want the resolved eleven", kv)
	}
	if kv := mustGet(t, scribbled, "name"); kv == nil || string(kv.Value) != "carol" {
		t.Fatalf("name = %+v, want carol", kv)
	}
	if rec := mustLockRecord(t, scribbled, "lk"); !reflect.DeepEqual(rec, mustLockRecord(t, clean, "lk")) {
		t.Fatalf("lock record %+v differs from the clean replica's", rec)
	}
	_, h1 := mustHash(t, clean)
	_, h2 := mustHash(t, scribbled)
	if !reflect.DeepEqual(h1, h2) {
		t.Fatal("the replica whose entries were overwritten differs from the clean one")
	}
}
