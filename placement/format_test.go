package placement

import (
	"github.com/cairndb/cairn/internal/jsontag"

	"bytes"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
)

// persistedJSONTypes are the types the meta group writes to disk as JSON:
// log entries (metaCommand) and snapshots (metaSnapshotJSON: State and its
// version), with everything they hold (fsm.Range, NodeInfo, Operation).
var persistedJSONTypes = []any{metaCommand{}, metaSnapshotJSON{}}

// Every field of a persisted JSON type names its key explicitly: a Go
// rename must not change, silently, what is written to disk or what old
// logs decode into (fsm/DESIGN.md "Persisted formats", placement/DESIGN.md "Encoding").
func TestPersistedMetaTypesHaveExplicitJSONTags(t *testing.T) {
	for _, p := range jsontag.Untagged(persistedJSONTypes...) {
		t.Errorf("persisted field %s has no explicit json key", p)
	}
}

func readGoldenLines(t testing.TB, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

// The meta log and snapshot cf3dc0d wrote (testdata/README.md) decode with
// today's code, replay to the state cf3dc0d's snapshot holds, and today's
// encoder writes every entry byte for byte as cf3dc0d did, so older and
// newer replicas can share a log during a rolling upgrade.
func TestMetaDecodesCf3dc0dLogAndSnapshot(t *testing.T) {
	f := newMetaFSM()
	for i, line := range readGoldenLines(t, "testdata/meta-log-cf3dc0d.jsonl") {
		if res, ok := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: line}).(error); ok {
			t.Fatalf("apply entry %d %s: %v", i+1, line, res)
		}
	}
	for _, path := range []string{"testdata/meta-log-cf3dc0d.jsonl", "testdata/meta-log-cf3dc0d-synthetic.jsonl"} {
		for _, line := range readGoldenLines(t, path) {
			c, err := decodeMetaCommand(line)
			if err != nil {
				t.Fatalf("%s: decode %s: %v", path, line, err)
			}
			b, err := encodeMetaCommand(&c)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, line) {
				t.Errorf("%s: re-encoded entry differs from cf3dc0d's\n got %s\nwant %s", path, b, line)
			}
		}
	}

	old, err := os.Open("testdata/meta-snapshot-cf3dc0d.json")
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	snap, err := decodeMetaSnapshot(old)
	if err != nil {
		t.Fatal(err)
	}
	replayed := f.state
	if !reflect.DeepEqual(snap, replayed) {
		t.Fatalf("cf3dc0d's snapshot decodes to\n%+v\nits log replays to\n%+v", snap, replayed)
	}
	r3, ok := snap.Range(3)
	if !snap.Formed() || len(snap.Nodes) != 3 || len(snap.Ranges) != 3 || snap.NextRangeID != 4 || len(snap.Genesis) != 2 ||
		!ok || string(r3.Start) != "m" || r3.End != nil || r3.Epoch != 2 || len(r3.Replicas) != 3 ||
		snap.Ops[1].Kind != OpTransferLeader || snap.Ops[1].From != "n2" || snap.Ops[1].To != "n1" ||
		snap.Nodes["n2"].RaftAddr != "127.0.0.1:27182" {
		t.Fatalf("cf3dc0d's snapshot decoded to %+v", snap)
	}

	// Today's snapshot carries its version and reads back the same.
	b, err := encodeMetaSnapshot(snap)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte(`{"v":1,"cluster_id":`)) {
		t.Fatalf("snapshot lacks its version: %.60s", b)
	}
	back, err := decodeMetaSnapshot(bytes.NewReader(b))
	if err != nil || !reflect.DeepEqual(back, snap) {
		t.Fatalf("snapshot round trip: %v\n got %+v\nwant %+v", err, back, snap)
	}
}

// An entry or snapshot of a format this binary does not know is refused,
// never half-read, and a refused entry changes nothing.
func TestMetaRefusesNewerFormats(t *testing.T) {
	f := newMetaFSM()
	applyMeta(t, f, 1, metaCommand{V: 1, Op: opInit, Cluster: "c1", Ranges: []fsm.Range{{ID: 1, Epoch: 1}}})
	before := f.state
	for _, entry := range []string{
		`{"v":2,"op":"alloc_range_id"}`,
		`{"v":1,"op":"alloc_range_id"`,
		`{"v":"1","op":"alloc_range_id"}`,
		`{"v":1,"op":"report_ranges","ranges":[{"ID":"one"}]}`,
	} {
		res := f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: []byte(entry)})
		if err, ok := res.(error); !ok || !errors.Is(err, ErrMetaFormat) {
			t.Errorf("entry %s applied as %v, want ErrMetaFormat", entry, res)
		}
	}
	if after := f.state; !reflect.DeepEqual(after, before) {
		t.Fatalf("refused entries changed the state: %+v", after)
	}
	for _, snap := range []string{`{"v":2,"cluster_id":"c1"}`, `{"v":1,"ranges":{}}`, `[]`} {
		if _, err := decodeMetaSnapshot(strings.NewReader(snap)); !errors.Is(err, ErrMetaFormat) {
			t.Errorf("snapshot %s decoded with %v, want ErrMetaFormat", snap, err)
		}
	}
	// A snapshot without "v" is cf3dc0d's layout.
	s, err := decodeMetaSnapshot(strings.NewReader(`{"cluster_id":"c1","next_range_id":2}`))
	if err != nil || s.ClusterID != "c1" || s.NextRangeID != 2 || s.Nodes == nil {
		t.Fatalf("unversioned snapshot: %+v, %v", s, err)
	}
}

func addMetaSeeds(f *testing.F, paths ...string) {
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			f.Add(line)
		}
	}
}

// Any bytes as a meta log entry: decoding never panics, a decoded entry
// re-encodes to bytes that decode to the same entry, and applying it to a
// formed state never panics.
func FuzzMetaCommand(f *testing.F) {
	addMetaSeeds(f, "testdata/meta-log-cf3dc0d.jsonl", "testdata/meta-log-cf3dc0d-synthetic.jsonl")
	f.Add([]byte(`{"v":2,"op":"init"}`))
	f.Add([]byte(`{"op":"report_ranges","ranges":[{"ID":9,"Start":"","End":"AA==","Epoch":7}]}`))
	golden, err := os.ReadFile("testdata/meta-log-cf3dc0d.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeMetaCommand(b)
		if err != nil {
			if !errors.Is(err, ErrMetaFormat) {
				t.Fatalf("decode error %v is not ErrMetaFormat", err)
			}
			return
		}
		enc, err := encodeMetaCommand(&c)
		if err != nil {
			t.Fatal(err)
		}
		// Re-encoding is a fixed point (a decoded empty list and an absent
		// one both encode as absent, so compare encodings, not values).
		c2, err := decodeMetaCommand(enc)
		if err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", enc, err)
		}
		if enc2, err := encodeMetaCommand(&c2); err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip of %q: %v\n got %s\nwant %s", b, err, enc2, enc)
		}
		if c2.Op != c.Op || c2.RangeID != c.RangeID || len(c2.Ranges) != len(c.Ranges) {
			t.Fatalf("round trip of %q changed the entry: %+v, want %+v", b, c2, c)
		}
		m := newMetaFSM()
		for i, line := range bytes.Split(bytes.TrimSpace(golden), []byte("\n")) {
			m.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: line})
		}
		m.Apply(&raft.Log{Index: 100, Type: raft.LogCommand, Data: b})
	})
}

// Any bytes as a meta snapshot: decoding never panics and a decoded state
// re-encodes to one that decodes the same.
func FuzzMetaSnapshot(f *testing.F) {
	for _, p := range []string{"testdata/meta-snapshot-cf3dc0d.json"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"v":3,"nodes":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeMetaSnapshot(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrMetaFormat) {
				t.Fatalf("decode error %v is not ErrMetaFormat", err)
			}
			return
		}
		enc, err := encodeMetaSnapshot(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := decodeMetaSnapshot(bytes.NewReader(enc))
		if err != nil {
			t.Fatalf("re-encoded %q does not decode: %v", enc, err)
		}
		if enc2, err := encodeMetaSnapshot(s2); err != nil || !bytes.Equal(enc, enc2) {
			t.Fatalf("round trip of %q: %v\n got %s\nwant %s", b, err, enc2, enc)
		}
		if s2.ClusterID != s.ClusterID || len(s2.Ranges) != len(s.Ranges) || len(s2.Nodes) != len(s.Nodes) || s2.NextRangeID != s.NextRangeID {
			t.Fatalf("round trip of %q changed the state: %+v, want %+v", b, s2, s)
		}
	})
}
