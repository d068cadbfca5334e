package fsm

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/internal/wire"
)

func TestCommandRoundTrip(t *testing.T) {
	key := []byte("k")
	cases := []struct {
		name string
		cmd  Command
	}{
		{"minimal put", Command{Op: OpPut, Key: key}},
		{"full put", Command{
			Op: OpPut, RequestID: "req-1", Epoch: 9, Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC).UnixNano(),
			Key: key, Value: []byte("value"), TTL: 30 * time.Second, Prev: true,
			Cond:  &Condition{Kind: CondValue, Value: []byte("old")},
			Fence: &Fence{Lock: "lock-a", Token: 1 << 40},
		}},
		{"negative time", Command{Op: OpPut, Key: key, Time: -12345}},
		{"cond mod index", Command{Op: OpPut, Key: key, Cond: &Condition{Kind: CondModIndex, ModIndex: 77}}},
		{"cond mod index zero", Command{Op: OpPut, Key: key, Cond: &Condition{Kind: CondModIndex}}},
		{"cond absent", Command{Op: OpPut, Key: key, Cond: &Condition{Kind: CondAbsent}}},
		{"cond none", Command{Op: OpPut, Key: key, Cond: &Condition{}}},
		{"delete", Command{Op: OpDelete, Key: key, Prev: true, Cond: &Condition{Kind: CondModIndex, ModIndex: 3}}},
		{"fenced delete", Command{Op: OpDelete, Key: key, Fence: &Fence{Lock: "l", Token: 0}}},
		{"expire", Command{Op: OpExpire, Key: key, ModIndex: 42, Time: 1}},
		{"noop", Command{Op: OpNoop}},
		{"max sizes", Command{Op: OpPut, Key: bytes.Repeat([]byte("k"), MaxKeySize),
			Value: bytes.Repeat([]byte("v"), MaxValueSize), RequestID: strings.Repeat("r", maxRequestIDSize)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := mustEncode(t, &tc.cmd)
			if b[0] != commandFormat {
				t.Fatalf("first byte %d, want format %d", b[0], commandFormat)
			}
			got, err := DecodeCommand(b)
			if err != nil {
				t.Fatalf("DecodeCommand: %v", err)
			}
			if !reflect.DeepEqual(got, &tc.cmd) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, &tc.cmd)
			}
		})
	}
}

func TestEncodeCommandRejects(t *testing.T) {
	cases := []struct {
		name string
		cmd  *Command
	}{
		{"nil", nil},
		{"no op", &Command{Key: []byte("k")}},
		{"unknown op", &Command{Op: 99, Key: []byte("k")}},
		{"empty key", &Command{Op: OpPut}},
		{"oversized key", &Command{Op: OpPut, Key: make([]byte, MaxKeySize+1)}},
		{"oversized value", &Command{Op: OpPut, Key: []byte("k"), Value: make([]byte, MaxValueSize+1)}},
		{"oversized request id", &Command{Op: OpPut, Key: []byte("k"), RequestID: strings.Repeat("r", maxRequestIDSize+1)}},
		{"negative ttl", &Command{Op: OpPut, Key: []byte("k"), TTL: -1}},
		{"unknown cond", &Command{Op: OpPut, Key: []byte("k"), Cond: &Condition{Kind: 9}}},
		{"empty lock", &Command{Op: OpPut, Key: []byte("k"), Fence: &Fence{Token: 1}}},
		{"NUL in lock", &Command{Op: OpPut, Key: []byte("k"), Fence: &Fence{Lock: "a\x00b", Token: 1}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := EncodeCommand(tc.cmd); !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("EncodeCommand error = %v, want ErrInvalidCommand", err)
			}
		})
	}
}

func TestDecodeCommandRejects(t *testing.T) {
	valid := mustEncode(t, put("k", "v"))
	cases := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"unknown version", append([]byte{2}, valid[1:]...)},
		{"truncated", valid[:len(valid)-1]},
		{"unknown op", []byte{commandFormat, cmdOp << 3, 9, cmdKey<<3 | wire.TypeBytes, 1, 'k'}},
		{"op too large", []byte{commandFormat, cmdOp << 3, 0x80, 0x02, cmdKey<<3 | wire.TypeBytes, 1, 'k'}},
		{"unknown wire type", append(append([]byte{}, valid...), 12<<3|5, 0)},
		{"key as varint", []byte{commandFormat, cmdOp << 3, 1, cmdKey << 3, 1}},
		{"length past end", []byte{commandFormat, cmdOp << 3, 1, cmdKey<<3 | wire.TypeBytes, 0xff, 0xff, 0xff, 0xff, 0x0f, 'k'}},
		{"varint overflow", []byte{commandFormat, cmdOp << 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := DecodeCommand(tc.b); !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("DecodeCommand = %+v, %v; want ErrInvalidCommand", c, err)
			}
		})
	}
}

// A proposer running a newer version may add fields: older replicas must
// skip them, not reject the entry.
func TestDecodeCommandSkipsUnknownFields(t *testing.T) {
	want := put("k", "v")
	b := mustEncode(t, want)
	b = wire.AppendUint(b, 100, 12345)
	b = wire.AppendBytes(b, 101, []byte("future"))
	got, err := DecodeCommand(b)
	if err != nil {
		t.Fatalf("DecodeCommand: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

// DecodeCommand must not alias its input: raft may reuse log buffers.
func TestDecodeCommandCopies(t *testing.T) {
	b := mustEncode(t, put("key", "value"))
	c, err := DecodeCommand(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0
	}
	if string(c.Key) != "key" || string(c.Value) != "value" {
		t.Fatalf("decoded command changed with its input: %q=%q", c.Key, c.Value)
	}
}

func TestResultRoundTrip(t *testing.T) {
	kv := &KV{Key: []byte("k"), Value: []byte("v"), CreateIndex: 1, ModIndex: 2, Version: 3, TTL: time.Second, Lease: "l"}
	cases := []*Result{
		{Index: 5},
		{Index: 5, KV: &KV{Key: []byte("k"), ModIndex: 5, CreateIndex: 5, Version: 1}, Prev: kv},
		{Index: 6, Deleted: 1},
		{Index: 7, Err: &ConditionError{Key: []byte("k"), Current: kv}},
		{Index: 7, Err: &ConditionError{Key: []byte("k")}},
		{Index: 8, Err: &StaleTokenError{Key: []byte("k"), Lock: "l", Token: 3, Accepted: 4}},
	}
	for _, want := range cases {
		got, err := decodeResult(encodeResult(want))
		if err != nil {
			t.Fatalf("decodeResult: %v", err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, want)
		}
	}
}

func FuzzDecodeCommand(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{commandFormat})
	f.Add(mustEncode(f, put("k", "v")))
	f.Add(mustEncode(f, &Command{Op: OpPut, Key: []byte("k"), RequestID: "r", Time: 5, TTL: time.Second,
		Cond: &Condition{Kind: CondValue, Value: []byte("x")}, Fence: &Fence{Lock: "l", Token: 2}, Prev: true}))
	f.Add(mustEncode(f, &Command{Op: OpExpire, Key: []byte("k"), ModIndex: 9}))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidCommand) {
				t.Fatalf("error %v does not wrap ErrInvalidCommand", err)
			}
			return
		}
		re, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("decoded command %+v does not re-encode: %v", c, err)
		}
		c2, err := DecodeCommand(re)
		if err != nil {
			t.Fatalf("re-encoded command does not decode: %v", err)
		}
		if !reflect.DeepEqual(c, c2) {
			t.Fatalf("decode(encode(x)) != x:\n got %+v\nwant %+v", c2, c)
		}
	})
}
