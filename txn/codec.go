package txn

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cairndb/cairn/internal/wire"
)

// Encodings of the request (the body of a one-shard transaction's raft
// entry and of a prepare), the record and the intent. Each starts with a
// format byte, then the tag/value fields of internal/wire (the helpers
// fsm/ and lock/ use); unknown fields are skipped, so a field can be added
// without a new format; zero values are omitted. Field numbers are part of
// the log and snapshot formats: never renumber.

// ErrCorrupt wraps every decoding error. A stored record or intent that
// fails to decode is corrupt state; a command that fails is rejected the
// same way on every replica.
var ErrCorrupt = errors.New("txn: malformed encoding")

const (
	requestFormat = 1
	recordFormat  = 1
	intentFormat  = 1
)

const (
	reqCompare   = 1
	reqSuccess   = 2
	reqFailure   = 3
	reqRequestID = 4

	cmpKey    = 1
	cmpTarget = 2
	cmpOp     = 3
	cmpValue  = 4

	opKind  = 1
	opKey   = 2
	opValue = 3
	opTTL   = 4
	opFence = 5

	fenceLock  = 1
	fenceToken = 2

	wKey    = 1
	wValue  = 2
	wDelete = 3
	wTTL    = 4
	wFence  = 5

	partShard = 1
	partEpoch = 2
	partKey   = 3 // nested KeyIntent

	kiKey    = 1
	kiAccess = 2

	recID           = 1
	recState        = 2
	recAnchor       = 3
	recParticipant  = 4
	recWrite        = 5
	recSucceeded    = 6
	recHeartbeat    = 7
	recPriority     = 8
	recEpoch        = 9
	recRequestID    = 10
	recCause        = 11
	recForgotten    = 12
	inTxnID         = 1
	inKey           = 2
	inAccess        = 3
	inWrite         = 4
	inAnchor        = 5
	inPriority      = 6
	inPreparedAt    = 7
	inPreparedSeq   = 8
	maxParticipants = HardMaxOps
)

func corrupt(err error) error {
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return err
}

func corruptf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// walk is wire.Walk with every field's wire type checked against want.
func walk(b []byte, want func(field uint64) uint64, fn func(field, v uint64, p []byte) error) error {
	return corrupt(wire.Walk(b, func(field, wt, v uint64, p []byte) error {
		if w := want(field); w != math.MaxUint64 {
			if err := wire.WantType(field, wt, w); err != nil {
				return err
			}
		}
		return fn(field, v, p)
	}))
}

// typesOf returns a want function: the listed fields are bytes, the known
// ones varints, the rest unknown (skipped).
func typesOf(known uint64, bytesFields ...uint64) func(uint64) uint64 {
	return func(f uint64) uint64 {
		if f == 0 || f > known {
			return math.MaxUint64
		}
		for _, b := range bytesFields {
			if f == b {
				return wire.TypeBytes
			}
		}
		return wire.TypeVarint
	}
}

// EncodeRequest encodes a request for a raft entry.
func EncodeRequest(r *Request) []byte {
	return appendRequestBody(make([]byte, 0, RequestSize(r)), r)
}

// AppendRequest appends r's encoding to b as the nested message field:
// the bytes of wire.AppendBytesAlways(b, field, EncodeRequest(r)), built in
// place.
func AppendRequest(b []byte, field uint64, r *Request) []byte {
	b, m := wire.BeginNested(b, field)
	return wire.EndNested(appendRequestBody(b, r), m)
}

// RequestSize is about the length of r's encoding (at least it, for the
// usual small varints), so it is built in one allocation.
func RequestSize(r *Request) int {
	n := 16 + len(r.RequestID)
	for _, c := range r.Compare {
		n += len(c.Key) + len(c.Value) + 24
	}
	for _, ops := range [2][]Op{r.Success, r.Failure} {
		for _, o := range ops {
			n += len(o.Key) + len(o.Value) + 32
			if o.Fence != nil {
				n += len(o.Fence.Lock) + 24
			}
		}
	}
	return n
}

func appendRequestBody(b []byte, r *Request) []byte {
	b = append(b, requestFormat)
	for _, c := range r.Compare {
		var m int
		b, m = wire.BeginNested(b, reqCompare)
		b = wire.AppendBytes(b, cmpKey, c.Key)
		b = wire.AppendUint(b, cmpTarget, uint64(c.Target))
		b = wire.AppendUint(b, cmpOp, uint64(c.Op))
		b = wire.AppendBytes(b, cmpValue, c.Value)
		b = wire.EndNested(b, m)
	}
	for _, br := range [2]struct {
		f   uint64
		ops []Op
	}{{reqSuccess, r.Success}, {reqFailure, r.Failure}} {
		for _, o := range br.ops {
			var m int
			b, m = wire.BeginNested(b, br.f)
			b = wire.AppendUint(b, opKind, uint64(o.Kind))
			b = wire.AppendBytes(b, opKey, o.Key)
			b = wire.AppendBytes(b, opValue, o.Value)
			b = wire.AppendInt(b, opTTL, int64(o.TTL))
			b = appendFence(b, opFence, o.Fence)
			b = wire.EndNested(b, m)
		}
	}
	return wire.AppendBytes(b, reqRequestID, []byte(r.RequestID))
}

func appendFence(b []byte, field uint64, f *Fence) []byte {
	if f == nil {
		return b
	}
	b, m := wire.BeginNested(b, field)
	b = wire.AppendBytes(b, fenceLock, []byte(f.Lock))
	b = wire.AppendUint(b, fenceToken, f.Token)
	return wire.EndNested(b, m)
}

func decodeFence(p []byte) (*Fence, error) {
	f := &Fence{}
	err := walk(p, typesOf(2, fenceLock), func(field, v uint64, p []byte) error {
		switch field {
		case fenceLock:
			f.Lock = string(p)
		case fenceToken:
			f.Token = v
		}
		return nil
	})
	return f, err
}

// hardLimits are what any decoded request must satisfy, whatever the
// operator's limits were when it was proposed.
var hardLimits = Limits{MaxOps: HardMaxOps, MaxBytes: HardMaxBytes, MaxKeySize: MaxKeySize,
	MaxValueSize: MaxValueSize, MaxTTL: math.MaxInt64}

// DecodeRequest decodes an encoded request. It never panics, and a request
// it returns passes ValidateRequest under the hard limits; every error
// wraps ErrCorrupt. The result does not alias b.
func DecodeRequest(b []byte) (*Request, error) {
	if len(b) == 0 || b[0] != requestFormat {
		return nil, corruptf("request: unknown format")
	}
	r := &Request{}
	err := walk(b[1:], typesOf(4, reqCompare, reqSuccess, reqFailure, reqRequestID), func(field, v uint64, p []byte) error {
		if field <= reqFailure && len(r.Compare)+len(r.Success)+len(r.Failure) >= HardMaxOps {
			return corruptf("more than %d ops", HardMaxOps)
		}
		switch field {
		case reqCompare:
			var c Compare
			err := walk(p, typesOf(4, cmpKey, cmpValue), func(field, v uint64, p []byte) error {
				switch field {
				case cmpKey:
					c.Key = wire.Clone(p)
				case cmpTarget:
					c.Target = Target(min(v, math.MaxUint8))
				case cmpOp:
					c.Op = CmpOp(min(v, math.MaxUint8))
				case cmpValue:
					c.Value = wire.Clone(p)
				}
				return nil
			})
			if err != nil {
				return err
			}
			r.Compare = append(r.Compare, c)
		case reqSuccess, reqFailure:
			var o Op
			err := walk(p, typesOf(5, opKey, opValue, opFence), func(f, v uint64, p []byte) error {
				switch f {
				case opKind:
					o.Kind = OpKind(min(v, math.MaxUint8))
				case opKey:
					o.Key = wire.Clone(p)
				case opValue:
					o.Value = wire.Clone(p)
				case opTTL:
					o.TTL = time.Duration(wire.Unzigzag(v))
				case opFence:
					fe, err := decodeFence(p)
					if err != nil {
						return err
					}
					o.Fence = fe
				}
				return nil
			})
			if err != nil {
				return err
			}
			if field == reqSuccess {
				r.Success = append(r.Success, o)
			} else {
				r.Failure = append(r.Failure, o)
			}
		case reqRequestID:
			r.RequestID = string(p)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	if err := hardLimits.ValidateRequest(r); err != nil {
		return nil, corruptf("request: %v", err)
	}
	return r, nil
}

func appendWrite(b []byte, field uint64, w *Write) []byte {
	b, m := wire.BeginNested(b, field)
	b = wire.AppendBytes(b, wKey, w.Key)
	b = wire.AppendBytes(b, wValue, w.Value)
	if w.Delete {
		b = wire.AppendUint(b, wDelete, 1)
	}
	b = wire.AppendInt(b, wTTL, int64(w.TTL))
	b = appendFence(b, wFence, w.Fence)
	return wire.EndNested(b, m)
}

func decodeWrite(p []byte) (Write, error) {
	var w Write
	err := walk(p, typesOf(5, wKey, wValue, wFence), func(f, v uint64, p []byte) error {
		switch f {
		case wKey:
			w.Key = wire.Clone(p)
		case wValue:
			w.Value = wire.Clone(p)
		case wDelete:
			w.Delete = v != 0
		case wTTL:
			w.TTL = time.Duration(wire.Unzigzag(v))
		case wFence:
			fe, err := decodeFence(p)
			if err != nil {
				return err
			}
			w.Fence = fe
		}
		return nil
	})
	if err != nil {
		return w, err
	}
	if err := checkKeyValue(w.Key, w.Value); err != nil {
		return w, err
	}
	if w.TTL < 0 || (w.Delete && (len(w.Value) > 0 || w.TTL != 0)) {
		return w, corruptf("write %q: bad ttl or delete with a value", w.Key)
	}
	if w.Fence != nil && (w.Fence.Lock == "" || len(w.Fence.Lock) > MaxFenceLockSize || w.Fence.Token == 0) {
		return w, corruptf("write %q: bad fence", w.Key)
	}
	return w, nil
}

func checkKeyValue(k, v []byte) error {
	if len(k) == 0 || len(k) > MaxKeySize {
		return corruptf("key of %d bytes", len(k))
	}
	if len(v) > MaxValueSize {
		return corruptf("value of %d bytes", len(v))
	}
	return nil
}

func appendParticipant(b []byte, p *Participant) []byte {
	b, m := wire.BeginNested(b, recParticipant)
	b = wire.AppendUint(b, partShard, p.Shard)
	b = wire.AppendUint(b, partEpoch, p.Epoch)
	for _, k := range p.Keys {
		var km int
		b, km = wire.BeginNested(b, partKey)
		b = wire.AppendBytes(b, kiKey, k.Key)
		b = wire.AppendUint(b, kiAccess, uint64(k.Access))
		b = wire.EndNested(b, km)
	}
	return wire.EndNested(b, m)
}

// RecordSize is about the length of r's encoding, so it is built in one
// allocation.
func RecordSize(r *Record) int {
	n := 64 + len(r.ID) + len(r.Anchor) + len(r.RequestID)
	for _, p := range r.Participants {
		n += 24
		for _, k := range p.Keys {
			n += len(k.Key) + 16
		}
	}
	for _, w := range r.WriteSet {
		n += len(w.Key) + len(w.Value) + 24
		if w.Fence != nil {
			n += len(w.Fence.Lock) + 24
		}
	}
	return n
}

func decodeParticipant(p []byte) (Participant, error) {
	var pt Participant
	err := walk(p, typesOf(3, partKey), func(f, v uint64, p []byte) error {
		switch f {
		case partShard:
			pt.Shard = v
		case partEpoch:
			pt.Epoch = v
		case partKey:
			if len(pt.Keys) >= HardMaxOps {
				return corruptf("more than %d keys", HardMaxOps)
			}
			var k KeyIntent
			err := walk(p, typesOf(2, kiKey), func(f, v uint64, p []byte) error {
				switch f {
				case kiKey:
					k.Key = wire.Clone(p)
				case kiAccess:
					k.Access = Access(min(v, math.MaxUint8))
				}
				return nil
			})
			if err != nil {
				return err
			}
			if err := checkKeyValue(k.Key, nil); err != nil {
				return err
			}
			if k.Access != AccessRead && k.Access != AccessWrite {
				return corruptf("key %q: access %d", k.Key, k.Access)
			}
			pt.Keys = append(pt.Keys, k)
		}
		return nil
	})
	return pt, err
}

// EncodeRecord encodes a record for storage. The participants' Compare,
// Success and Failure indices are not stored (recovery needs shards and
// keys only).
func EncodeRecord(r *Record) []byte {
	return appendRecordBody(make([]byte, 0, RecordSize(r)), r)
}

// AppendRecord appends r's encoding to b as the nested message field: the
// bytes of wire.AppendBytesAlways(b, field, EncodeRecord(r)), built in
// place.
func AppendRecord(b []byte, field uint64, r *Record) []byte {
	b, m := wire.BeginNested(b, field)
	return wire.EndNested(appendRecordBody(b, r), m)
}

func appendRecordBody(b []byte, r *Record) []byte {
	b = append(b, recordFormat)
	b = wire.AppendBytes(b, recID, []byte(r.ID))
	b = wire.AppendUint(b, recState, uint64(r.State))
	b = wire.AppendBytes(b, recAnchor, r.Anchor)
	for i := range r.Participants {
		b = appendParticipant(b, &r.Participants[i])
	}
	for i := range r.WriteSet {
		b = appendWrite(b, recWrite, &r.WriteSet[i])
	}
	if r.Succeeded {
		b = wire.AppendUint(b, recSucceeded, 1)
	}
	b = wire.AppendInt(b, recHeartbeat, r.Heartbeat)
	b = wire.AppendUint(b, recPriority, r.Priority)
	b = wire.AppendUint(b, recEpoch, r.Epoch)
	b = wire.AppendBytes(b, recRequestID, []byte(r.RequestID))
	b = wire.AppendUint(b, recCause, uint64(r.Cause))
	if r.Forgotten {
		b = wire.AppendUint(b, recForgotten, 1)
	}
	return b
}

// DecodeRecord decodes a stored record. It never panics and never returns a
// record outside the package's bounds; every error wraps ErrCorrupt. The
// result does not alias b.
func DecodeRecord(b []byte) (*Record, error) {
	if len(b) == 0 || b[0] != recordFormat {
		return nil, corruptf("record: unknown format")
	}
	r := &Record{}
	err := walk(b[1:], typesOf(12, recID, recAnchor, recParticipant, recWrite, recRequestID), func(f, v uint64, p []byte) error {
		switch f {
		case recID:
			r.ID = string(p)
		case recState:
			r.State = State(min(v, math.MaxUint8))
		case recAnchor:
			r.Anchor = wire.Clone(p)
		case recParticipant:
			if len(r.Participants) >= maxParticipants {
				return corruptf("more than %d participants", maxParticipants)
			}
			pt, err := decodeParticipant(p)
			if err != nil {
				return err
			}
			r.Participants = append(r.Participants, pt)
		case recWrite:
			if len(r.WriteSet) >= HardMaxOps {
				return corruptf("more than %d writes", HardMaxOps)
			}
			w, err := decodeWrite(p)
			if err != nil {
				return err
			}
			r.WriteSet = append(r.WriteSet, w)
		case recSucceeded:
			r.Succeeded = v != 0
		case recHeartbeat:
			r.Heartbeat = wire.Unzigzag(v)
		case recPriority:
			r.Priority = v
		case recEpoch:
			r.Epoch = v
		case recRequestID:
			r.RequestID = string(p)
		case recCause:
			r.Cause = Cause(min(v, math.MaxUint8))
		case recForgotten:
			r.Forgotten = v != 0
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	switch {
	case r.ID == "" || len(r.ID) > MaxIDSize:
		return nil, corruptf("record: id of %d bytes", len(r.ID))
	case r.State < Pending || r.State > Aborted:
		return nil, corruptf("record %q: state %d", r.ID, r.State)
	case len(r.RequestID) > MaxRequestIDSize:
		return nil, corruptf("record %q: request id of %d bytes", r.ID, len(r.RequestID))
	case r.Cause > CauseCoordinator || (r.Cause != CauseNone && r.State != Aborted):
		return nil, corruptf("record %q: cause %d in state %s", r.ID, r.Cause, r.State)
	case r.Forgotten && r.State != Committed:
		return nil, corruptf("record %q: forgotten in state %s", r.ID, r.State)
	case len(r.Anchor) > MaxKeySize:
		return nil, corruptf("record %q: anchor of %d bytes", r.ID, len(r.Anchor))
	}
	return r, nil
}

// RecordSummary is what a sweep needs of a stored record to pick it.
type RecordSummary struct {
	State     State
	Heartbeat int64
	Forgotten bool
}

// PeekRecord reads a stored record's state, heartbeat and forgotten flag
// without decoding (or copying) its participants, write set or strings: a
// sweep looks at every record of a shard twice a second and decodes only
// the few it picks. On a record DecodeRecord accepts it agrees with it
// (FuzzDecodeRecord); errors wrap ErrCorrupt.
func PeekRecord(b []byte) (RecordSummary, error) {
	var r RecordSummary
	if len(b) == 0 || b[0] != recordFormat {
		return r, corruptf("record: unknown format")
	}
	err := walk(b[1:], typesOf(12, recID, recAnchor, recParticipant, recWrite, recRequestID), func(f, v uint64, _ []byte) error {
		switch f {
		case recState:
			r.State = State(min(v, math.MaxUint8))
		case recHeartbeat:
			r.Heartbeat = wire.Unzigzag(v)
		case recForgotten:
			r.Forgotten = v != 0
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("record: %w", err)
	}
	if r.State < Pending || r.State > Aborted {
		return r, corruptf("record: state %d", r.State)
	}
	return r, nil
}

// EncodeIntent encodes an intent for storage.
func EncodeIntent(in *Intent) []byte {
	n := 64 + len(in.TxnID) + len(in.Key) + len(in.Anchor)
	if w := in.Write; w != nil {
		n += len(w.Key) + len(w.Value) + 24
		if w.Fence != nil {
			n += len(w.Fence.Lock) + 24
		}
	}
	b := append(make([]byte, 0, n), intentFormat)
	b = wire.AppendBytes(b, inTxnID, []byte(in.TxnID))
	b = wire.AppendBytes(b, inKey, in.Key)
	b = wire.AppendUint(b, inAccess, uint64(in.Access))
	if in.Write != nil {
		b = appendWrite(b, inWrite, in.Write)
	}
	b = wire.AppendBytes(b, inAnchor, in.Anchor)
	b = wire.AppendUint(b, inPriority, in.Priority)
	b = wire.AppendInt(b, inPreparedAt, in.PreparedAt)
	return wire.AppendUint(b, inPreparedSeq, in.PreparedSeq)
}

// DecodeIntent decodes a stored intent; as DecodeRecord.
func DecodeIntent(b []byte) (*Intent, error) {
	if len(b) == 0 || b[0] != intentFormat {
		return nil, corruptf("intent: unknown format")
	}
	in := &Intent{}
	err := walk(b[1:], typesOf(8, inTxnID, inKey, inWrite, inAnchor), func(f, v uint64, p []byte) error {
		switch f {
		case inTxnID:
			in.TxnID = string(p)
		case inKey:
			in.Key = wire.Clone(p)
		case inAccess:
			in.Access = Access(min(v, math.MaxUint8))
		case inWrite:
			w, err := decodeWrite(p)
			if err != nil {
				return err
			}
			in.Write = &w
		case inAnchor:
			in.Anchor = wire.Clone(p)
		case inPriority:
			in.Priority = v
		case inPreparedAt:
			in.PreparedAt = wire.Unzigzag(v)
		case inPreparedSeq:
			in.PreparedSeq = v
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("intent: %w", err)
	}
	switch {
	case in.TxnID == "" || len(in.TxnID) > MaxIDSize:
		return nil, corruptf("intent: txn id of %d bytes", len(in.TxnID))
	case in.Access != AccessRead && in.Access != AccessWrite:
		return nil, corruptf("intent %q: access %d", in.TxnID, in.Access)
	case in.Write != nil && (in.Access != AccessWrite || string(in.Write.Key) != string(in.Key)):
		return nil, corruptf("intent %q: pending write does not match its key or access", in.TxnID)
	case len(in.Anchor) == 0 || len(in.Anchor) > MaxKeySize:
		return nil, corruptf("intent %q: anchor of %d bytes", in.TxnID, len(in.Anchor))
	}
	if err := checkKeyValue(in.Key, nil); err != nil {
		return nil, fmt.Errorf("intent %q: %w", in.TxnID, err)
	}
	return in, nil
}
