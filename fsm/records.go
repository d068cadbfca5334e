package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/cairndb/cairn/internal/wire"
)

// Encodings of the values stored in bbolt. They are part of the on-disk and
// snapshot format, so each starts with a version byte (where it can grow) and
// uses the same tag/value fields as commands.

// errCorrupt marks stored state that fails to decode. Apply treats it as
// fatal: a replica cannot continue deterministically on a corrupt store.
var errCorrupt = errors.New("fsm: corrupt stored record")

const recordFormat = 1

// Field numbers of a stored or returned KV (nested inside results, too).
const (
	kvKey         = 1
	kvValue       = 2
	kvCreateIndex = 3
	kvModIndex    = 4
	kvVersion     = 5
	kvTTL         = 6
	kvLease       = 7
)

func appendKV(b []byte, kv *KV) []byte {
	b = wire.AppendBytes(b, kvKey, kv.Key)
	b = wire.AppendBytes(b, kvValue, kv.Value)
	b = wire.AppendUint(b, kvCreateIndex, kv.CreateIndex)
	b = wire.AppendUint(b, kvModIndex, kv.ModIndex)
	b = wire.AppendUint(b, kvVersion, kv.Version)
	b = wire.AppendInt(b, kvTTL, int64(kv.TTL))
	return wire.AppendBytes(b, kvLease, []byte(kv.Lease))
}

// appendNestedKV appends kv as a nested message in field: the bytes of
// wire.AppendBytesAlways(b, field, appendKV(nil, kv)), written in place.
func appendNestedKV(b []byte, field uint64, kv *KV) []byte {
	b, m := wire.BeginNested(b, field)
	return wire.EndNested(appendKV(b, kv), m)
}

func decodeKV(b []byte) (*KV, error) {
	kv := &KV{}
	err := walkFields(b, func(field, wt, v uint64, p []byte) error {
		switch field {
		case kvKey:
			kv.Key = cloneBytes(p)
		case kvValue:
			kv.Value = cloneBytes(p)
		case kvCreateIndex:
			kv.CreateIndex = v
		case kvModIndex:
			kv.ModIndex = v
		case kvVersion:
			kv.Version = v
		case kvTTL:
			kv.TTL = time.Duration(wire.Unzigzag(v))
		case kvLease:
			kv.Lease = string(p)
		}
		return nil
	})
	return kv, err
}

// encodeStored is the data bucket value: the key lives in the bbolt key, so
// it is left out here.
func encodeStored(kv *KV) []byte {
	meta := *kv
	meta.Key = nil
	return appendKV(append(make([]byte, 0, 48+len(kv.Value)+len(kv.Lease)), recordFormat), &meta)
}

// decodeStored decodes a data bucket value for key. withValue=false skips the
// value copy for key-only scans.
func decodeStored(key, b []byte, withValue bool) (*KV, error) {
	if len(b) == 0 || b[0] != recordFormat {
		return nil, fmt.Errorf("%w: data record for key %q", errCorrupt, key)
	}
	kv, err := decodeKV(b[1:])
	if err != nil {
		return nil, fmt.Errorf("%w: data record for key %q: %v", errCorrupt, key, err)
	}
	kv.Key = cloneBytes(key)
	if !withValue {
		kv.Value = nil
	}
	return kv, nil
}

// The ttl bucket value: 8-byte TTL in nanoseconds, then 8-byte mod_index.
func encodeTTL(ttl time.Duration, modIndex uint64) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(ttl))
	binary.BigEndian.PutUint64(b[8:], modIndex)
	return b
}

func decodeTTL(key, b []byte) (TTLEntry, error) {
	if len(b) != 16 {
		return TTLEntry{}, fmt.Errorf("%w: ttl record for key %q", errCorrupt, key)
	}
	return TTLEntry{
		Key:      cloneBytes(key),
		TTL:      time.Duration(binary.BigEndian.Uint64(b)),
		ModIndex: binary.BigEndian.Uint64(b[8:]),
	}, nil
}

// Field numbers of a Range descriptor.
const (
	rangeID      = 1
	rangeStart   = 2
	rangeEnd     = 3
	rangeEpoch   = 4
	rangeReplica = 5 // repeated
)

func encodeRange(r Range) []byte {
	b := []byte{recordFormat}
	b = wire.AppendUint(b, rangeID, r.ID)
	b = wire.AppendBytes(b, rangeStart, r.Start)
	b = wire.AppendBytes(b, rangeEnd, r.End)
	b = wire.AppendUint(b, rangeEpoch, r.Epoch)
	for _, id := range r.Replicas {
		b = wire.AppendBytesAlways(b, rangeReplica, []byte(id))
	}
	return b
}

func decodeRange(b []byte) (Range, error) {
	var r Range
	if len(b) == 0 || b[0] != recordFormat {
		return r, fmt.Errorf("%w: range descriptor", errCorrupt)
	}
	err := walkFields(b[1:], func(field, wt, v uint64, p []byte) error {
		switch field {
		case rangeID:
			r.ID = v
		case rangeStart:
			r.Start = cloneBytes(p)
		case rangeEnd:
			r.End = cloneBytes(p)
		case rangeEpoch:
			r.Epoch = v
		case rangeReplica:
			r.Replicas = append(r.Replicas, string(p))
		}
		return nil
	})
	if err != nil {
		return Range{}, fmt.Errorf("%w: range descriptor: %v", errCorrupt, err)
	}
	return r, nil
}

// cloneRange deep-copies r so callers cannot mutate the FSM's copy.
func cloneRange(r Range) Range {
	r.Start = cloneBytes(r.Start)
	r.End = cloneBytes(r.End)
	if r.Replicas != nil {
		r.Replicas = append([]string(nil), r.Replicas...)
	}
	return r
}
