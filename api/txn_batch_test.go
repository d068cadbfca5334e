package api

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/shard"
	"github.com/cairndb/cairn/txn"
)

// TestShardBatcherBoundsWeight: a drain hands run batches of at most
// txnResolveBatchBytes by weight (a resolve batch: its records' write-set
// bytes), never fewer than one item, so one transaction over the bound
// goes out alone; and of at most txnResolveBatchMax items without a weight.
func TestShardBatcherBoundsWeight(t *testing.T) {
	drain := func(items []int, weight func(int) int) [][]int {
		b := &shardBatcher[int]{queue: map[uint64][]int{7: items}, running: map[uint64]bool{7: true}}
		var got [][]int
		b.drain(context.Background(), 7, func(_ context.Context, batch []int) { got = append(got, slices.Clone(batch)) }, weight)
		if b.running[7] || len(b.queue[7]) != 0 {
			t.Fatalf("after the drain: running %v, queue %v", b.running[7], b.queue[7])
		}
		return got
	}
	const m = txnResolveBatchBytes / 10
	byMB := func(n int) int { return n * m }
	if got := fmt.Sprint(drain([]int{4, 4, 4, 20, 1, 1, 10, 0}, byMB)); got != "[[4 4] [4] [20] [1 1] [10 0]]" {
		t.Fatalf("weighted batches %s, want [[4 4] [4] [20] [1 1] [10 0]]", got)
	}
	many := make([]int, txnResolveBatchMax+3)
	if got := drain(many, nil); len(got) != 2 || len(got[0]) != txnResolveBatchMax || len(got[1]) != 3 {
		t.Fatalf("unweighted: %d batches", len(got))
	}
	// A resolution weighs its record's write set, values included, and its
	// participants' keys.
	it := &resolveItem{rec: &txn.Record{WriteSet: []txn.Write{{Key: []byte("ab"), Value: make([]byte, 1000)}, {Key: []byte("c"), Delete: true}},
		Participants: []txn.Participant{{Keys: []txn.KeyIntent{{Key: []byte("ab")}}}, {Keys: []txn.KeyIntent{{Key: []byte("c")}}}}}}
	if w := resolveWeight(it); w != 1006 {
		t.Fatalf("resolveWeight = %d, want 1006", w)
	}
}

// TestShardBatcherTake: a host takes queued items as riders up to the
// count and within the budget by weight, possibly none: an item over the
// budget stays queued for the drainer to send alone (a host and its riders
// must fit one node-to-node call).
func TestShardBatcherTake(t *testing.T) {
	b := &shardBatcher[int]{queue: map[uint64][]int{7: {100, 150, 10}, 8: {300, 1}}, running: map[uint64]bool{}}
	id := func(n int) int { return n }
	if got := b.take(7, 5, id, 256); !slices.Equal(got, []int{100, 150}) || !slices.Equal(b.queue[7], []int{10}) {
		t.Fatalf("took %v, left %v; want [100 150], [10]", got, b.queue[7])
	}
	if got := b.take(8, 5, id, 256); got != nil || !slices.Equal(b.queue[8], []int{300, 1}) {
		t.Fatalf("took %v over the budget, left %v", got, b.queue[8])
	}
	if got := b.take(9, 5, id, 256); got != nil {
		t.Fatalf("took %v from an empty queue", got)
	}
	b.queue[7] = []int{1, 2, 3}
	if got := b.take(7, 2, nil, 0); !slices.Equal(got, []int{1, 2}) || !slices.Equal(b.queue[7], []int{3}) {
		t.Fatalf("unweighted: took %v, left %v", got, b.queue[7])
	}
	if got := b.take(7, 0, nil, 0); got != nil {
		t.Fatalf("took %v with room for none", got)
	}
}

// TestCapAnswers: a shared prepare call's answer keeps its answers up to the
// byte limit (the first always) and marks the rest "send alone"; a prepare
// answers the values it locked, which its command does not show.
func TestCapAnswers(t *testing.T) {
	read := func(n int) txnProposeBatchAnswer {
		return txnProposeBatchAnswer{Result: &txnWireResult{Reads: []txnWireRead{{Key: []byte("k"), Value: make([]byte, n)}}}}
	}
	items := []txnProposeBatchAnswer{read(99), read(50), read(0), read(60), {Error: "x"}, read(10)}
	capAnswers(items, 200)
	var got []string
	for _, a := range items {
		switch {
		case a.SendAlone:
			got = append(got, "alone")
		case a.Result == nil:
			got = append(got, "error")
		default:
			got = append(got, "kept")
		}
	}
	// 100, 151, 152, 213 > 200: alone; an error is small and stays an error;
	// the total is past the limit already, so the last result goes alone.
	if s := fmt.Sprint(got); s != "[kept kept kept alone error alone]" {
		t.Fatalf("capped %s", s)
	}
	one := []txnProposeBatchAnswer{read(500)}
	if capAnswers(one, 200); one[0].SendAlone {
		t.Fatal("the first answer went alone: a command over the limit would never be answered")
	}
}

// TestBatchAnswerErrors: an error in a shared call's answer decodes back into
// its type, so a command the leader did nothing with is sent again on its
// own (routed again) and an unknown outcome stays unknown.
func TestBatchAnswerErrors(t *testing.T) {
	for _, tt := range []struct {
		err         error
		nothingDone bool
		is          error
	}{
		{fmt.Errorf("shard 3: %w", shard.ErrUnavailable), true, nil},
		{&shard.NotLeaderError{}, true, nil},
		{fmt.Errorf("propose: %w", shard.ErrOutcomeUnknown), false, shard.ErrOutcomeUnknown},
		{&fsm.StaleTokenError{Lock: "L", Token: 1, Accepted: 2}, false, cluster.ErrStaleToken},
	} {
		got := batchAnswerError(tt.err).err()
		if nothingDone(got) != tt.nothingDone || (tt.is != nil && !errors.Is(got, tt.is)) {
			t.Errorf("%v answered as %v: nothing done %v, want %v (is %v)", tt.err, got, nothingDone(got), tt.nothingDone, tt.is)
		}
	}
}
