package fsm

import (
	"bytes"
	"hash/crc32"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testRange is [b, y): keys "a..." and "z..." are outside it.
var testRange = Range{ID: 7, Start: []byte("b"), End: []byte("y"), Epoch: 3, Replicas: []string{"n1", "n2", "n3"}}

func mustOpen(t testing.TB, path string, mods ...func(*Config)) *FSM {
	t.Helper()
	// Every batch applies into the transaction left open by the one
	// before, committed only by a read, a snapshot, a split or Close: the
	// hardest setting for everything that reads (opentx.go).
	cfg := Config{Path: path, Initial: testRange, Logger: slog.New(slog.DiscardHandler),
		CommitBatches: 1 << 20, CommitEvery: -1}
	for _, m := range mods {
		m(&cfg)
	}
	f, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// newFSM opens a fresh FSM in its own temp dir.
func newFSM(t testing.TB, mods ...func(*Config)) *FSM {
	t.Helper()
	return mustOpen(t, filepath.Join(t.TempDir(), "fsm.db"), mods...)
}

func mustEncode(t testing.TB, c *Command) []byte {
	t.Helper()
	b, err := EncodeCommand(c)
	if err != nil {
		t.Fatalf("EncodeCommand(%+v): %v", c, err)
	}
	return b
}

func cmdLog(t testing.TB, index uint64, c *Command) *raft.Log {
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: mustEncode(t, c)}
}

// mustApply applies c at index and returns its result, failing if the
// entry was skipped.
func mustApply(t testing.TB, f *FSM, index uint64, c *Command) *Result {
	t.Helper()
	r, ok := f.Apply(cmdLog(t, index, c)).(*Result)
	if !ok || r == nil {
		t.Fatalf("Apply(%d) returned %T, want *Result", index, r)
	}
	return r
}

func mustGet(t testing.TB, f *FSM, key string) *KV {
	t.Helper()
	kv, err := f.Get([]byte(key))
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return kv
}

func mustHash(t testing.TB, f *FSM) (uint64, []byte) {
	t.Helper()
	applied, sum, err := f.Hash()
	if err != nil {
		t.Fatalf("Hash: %v", err)
	}
	return applied, sum
}

func put(key, value string) *Command {
	return &Command{Op: OpPut, Key: []byte(key), Value: []byte(value)}
}

// memSink is an in-memory raft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func lookupDedupT(t testing.TB, f *FSM, id string) (*Result, bool) {
	t.Helper()
	var r *Result
	err := f.view(func(tx *bbolt.Tx) error {
		c := &applyCtx{b: txBuckets(tx)}
		var err error
		r, err = c.lookupDedup(id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return r, r != nil
}

func countBucket(t testing.TB, f *FSM, name []byte) int {
	t.Helper()
	n := 0
	err := f.view(func(tx *bbolt.Tx) error {
		n = tx.Bucket(name).Stats().KeyN
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
