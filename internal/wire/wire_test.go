package wire

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"testing"
)

// The bytes every helper writes are part of log, snapshot, file and network
// formats (fsm TestBinaryEncodingsAreCf3dc0ds, test/TestUpgradeOpensOldDataDir
// pin the formats built from them); pin the helpers' own output here too.
func TestAppendBytesArePinned(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"uint", AppendUint(nil, 3, 300), []byte{3 << 3, 0xac, 0x02}},
		{"uint zero omitted", AppendUint(nil, 3, 0), nil},
		{"int negative", AppendInt(nil, 4, -2), []byte{4 << 3, 3}},
		{"int positive", AppendInt(nil, 4, 2), []byte{4 << 3, 4}},
		{"bytes", AppendBytes(nil, 5, []byte("ab")), []byte{5<<3 | TypeBytes, 2, 'a', 'b'}},
		{"bytes empty omitted", AppendBytes(nil, 5, nil), nil},
		{"bytes always", AppendBytesAlways(nil, 8, nil), []byte{8<<3 | TypeBytes, 0}},
		{"large field", AppendTag(nil, 100, TypeVarint), []byte{0xa0, 0x06}},
		{"len bytes", AppendLenBytes([]byte{9}, []byte("xyz")), []byte{9, 3, 'x', 'y', 'z'}},
	}
	for _, tt := range tests {
		if !bytes.Equal(tt.got, tt.want) {
			t.Errorf("%s: % x, want % x", tt.name, tt.got, tt.want)
		}
	}
	for _, v := range []int64{0, 1, -1, math.MaxInt64, math.MinInt64} {
		if got := Unzigzag(Zigzag(v)); got != v {
			t.Errorf("Unzigzag(Zigzag(%d)) = %d", v, got)
		}
	}
}

func TestWalk(t *testing.T) {
	b := AppendUint(nil, 1, 7)
	b = AppendBytes(b, 2, []byte("v"))
	b = AppendUint(b, 99, 1) // unknown to the reader: still walked, the caller skips it
	var got []uint64
	err := Walk(b, func(field, wt, v uint64, p []byte) error {
		got = append(got, field, wt, v, uint64(len(p)))
		return nil
	})
	want := []uint64{1, TypeVarint, 7, 0, 2, TypeBytes, 0, 1, 99, TypeVarint, 1, 0}
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("Walk: %v %v, want %v", got, err, want)
	}
	for name, in := range map[string][]byte{
		"bad tag":          {0x80},
		"unknown type":     {1<<3 | 5, 0},
		"bad varint":       {1 << 3, 0x80},
		"length past end":  {1<<3 | TypeBytes, 5, 'a'},
		"huge length":      {1<<3 | TypeBytes, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"wrong wire type":  nil,
		"error from fn":    AppendUint(nil, 1, 1),
		"nested malformed": AppendBytesAlways(nil, 1, []byte{0x80}),
	} {
		fnErr := errors.New("fn")
		err := Walk(in, func(field, wt, v uint64, p []byte) error {
			if name == "error from fn" {
				return fnErr
			}
			if p != nil {
				return Walk(p, func(uint64, uint64, uint64, []byte) error { return nil })
			}
			return nil
		})
		switch name {
		case "wrong wire type":
			err = WantType(1, TypeVarint, TypeBytes)
		case "error from fn":
			if err != fnErr {
				t.Errorf("%s: %v, want fn's error unchanged", name, err)
			}
			continue
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestReader(t *testing.T) {
	b := []byte{5, 0xfe}
	b = AppendLenBytes(b, []byte("id"))
	b = AppendLenBytes(b, nil)
	b = append(b, 3) // -2 as a signed varint is 3
	r := NewReader(b)
	if v, c := r.Uvarint(), r.Byte(); v != 5 || c != 0xfe {
		t.Fatalf("Uvarint, Byte = %d, %d", v, c)
	}
	id := r.Bytes(2)
	if string(id) != "id" || r.Blob() != nil || r.Varint() != -2 || r.Finish() != nil {
		t.Fatalf("Bytes %q, then err %v", id, r.Err())
	}
	b[3] = 'X'
	if string(id) != "id" {
		t.Fatal("Bytes aliases its input")
	}

	for name, read := range map[string]func(r *Reader){
		"truncated byte":  func(r *Reader) { r.Byte() },
		"bad uvarint":     func(r *Reader) { r.Uvarint() },
		"bad varint":      func(r *Reader) { r.Varint() },
		"over max":        func(r *Reader) { r.Bytes(1) },
		"count over rest": func(r *Reader) { r.Count() },
		"trailing":        func(r *Reader) { r.Uvarint() },
	} {
		in := map[string][]byte{
			"truncated byte":  nil,
			"bad uvarint":     {0x80},
			"bad varint":      {0x80},
			"over max":        {2, 'a', 'b'},
			"count over rest": {9, 1},
			"trailing":        {1, 2},
		}[name]
		r := NewReader(in)
		read(r)
		// The first error sticks: later reads return zero values.
		if err := r.Finish(); !errors.Is(err, ErrMalformed) || r.Uvarint() != 0 || r.Bytes(10) != nil {
			t.Errorf("%s: Finish() = %v, want ErrMalformed, sticky", name, err)
		}
	}
}

// FuzzWalk: no input makes Walk or a Reader panic or read past the end.
func FuzzWalk(f *testing.F) {
	f.Add(AppendBytes(AppendUint(nil, 1, 300), 2, []byte("v")))
	f.Add([]byte{1<<3 | TypeBytes, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = Walk(b, func(field, wt, v uint64, p []byte) error {
			if wt == TypeBytes && len(p) > len(b) {
				t.Fatalf("field %d: %d bytes from a %d byte input", field, len(p), len(b))
			}
			return nil
		})
		r := NewReader(b)
		for range r.Count() {
			r.Uvarint()
			r.Blob()
			r.Varint()
			r.Byte()
		}
		_ = r.Finish()
	})
}

// TestNestedInPlace: a message written in place between BeginNested and
// EndNested is byte for byte AppendBytesAlways of the same message, at
// every length around a varint boundary and after existing bytes.
func TestNestedInPlace(t *testing.T) {
	for _, n := range []int{0, 1, 126, 127, 128, 129, 16383, 16384, 70000} {
		msg := make([]byte, n)
		for i := range msg {
			msg[i] = byte(i * 7)
		}
		prefix := []byte{1, 2, 3}
		want := AppendBytesAlways(append([]byte(nil), prefix...), 9, msg)
		b, mark := BeginNested(append([]byte(nil), prefix...), 9)
		b = append(b, msg...)
		if got := EndNested(b, mark); !bytes.Equal(got, want) {
			t.Fatalf("length %d: in place % x..., want % x...", n, got[:min(len(got), 12)], want[:min(len(want), 12)])
		}
	}
}

// TestClone: a copy that never aliases its input, nil for empty.
func TestClone(t *testing.T) {
	in := []byte("abc")
	out := Clone(in)
	in[0] = 'x'
	if string(out) != "abc" {
		t.Fatalf("Clone aliases its input: %q", out)
	}
	if Clone(nil) != nil || Clone([]byte{}) != nil {
		t.Fatal("Clone of empty is not nil")
	}
}
