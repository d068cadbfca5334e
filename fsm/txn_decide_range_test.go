package fsm

import (
	"errors"
	"testing"

	"github.com/cairndb/cairn/txn"
)

// TestTxnDecideRefusesKeysOutsideItsRange: a decide whose anchor
// participant names a key this shard no longer owns (a split moved it
// after the coordinator routed) is refused with wrong_shard, and nothing is
// written: no record, no key in or out of the range (I5). The check is
// decodeTxnCommand's, which every 2PC command passes through; this pins it
// for the decide, which writes its keys directly.
func TestTxnDecideRefusesKeysOutsideItsRange(t *testing.T) {
	f := txnState(t)
	tc := decideCmd(decideReq(""), []TxnRead{{Key: []byte("unused")}})
	tc.Keys = append(tc.Keys, txn.KeyIntent{Key: []byte(otherKey), Access: txn.AccessWrite}) // otherKey is outside testRange
	tc.States = nil
	before := countBucket(t, f, bucketData)
	r := mustApply(t, f, 4, tcCmd(OpTxnRecord, "bal", tc))
	var ws *WrongShardError
	if !errors.As(r.Err, &ws) || string(ws.Key) != otherKey {
		t.Fatalf("decide with a key outside the range: %+v, want wrong_shard on %q", r, otherKey)
	}
	if rec, _, _ := f.TxnRecord(decideID); rec != nil {
		t.Fatalf("record %+v written by a refused decide", rec)
	}
	if kv := mustGet(t, f, "bal"); string(kv.Value) != "10" {
		t.Fatalf("bal = %+v after a refused decide", kv)
	}
	if n := countBucket(t, f, bucketData); n != before {
		t.Fatalf("data bucket holds %d keys after a refused decide, %d before", n, before)
	}
	if n := countBucket(t, f, bucketIntents); n != 0 {
		t.Fatalf("%d keys hold intents after a refused decide", n)
	}
}
