package fsm

import (
	"bytes"
	"errors"
	"io"
	"os"
	"testing"

	"github.com/hashicorp/raft"
)

func mustPersist(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("sink closed=%v cancelled=%v", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func mustRestore(t testing.TB, f *FSM, b []byte) {
	t.Helper()
	if err := f.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatalf("Restore: %v", err)
	}
}

// Snapshot only takes a read transaction: applies continue, and Persist
// afterwards still writes the state as of Snapshot().
func TestSnapshotIsPointInTime(t *testing.T) {
	logs := workload(t, 200)
	f := newFSM(t)
	f.ApplyBatch(logs[:100])
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	f.ApplyBatch(logs[100:]) // must not block on the open snapshot

	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	ref := newFSM(t)
	ref.ApplyBatch(logs[:100])
	got := newFSM(t)
	mustRestore(t, got, sink.Bytes())
	a1, h1 := mustHash(t, got)
	a2, h2 := mustHash(t, ref)
	if a1 != 100 || a1 != a2 || !bytes.Equal(h1, h2) {
		t.Fatalf("restored applied=%d, want state as of snapshot (applied %d)", a1, a2)
	}
}

// Restore replaces all prior state: keys the target had before are gone and
// the result is byte-for-byte the source replica's state.
func TestRestoreReplacesState(t *testing.T) {
	src := newFSM(t)
	src.ApplyBatch(workload(t, 150))
	data := mustPersist(t, src)

	dst := newFSM(t, func(c *Config) { c.Initial = Range{ID: 99} }) // different range too
	mustApply(t, dst, 1, put("old-key", "old"))
	mustApply(t, dst, 500, put("kz", "ahead"))

	woke := make(chan error, 1)
	go func() { woke <- dst.WaitApplied(t.Context(), 1000) }()
	mustRestore(t, dst, data)

	a1, h1 := mustHash(t, src)
	a2, h2 := mustHash(t, dst)
	if a1 != a2 || !bytes.Equal(h1, h2) || dst.Applied() != a1 {
		t.Fatalf("restored replica differs: applied %d vs %d", a2, a1)
	}
	if kv := mustGet(t, dst, "old-key"); kv != nil {
		t.Fatalf("old key survived restore: %+v", kv)
	}
	if got := dst.Range(); got.ID != testRange.ID {
		t.Fatalf("range after restore %+v, want the snapshot's", got)
	}
	// Applying continues from the restored index.
	mustApply(t, dst, a1+1, put("kk", "after"))
	if kv := mustGet(t, dst, "kk"); kv == nil || kv.ModIndex != a1+1 {
		t.Fatalf("apply after restore: %+v", kv)
	}
	select {
	case err := <-woke:
		t.Fatalf("waiter for 1000 returned early: %v", err)
	default:
	}
	mustApply(t, dst, 1000, put("kk", "x"))
	if err := <-woke; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(restorePath(dst.cfg.Path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("restore temp file left behind: %v", err)
	}
}

func TestRestoreRejectsBadStreams(t *testing.T) {
	src := newFSM(t)
	src.ApplyBatch(workload(t, 50))
	good := mustPersist(t, src)
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		return b
	}
	cases := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"bad magic", flip(0)},
		{"bad version", flip(len(snapMagic))},
		{"flipped record byte", flip(len(good) / 2)},
		{"flipped checksum", flip(len(good) - 1)},
		{"truncated in records", good[:len(good)/2]},
		{"truncated trailer", good[:len(good)-2]},
		{"no end record", good[:len(good)-5]},
		{"trailing garbage", append(bytes.Clone(good), 0)},
		{"huge length", append([]byte(snapMagic+"\x01\x02"), 0xff, 0xff, 0xff, 0xff, 0x0f)},
		{"unknown bucket", []byte(snapMagic + "\x01\x09")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFSM(t)
			mustApply(t, f, 1, put("kept", "v"))
			_, before := mustHash(t, f)
			if err := f.Restore(io.NopCloser(bytes.NewReader(tc.b))); err == nil {
				t.Fatal("Restore accepted a bad stream")
			}
			applied, after := mustHash(t, f)
			if applied != 1 || f.Applied() != 1 || !bytes.Equal(before, after) || mustGet(t, f, "kept") == nil {
				t.Fatal("rejected restore changed the state")
			}
			mustApply(t, f, 2, put("kept", "still works"))
		})
	}
}

// A snapshot without the meta records is structurally valid but not a
// state: rejected after parsing, before the swap.
func TestRestoreRequiresMeta(t *testing.T) {
	var buf bytes.Buffer
	buf.WriteString(snapMagic)
	buf.WriteByte(snapFormat)
	buf.WriteByte(snapEnd)
	sum := crc32c(buf.Bytes())
	buf.Write([]byte{byte(sum >> 24), byte(sum >> 16), byte(sum >> 8), byte(sum)})
	f := newFSM(t)
	if err := f.Restore(io.NopCloser(&buf)); err == nil {
		t.Fatal("Restore accepted a snapshot without meta")
	}
}

type failingSink struct{ memSink }

func (s *failingSink) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestPersistCancelsOnError(t *testing.T) {
	f := newFSM(t)
	mustApply(t, f, 1, put("k", "v"))
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	sink := &failingSink{}
	if err := snap.Persist(sink); err == nil || !sink.cancelled || sink.closed {
		t.Fatalf("Persist err=%v cancelled=%v closed=%v", err, sink.cancelled, sink.closed)
	}
	snap.Release() // twice is fine
}

func FuzzRestore(f *testing.F) {
	src, err := Open(Config{Path: f.TempDir() + "/src.db", Initial: testRange})
	if err != nil {
		f.Fatal(err)
	}
	src.ApplyBatch([]*raft.Log{cmdLog(f, 1, put("k", "v")), cmdLog(f, 2, &Command{Op: OpPut, Key: []byte("t"), TTL: 5})})
	good := mustPersist(f, src)
	if err := src.Close(); err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte(snapMagic + "\x01\x00\x00\x00\x00\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		dst := newFSM(t)
		mustApply(t, dst, 1, put("kept", "v"))
		_, before := mustHash(t, dst)
		if err := dst.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
			if _, after := mustHash(t, dst); !bytes.Equal(before, after) {
				t.Fatal("rejected restore changed the state")
			}
		}
	})
}
