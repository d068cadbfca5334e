package fsm

import (
	"fmt"
	"time"

	"github.com/cairndb/cairn/internal/wire"
	"github.com/cairndb/cairn/txn"
)

// The encoding of a 2PC command's Value (fsm/txn2pc.go): a format byte, then
// internal/wire fields; an event travels as a record carrying its fields
// (txn.EncodeRecord) plus the event's own.

// Field numbers of TxnCommand.
const (
	tcID       = 1
	tcAnchor   = 2
	tcPriority = 3
	tcKey      = 4  // repeated, nested: 1 key, 2 access
	tcFence    = 5  // repeated: nested (1 key, 2 lock)
	tcEvent    = 6  // nested: 1 kind, 2 carrier record, 3 cause, 4 pusher priority, 5 pusher id, 6 timeout, 7 prepared at, 8 all prepared
	tcRecord   = 7  // txn.EncodeRecord
	tcUnlocked = 8  // repeated key
	tcPrepIdx  = 9  // 1: resolve writes with the prepare's index (TxnCommand.PreparedIndex)
	tcResolveH = 10 // 1: a record event that makes the record final resolves this shard's intents (ResolveHere)
	tcBatch    = 11 // repeated: a nested EncodeTxnCommand (resolve: more resolutions in the same entry)
	tcOneShard = 12 // 1: a prepare's begin first looks its request id up in the dedup table (CheckOneShard)
	tcRequest  = 13 // txn.EncodeRequest (decide: the request to evaluate)
	tcState    = 14 // repeated, nested: 1 key, 2 found, 3 value, 4 create index, 5 mod index, 6 version (decide: States)
	tcToken    = 15 // repeated, nested: 1 key, 2 lock, 3 accepted token (decide: Tokens)
	tcRider    = 16 // repeated: a nested EncodeTxnCommand (prepare, record: Riders; command level 2)
)

// appendTxnState appends the fields of one of a decide's States.
func appendTxnState(b []byte, st TxnRead) []byte {
	b = wire.AppendBytesAlways(b, 1, st.Key)
	if kv := st.KV; kv != nil {
		b = wire.AppendUint(b, 2, 1)
		b = wire.AppendBytes(b, 3, kv.Value)
		b = wire.AppendUint(b, 4, kv.CreateIndex)
		b = wire.AppendUint(b, 5, kv.ModIndex)
		b = wire.AppendUint(b, 6, kv.Version)
	}
	return b
}

// EncodeTxnCommand encodes a 2PC command's Value.
func EncodeTxnCommand(tc *TxnCommand) []byte {
	return appendTxnCommand(make([]byte, 0, txnCommandSize(tc)), tc)
}

// txnCommandSize is about the length of tc's encoding, so it is built in
// one allocation.
func txnCommandSize(tc *TxnCommand) int {
	n := 32 + len(tc.ID) + len(tc.Anchor)
	for _, k := range tc.Keys {
		n += len(k.Key) + 16
	}
	for _, f := range tc.Fences {
		n += len(f.Key) + 16
		if f.Fence != nil {
			n += len(f.Fence.Lock)
		}
	}
	if ev := tc.Event; ev != nil {
		n += 64 + len(ev.PusherID) + txn.RecordSize(&txn.Record{ID: ev.ID, Anchor: ev.Anchor,
			Participants: ev.Participants, WriteSet: ev.WriteSet, RequestID: ev.RequestID})
	}
	if tc.Record != nil {
		n += 16 + txn.RecordSize(tc.Record)
	}
	for _, k := range tc.Unlocked {
		n += len(k) + 8
	}
	for _, one := range tc.Batch {
		n += 8 + txnCommandSize(one)
	}
	if tc.Request != nil {
		n += 16 + txn.RequestSize(tc.Request)
	}
	for _, st := range tc.States {
		n += len(st.Key) + 48
		if st.KV != nil {
			n += len(st.KV.Value)
		}
	}
	for _, t := range tc.Tokens {
		n += len(t.Key) + 32
		if t.Fence != nil {
			n += len(t.Fence.Lock)
		}
	}
	for _, r := range tc.Riders {
		n += 8 + txnCommandSize(r)
	}
	return n
}

// appendTxnCommand appends tc's encoding to b, every nested message built
// in place (wire.BeginNested).
func appendTxnCommand(b []byte, tc *TxnCommand) []byte {
	var m int
	b = append(b, commandFormat)
	b = wire.AppendBytes(b, tcID, []byte(tc.ID))
	b = wire.AppendBytes(b, tcAnchor, tc.Anchor)
	b = wire.AppendUint(b, tcPriority, tc.Priority)
	for _, k := range tc.Keys {
		b, m = wire.BeginNested(b, tcKey)
		b = wire.AppendBytes(b, 1, k.Key)
		b = wire.AppendUint(b, 2, uint64(k.Access))
		b = wire.EndNested(b, m)
	}
	for _, f := range tc.Fences {
		b, m = wire.BeginNested(b, tcFence)
		b = wire.AppendBytes(b, 1, f.Key)
		if f.Fence != nil {
			b = wire.AppendBytes(b, 2, []byte(f.Fence.Lock))
		}
		b = wire.EndNested(b, m)
	}
	if ev := tc.Event; ev != nil {
		carrier := &txn.Record{ID: ev.ID, State: txn.Pending, Anchor: ev.Anchor, Participants: ev.Participants,
			WriteSet: ev.WriteSet, Succeeded: ev.Succeeded, Heartbeat: ev.Now, Priority: ev.Priority, Epoch: ev.Epoch,
			RequestID: ev.RequestID}
		b, m = wire.BeginNested(b, tcEvent)
		b = wire.AppendUint(b, 1, uint64(ev.Kind))
		b = txn.AppendRecord(b, 2, carrier)
		b = wire.AppendUint(b, 3, uint64(ev.Cause))
		b = wire.AppendUint(b, 4, ev.PusherPriority)
		b = wire.AppendBytes(b, 5, []byte(ev.PusherID))
		b = wire.AppendInt(b, 6, int64(ev.Timeout))
		b = wire.AppendInt(b, 7, ev.PreparedAt)
		if ev.AllPrepared {
			b = wire.AppendUint(b, 8, 1)
		}
		b = wire.EndNested(b, m)
	}
	if tc.Record != nil {
		b = txn.AppendRecord(b, tcRecord, tc.Record)
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
		b, m = wire.BeginNested(b, tcBatch)
		b = wire.EndNested(appendTxnCommand(b, one), m)
	}
	if tc.CheckOneShard {
		b = wire.AppendUint(b, tcOneShard, 1)
	}
	if tc.Request != nil {
		b = txn.AppendRequest(b, tcRequest, tc.Request)
	}
	for _, st := range tc.States {
		b, m = wire.BeginNested(b, tcState)
		b = wire.EndNested(appendTxnState(b, st), m)
	}
	for _, t := range tc.Tokens {
		b, m = wire.BeginNested(b, tcToken)
		b = wire.AppendBytesAlways(b, 1, t.Key)
		if t.Fence != nil {
			b = wire.AppendBytes(b, 2, []byte(t.Fence.Lock))
			b = wire.AppendUint(b, 3, t.Fence.Token)
		}
		b = wire.EndNested(b, m)
	}
	for _, r := range tc.Riders {
		b, m = wire.BeginNested(b, tcRider)
		b = wire.EndNested(appendTxnCommand(b, r), m)
	}
	return b
}

// DecodeTxnCommand decodes a 2PC command's Value; errors wrap
// ErrInvalidCommand.
func DecodeTxnCommand(b []byte) (*TxnCommand, error) { return decodeTxnCommand(b, false) }

func decodeTxnCommand(b []byte, nested bool) (*TxnCommand, error) {
	if len(b) == 0 || b[0] != commandFormat {
		return nil, fmt.Errorf("%w: txn command format", ErrInvalidCommand)
	}
	tc := &TxnCommand{}
	err := walkFields(b[1:], func(field, wt, v uint64, p []byte) error {
		switch field {
		case tcID:
			tc.ID = string(p)
		case tcAnchor:
			tc.Anchor = cloneBytes(p)
		case tcPriority:
			tc.Priority = v
		case tcKey:
			var k txn.KeyIntent
			err := walkFields(p, func(f, _, v uint64, p []byte) error {
				switch f {
				case 1:
					k.Key = cloneBytes(p)
				case 2:
					k.Access = txn.Access(min(v, 255))
				}
				return nil
			})
			if err != nil {
				return err
			}
			if len(k.Key) == 0 || len(k.Key) > MaxKeySize || (k.Access != txn.AccessRead && k.Access != txn.AccessWrite) {
				return fmt.Errorf("%w: txn command key", ErrInvalidCommand)
			}
			tc.Keys = append(tc.Keys, k)
		case tcFence:
			var w txn.Write
			err := walkFields(p, func(f, _, _ uint64, p []byte) error {
				switch f {
				case 1:
					w.Key = cloneBytes(p)
				case 2:
					w.Fence = &txn.Fence{Lock: string(p)}
				}
				return nil
			})
			if err != nil {
				return err
			}
			tc.Fences = append(tc.Fences, w)
		case tcEvent:
			ev, err := decodeEvent(p)
			if err != nil {
				return err
			}
			tc.Event = ev
		case tcRecord:
			r, err := txn.DecodeRecord(p)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrInvalidCommand, err)
			}
			tc.Record = r
		case tcUnlocked:
			if len(p) == 0 || len(p) > MaxKeySize {
				return fmt.Errorf("%w: txn command unlocked key", ErrInvalidCommand)
			}
			tc.Unlocked = append(tc.Unlocked, cloneBytes(p))
		case tcPrepIdx:
			tc.PreparedIndex = v != 0
		case tcResolveH:
			tc.ResolveHere = v != 0
		case tcOneShard:
			tc.CheckOneShard = v != 0
		case tcRequest:
			req, err := txn.DecodeRequest(p)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrInvalidCommand, err)
			}
			tc.Request = req
		case tcState:
			var st TxnRead
			kv := &KV{}
			found := false
			err := walkFields(p, func(f, _, v uint64, p []byte) error {
				switch f {
				case 1:
					st.Key = cloneBytes(p)
				case 2:
					found = v != 0
				case 3:
					kv.Value = cloneBytes(p)
				case 4:
					kv.CreateIndex = v
				case 5:
					kv.ModIndex = v
				case 6:
					kv.Version = v
				}
				return nil
			})
			if err != nil {
				return err
			}
			if len(st.Key) == 0 || len(st.Key) > MaxKeySize {
				return fmt.Errorf("%w: txn command state key", ErrInvalidCommand)
			}
			if found {
				kv.Key, st.KV = st.Key, kv
			}
			tc.States = append(tc.States, st)
		case tcToken:
			w := txn.Write{Fence: &txn.Fence{}}
			err := walkFields(p, func(f, _, v uint64, p []byte) error {
				switch f {
				case 1:
					w.Key = cloneBytes(p)
				case 2:
					w.Fence.Lock = string(p)
				case 3:
					w.Fence.Token = v
				}
				return nil
			})
			if err != nil {
				return err
			}
			tc.Tokens = append(tc.Tokens, w)
		case tcBatch, tcRider:
			if nested {
				return fmt.Errorf("%w: txn command batch or rider inside a batch or rider", ErrInvalidCommand)
			}
			one, err := decodeTxnCommand(p, true)
			if err != nil {
				return err
			}
			if field == tcBatch {
				tc.Batch = append(tc.Batch, one)
			} else {
				tc.Riders = append(tc.Riders, one)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if tc.ID == "" || len(tc.ID) > txn.MaxIDSize {
		return nil, fmt.Errorf("%w: txn command id", ErrInvalidCommand)
	}
	return tc, nil
}

func decodeEvent(p []byte) (*txn.Event, error) {
	ev := &txn.Event{}
	var carrier *txn.Record
	err := walkFields(p, func(f, _, v uint64, p []byte) error {
		switch f {
		case 1:
			ev.Kind = txn.EventKind(min(v, 255))
		case 2:
			r, err := txn.DecodeRecord(p)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrInvalidCommand, err)
			}
			carrier = r
		case 3:
			ev.Cause = txn.Cause(min(v, 255))
		case 4:
			ev.PusherPriority = v
		case 5:
			ev.PusherID = string(p)
		case 6:
			ev.Timeout = time.Duration(wire.Unzigzag(v))
		case 7:
			ev.PreparedAt = wire.Unzigzag(v)
		case 8:
			ev.AllPrepared = v != 0
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if carrier == nil {
		return nil, fmt.Errorf("%w: txn event without its record fields", ErrInvalidCommand)
	}
	ev.ID, ev.Anchor, ev.Participants, ev.WriteSet = carrier.ID, carrier.Anchor, carrier.Participants, carrier.WriteSet
	ev.Succeeded, ev.Now, ev.Priority, ev.Epoch, ev.RequestID = carrier.Succeeded, carrier.Heartbeat, carrier.Priority, carrier.Epoch, carrier.RequestID
	return ev, nil
}
