package shard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// logImpls are the two log stores; the tests below run on each.
var logImpls = []struct {
	name string
	kind LogStoreKind
}{
	{"wal", LogStoreWAL},
	{"boltdb", LogStoreBoltDB},
}

// testLog is a log store under test in a data dir of its own, with its
// groups' directories under it.
type testLog struct {
	t    *testing.T
	kind LogStoreKind
	dir  string
	NodeLog
	mu     sync.Mutex
	groups []GroupLog
}

func openTestLog(t *testing.T, kind LogStoreKind, dir string) *testLog {
	t.Helper()
	s, err := OpenNodeLog(dir, kind, nil)
	if err != nil {
		t.Fatal(err)
	}
	return &testLog{t: t, kind: kind, dir: dir, NodeLog: s}
}

// groupDir is group id's directory, as Host gives it.
func (l *testLog) groupDir(id uint64) string {
	return filepath.Join(l.dir, "shards", fmt.Sprint(id))
}

// Group opens group id, closed again by Close.
func (l *testLog) Group(id uint64) GroupLog {
	l.t.Helper()
	g, err := l.OpenGroup(id, l.groupDir(id))
	if err != nil {
		l.t.Fatal(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.groups = append(l.groups, g)
	return g
}

// Close closes the groups, as their groups' shutdowns do, then the store.
func (l *testLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, g := range l.groups {
		errs = append(errs, g.Close())
	}
	l.groups = nil
	return errors.Join(append(errs, l.NodeLog.Close())...)
}

func forEachLog(t *testing.T, test func(t *testing.T, kind LogStoreKind)) {
	for _, impl := range logImpls {
		t.Run(impl.name, func(t *testing.T) { test(t, impl.kind) })
	}
}

func hasGroup(t *testing.T, s NodeLog, id uint64) bool {
	t.Helper()
	w, ok := s.(*WAL)
	if !ok {
		t.Fatalf("hasGroup on %T", s)
	}
	return w.HasGroup(id)
}

func testEntry(i uint64) *raft.Log {
	return &raft.Log{Index: i, Term: i/10 + 1, Type: raft.LogCommand, Data: fmt.Appendf(nil, "data-%d", i),
		Extensions: []byte{byte(i)}, AppendedAt: time.Unix(1700000000, int64(i))}
}

func indexes(t *testing.T, g GroupLog) (uint64, uint64) {
	t.Helper()
	first, err := g.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := g.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	return first, last
}

// The raft.LogStore and raft.StableStore contracts, per group, across a
// reopen.
func TestNodeLogContract(t *testing.T) { forEachLog(t, testNodeLogContract) }

func testNodeLogContract(t *testing.T, kind LogStoreKind) {
	path := t.TempDir()
	s := openTestLog(t, kind, path)
	g, other := s.Group(7), s.Group(8)
	if f, l := indexes(t, g); f != 0 || l != 0 {
		t.Fatalf("empty log: first %d last %d", f, l)
	}
	var out raft.Log
	if err := g.GetLog(1, &out); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog on empty: %v", err)
	}
	if _, err := g.Get([]byte("CurrentTerm")); err == nil || err.Error() != "not found" {
		t.Fatalf("Get missing: %v (raft needs exactly \"not found\")", err)
	}
	var batch []*raft.Log
	for i := uint64(1); i <= 100; i++ {
		batch = append(batch, testEntry(i))
	}
	if err := g.StoreLogs(batch); err != nil {
		t.Fatal(err)
	}
	if err := other.StoreLog(testEntry(500)); err != nil {
		t.Fatal(err)
	}
	if err := g.SetUint64([]byte("CurrentTerm"), 9); err != nil {
		t.Fatal(err)
	}
	if err := g.Set([]byte("LastVoteCand"), []byte("n2")); err != nil {
		t.Fatal(err)
	}
	// Compaction from the front, then a conflicting suffix.
	if err := g.DeleteRange(1, 40); err != nil {
		t.Fatal(err)
	}
	if err := g.DeleteRange(91, 100); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTestLog(t, kind, path)
	defer s.Close()
	g, other = s.Group(7), s.Group(8)
	if f, l := indexes(t, g); f != 41 || l != 90 {
		t.Fatalf("after deletes and reopen: first %d last %d, want 41 90", f, l)
	}
	if f, l := indexes(t, other); f != 500 || l != 500 {
		t.Fatalf("other group: first %d last %d", f, l)
	}
	for _, i := range []uint64{41, 77, 90} {
		if err := g.GetLog(i, &out); err != nil {
			t.Fatal(err)
		}
		want := testEntry(i)
		if out.Index != i || out.Term != want.Term || out.Type != want.Type || !bytes.Equal(out.Data, want.Data) ||
			!bytes.Equal(out.Extensions, want.Extensions) || !out.AppendedAt.Equal(want.AppendedAt) {
			t.Errorf("entry %d = %+v, want %+v", i, out, want)
		}
	}
	for _, i := range []uint64{40, 91} {
		if err := g.GetLog(i, &out); !errors.Is(err, raft.ErrLogNotFound) {
			t.Errorf("deleted entry %d: %v", i, err)
		}
	}
	if v, err := g.GetUint64([]byte("CurrentTerm")); err != nil || v != 9 {
		t.Errorf("CurrentTerm = %d, %v", v, err)
	}
	if v, err := g.Get([]byte("LastVoteCand")); err != nil || string(v) != "n2" {
		t.Errorf("LastVoteCand = %q, %v", v, err)
	}
	if kind == LogStoreBoltDB {
		// A group's raft.db is in its directory: removing the directory
		// (Host.RemoveReplica) removes its log and stable state, and only its.
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(s.groupDir(7)); err != nil {
			t.Fatal(err)
		}
		s = openTestLog(t, kind, path)
		g, other = s.Group(7), s.Group(8)
		if f, l := indexes(t, g); f != 0 || l != 0 {
			t.Errorf("removed group: first %d last %d", f, l)
		}
		if _, err := g.GetUint64([]byte("CurrentTerm")); err == nil {
			t.Error("removed group kept its term")
		}
		if f, l := indexes(t, other); f != 500 || l != 500 {
			t.Errorf("removing group 7 changed group 8: first %d last %d", f, l)
		}
		return
	}
	// Dropping a group removes its log and stable state, and only its.
	if err := s.DropGroup(7); err != nil {
		t.Fatal(err)
	}
	if f, l := indexes(t, g); f != 0 || l != 0 {
		t.Errorf("dropped group: first %d last %d", f, l)
	}
	if _, err := g.GetUint64([]byte("CurrentTerm")); err == nil {
		t.Error("dropped group kept its term")
	}
	if !hasGroup(t, s.NodeLog, 8) {
		t.Error("dropping group 7 dropped group 8")
	}
	if err := s.DropGroup(7); err != nil {
		t.Errorf("dropping twice: %v", err)
	}
}

// Writes of many groups at once share commits (group commit), and each is
// durable and visible when its call returns. The WAL only: with boltdb each
// group commits on its own.
func TestNodeLogGroupCommit(t *testing.T) {
	s := openTestLog(t, LogStoreWAL, t.TempDir())
	defer s.Close()
	const groups, perGroup = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, groups)
	for id := uint64(1); id <= groups; id++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := s.Group(id)
			for i := uint64(1); i <= perGroup; i++ {
				if err := g.StoreLogs([]*raft.Log{testEntry(i)}); err != nil {
					errs <- err
					return
				}
				if last, err := g.LastIndex(); err != nil || last != i {
					errs <- fmt.Errorf("group %d: last %d after storing %d (%v)", id, last, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := s.Stats()
	if st.Writes != groups*perGroup || st.Commits*2 > st.Writes {
		t.Errorf("stats %+v: want %d writes in at most half as many commits", st, groups*perGroup)
	}
}

func TestNodeLogClosed(t *testing.T) { forEachLog(t, testNodeLogClosed) }

func testNodeLogClosed(t *testing.T, kind LogStoreKind) {
	s := openTestLog(t, kind, t.TempDir())
	g := s.Group(1)
	if err := s.NodeLog.Close(); err != nil {
		t.Fatal(err)
	}
	if err := g.StoreLog(testEntry(1)); !errors.Is(err, ErrLogStoreClosed) {
		t.Errorf("write after close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// FuzzLogEntry: decoding never panics, and what encodes decodes the same.
func FuzzLogEntry(f *testing.F) {
	f.Add(encodeLogEntry(testEntry(3)))
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if decodeLogEntry(b, &l) != nil {
			return
		}
		var again raft.Log
		if err := decodeLogEntry(encodeLogEntry(&l), &again); err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		if again.Index != l.Index || again.Term != l.Term || !bytes.Equal(again.Data, l.Data) {
			t.Fatalf("round trip changed %+v to %+v", l, again)
		}
	})
}

// Invariant I1: a data dir written with one log store refuses to open with
// the other, with an error naming the store it needs. Opening it on an empty
// log would forget every term and vote the node gave and every entry it
// acknowledged. An empty data dir opens with either.
func TestOpenNodeLogRefusesOtherStore(t *testing.T) {
	mustClose := func(s io.Closer) {
		t.Helper()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	write := func(t *testing.T, kind LogStoreKind, dir string, groupDir string) {
		t.Helper()
		s := openTestLog(t, kind, dir)
		g, err := s.OpenGroup(1, filepath.Join(dir, groupDir))
		if err != nil {
			t.Fatal(err)
		}
		if err := g.SetUint64([]byte("CurrentTerm"), 3); err != nil {
			t.Fatal(err)
		}
		mustClose(g)
		mustClose(s)
	}
	for _, tc := range []struct {
		name           string
		written, other LogStoreKind
		groupDir       string
	}{
		{"wal then boltdb", LogStoreWAL, LogStoreBoltDB, "meta"},
		{"boltdb meta then wal", LogStoreBoltDB, LogStoreWAL, "meta"},
		{"boltdb shard then wal", LogStoreBoltDB, LogStoreWAL, filepath.Join("shards", "5")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, tc.written, dir, tc.groupDir)
			_, err := OpenNodeLog(dir, tc.other, nil)
			if !errors.Is(err, ErrLogStoreMismatch) {
				t.Fatalf("open a %s data dir with %s: %v, want ErrLogStoreMismatch", tc.written, tc.other, err)
			}
			if want := "start with --log-store " + string(tc.written); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
			// The store that wrote it still opens it, with what it wrote.
			s := openTestLog(t, tc.written, dir)
			g, err := s.OpenGroup(1, filepath.Join(dir, tc.groupDir))
			if err != nil {
				t.Fatal(err)
			}
			if v, err := g.GetUint64([]byte("CurrentTerm")); err != nil || v != 3 {
				t.Errorf("CurrentTerm after reopen = %d, %v", v, err)
			}
			mustClose(g)
			mustClose(s)
		})
	}
	t.Run("removed bbolt node store", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "raft-log.db"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, kind := range LogStoreKinds {
			if _, err := OpenNodeLog(dir, kind, nil); !errors.Is(err, ErrLogStoreMismatch) ||
				!strings.Contains(err.Error(), "raft-log.db") {
				t.Errorf("open with %s a data dir with raft-log.db: %v, want ErrLogStoreMismatch naming it", kind, err)
			}
		}
	})
	t.Run("empty", func(t *testing.T) {
		for _, kind := range append(LogStoreKinds, "") {
			s, err := OpenNodeLog(t.TempDir(), kind, nil)
			if err != nil {
				t.Fatalf("open an empty data dir with %q: %v", kind, err)
			}
			mustClose(s)
		}
		if _, err := OpenNodeLog(t.TempDir(), "bolt", nil); err == nil {
			t.Error("an unknown store opened")
		}
	})
}
