package wire

import (
	"encoding/binary"
	"fmt"
	"math"
)

// The fixed-layout formats (heartbeat frames, WAL records, raft log entries)
// are sequences of uvarints, varints, single bytes and length-prefixed byte
// strings, in an order both sides know. AppendLenBytes writes a byte string;
// Reader reads them back.

// AppendLenBytes appends uvarint(len(p)) and p.
func AppendLenBytes(b, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

// Reader reads a fixed-layout body. The first error sticks: later reads
// return zero values, and Err or Finish reports it, wrapping ErrMalformed.
// A Reader never allocates more than its input holds.
type Reader struct {
	b   []byte
	err error
}

// NewReader reads b; the values it returns never alias b.
func NewReader(b []byte) *Reader { return &Reader{b: b} }

// Uvarint reads an unsigned varint.
func (r *Reader) Uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: varint", ErrMalformed)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Varint reads a signed (binary.AppendVarint) varint.
func (r *Reader) Varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = fmt.Errorf("%w: varint", ErrMalformed)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// Byte reads one byte.
func (r *Reader) Byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.err = fmt.Errorf("%w: truncated", ErrMalformed)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

// Count reads an item count, bounded by what the rest of the input could
// hold (each item takes at least a byte).
func (r *Reader) Count() int {
	n := r.Uvarint()
	if r.err == nil && n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: count %d", ErrMalformed, n)
		return 0
	}
	return int(n)
}

// Bytes reads a length-prefixed byte string of at most max bytes, copied;
// nil when empty.
func (r *Reader) Bytes(max uint64) []byte {
	n := r.Uvarint()
	if r.err != nil {
		return nil
	}
	if n > max || n > uint64(len(r.b)) {
		r.err = fmt.Errorf("%w: field length %d", ErrMalformed, n)
		return nil
	}
	if n == 0 {
		return nil
	}
	v := append([]byte(nil), r.b[:n]...)
	r.b = r.b[n:]
	return v
}

// Blob reads a length-prefixed byte string of any length the input holds.
func (r *Reader) Blob() []byte { return r.Bytes(math.MaxUint64) }

// Rest returns the unread input, aliasing it, and consumes it: for a body
// whose tail another decoder reads.
func (r *Reader) Rest() []byte {
	b := r.b
	r.b = nil
	return b
}

// Clone copies p, so a decoded value never aliases the buffer it came in
// (a raft entry, a request body), and maps empty to nil, so decode(encode(x))
// is deep-equal to x.
func Clone(p []byte) []byte {
	if len(p) == 0 {
		return nil
	}
	return append([]byte(nil), p...)
}

// Err reports the first error.
func (r *Reader) Err() error { return r.err }

// Finish reports the first error, or unread trailing bytes.
func (r *Reader) Finish() error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(r.b))
	}
	return r.err
}
