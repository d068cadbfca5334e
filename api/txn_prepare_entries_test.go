package api

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/clock"
	"github.com/cairndb/cairn/shard"
)

// entryReplica records what proposePrepares proposes and answers each
// command as applied (a batch: one item per prepare), or fails every
// proposal with err.
type entryReplica struct {
	Replica
	mu      sync.Mutex
	entries []*fsm.Command
	err     error
}

func (r *entryReplica) Propose(_ context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	if _, err := fsm.EncodeCommand(cmd); err != nil {
		return nil, err // as shard.Replica: an entry that does not encode is not proposed
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return nil, r.err
	}
	r.entries = append(r.entries, cmd)
	if cmd.Op != fsm.OpTxnBatch {
		return &fsm.Result{Index: uint64(len(r.entries))}, nil
	}
	items, err := fsm.DecodeTxnBatch(cmd.Value)
	if err != nil {
		return nil, err
	}
	out := &fsm.Result{Index: uint64(len(r.entries))}
	for range items {
		out.Items = append(out.Items, &fsm.Result{Index: out.Index})
	}
	return out, nil
}

// TestProposePrepares: a leader's prepares for one shard go in one
// OpTxnBatch entry, cut where the next would pass the entry's bound; a lone
// one goes as an entry of its own, epoch and time set; an entry refused
// before anything was appended answers errNotProposed (each is then sent
// alone, routed), and one too large to encode too.
func TestProposePrepares(t *testing.T) {
	s := &Server{cfg: Config{Clock: clock.Real()}}
	rng := fsm.Range{ID: 4, Epoch: 9}
	prep := func(key string, size int) *fsm.Command {
		return &fsm.Command{Op: fsm.OpTxnPrepare, Key: []byte(key), Value: []byte(strings.Repeat("v", size))}
	}
	ctx := context.Background()

	rep := &entryReplica{}
	res, errs := s.proposePrepares(ctx, rep, rng, []*fsm.Command{prep("a", 10), prep("b", 10), prep("c", 10)})
	if len(rep.entries) != 1 || rep.entries[0].Op != fsm.OpTxnBatch {
		t.Fatalf("three small prepares: %d entries, want one batch", len(rep.entries))
	}
	for i := range res {
		if errs[i] != nil || res[i] == nil || res[i].Index != 1 {
			t.Fatalf("prepare %d: %+v %v", i, res[i], errs[i])
		}
	}
	inner, _ := fsm.DecodeTxnBatch(rep.entries[0].Value)
	if c, err := fsm.DecodeCommand(inner[1]); err != nil || string(c.Key) != "b" || c.Epoch != 9 || c.Time == 0 {
		t.Fatalf("batched prepare: %+v %v, want key b, epoch 9, a time", c, err)
	}

	// Two of half the bound do not fit one entry together.
	rep = &entryReplica{}
	half := fsm.MaxTxnBatchSize / 2
	_, errs = s.proposePrepares(ctx, rep, rng, []*fsm.Command{prep("a", half), prep("b", half), prep("c", 10)})
	// The two entries are proposed side by side: either may come first.
	lone := slices.IndexFunc(rep.entries, func(c *fsm.Command) bool { return c.Op == fsm.OpTxnPrepare })
	if len(rep.entries) != 2 || lone < 0 || rep.entries[1-lone].Op != fsm.OpTxnBatch ||
		errs[0] != nil || errs[1] != nil || errs[2] != nil {
		t.Fatalf("entries %d (%v): want a lone prepare and a batch of two; errors %v", len(rep.entries), ops(rep.entries), errs)
	}
	if c := rep.entries[lone]; c.Epoch != 9 || c.Time == 0 {
		t.Fatalf("lone prepare: epoch %d time %d, want 9 and a time", c.Epoch, c.Time)
	}

	// Refused before appending: every prepare answers errNotProposed.
	rep = &entryReplica{err: &shard.NotLeaderError{}}
	_, errs = s.proposePrepares(ctx, rep, rng, []*fsm.Command{prep("a", 1), prep("b", 1)})
	for i, err := range errs {
		if !errors.Is(err, errNotProposed) {
			t.Fatalf("prepare %d after a refusal: %v, want errNotProposed", i, err)
		}
	}
	// An outcome unknown is not "not proposed": the coordinator decides.
	rep = &entryReplica{err: shard.ErrOutcomeUnknown}
	_, errs = s.proposePrepares(ctx, rep, rng, []*fsm.Command{prep("a", 1), prep("b", 1)})
	if errors.Is(errs[0], errNotProposed) || !errors.Is(errs[0], shard.ErrOutcomeUnknown) {
		t.Fatalf("unknown outcome answered %v", errs[0])
	}
	// A command whose fields pass the size estimate makes the entry too
	// large to encode: nothing proposed, each sent alone.
	rep = &entryReplica{}
	var bigs []*fsm.Command
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		c := prep(k, 10)
		c.Cond = &fsm.Condition{Kind: fsm.CondValue, Value: make([]byte, fsm.MaxValueSize)}
		bigs = append(bigs, c)
	}
	_, errs = s.proposePrepares(ctx, rep, rng, bigs)
	if len(rep.entries) != 0 {
		t.Fatalf("an entry past its bound: %d entries proposed", len(rep.entries))
	}
	for i, err := range errs {
		if !errors.Is(err, errNotProposed) {
			t.Fatalf("prepare %d of an entry past its bound: %v, want errNotProposed", i, err)
		}
	}
}

func ops(cs []*fsm.Command) []fsm.Op {
	var out []fsm.Op
	for _, c := range cs {
		out = append(out, c.Op)
	}
	return out
}
