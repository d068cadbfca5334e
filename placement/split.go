package placement

import (
	"context"

	"github.com/cairndb/cairn/fsm"
)

// Splittable is the shard leader's replica a split runs on
// (*shard.Replica).
type Splittable interface {
	ID() uint64
	Range() fsm.Range
	// Split proposes the OpSplit through the shard's log, decided at epoch
	// (0: the range's current epoch); the result's Err is the FSM's
	// refusal (*fsm.StaleEpochError when the range left that epoch).
	Split(ctx context.Context, key []byte, childID, epoch uint64) (*fsm.Result, error)
}

// RangeIDs is the meta group's side of a split, wherever its leader is
// (api.Server routes both calls there).
type RangeIDs interface {
	AllocRangeID(ctx context.Context) (uint64, error)
	ReportRanges(ctx context.Context, ranges []fsm.Range) error
}

// SplitResult is a committed split.
type SplitResult struct {
	Parent, Child fsm.Range
	Index         uint64 // the OpSplit's log index
	// ReportErr is why the halves were not reported to the meta group; the
	// split stands, and the node's report loop reports them later.
	ReportErr error
}

// SplitShard is the split sequence, run on the shard's leader: a new range
// id from the meta group (an id is never reused, so an id allocated for a
// split that then fails is only skipped), the OpSplit through the shard's
// log, then both halves reported to the meta group (invariant I6: the range
// map changes only through the meta group's log). A non-zero epoch makes the
// split conditional: a range no longer at that epoch is not split
// (*fsm.StaleEpochError), checked before an id is spent and again in the
// OpSplit's apply.
func SplitShard(ctx context.Context, rep Splittable, key []byte, epoch uint64, meta RangeIDs) (SplitResult, error) {
	before := rep.Range()
	// Past it: refused. Behind it (a new leader still applying the change
	// that made it): the apply decides.
	if epoch != 0 && before.Epoch > epoch {
		return SplitResult{}, &fsm.StaleEpochError{Epoch: epoch, Range: before}
	}
	childID, err := meta.AllocRangeID(ctx)
	if err != nil {
		return SplitResult{}, err
	}
	res, err := rep.Split(ctx, key, childID, epoch)
	if err != nil {
		return SplitResult{}, err
	}
	if res.Err != nil {
		return SplitResult{}, res.Err
	}
	parent := rep.Range()
	child := fsm.Range{ID: childID, Start: parent.End, End: before.End, Epoch: parent.Epoch, Replicas: parent.Replicas}
	out := SplitResult{Parent: parent, Child: child, Index: res.Index}
	out.ReportErr = meta.ReportRanges(ctx, []fsm.Range{parent, child})
	return out, nil
}
