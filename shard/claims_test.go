package shard

import (
	"bytes"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
)

// TestClaimsAnswerTheEntryAtTheirIndex: a claim on (index, term) is answered
// by the batch that applies index: with the entry's result when its term
// matches (the claimed entry committed), "not ours" when another term holds
// the index or the batch passed it without handing it to the state machine
// (a new leader's no-op), and "unknown" when a restore jumped over it or
// the index was passed before raft named it. Only entries raft named can
// be claimed.
func TestClaimsAnswerTheEntryAtTheirIndex(t *testing.T) {
	f, err := fsm.Open(fsm.Config{Path: filepath.Join(t.TempDir(), "fsm.db"),
		Initial: fsm.Range{ID: 1, Epoch: 1, Replicas: []string{"n1"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := newClaimFSM(f, f)
	put := func(index, term uint64, key string) *raft.Log {
		b, err := fsm.EncodeCommand(&fsm.Command{Op: fsm.OpPut, Key: []byte(key), Value: []byte("v"), Epoch: 1,
			Time: time.Now().UnixNano()})
		if err != nil {
			t.Fatal(err)
		}
		return &raft.Log{Index: index, Term: term, Type: raft.LogCommand, Data: b}
	}
	answer := func(ch <-chan claimAnswer) claimAnswer {
		t.Helper()
		select {
		case a := <-ch:
			return a
		default:
			t.Fatal("the claim was not answered")
			return claimAnswer{}
		}
	}
	c.ApplyBatch([]*raft.Log{put(1, 1, "a")})

	// Raft's hook names the entry; the proposer picks the claim up.
	c.expect(2, 1)
	ch, ok := c.claim(2, 1)
	if !ok {
		t.Fatal("claim on an index not applied refused")
	}
	c.ApplyBatch([]*raft.Log{put(2, 1, "b")})
	if a := answer(ch); !a.ours || a.res == nil || a.res.Index != 2 || a.res.KV == nil {
		t.Fatalf("the claimed entry applied: %+v, want ours with its result", a)
	}
	c.drop(2, 1)

	// Another term at the index: never ours.
	c.expect(3, 1)
	ch, _ = c.claim(3, 1)
	c.ApplyBatch([]*raft.Log{put(3, 2, "c")})
	if a := answer(ch); a.ours || !a.known {
		t.Fatalf("another entry at the index: %+v, want known, not ours", a)
	}
	c.drop(3, 2) // a different term: leaves the claim
	c.drop(3, 1)

	// A batch that passes the index (raft kept a no-op there).
	c.expect(4, 2)
	ch, _ = c.claim(4, 2)
	c.ApplyBatch([]*raft.Log{put(5, 3, "d")})
	if a := answer(ch); a.ours || !a.known {
		t.Fatalf("the index passed without a command: %+v, want known, not ours", a)
	}
	c.drop(4, 2)

	if _, ok := c.claim(7, 3); ok {
		t.Fatal("a claim raft's hook did not name was accepted")
	}
	// raft naming an index already passed (a leader that restored a
	// snapshot as it stepped down): unknown, never "not ours" from a later
	// batch (review: a committed write was answered not written and sent
	// again).
	c.expect(5, 2)
	ch, _ = c.claim(5, 2)
	if a := answer(ch); a.known {
		t.Fatalf("a claim registered after its index was passed: %+v, want unknown", a)
	}
	c.drop(5, 2)

	// A restore that jumps over a claim answers "unknown".
	c.expect(9, 3)
	ch, _ = c.claim(9, 3)
	c.ApplyBatch([]*raft.Log{put(6, 3, "e")})
	g, err := fsm.Open(fsm.Config{Path: filepath.Join(t.TempDir(), "fsm.db"),
		Initial: fsm.Range{ID: 1, Epoch: 1, Replicas: []string{"n1"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// Restore into a state machine whose applied index is past the claim:
	// a snapshot taken after 9 stands for one installed from a leader.
	for i := uint64(1); i <= 10; i++ {
		g.ApplyBatch([]*raft.Log{put(i, 3, "k")})
	}
	var later bytes.Buffer
	gs, err := g.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := gs.Persist(&bufSink{Buffer: &later}); err != nil {
		t.Fatal(err)
	}
	gs.Release()
	if err := c.Restore(io.NopCloser(&later)); err != nil {
		t.Fatal(err)
	}
	if a := answer(ch); a.known {
		t.Fatalf("a restore jumped over the claim: %+v, want unknown", a)
	}
	if n := c.n.Load(); n != 1 {
		t.Fatalf("%d claims kept, want the one not yet dropped", n)
	}
}

type bufSink struct{ *bytes.Buffer }

func (bufSink) ID() string    { return "test" }
func (bufSink) Cancel() error { return nil }
func (bufSink) Close() error  { return nil }
