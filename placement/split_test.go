package placement

import (
	"context"
	"errors"
	"testing"

	"github.com/cairndb/cairn/fsm"
)

type fakeSplitRep struct {
	rng   fsm.Range
	calls *[]string
	err   error // the FSM's refusal
}

func (f *fakeSplitRep) ID() uint64       { return f.rng.ID }
func (f *fakeSplitRep) Range() fsm.Range { return f.rng }
func (f *fakeSplitRep) Split(_ context.Context, key []byte, child, _ uint64) (*fsm.Result, error) {
	*f.calls = append(*f.calls, "split")
	if f.err != nil {
		return &fsm.Result{Index: 9, Err: f.err}, nil
	}
	f.rng.End, f.rng.Epoch = key, f.rng.Epoch+1
	return &fsm.Result{Index: 9}, nil
}

type fakeMeta struct {
	calls     *[]string
	allocErr  error
	reportErr error
	reported  []fsm.Range
}

func (m *fakeMeta) AllocRangeID(context.Context) (uint64, error) {
	*m.calls = append(*m.calls, "alloc")
	return 7, m.allocErr
}
func (m *fakeMeta) ReportRanges(_ context.Context, r []fsm.Range) error {
	*m.calls = append(*m.calls, "report")
	m.reported = r
	return m.reportErr
}

// The split sequence: an id from the meta group, the split through the
// shard's log, both halves reported (invariant I6). A failed allocation
// proposes nothing; a failed report does not undo a committed split.
func TestSplitShardSequence(t *testing.T) {
	ctx := context.Background()
	var calls []string
	rep := &fakeSplitRep{rng: fsm.Range{ID: 1, Start: []byte("a"), End: []byte("z"), Epoch: 3, Replicas: []string{"n1"}}, calls: &calls}
	meta := &fakeMeta{calls: &calls, reportErr: errors.New("meta leader unknown")}
	res, err := SplitShard(ctx, rep, []byte("m"), 0, meta)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(calls); got != 3 || calls[0] != "alloc" || calls[1] != "split" || calls[2] != "report" {
		t.Fatalf("calls %v; want alloc, split, report", calls)
	}
	want := fsm.Range{ID: 7, Start: []byte("m"), End: []byte("z"), Epoch: 4, Replicas: []string{"n1"}}
	if string(res.Child.Start) != "m" || string(res.Child.End) != "z" || res.Child.ID != 7 || res.Child.Epoch != want.Epoch ||
		string(res.Parent.End) != "m" || res.Index != 9 || res.ReportErr == nil || len(meta.reported) != 2 {
		t.Fatalf("result %+v reported %v; want parent [a,m) child %+v, index 9, the report error kept", res, meta.reported, want)
	}

	calls = nil
	meta = &fakeMeta{calls: &calls, allocErr: errors.New("no meta leader")}
	if _, err := SplitShard(ctx, rep, nil, 0, meta); err == nil || len(calls) != 1 {
		t.Fatalf("alloc failed: err %v, calls %v; want the error and nothing proposed", err, calls)
	}

	calls = nil
	refused := &fakeSplitRep{rng: rep.rng, calls: &calls, err: fsm.ErrInvalidCommand}
	if _, err := SplitShard(ctx, refused, []byte("b"), 0, &fakeMeta{calls: &calls}); !errors.Is(err, fsm.ErrInvalidCommand) ||
		len(calls) != 2 {
		t.Fatalf("refused split: err %v, calls %v; want the FSM's refusal and no report", err, calls)
	}
}

// A split decided at an epoch the range has left is refused before a range
// id is allocated (a stale placement leader stepping its operation again).
func TestSplitShardAtStaleEpoch(t *testing.T) {
	var calls []string
	rep := &fakeSplitRep{rng: fsm.Range{ID: 1, Epoch: 3}, calls: &calls}
	_, err := SplitShard(context.Background(), rep, nil, 2, &fakeMeta{calls: &calls})
	var se *fsm.StaleEpochError
	if !errors.As(err, &se) || se.Epoch != 2 || se.Range.Epoch != 3 || len(calls) != 0 {
		t.Fatalf("split at epoch 2 of a range at 3: %v, calls %v; want a StaleEpochError and no call", err, calls)
	}
}
