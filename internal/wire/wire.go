// Package wire holds the building blocks of cairn's binary encodings, so
// every format is written and read by the same code: the tag/value fields of
// shard commands, stored records, range descriptors and lock records (fsm/,
// lock/), and the length-prefixed layouts of heartbeat frames, WAL records
// and raft log entries (shard/). Every encoding built from these is part of
// a log, snapshot, file or network format: never change what a helper
// writes; add a helper instead.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed wraps every error this package reports for input that does
// not decode. Packages map it to their own error (fsm.ErrInvalidCommand,
// lock.ErrCorrupt) at their boundary.
var ErrMalformed = errors.New("wire: malformed encoding")

// Wire types of the tag/value format. A tag is uvarint(field<<3 | type), as
// in protobuf, so a decoder can skip a field it does not know: that is what
// lets a newer writer add fields without breaking an older reader
// mid-upgrade.
const (
	TypeVarint = 0 // payload: one uvarint (signed values are zigzag encoded)
	TypeBytes  = 2 // payload: uvarint length, then that many bytes
)

// AppendTag appends the tag of field with wire type wt.
func AppendTag(b []byte, field, wt uint64) []byte {
	return binary.AppendUvarint(b, field<<3|wt)
}

// AppendUint appends a varint field. Zero is omitted: absent and zero decode
// the same way, which keeps encodings small and canonical.
func AppendUint(b []byte, field, v uint64) []byte {
	if v == 0 {
		return b
	}
	return binary.AppendUvarint(AppendTag(b, field, TypeVarint), v)
}

// AppendInt appends a signed varint field, zigzag encoded; zero is omitted.
func AppendInt(b []byte, field uint64, v int64) []byte {
	return AppendUint(b, field, Zigzag(v))
}

// AppendBytes appends a bytes field; an empty p is omitted.
func AppendBytes(b []byte, field uint64, p []byte) []byte {
	if len(p) == 0 {
		return b
	}
	return AppendBytesAlways(b, field, p)
}

// AppendBytesAlways appends a bytes field even when p is empty: for nested
// messages whose presence carries meaning (a Condition with Kind 0, a lock
// holder with every field zero).
func AppendBytesAlways(b []byte, field uint64, p []byte) []byte {
	b = binary.AppendUvarint(AppendTag(b, field, TypeBytes), uint64(len(p)))
	return append(b, p...)
}

// BeginNested starts a nested message in field, written in place: its tag,
// then room for the longest length. Append the message's fields to the
// returned slice, then call EndNested with the mark. The bytes are exactly
// AppendBytesAlways(b, field, message)'s, without first building the
// message in a slice of its own (and growing that one too).
func BeginNested(b []byte, field uint64) ([]byte, int) {
	b = AppendTag(b, field, TypeBytes)
	return append(b, nestedRoom[:]...), len(b)
}

// EndNested ends the nested message BeginNested started at mark: it writes
// the message's length and moves the message up against it.
func EndNested(b []byte, mark int) []byte {
	body := len(b) - mark - len(nestedRoom)
	var l [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(l[:], uint64(body))
	copy(b[mark:], l[:n])
	copy(b[mark+n:], b[mark+len(nestedRoom):])
	return b[:mark+n+body]
}

var nestedRoom [binary.MaxVarintLen64]byte

// Zigzag maps a signed value to an unsigned one with small magnitudes small.
func Zigzag(v int64) uint64 { return uint64(v<<1) ^ uint64(v>>63) }

// Unzigzag inverts Zigzag.
func Unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// Walk calls fn for every field of b in order. For a varint field v is the
// value and p nil; for a bytes field p aliases b. Every length is checked
// against the remaining input before use, so a crafted length can never
// cause an allocation or a read past the end. fn ignores fields it does not
// know. Errors of the format wrap ErrMalformed; an error from fn is returned
// as it is.
func Walk(b []byte, fn func(field, wt, v uint64, p []byte) error) error {
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 {
			return fmt.Errorf("%w: bad tag", ErrMalformed)
		}
		b = b[n:]
		field, wt := tag>>3, tag&7
		if wt != TypeVarint && wt != TypeBytes {
			return fmt.Errorf("%w: field %d: unknown wire type %d", ErrMalformed, field, wt)
		}
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return fmt.Errorf("%w: field %d: bad varint", ErrMalformed, field)
		}
		b = b[n:]
		var p []byte
		if wt == TypeBytes {
			if v > uint64(len(b)) {
				return fmt.Errorf("%w: field %d: length %d exceeds remaining %d bytes",
					ErrMalformed, field, v, len(b))
			}
			p, b, v = b[:v], b[v:], 0
		}
		if err := fn(field, wt, v, p); err != nil {
			return err
		}
	}
	return nil
}

// WantType rejects a known field sent with the wrong wire type; treating it
// as unknown instead would silently drop data. The error wraps ErrMalformed.
func WantType(field, got, want uint64) error {
	if got != want {
		return fmt.Errorf("%w: field %d: wire type %d, want %d", ErrMalformed, field, got, want)
	}
	return nil
}
