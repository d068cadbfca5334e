package shard

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hashicorp/raft"
)

func mustWAL(t *testing.T, dir string) *WAL {
	t.Helper()
	w, err := OpenWAL(dir)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(m)
	return m
}

func storeRange(t *testing.T, g GroupLog, from, to uint64) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := g.StoreLog(testEntry(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// lastRecords returns where the records of the newest segment end and
// where each of its entry records starts (in write order).
func lastRecords(t *testing.T, w *WAL) (end int64, starts []int64) {
	t.Helper()
	w.mu.RLock()
	defer w.mu.RUnlock()
	seg := w.segs[len(w.segs)-1]
	for _, g := range w.groups {
		for _, l := range g.locs {
			if l.seg == seg.seq {
				starts = append(starts, l.off)
			}
		}
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	return seg.size, starts
}

// patchFile overwrites b at off in path.
func patchFile(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// A crash mid-write leaves a cut-off record at the end of the newest file:
// recovery cuts it off and keeps everything before it; the log goes on.
func TestWALTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		tear func(t *testing.T, path string, end int64, starts []int64)
	}{
		// The file ended mid-record (no zero-filled space after it).
		{"cut short", func(t *testing.T, path string, end int64, starts []int64) {
			if err := os.Truncate(path, end-5); err != nil {
				t.Fatal(err)
			}
		}},
		// The record's last bytes never reached the zero-filled space.
		{"tail zeros", func(t *testing.T, path string, end int64, starts []int64) {
			patchFile(t, path, end-5, make([]byte, 5))
		}},
		// Its header never did, but its body did (the disk wrote the
		// sectors out of order): a zero length followed by data is not
		// the clean end.
		{"zero header", func(t *testing.T, path string, end int64, starts []int64) {
			patchFile(t, path, starts[len(starts)-1], make([]byte, walFrameHeader))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := mustWAL(t, dir)
			storeRange(t, w.Group(1), 1, 10)
			end, starts := lastRecords(t, w)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			files := segFiles(t, dir)
			tc.tear(t, files[len(files)-1], end, starts) // entry 10 is torn
			w = mustWAL(t, dir)
			g := w.Group(1)
			if f, l := indexes(t, g); f != 1 || l != 9 {
				t.Fatalf("after a torn tail: first %d last %d, want 1 9", f, l)
			}
			storeRange(t, g, 10, 12)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w = mustWAL(t, dir)
			defer w.Close()
			var out raft.Log
			if err := w.Group(1).GetLog(12, &out); err != nil || out.Term != testEntry(12).Term {
				t.Fatalf("entry written after the repair: %v %+v", err, out)
			}
		})
	}
}

// A torn record followed by intact ones (a crash mid-commit, sectors
// written out of order) is cut off with everything after it: a rewrite of
// the same size in its place later must not let the stale record after it
// replay.
func TestWALTornMiddleNotResurrected(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch func(start int64) (int64, []byte)
	}{
		{"bad checksum", func(start int64) (int64, []byte) { return start + walFrameHeader, []byte{0xff} }},
		{"zero header", func(start int64) (int64, []byte) { return start, make([]byte, walFrameHeader) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			w := mustWAL(t, dir)
			g := w.Group(1)
			storeRange(t, g, 1, 8)
			// 9 and 10 in one commit, as raft stores a batch.
			if err := g.StoreLogs([]*raft.Log{testEntry(9), testEntry(10)}); err != nil {
				t.Fatal(err)
			}
			_, starts := lastRecords(t, w)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			files := segFiles(t, dir)
			off, b := tc.patch(starts[len(starts)-2]) // 9 torn, 10 intact
			patchFile(t, files[len(files)-1], off, b)
			w = mustWAL(t, dir)
			if f, l := indexes(t, w.Group(1)); f != 1 || l != 8 {
				t.Fatalf("after a torn record: first %d last %d, want 1 8", f, l)
			}
			// A new leader's entry 9, the same size as the old one: the
			// old 10 would start right after it if it were still on disk.
			nine := testEntry(9)
			nine.Term = 7
			if err := w.Group(1).StoreLog(nine); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			w = mustWAL(t, dir)
			defer w.Close()
			if f, l := indexes(t, w.Group(1)); f != 1 || l != 9 {
				t.Fatalf("after rewriting 9: first %d last %d, want 1 9 (a stale entry came back)", f, l)
			}
			var out raft.Log
			if err := w.Group(1).GetLog(9, &out); err != nil || out.Term != 7 {
				t.Fatalf("entry 9: %v %+v, want the rewritten one (term 7)", err, out)
			}
		})
	}
}

// The active file is zero-filled ahead of its end, so commits overwrite
// allocated space; commits that outrun the filler extend the file and
// nothing is lost either way.
func TestWALZeroFill(t *testing.T) {
	for _, chunk := range []int64{walFillChunk, 512, 0} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			dir := t.TempDir()
			w := mustWAL(t, dir)
			w.chunk = chunk
			w.segSize = 4 << 10
			g := w.Group(1)
			storeRange(t, g, 1, 400) // several segments
			end, _ := lastRecords(t, w)
			if err := w.Close(); err != nil { // waits for the filler
				t.Fatal(err)
			}
			files := segFiles(t, dir)
			if len(files) < 3 {
				t.Fatalf("want several segments, got %d", len(files))
			}
			st, err := os.Stat(files[len(files)-1])
			if err != nil {
				t.Fatal(err)
			}
			if chunk > 0 && st.Size() <= end {
				t.Fatalf("chunk %d: active file is %d bytes, records end at %d: nothing filled ahead", chunk, st.Size(), end)
			}
			if chunk == 0 && st.Size() != end {
				t.Fatalf("no filler: file is %d bytes, records end at %d", st.Size(), end)
			}
			w = mustWAL(t, dir)
			defer w.Close()
			if f, l := indexes(t, w.Group(1)); f != 1 || l != 400 {
				t.Fatalf("reopened: first %d last %d, want 1 400", f, l)
			}
			for i := uint64(1); i <= 400; i++ {
				var out raft.Log
				if err := w.Group(1).GetLog(i, &out); err != nil || string(out.Data) != string(testEntry(i).Data) {
					t.Fatalf("entry %d: %v %q", i, err, out.Data)
				}
			}
		})
	}
}

// A bad record anywhere but the newest file's tail is corruption, not a
// torn write: opening fails instead of silently dropping acknowledged data.
func TestWALCorruptionRefused(t *testing.T) {
	dir := t.TempDir()
	w := mustWAL(t, dir)
	w.segSize = 256
	storeRange(t, w.Group(1), 1, 40)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	files := segFiles(t, dir)
	if len(files) < 2 {
		t.Fatalf("want several segments, got %d", len(files))
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-3] ^= 0xff
	if err := os.WriteFile(files[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	if w, err := OpenWAL(dir); err == nil {
		w.Close()
		t.Fatal("opened a log with a corrupt older segment")
	}
}

// Segments rotate; compaction, drops and raft's restart-after-snapshot let
// old ones go; stable values survive every rotation and removal; a dropped
// group stays dropped across a reopen.
func TestWALRotationAndCollection(t *testing.T) {
	dir := t.TempDir()
	w := mustWAL(t, dir)
	w.segSize = 512
	a, b, c := w.Group(1), w.Group(2), w.Group(3)
	if err := a.SetUint64([]byte("CurrentTerm"), 5); err != nil {
		t.Fatal(err)
	}
	storeRange(t, a, 1, 50)
	storeRange(t, b, 1, 50)
	storeRange(t, c, 1, 5)
	many := len(segFiles(t, dir))
	if many < 4 {
		t.Fatalf("%d segments, want rotation", many)
	}
	// Group 3 dropped, group 1 compacted, group 2 restarts after a
	// snapshot (an entry past its last): every old segment is dead.
	if err := w.DropGroup(3); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteRange(1, 45); err != nil {
		t.Fatal(err)
	}
	if err := b.StoreLog(testEntry(200)); err != nil {
		t.Fatal(err)
	}
	if err := a.DeleteRange(46, 46); err != nil { // collection runs after deletes
		t.Fatal(err)
	}
	if left := len(segFiles(t, dir)); left >= many {
		t.Errorf("%d segments left of %d: none collected", left, many)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = mustWAL(t, dir)
	defer w.Close()
	a, b, c = w.Group(1), w.Group(2), w.Group(3)
	if f, l := indexes(t, a); f != 47 || l != 50 {
		t.Errorf("group 1: first %d last %d, want 47 50", f, l)
	}
	if f, l := indexes(t, b); f != 200 || l != 200 {
		t.Errorf("group 2: first %d last %d, want 200 200", f, l)
	}
	if f, l := indexes(t, c); f != 0 || l != 0 || w.HasGroup(3) {
		t.Errorf("dropped group 3 came back: first %d last %d", f, l)
	}
	if v, err := a.GetUint64([]byte("CurrentTerm")); err != nil || v != 5 {
		t.Errorf("stable value after rotations and collection: %d, %v", v, err)
	}
	var out raft.Log
	for i := uint64(47); i <= 50; i++ {
		if err := a.GetLog(i, &out); err != nil || out.Index != i {
			t.Errorf("group 1 entry %d: %v", i, err)
		}
	}
	if err := a.GetLog(45, &out); !errors.Is(err, raft.ErrLogNotFound) {
		t.Errorf("compacted entry: %v", err)
	}
}

// A suffix that conflicts with a new leader's log is deleted and written
// again; the new entries win after a reopen.
func TestWALSuffixRewrite(t *testing.T) {
	dir := t.TempDir()
	w := mustWAL(t, dir)
	g := w.Group(9)
	storeRange(t, g, 1, 10)
	if err := g.DeleteRange(8, 10); err != nil {
		t.Fatal(err)
	}
	for i := uint64(8); i <= 9; i++ {
		e := testEntry(i)
		e.Term = 99
		e.Data = []byte(fmt.Sprintf("new-%d", i))
		if err := g.StoreLog(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = mustWAL(t, dir)
	defer w.Close()
	g = w.Group(9)
	if f, l := indexes(t, g); f != 1 || l != 9 {
		t.Fatalf("first %d last %d, want 1 9", f, l)
	}
	var out raft.Log
	if err := g.GetLog(9, &out); err != nil || out.Term != 99 || string(out.Data) != "new-9" {
		t.Errorf("rewritten entry 9: %v %+v", err, out)
	}
	if err := g.GetLog(7, &out); err != nil || out.Term != testEntry(7).Term {
		t.Errorf("kept entry 7: %v %+v", err, out)
	}
}

// Raft clears a conflicting suffix up to its own last index, which can be
// below the store's (a follower's entries past a snapshot it installed).
// The delete must succeed, and it truncates to the end: a refused delete
// would wedge the follower, a hole would break the index.
func TestWALDeleteBelowStoreLast(t *testing.T) {
	dir := t.TempDir()
	w := mustWAL(t, dir)
	g := w.Group(4)
	storeRange(t, g, 1, 20)
	if err := g.DeleteRange(12, 15); err != nil {
		t.Fatalf("delete 12..15 of 1..20: %v", err)
	}
	if f, l := indexes(t, g); f != 1 || l != 11 {
		t.Fatalf("after delete 12..15: first %d last %d, want 1 11", f, l)
	}
	e := testEntry(12)
	e.Term = 50
	if err := g.StoreLog(e); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = mustWAL(t, dir)
	defer w.Close()
	g = w.Group(4)
	var out raft.Log
	if f, l := indexes(t, g); f != 1 || l != 12 {
		t.Fatalf("after reopen: first %d last %d, want 1 12", f, l)
	}
	if err := g.GetLog(12, &out); err != nil || out.Term != 50 {
		t.Errorf("entry 12: %v %+v", err, out)
	}
}

// FuzzWALRecord: no record body makes the decoder panic.
func FuzzWALRecord(f *testing.F) {
	f.Add(encodeWALOp(walOp{kind: walEntry, group: 3, log: testEntry(4)}))
	f.Add(encodeWALOp(walOp{kind: walStable, group: 1, key: []byte("k"), val: []byte("v")}))
	f.Add(encodeWALOp(walOp{kind: walDelete, group: 1, min: 2, max: 9}))
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) == 0 {
			return
		}
		op, err := decodeWALOp(body)
		if err != nil {
			return
		}
		if _, err := decodeWALOp(encodeWALOp(op)); err != nil {
			t.Fatalf("re-decode of %+v: %v", op, err)
		}
	})
}

// BenchmarkFdatasync measures what the zero-fill saves: a 6 KB write and
// fdatasync at the end of a growing file ("append", the file's size changes
// with every sync) against the same into zero-filled, synced space
// ("overwrite", data only):
//
//	go test -run '^$' -bench Fdatasync -benchtime 2000x ./shard/
func BenchmarkFdatasync(b *testing.B) {
	for _, mode := range []string{"append", "overwrite"} {
		b.Run(mode, func(b *testing.B) {
			f, err := os.Create(filepath.Join(b.TempDir(), "sync"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 6000)
			if mode == "overwrite" {
				zeros := make([]byte, 1<<20)
				for n := int64(0); n < int64(b.N)*int64(len(buf)); n += int64(len(zeros)) {
					if _, err := f.Write(zeros); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := f.WriteAt(buf, int64(i)*int64(len(buf))); err != nil {
					b.Fatal(err)
				}
				if err := fdatasync(f); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// OpenWAL opens or creates the log in dir and replays it.
func OpenWAL(dir string) (*WAL, error) { return OpenWALConfig(WALConfig{Dir: dir}) }

func encodeWALOp(op walOp) []byte { return appendWALOp(nil, op) }

// HasGroup reports whether group id holds anything.
func (w *WAL) HasGroup(id uint64) bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	_, ok := w.groups[id]
	return ok
}
