package fsm

import (
	"bytes"
	"testing"
	"time"

	"github.com/cairndb/cairn/internal/wire"
	"github.com/cairndb/cairn/txn"
)

// encodeTxnCommandRef is EncodeTxnCommand as it was before its nested
// messages were built in place (each in a slice of its own, then copied):
// the bytes must not change (stored logs, mixed versions).
func encodeTxnCommandRef(tc *TxnCommand) []byte {
	b := []byte{commandFormat}
	b = wire.AppendBytes(b, tcID, []byte(tc.ID))
	b = wire.AppendBytes(b, tcAnchor, tc.Anchor)
	b = wire.AppendUint(b, tcPriority, tc.Priority)
	for _, k := range tc.Keys {
		kb := wire.AppendBytes(nil, 1, k.Key)
		kb = wire.AppendUint(kb, 2, uint64(k.Access))
		b = wire.AppendBytesAlways(b, tcKey, kb)
	}
	for _, f := range tc.Fences {
		fb := wire.AppendBytes(nil, 1, f.Key)
		if f.Fence != nil {
			fb = wire.AppendBytes(fb, 2, []byte(f.Fence.Lock))
		}
		b = wire.AppendBytesAlways(b, tcFence, fb)
	}
	if ev := tc.Event; ev != nil {
		carrier := &txn.Record{ID: ev.ID, State: txn.Pending, Anchor: ev.Anchor, Participants: ev.Participants,
			WriteSet: ev.WriteSet, Succeeded: ev.Succeeded, Heartbeat: ev.Now, Priority: ev.Priority, Epoch: ev.Epoch,
			RequestID: ev.RequestID}
		eb := wire.AppendUint(nil, 1, uint64(ev.Kind))
		eb = wire.AppendBytesAlways(eb, 2, txn.EncodeRecord(carrier))
		eb = wire.AppendUint(eb, 3, uint64(ev.Cause))
		eb = wire.AppendUint(eb, 4, ev.PusherPriority)
		eb = wire.AppendBytes(eb, 5, []byte(ev.PusherID))
		eb = wire.AppendInt(eb, 6, int64(ev.Timeout))
		eb = wire.AppendInt(eb, 7, ev.PreparedAt)
		if ev.AllPrepared {
			eb = wire.AppendUint(eb, 8, 1)
		}
		b = wire.AppendBytesAlways(b, tcEvent, eb)
	}
	if tc.Record != nil {
		b = wire.AppendBytesAlways(b, tcRecord, txn.EncodeRecord(tc.Record))
	}
	for _, k := range tc.Unlocked {
		b = wire.AppendBytesAlways(b, tcUnlocked, k)
	}
	if tc.PreparedIndex {
		b = wire.AppendUint(b, tcPrepIdx, 1)
	}
	if tc.ResolveHere {
		b = wire.AppendUint(b, tcResolveH, 1)
	}
	for _, one := range tc.Batch {
		b = wire.AppendBytesAlways(b, tcBatch, encodeTxnCommandRef(one))
	}
	if tc.CheckOneShard {
		b = wire.AppendUint(b, tcOneShard, 1)
	}
	if tc.Request != nil {
		b = wire.AppendBytesAlways(b, tcRequest, encodeRequestRef(tc.Request))
	}
	for _, st := range tc.States {
		b = wire.AppendBytesAlways(b, tcState, appendTxnState(nil, st))
	}
	for _, t := range tc.Tokens {
		tb := wire.AppendBytesAlways(nil, 1, t.Key)
		if t.Fence != nil {
			tb = wire.AppendBytes(tb, 2, []byte(t.Fence.Lock))
			tb = wire.AppendUint(tb, 3, t.Fence.Token)
		}
		b = wire.AppendBytesAlways(b, tcToken, tb)
	}
	for _, r := range tc.Riders {
		b = wire.AppendBytesAlways(b, tcRider, encodeTxnCommandRef(r))
	}
	return b
}

// encodeRequestRef is txn.EncodeRequest as it was before its nested
// messages were built in place.
func encodeRequestRef(r *txn.Request) []byte {
	b := []byte{1} // requestFormat
	var nb []byte
	for _, c := range r.Compare {
		nb = wire.AppendBytes(nb[:0], 1, c.Key)
		nb = wire.AppendUint(nb, 2, uint64(c.Target))
		nb = wire.AppendUint(nb, 3, uint64(c.Op))
		nb = wire.AppendBytes(nb, 4, c.Value)
		b = wire.AppendBytesAlways(b, 1, nb)
	}
	for _, br := range []struct {
		f   uint64
		ops []txn.Op
	}{{2, r.Success}, {3, r.Failure}} {
		for _, o := range br.ops {
			nb = wire.AppendUint(nb[:0], 1, uint64(o.Kind))
			nb = wire.AppendBytes(nb, 2, o.Key)
			nb = wire.AppendBytes(nb, 3, o.Value)
			nb = wire.AppendInt(nb, 4, int64(o.TTL))
			if f := o.Fence; f != nil {
				fb := wire.AppendBytes(nil, 1, []byte(f.Lock))
				fb = wire.AppendUint(fb, 2, f.Token)
				nb = wire.AppendBytesAlways(nb, 5, fb)
			}
			b = wire.AppendBytesAlways(b, br.f, nb)
		}
	}
	return wire.AppendBytes(b, 4, []byte(r.RequestID))
}

// TestEncodeTxnCommandBytesUnchanged: building the nested messages in place
// writes exactly the bytes the old encoder wrote, for every field: a
// command with riders, a batch, an event carrying a write set, a record, a
// request with both branches and fences, states and tokens. Negative
// control: a mutated command encodes differently.
func TestEncodeTxnCommandBytesUnchanged(t *testing.T) {
	big := bytes.Repeat([]byte("v"), 300) // lengths past one varint byte
	rec := &txn.Record{ID: "r1", State: txn.Committed, Anchor: []byte("a"), Epoch: 2, Heartbeat: -7, Priority: 5,
		Participants: []txn.Participant{{Shard: 3, Epoch: 1, Keys: wkeys("a", "b")}},
		WriteSet:     []txn.Write{{Key: []byte("a"), Value: big, TTL: time.Minute}, {Key: []byte("b"), Delete: true, Fence: &txn.Fence{Lock: "L", Token: 9}}},
		Succeeded:    true, RequestID: "req", Forgotten: true}
	req := &txn.Request{RequestID: "q",
		Compare: []txn.Compare{cmpv("a", txn.TargetValue, txn.CmpEq, "1"), cmpv("b", txn.TargetValue, txn.CmpEq, string(big))},
		Success: []txn.Op{tput("a", string(big)), {Kind: txn.OpPut, Key: []byte("f"), Value: []byte("x"), TTL: time.Second, Fence: &txn.Fence{Lock: "L", Token: 4}}},
		Failure: []txn.Op{{Kind: txn.OpGet, Key: []byte("a")}, {Kind: txn.OpDelete, Key: []byte("b")}}}
	rider := &TxnCommand{ID: "r1", Keys: wkeys("b"), Record: rec, PreparedIndex: true}
	forget := &TxnCommand{ID: "r2", Event: &txn.Event{Kind: txn.EvForget, ID: "r2", Anchor: []byte("a")}}
	cmds := []*TxnCommand{
		{ID: "x"},
		{ID: "x", Anchor: []byte("a"), Priority: 3, Keys: wkeys("a", "b"),
			Fences:   []txn.Write{{Key: []byte("a"), Fence: &txn.Fence{Lock: "L"}}, {Key: []byte("b")}},
			Unlocked: [][]byte{[]byte("c"), big}, PreparedIndex: true, ResolveHere: true, CheckOneShard: true,
			Batch:  []*TxnCommand{{ID: "y", Keys: wkeys("d"), Record: rec}, {ID: "z", Keys: wkeys("e")}},
			Riders: []*TxnCommand{rider, forget},
			Event: &txn.Event{Kind: txn.EvPush, ID: "x", Now: 5, Anchor: []byte("a"), Priority: 2, PusherPriority: 9, Epoch: 4,
				PusherID: "y", Timeout: time.Second, PreparedAt: 4, AllPrepared: true, Succeeded: true, RequestID: "rq", Cause: txn.CauseRecovery,
				Participants: rec.Participants, WriteSet: rec.WriteSet}},
		{ID: "d", Anchor: []byte("a"), Keys: wkeys("a"), Request: req, CheckOneShard: true, Riders: []*TxnCommand{forget},
			States: []TxnRead{{Key: []byte("z"), KV: &KV{Key: []byte("z"), Value: big, CreateIndex: 2, ModIndex: 300, Version: 2}}, {Key: []byte("y")}},
			Tokens: []txn.Write{{Key: []byte("z"), Fence: &txn.Fence{Lock: "L", Token: 7}}, {Key: []byte("w")}},
			Event:  &txn.Event{Kind: txn.EvDecide, ID: "d", Now: 5, Anchor: []byte("a"), Priority: 2}},
	}
	for i, tc := range cmds {
		got, want := EncodeTxnCommand(tc), encodeTxnCommandRef(tc)
		if !bytes.Equal(got, want) {
			t.Fatalf("command %d: encoding changed:\n got %x\nwant %x", i, got, want)
		}
		if _, err := DecodeTxnCommand(got); err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
	}
	mutated := *cmds[2]
	mutated.Tokens = []txn.Write{{Key: []byte("z"), Fence: &txn.Fence{Lock: "L", Token: 8}}}
	if bytes.Equal(EncodeTxnCommand(&mutated), encodeTxnCommandRef(cmds[2])) {
		t.Fatal("the comparison sees no difference between different commands")
	}
}

// BenchmarkEncodeTxnCommand: a two-shard decide (request with two 256-byte
// values, a state, a forget rider) through the old encoder and the one
// that builds nested messages in place.
func BenchmarkEncodeTxnCommand(b *testing.B) {
	v := bytes.Repeat([]byte("v"), 256)
	tc := &TxnCommand{ID: "t0123456789abcdef0123456789abcdef", Anchor: []byte("bench/00001234"), Keys: wkeys("bench/00001234"),
		Request: &txn.Request{RequestID: "0123456789ab.x",
			Compare: []txn.Compare{{Key: []byte("bench/00001234"), Target: txn.TargetModIndex, Op: txn.CmpGt, Value: []byte("0")},
				{Key: []byte("bench/00051234"), Target: txn.TargetModIndex, Op: txn.CmpGt, Value: []byte("0")}},
			Success: []txn.Op{{Kind: txn.OpPut, Key: []byte("bench/00001234"), Value: v}, {Kind: txn.OpPut, Key: []byte("bench/00051234"), Value: v}}},
		States:        []TxnRead{{Key: []byte("bench/00051234"), KV: &KV{Key: []byte("bench/00051234"), ModIndex: 7, CreateIndex: 3, Version: 2}}},
		CheckOneShard: true,
		Event:         &txn.Event{Kind: txn.EvDecide, ID: "t0123456789abcdef0123456789abcdef", Now: 5, Anchor: []byte("bench/00001234"), Priority: 2},
		Riders:        []*TxnCommand{{ID: "t1", Event: &txn.Event{Kind: txn.EvForget, ID: "t1", Anchor: []byte("bench/00001234")}}},
	}
	for _, c := range []struct {
		name string
		enc  func(*TxnCommand) []byte
	}{{"before", encodeTxnCommandRef}, {"in-place", EncodeTxnCommand}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				_ = c.enc(tc)
			}
		})
	}
}
