package fsm

import (
	"encoding/binary"
	"fmt"
)

// The tag/value wire format shared by commands, results, stored records and
// range descriptors. A tag is uvarint(field<<3 | wireType), as in protobuf,
// so a decoder can skip a field it does not know: that is what lets a newer
// proposer add fields without breaking older replicas mid-upgrade.
const (
	wireVarint = 0 // payload: one uvarint (signed values are zigzag encoded)
	wireBytes  = 2 // payload: uvarint length, then that many bytes
)

func appendTag(b []byte, field, wt uint64) []byte {
	return binary.AppendUvarint(b, field<<3|wt)
}

// appendUintField omits zero values: absent and zero decode the same way,
// which keeps entries small and the encoding canonical.
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

// appendBytesAlways writes the field even when empty: used for nested
// messages whose presence carries meaning (a Condition with Kind 0).
func appendBytesAlways(b []byte, field uint64, p []byte) []byte {
	b = binary.AppendUvarint(appendTag(b, field, wireBytes), uint64(len(p)))
	return append(b, p...)
}

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// walkFields calls fn for every field of b in order. For a varint field v is
// the value and p nil; for a bytes field p aliases b. Every length is checked
// against the remaining input before use, so a crafted length can never cause
// an allocation or a read past the end. fn ignores fields it does not know.
func walkFields(b []byte, fn func(field, wt, v uint64, p []byte) error) error {
	for len(b) > 0 {
		tag, n := binary.Uvarint(b)
		if n <= 0 {
			return fmt.Errorf("%w: bad tag", ErrInvalidCommand)
		}
		b = b[n:]
		field, wt := tag>>3, tag&7
		if wt != wireVarint && wt != wireBytes {
			return fmt.Errorf("%w: field %d: unknown wire type %d", ErrInvalidCommand, field, wt)
		}
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return fmt.Errorf("%w: field %d: bad varint", ErrInvalidCommand, field)
		}
		b = b[n:]
		var p []byte
		if wt == wireBytes {
			if v > uint64(len(b)) {
				return fmt.Errorf("%w: field %d: length %d exceeds remaining %d bytes",
					ErrInvalidCommand, field, v, len(b))
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
		return fmt.Errorf("%w: field %d: wire type %d, want %d", ErrInvalidCommand, field, got, want)
	}
	return nil
}

// cloneBytes copies p so decoded values never alias the input buffer, and
// maps empty to nil so decode(encode(x)) is deep-equal to x.
func cloneBytes(p []byte) []byte {
	if len(p) == 0 {
		return nil
	}
	return append([]byte(nil), p...)
}
