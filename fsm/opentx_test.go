package fsm

import (
	"errors"

	"bytes"
	"fmt"
	"github.com/hashicorp/raft"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// openTxFSM is an FSM whose write transaction stays open until something
// commits it (no batch or time bound).
func openTxFSM(t *testing.T, mods ...func(*Config)) *FSM {
	return newFSM(t, append([]func(*Config){func(c *Config) { c.CommitBatches, c.CommitEvery = 1<<20, -1 }}, mods...)...)
}

// A read never sees less than was applied before it began, although the
// batches it needs are still in the open write transaction: view commits
// it first.
func TestOpenTxReadSeesEveryAppliedBatch(t *testing.T) {
	f := openTxFSM(t)
	mustApply(t, f, 1, put("c", "1"))
	mustApply(t, f, 2, put("c", "2"))
	if !f.dirty.Load() {
		t.Fatal("two batches committed without a read: the transaction was not left open")
	}
	kv, err := f.Get([]byte("c"))
	if err != nil || kv == nil || string(kv.Value) != "2" {
		t.Fatalf("Get(c) = %+v, %v after two applied batches, want 2", kv, err)
	}
	if f.dirty.Load() {
		t.Fatal("a read left the write transaction open")
	}
}

// Readers racing the apply goroutine: a Get that begins after Apply of
// entry i returned sees value i or later. It fails if a reader may skip the
// commit while another one is still committing (the dirty flag cleared
// before bbolt's commit returned).
func TestOpenTxConcurrentReadsAreMonotonic(t *testing.T) {
	f := openTxFSM(t)
	const entries = 400
	stop := startMonotonicReaders(t, f, "k", 4, func(int) time.Duration { return 0 })
	for i := uint64(1); i <= entries; i++ {
		mustApply(t, f, i, put("k", strconv.FormatUint(i, 10)))
	}
	stop()
}

// startMonotonicReaders starts n goroutines that read key (its value is the
// index of the entry that wrote it) until the returned stop is called: each
// read must see at least the entry applied before it began, and no less
// than the reader's previous read. Reader r sleeps pause(r) between reads.
func startMonotonicReaders(t *testing.T, f *FSM, key string, n int, pause func(r int) time.Duration) (stop func()) {
	var done atomic.Bool
	var wg sync.WaitGroup
	for r := range n {
		wg.Go(func() {
			var last uint64
			for !done.Load() {
				before := f.Applied()
				kv, err := f.Get([]byte(key))
				if err != nil {
					t.Errorf("Get: %v", err)
					return
				}
				var got uint64
				if kv != nil {
					got, _ = strconv.ParseUint(string(kv.Value), 10, 64)
				}
				if got < before || got < last {
					t.Errorf("Get began after entry %d was applied (and read entry %d before) and read the value of entry %d", before, last, got)
					return
				}
				last = got
				time.Sleep(pause(r))
			}
		})
	}
	return func() {
		done.Store(true)
		wg.Wait()
	}
}

// The bounds: CommitBatches batches, CommitBytes of entries, CommitEvery
// after the first batch; and a split commits its batch at once.
func TestOpenTxBounds(t *testing.T) {
	t.Run("batches", func(t *testing.T) {
		f := newFSM(t, func(c *Config) { c.CommitBatches, c.CommitEvery = 3, -1 })
		for i := uint64(1); i <= 3; i++ {
			mustApply(t, f, i, put("c", "v"))
			if want := i < 3; f.dirty.Load() != want {
				t.Fatalf("after batch %d of 3: open %v, want %v", i, f.dirty.Load(), want)
			}
		}
	})
	t.Run("bytes", func(t *testing.T) {
		f := newFSM(t, func(c *Config) { c.CommitBatches, c.CommitBytes, c.CommitEvery = 1<<20, 1000, -1 })
		mustApply(t, f, 1, put("c", "small"))
		if !f.dirty.Load() {
			t.Fatal("a small batch committed")
		}
		mustApply(t, f, 2, put("d", string(bytes.Repeat([]byte{'x'}, 1000))))
		if f.dirty.Load() {
			t.Fatal("1,000 bytes of entries left open with CommitBytes 1000")
		}
	})
	t.Run("time", func(t *testing.T) {
		f := newFSM(t, func(c *Config) { c.CommitBatches, c.CommitEvery = 1<<20, 5*time.Millisecond })
		mustApply(t, f, 1, put("c", "v"))
		for deadline := time.Now().Add(5 * time.Second); f.dirty.Load(); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the transaction was still open 5s after its batch, with CommitEvery 5ms")
			}
		}
	})
	t.Run("split", func(t *testing.T) {
		fx := newSplitFixture(t) // opened by newFSM: no bound
		if !fx.parent.dirty.Load() {
			t.Fatal("the fixture's batches were committed")
		}
		mustApply(t, fx.parent, 10, &Command{Op: OpSplit, Key: []byte("m"), Epoch: testRange.Epoch,
			ChildID: 42, Servers: testServers})
		if fx.parent.dirty.Load() {
			t.Fatal("a split's batch was left open: the child starts from state the parent's file may lose")
		}
	})
}

// A snapshot holds every applied entry, committed or not, and restores
// into the same state.
func TestOpenTxSnapshotHoldsOpenBatches(t *testing.T) {
	f := openTxFSM(t)
	for i := uint64(1); i <= 5; i++ {
		mustApply(t, f, i, put(fmt.Sprintf("k%d", i), "v"))
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	g := openTxFSM(t)
	mustRestore(t, g, sink.Bytes())
	if g.Applied() != 5 {
		t.Fatalf("restored applied %d, want 5", g.Applied())
	}
	for i := 1; i <= 5; i++ {
		if kv, err := g.Get([]byte(fmt.Sprintf("k%d", i))); err != nil || kv == nil {
			t.Fatalf("k%d after restore: %+v, %v", i, kv, err)
		}
	}
}

// A process that dies with the transaction open loses its batches from the
// file, not from the replica: the file's applied index is the last
// committed one, raft replays the log after it, and the replica ends in the
// state of one that committed every batch. Close commits.
func TestOpenTxCrashReplays(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	open := func() *FSM {
		return mustOpen(t, path, deferredOn("boot-A"), func(c *Config) { c.CommitBatches, c.CommitEvery = 1<<20, -1 })
	}
	entries := []*Command{put("c", "1"), put("d", "2"), {Op: OpDelete, Key: []byte("c")}, put("e", "3")}
	f := open()
	mustApply(t, f, 1, entries[0])
	mustApply(t, f, 2, entries[1])
	if _, err := f.Get([]byte("c")); err != nil { // commits 1 and 2
		t.Fatal(err)
	}
	mustApply(t, f, 3, entries[2]) // a read came since the last batch: committed at once
	mustApply(t, f, 4, entries[3]) // none since: left open
	if !f.dirty.Load() {
		t.Fatal("entry 4 was committed with no read since entry 3")
	}
	f.crashClose()

	f = open()
	if f.Applied() != 3 {
		t.Fatalf("after a crash with entry 4 uncommitted: applied %d, want 3", f.Applied())
	}
	for i, c := range entries { // raft replays from its snapshot: 1 to 3 are skipped
		r := f.Apply(cmdLog(t, uint64(i+1), c))
		if replay := i < 3; (r == nil) != replay {
			t.Fatalf("entry %d: result %v, want skipped %v", i+1, r, replay)
		}
	}
	ref := newFSM(t, func(c *Config) { c.CommitBatches = 1 })
	for i, c := range entries {
		mustApply(t, ref, uint64(i+1), c)
	}
	wantApplied, want, _ := ref.Hash()
	gotApplied, got, err := f.Hash()
	if err != nil || gotApplied != wantApplied || !bytes.Equal(got, want) {
		t.Fatalf("replayed replica: applied %d hash %x (%v), want %d %x", gotApplied, got, err, wantApplied, want)
	}
	mustApply(t, f, 5, put("f", "4"))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if f = open(); f.Applied() != 5 {
		t.Fatalf("after Close: applied %d, want 5", f.Applied())
	}
}

// A reader that waited for a batch finds it: ApplyBatch sets dirty before
// it publishes the applied index. A read at the moment of publication (the
// afterPublish knob, on the apply goroutine) must see the batch just
// published; it fails if dirty is set after the index moves.
func TestOpenTxDirtyBeforePublish(t *testing.T) {
	f := openTxFSM(t)
	f.afterPublish = func(applied uint64) {
		kv, err := f.Get([]byte("c"))
		if err != nil || kv == nil || string(kv.Value) != strconv.FormatUint(applied, 10) {
			t.Errorf("a read as entry %d was published found %+v, %v", applied, kv, err)
		}
	}
	for i := uint64(1); i <= 5; i++ {
		mustApply(t, f, i, put("c", strconv.FormatUint(i, 10)))
		// Let the next batch be left open again: no read since the last.
		f.readsSeen = f.reads.Load()
	}
}

// A commit that fails outside ApplyBatch (here a read's) is permanent: the
// batches it lost are counted in the applied index, so every later read
// returns the error rather than the older state in the file, ApplyBatch
// panics, and the process is stopped once.
func TestOpenTxCommitFailureIsPermanent(t *testing.T) {
	f := openTxFSM(t)
	var stops []error
	f.stop = func(err error) { stops = append(stops, err) }
	mustApply(t, f, 1, put("c", "1"))
	if _, err := f.Get([]byte("c")); err != nil { // commits entry 1
		t.Fatal(err)
	}
	f.readsSeen = f.reads.Load()
	mustApply(t, f, 2, put("c", "2")) // left open
	f.failCommit = func() error { return errors.New("injected: no space left on device") }
	for i := 0; i < 2; i++ {
		kv, err := f.Get([]byte("c"))
		if err == nil {
			t.Fatalf("read %d after a failed commit: %+v, want the failure (entry 2 is applied, not in the file)", i, kv)
		}
	}
	if len(stops) != 1 {
		t.Fatalf("stopped %d times, want once", len(stops))
	}
	// The disk works again: the file must still not move past the entries
	// it lost.
	f.failCommit = nil
	panicked := func() (p any) {
		defer func() { p = recover() }()
		f.Apply(cmdLog(t, 3, put("c", "3")))
		return nil
	}()
	if panicked == nil {
		t.Fatal("ApplyBatch went on after a failed commit")
	}
	if snap, err := f.Snapshot(); err == nil {
		snap.Release()
		t.Fatal("Snapshot of a file that lost applied entries: raft would compact them away")
	}
	if err := f.Close(); err == nil {
		t.Fatal("Close after a failed commit reported nothing")
	}
}

// A failure inside ApplyBatch (here its own commit) makes reads fail at
// once: batches published before it may be lost with the transaction, and
// the process ends only when raft's goroutine reaches the panic.
func TestOpenTxApplyFailureFailsReads(t *testing.T) {
	f := openTxFSM(t)
	f.stop = func(error) {}
	mustApply(t, f, 1, put("c", "1"))
	if _, err := f.Get([]byte("c")); err != nil { // commits entry 1
		t.Fatal(err)
	}
	f.readsSeen = f.reads.Load()
	mustApply(t, f, 2, put("c", "2")) // left open
	f.failCommit = func() error { return errors.New("injected: I/O error") }
	f.cfg.CommitBatches = 1 // entry 3's batch commits, and fails
	func() {
		defer func() { _ = recover() }()
		f.Apply(cmdLog(t, 3, put("c", "3")))
	}()
	f.failCommit = nil
	if kv, err := f.Get([]byte("c")); err == nil {
		t.Fatalf("read after ApplyBatch failed to commit: %+v, want the failure (entry 2 was published and lost)", kv)
	}
}

// The nodes' settings together: a 200 µs timer and the 32-batch bound,
// readers that must never go back, snapshots taken and restored, Close.
func TestOpenTxNodeSettingsUnderLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f := mustOpen(t, path, deferredOn("boot-A"), func(c *Config) { c.CommitBatches, c.CommitEvery = 0, 200*time.Microsecond })
	if f.cfg.CommitBatches != DefaultCommitBatches {
		t.Fatalf("deferred commits: CommitBatches %d, want %d", f.cfg.CommitBatches, DefaultCommitBatches)
	}
	const entries = 600
	// Some readers pause, so that some batches find no read since the last.
	stop := startMonotonicReaders(t, f, "c", 3, func(r int) time.Duration { return time.Duration(r) * 50 * time.Microsecond })
	var snaps [][]byte
	var snapErr error
	for i := uint64(1); i <= entries && snapErr == nil; i++ {
		f.ApplyBatch([]*raft.Log{cmdLog(t, i, put("c", strconv.FormatUint(i, 10)))})
		if i%100 == 0 {
			snap, err := f.Snapshot()
			if err != nil {
				snapErr = err
				break
			}
			sink := &memSink{}
			snapErr = snap.Persist(sink)
			snap.Release()
			snaps = append(snaps, sink.Bytes())
		}
	}
	stop()
	if snapErr != nil {
		t.Fatal(snapErr)
	}
	for i, b := range snaps {
		g := openTxFSM(t)
		mustRestore(t, g, b)
		kv, err := g.Get([]byte("c"))
		want := strconv.Itoa(100 * (i + 1))
		if err != nil || kv == nil || string(kv.Value) != want || g.Applied() != uint64(100*(i+1)) {
			t.Fatalf("snapshot %d restored: %+v, %v, applied %d; want %s", i, kv, err, g.Applied(), want)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if f = openDeferredA(t, path); f.Applied() != entries {
		t.Fatalf("after Close: applied %d, want %d", f.Applied(), entries)
	}
}

func openDeferredA(t *testing.T, path string) *FSM {
	return mustOpen(t, path, deferredOn("boot-A"))
}
