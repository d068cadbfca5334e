package lock

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The tag/value wire format of fsm/wire.go, copied so that lock/ does not
// import fsm/ (fsm will import lock). A tag is uvarint(field<<3 | wireType),
// so a decoder skips fields it does not know. These helpers should move to
// a shared internal package (internal/tlv, say) that both use; until then
// keep the two copies byte-compatible.
const (
	wireVarint = 0 // payload: one uvarint (signed values are zigzag encoded)
	wireBytes  = 2 // payload: uvarint length, then that many bytes
)

// ErrCorrupt wraps every decoding error of a record or a command. A record
// that fails to decode is corrupt stored state; a command that fails is
// rejected the same way on every replica.
var ErrCorrupt = errors.New("lock: malformed encoding")

func appendTag(b []byte, field, wt uint64) []byte {
	return binary.AppendUvarint(b, field<<3|wt)
}

// appendUintField omits zero values: absent and zero decode the same way,
// which keeps the encoding small and canonical.
func appendUintField(b []byte, field, v uint64) []byte {
	if v == 0 {
		return b
	}
	return binary.AppendUvarint(appendTag(b, field, wireVarint), v)
}

func appendIntField(b []byte, field uint64, v int64) []byte {
	return appendUintField(b, field, zigzag(v))
}

func appendBytesField(b []byte, field uint64, p []byte) []byte {
	if len(p) == 0 {
		return b
	}
	return appendBytesAlways(b, field, p)
}

// appendBytesAlways writes the field even when empty: nested messages whose
// presence carries meaning (a holder with every field zero still exists).
func appendBytesAlways(b []byte, field uint64, p []byte) []byte {
	b = binary.AppendUvarint(appendTag(b, field, wireBytes), uint64(len(p)))
	return append(b, p...)
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// walkFields calls fn for every field of b in order. For a varint field v is
// the value and p nil; for a bytes field p aliases b. Every length is checked
// against the remaining input before use. fn ignores fields it does not know.
func walkFields(b []byte, fn func(field, wt, v uint64, p []byte) error) error {
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 {
			return fmt.Errorf("%w: bad tag", ErrCorrupt)
		}
		b = b[n:]
		field, wt := tag>>3, tag&7
		if wt != wireVarint && wt != wireBytes {
			return fmt.Errorf("%w: field %d: unknown wire type %d", ErrCorrupt, field, wt)
		}
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return fmt.Errorf("%w: field %d: bad varint", ErrCorrupt, field)
		}
		b = b[n:]
		var p []byte
		if wt == wireBytes {
			if v > uint64(len(b)) {
				return fmt.Errorf("%w: field %d: length %d exceeds remaining %d bytes", ErrCorrupt, field, v, len(b))
			}
			p, b, v = b[:v], b[v:], 0
		}
		if err := fn(field, wt, v, p); err != nil {
			return err
		}
	}
	return nil
}

// wantType rejects a known field sent with the wrong wire type; treating it
// as unknown instead would silently drop data.
func wantType(field, got, want uint64) error {
	if got != want {
		return fmt.Errorf("%w: field %d: wire type %d, want %d", ErrCorrupt, field, got, want)
	}
	return nil
}
