package fsm

import (
	"github.com/cairndb/cairn/internal/jsontag"

	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

// persistedJSONTypes are the fsm types written to disk as JSON: the range
// descriptor (inside the meta group's log and snapshots, placement/meta.go)
// and the durability sidecar (durability.go), which holds one.
var persistedJSONTypes = []any{Range{}, sidecar{}}

// Every field of a persisted JSON type names its key explicitly: a Go
// rename must not change, silently, what is written to disk or what old
// files decode into (fsm/DESIGN.md "Persisted formats").
func TestPersistedJSONTypesHaveExplicitTags(t *testing.T) {
	for _, p := range jsontag.Untagged(persistedJSONTypes...) {
		t.Errorf("persisted field %s has no explicit json key", p)
	}
}

// Range's JSON is exactly what cf3dc0d wrote (Go's default keys, kept as
// explicit tags), byte for byte: older binaries in a rolling upgrade read
// what newer ones write, and the reverse. The literal is a descriptor from
// the meta log of test/testdata/upgrade/vcf3dc0d.
func TestRangeJSONIsCf3dc0dEncoding(t *testing.T) {
	const old = `{"ID":2,"Start":"Zw==","End":null,"Epoch":1,"Replicas":["n1","n2","n3"]}`
	want := Range{ID: 2, Start: []byte("g"), Epoch: 1, Replicas: []string{"n1", "n2", "n3"}}
	var got Range
	if err := json.Unmarshal([]byte(old), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %+v, want %+v", got, want)
	}
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != old {
		t.Fatalf("encoded %s, want %s", b, old)
	}
	// The sidecar of the same fixture (n1/shards/1/fsm.db.state).
	const sc = `{"state":"clean","genesis":{"ID":1,"Start":null,"End":"Zw==","Epoch":1,"Replicas":["n1","n2","n3"]}}`
	var s sidecar
	if err := json.Unmarshal([]byte(sc), &s); err != nil {
		t.Fatal(err)
	}
	if s.State != sidecarClean || s.Genesis == nil || s.Genesis.ID != 1 || string(s.Genesis.End) != "g" || len(s.Genesis.Replicas) != 3 {
		t.Fatalf("sidecar decoded as %+v (genesis %+v)", s, s.Genesis)
	}
}

// The binary encodings of the log and of bbolt, byte for byte as cf3dc0d
// wrote them (fsm/DESIGN.md "Persisted formats"): each starts with its format
// byte and numbers its fields, so a change that alters these bytes is a
// format change and needs a new version, not an edit of this test.
func TestBinaryEncodingsAreCf3dc0ds(t *testing.T) {
	const epochTime = 1795966788167000000
	cases := []struct {
		name   string
		golden string
		encode func() ([]byte, error)
		decode func(b []byte) (any, error)
		want   any
	}{
		{
			name:   "put command",
			golden: "010801120b3030303166322e63312d3718022080ffbed1e891c7ec312a0874746c2f6c6f6e673206006b657074ff38808098dae5f4847042040801100f4a0f0a0a6a6f62732f6461696c7910e7245001",
			want: &Command{Op: OpPut, RequestID: "0001f2.c1-7", Epoch: 2, Time: epochTime, Key: []byte("ttl/long"), Value: []byte("\x00kept\xff"),
				TTL: 8760 * time.Hour, Cond: &Condition{Kind: CondModIndex, ModIndex: 15}, Fence: &Fence{Lock: "jobs/daily", Token: 4711}, Prev: true},
		},
		{
			name:   "split command",
			golden: "01081018012080ffbed1e891c7ec312a016d60036a146e31003132372e302e302e313a323731383100016a146e34003132372e302e302e313a32373138340000",
			want: &Command{Op: OpSplit, Epoch: 1, Time: epochTime, Key: []byte("m"), ChildID: 3,
				Servers: []Server{{ID: "n1", Address: "127.0.0.1:27181", Voter: true}, {ID: "n4", Address: "127.0.0.1:27184"}}},
		},
		{
			name:   "expire command",
			golden: "0108032a0974746c2f73686f7274582a",
			want:   &Command{Op: OpExpire, Key: []byte("ttl/short"), ModIndex: 42},
		},
		{
			name:   "data record",
			golden: "0112027600180c200f28023080c8afa0253a026c31",
			encode: func() ([]byte, error) {
				return encodeStored(&KV{Key: []byte("k"), Value: []byte("v\x00"), CreateIndex: 12, ModIndex: 15, Version: 2, TTL: 5 * time.Second, Lease: "l1"}), nil
			},
			decode: func(b []byte) (any, error) { return decodeStored([]byte("k"), b, true) },
			want:   &KV{Key: []byte("k"), Value: []byte("v\x00"), CreateIndex: 12, ModIndex: 15, Version: 2, TTL: 5 * time.Second, Lease: "l1"},
		},
		{
			name:   "ttl record",
			golden: "000000012a05f200000000000000000f",
			encode: func() ([]byte, error) { return encodeTTL(5*time.Second, 15), nil },
			decode: func(b []byte) (any, error) { return decodeTTL([]byte("k"), b) },
			want:   TTLEntry{Key: []byte("k"), TTL: 5 * time.Second, ModIndex: 15},
		},
		{
			name:   "range descriptor",
			golden: "01080312016d20022a026e312a026e322a026e33",
			encode: func() ([]byte, error) {
				return encodeRange(Range{ID: 3, Start: []byte("m"), Epoch: 2, Replicas: []string{"n1", "n2", "n3"}}), nil
			},
			decode: func(b []byte) (any, error) { return decodeRange(b) },
			want:   Range{ID: 3, Start: []byte("m"), Epoch: 2, Replicas: []string{"n1", "n2", "n3"}},
		},
		{
			name:   "dedup result",
			golden: "01081012090a0161180c201028031a0c0a0161120130180c200f2802",
			encode: func() ([]byte, error) {
				return encodeResult(&Result{Index: 16, KV: &KV{Key: []byte("a"), CreateIndex: 12, ModIndex: 16, Version: 3},
					Prev: &KV{Key: []byte("a"), Value: []byte("0"), CreateIndex: 12, ModIndex: 15, Version: 2}}), nil
			},
			decode: func(b []byte) (any, error) { return decodeResult(b) },
			want: &Result{Index: 16, KV: &KV{Key: []byte("a"), CreateIndex: 12, ModIndex: 16, Version: 3},
				Prev: &KV{Key: []byte("a"), Value: []byte("0"), CreateIndex: 12, ModIndex: 15, Version: 2}},
		},
		{
			name:   "dedup condition error",
			golden: "0108112a0f0a0161120a0a016112013120102803",
			encode: func() ([]byte, error) {
				return encodeResult(&Result{Index: 17, Err: &ConditionError{Key: []byte("a"), Current: &KV{Key: []byte("a"), Value: []byte("1"), ModIndex: 16, Version: 3}}}), nil
			},
			decode: func(b []byte) (any, error) { return decodeResult(b) },
			want:   &Result{Index: 17, Err: &ConditionError{Key: []byte("a"), Current: &KV{Key: []byte("a"), Value: []byte("1"), ModIndex: 16, Version: 3}}},
		},
	}
	for _, c := range cases {
		if c.encode == nil { // a command
			cmd := c.want.(*Command)
			c.encode = func() ([]byte, error) { return EncodeCommand(cmd) }
			c.decode = func(b []byte) (any, error) { return DecodeCommand(b) }
		}
		golden, err := hex.DecodeString(c.golden)
		if err != nil {
			t.Fatal(err)
		}
		b, err := c.encode()
		if err != nil {
			t.Fatalf("%s: encode: %v", c.name, err)
		}
		if !bytes.Equal(b, golden) {
			t.Errorf("%s: encoding changed\n got %x\nwant %s", c.name, b, c.golden)
		}
		got, err := c.decode(golden)
		if err != nil {
			t.Errorf("%s: decode cf3dc0d's bytes: %v", c.name, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: cf3dc0d's bytes decode to\n%#v\nwant\n%#v", c.name, got, c.want)
		}
	}
}

// The sidecar this binary writes, byte for byte: "v":1 first, then what
// cf3dc0d wrote (TestRangeJSONIsCf3dc0dEncoding). Both it and cf3dc0d's
// sidecar without "v" read back as the same version-1 sidecar.
func TestSidecarEncodingIsV1(t *testing.T) {
	const v1 = `{"v":1,"state":"open","boot":"b1","genesis":{"ID":1,"Start":null,"End":"Zw==","Epoch":1,"Replicas":["n1","n2","n3"]}}`
	const cf3dc0d = `{"state":"open","boot":"b1","genesis":{"ID":1,"Start":null,"End":"Zw==","Epoch":1,"Replicas":["n1","n2","n3"]}}`
	want := sidecar{V: 1, State: sidecarOpen, Boot: "b1", Genesis: &Range{ID: 1, End: []byte("g"), Epoch: 1, Replicas: []string{"n1", "n2", "n3"}}}
	path := filepath.Join(t.TempDir(), "fsm.db")
	if err := writeSidecar(path, sidecar{State: sidecarOpen, Boot: "b1", Genesis: want.Genesis}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(sidecarPath(path))
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != v1 {
		t.Errorf("sidecar encoding changed\n got %s\nwant %s", b, v1)
	}
	for _, enc := range []string{v1, cf3dc0d} {
		if err := os.WriteFile(sidecarPath(path), []byte(enc), 0o600); err != nil {
			t.Fatal(err)
		}
		got, found, err := readSidecar(path)
		if err != nil || !found {
			t.Fatalf("read %s: found %v, %v", enc, found, err)
		}
		got.V = max(got.V, 1) // absent = 1
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s read as %+v, want %+v", enc, got, want)
		}
	}
}
