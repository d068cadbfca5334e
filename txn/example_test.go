package txn_test

import (
	"fmt"
	"time"

	"github.com/cairndb/cairn/txn"
)

// A transfer across two shards on the fast path (no compares), its
// coordinator gone after staging: a reader that meets an intent pushes the
// record once the heartbeat timed out, probes the participants, finds every
// intent in place and commits it. The record, applied in the anchor shard's
// log order, decides; time only said when to look.
func ExampleNextRecord() {
	req := &txn.Request{Success: []txn.Op{
		{Kind: txn.OpPut, Key: []byte("acct/a"), Value: []byte("0")},
		{Kind: txn.OpPut, Key: []byte("acct/x"), Value: []byte("10")},
	}}
	rt, _ := txn.Route(req, func(k []byte) (uint64, uint64, error) {
		if string(k) < "acct/m" {
			return 1, 5, nil
		}
		return 2, 9, nil
	})
	sec := int64(time.Second)
	rec, _ := txn.NextRecord(nil, txn.Event{Kind: txn.EvStage, ID: "t1", Now: 100 * sec, Anchor: rt.Anchor,
		Participants: rt.Participants, WriteSet: txn.Writes(req.Success), Succeeded: true, Priority: 1})
	fmt.Println("record on shard", rt.AnchorShard, "is", rec.State)

	_, eff := txn.NextRecord(rec, txn.Event{Kind: txn.EvPush, ID: "t1", Now: 105 * sec, Timeout: 10 * time.Second, PusherPriority: 9, PusherID: "t2"})
	fmt.Println("push while alive:", eff.Verdict)
	_, eff = txn.NextRecord(rec, txn.Event{Kind: txn.EvPush, ID: "t1", Now: 111 * sec, Timeout: 10 * time.Second})
	fmt.Println("push after the timeout:", eff.Verdict)

	all := true
	for _, p := range rt.Participants {
		has := func([]byte) bool { return true } // the shard holds t1's intent on every key
		all = all && txn.Probe(p.Keys, has) == txn.ProbePrepared
	}
	rec, eff = txn.NextRecord(rec, txn.Event{Kind: txn.EvRecover, ID: "t1", Now: 112 * sec, Epoch: rec.Epoch, AllPrepared: all})
	fmt.Println("recovery:", rec.State, "resolve:", eff.Resolve)

	r := txn.ResolveIntent(txn.Intent{TxnID: "t1", Key: []byte("acct/x"), Access: txn.AccessWrite, Anchor: rt.Anchor}, rec)
	fmt.Printf("acct/x: apply %q\n", r.Apply.Value)
	// Output:
	// record on shard 1 is staging
	// push while alive: wait
	// push after the timeout: need-recovery
	// recovery: committed resolve: true
	// acct/x: apply "10"
}
