package lock

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/internal/wire"
)

func sampleRecord() *Record {
	return &Record{
		Name:  "jobs/daily",
		Limit: 3,
		Holders: []Holder{
			{Token: 41, Owner: "worker-3", TTL: 15 * time.Second, WaiterID: "r1", GrantSeq: 41, RenewSeq: 50},
			{Token: 44, Owner: "worker-4", TTL: time.Minute, LockDelay: 5 * time.Second, WaiterID: "r2", GrantSeq: 44, RenewSeq: 44},
		},
		Waiters: []Waiter{
			{ID: "r3", Owner: "worker-5", Mode: Shared, TTL: 10 * time.Second, Deadline: 1_800_000_000_000_000_000, Seq: 45},
			{ID: "r4", Deadline: -5, Seq: 46}, // a proposer clock before 1970 still round-trips
		},
		LastToken: 44,
		DelaySeq:  40,
		Delay:     3 * time.Second,
		ChangeSeq: 44,
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for _, r := range []*Record{sampleRecord(), {Name: "x", Limit: 1, DelaySeq: 9, Delay: time.Second}} {
		b := EncodeRecord(r)
		if b[0] != recordFormat {
			t.Fatalf("first byte %d, want the format version %d", b[0], recordFormat)
		}
		got, err := DecodeRecord(b)
		if err != nil {
			t.Fatalf("DecodeRecord: %v", err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
		}
	}
}

// A newer version's extra field is skipped; a different version byte, a
// truncated record or a record breaking the bounds is refused as corrupt.
func TestRecordDecodeRejects(t *testing.T) {
	good := EncodeRecord(sampleRecord())
	withExtra := append(append([]byte(nil), good...), wire.AppendUint(nil, 99, 7)...)
	if r, err := DecodeRecord(withExtra); err != nil || !reflect.DeepEqual(r, sampleRecord()) {
		t.Fatalf("unknown field not skipped: %v", err)
	}
	bad := map[string][]byte{
		"empty":          nil,
		"version 2":      append([]byte{2}, good[1:]...),
		"truncated":      good[:len(good)-3],
		"no name":        EncodeRecord(&Record{Limit: 1}),
		"name with NUL":  EncodeRecord(&Record{Name: "a\x00", Limit: 1}),
		"token 0":        EncodeRecord(&Record{Name: "a", Limit: 1, Holders: []Holder{{Owner: "x"}}}),
		"bad mode":       EncodeRecord(&Record{Name: "a", Limit: 1, Holders: []Holder{{Token: 1, Mode: 3}}}),
		"limit too big":  EncodeRecord(&Record{Name: "a", Limit: MaxLimit + 1}),
		"owner too long": EncodeRecord(&Record{Name: "a", Limit: 1, Waiters: []Waiter{{ID: "w", Owner: strings.Repeat("o", MaxOwnerSize+1)}}}),
		"name as varint": {recordFormat, recName<<3 | wire.TypeVarint, 1},
	}
	for name, b := range bad {
		if _, err := DecodeRecord(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", name, err)
		}
	}
}

func sampleCommands() []Command {
	return []Command{
		Acquire{Name: "jobs/daily", Owner: "worker-3", TTL: 15 * time.Second, Wait: 10 * time.Second,
			Mode: Shared, Limit: 4, LockDelay: time.Second, WaiterID: "0001.c-1"},
		Acquire{Name: "a", Limit: -3}, // Apply refuses it, the codec carries it
		Renew{Name: "a", Token: 4711},
		Release{Name: "a", Token: 1},
		Expire{Name: "a", Token: 12, RenewSeq: 19},
		CancelWait{Name: "a", WaiterID: "w"},
		ExpireWaiters{Name: "a"},
		EndDelay{Name: "a", DelaySeq: 77},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range sampleCommands() {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("EncodeCommand(%+v): %v", c, err)
		}
		got, err := DecodeCommand(b)
		if err != nil {
			t.Fatalf("DecodeCommand(%+v): %v", c, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip:\n got %#v\nwant %#v", got, c)
		}
	}
	// Pointers encode like values.
	b1, _ := EncodeCommand(&Renew{Name: "a", Token: 3})
	b2, _ := EncodeCommand(Renew{Name: "a", Token: 3})
	if string(b1) != string(b2) {
		t.Fatal("pointer and value encode differently")
	}
}

func TestCommandCodecRejects(t *testing.T) {
	for _, c := range []Command{nil, Renew{}, Renew{Name: "a\x00"}, Acquire{Name: "a", Owner: strings.Repeat("o", MaxOwnerSize+1)}} {
		if _, err := EncodeCommand(c); !errors.Is(err, ErrCorrupt) {
			t.Errorf("EncodeCommand(%#v): err %v, want ErrCorrupt", c, err)
		}
	}
	good, _ := EncodeCommand(Renew{Name: "a", Token: 3})
	for name, b := range map[string][]byte{
		"empty":        nil,
		"version 2":    append([]byte{2}, good[1:]...),
		"unknown kind": append([]byte{commandFormat}, wire.AppendBytes(wire.AppendUint(nil, cmdKind, 99), cmdName, []byte("a"))...),
		"no kind":      append([]byte{commandFormat}, wire.AppendBytes(nil, cmdName, []byte("a"))...),
		"truncated":    good[:len(good)-1],
	} {
		if _, err := DecodeCommand(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: err %v, want ErrCorrupt", name, err)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{recordFormat})
	f.Add(EncodeRecord(sampleRecord()))
	f.Add(EncodeRecord(&Record{Name: "x", Limit: 1, DelaySeq: 3, Delay: time.Second}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		r2, err := DecodeRecord(EncodeRecord(r))
		if err != nil {
			t.Fatalf("decoded record %+v does not re-decode: %v", r, err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("decode(encode(x)) != x:\n got %+v\nwant %+v", r2, r)
		}
	})
}

func FuzzDecodeCommand(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{commandFormat})
	for _, c := range sampleCommands() {
		b, _ := EncodeCommand(c)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		re, err := EncodeCommand(c)
		if err != nil {
			t.Fatalf("decoded command %#v does not re-encode: %v", c, err)
		}
		c2, err := DecodeCommand(re)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("decode(encode(x)) != x: %#v vs %#v (%v)", c2, c, err)
		}
	})
}

// FuzzApply applies any decodable command to any decodable record: Apply
// never panics, never changes the record on an error, and what it stores
// decodes again and keeps the structural invariants (Invariant I9's
// increasing holder tokens among them).
func FuzzApply(f *testing.F) {
	rec := EncodeRecord(sampleRecord())
	for _, c := range sampleCommands() {
		b, _ := EncodeCommand(c)
		f.Add(rec, b, uint64(60), uint64(0), int64(0))
	}
	f.Fuzz(func(t *testing.T, rb, cb []byte, index, base uint64, now int64) {
		r, err := DecodeRecord(rb)
		if err != nil {
			r = nil
		}
		c, err := DecodeCommand(cb)
		if err != nil {
			return
		}
		if r != nil {
			r.Name = c.LockName()
		}
		before := r.Clone()
		next, res := Apply(r, c, index, base, now)
		if !reflect.DeepEqual(before, r.Clone()) {
			t.Fatal("Apply modified its input")
		}
		if res.Err != nil {
			if next != r {
				t.Fatal("a refused command returned a new record")
			}
			return
		}
		if next == nil {
			return
		}
		if _, err := DecodeRecord(EncodeRecord(next)); err != nil {
			t.Fatalf("stored record does not decode: %v", err)
		}
		if r == nil { // from a clean start the structural invariants must hold
			checkRecord(t, next)
		}
	})
}
