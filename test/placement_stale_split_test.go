package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/placement"
)

// TestStaleSplitOperationSplitsOnce (I6): a placement leader whose meta
// group is stuck (its raft main goroutine blocked in a stalled log write,
// say) still reads IsLeader and keeps stepping the operations of its frozen
// range map, while the shards it calls are healthy. A split operation then
// looks unfinished on every round (its range is still at the epoch it was
// decided at, in the frozen map), and each step split the range again, a
// new range a second for up to the stall timeout. The split carries the
// epoch it was decided at; the shard refuses it once the range left that
// epoch, so the operation splits once however often it is stepped.
func TestStaleSplitOperationSplitsOnce(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	const key = "sso/10"
	for i := 0; i < 32; i++ {
		mustPut(t, c.HTTPAddrs()[0], fmt.Sprintf("sso/%02d", i), "v")
	}
	id := shardOf(c, key)
	leader := c.WaitLeader(id, 10*time.Second)
	h := c.Node(leader)
	rng, _ := h.Node.Lookup([]byte(key))
	// The frozen map: the range as the operation was decided on it, never
	// updated afterwards.
	frozen := &placement.State{Ranges: []fsm.Range{rng}}
	op := placement.Operation{Kind: placement.OpSplitRange, RangeID: id, Epoch: rng.Epoch, SplitKey: nil} // the middle, as the scheduler splits
	cl := cluster.New(cluster.Config{})
	defer cl.Close()
	addrs := map[string]string{}
	for _, n := range c.Nodes() {
		addrs[n.ID] = n.HTTPAddr
	}
	ex := placement.NewNodeExecutor(cl, h.ID, func(node string) (string, bool) { a, ok := addrs[node]; return a, ok })
	ctx := Context(t, 30*time.Second)
	before := len(h.Node.Ranges())
	for round := 0; round < 3; round++ {
		done, err := placement.Step(ctx, ex, frozen, op)
		t.Logf("round %d: done=%v err=%v", round, done, err)
	}
	WaitFor(t, 10*time.Second, "the split to reach the node's range map", func() error {
		if n := len(h.Node.Ranges()); n <= before {
			return fmt.Errorf("%d ranges", n)
		}
		return nil
	})
	time.Sleep(500 * time.Millisecond) // let any further split land
	if n := len(h.Node.Ranges()); n != before+1 {
		t.Fatalf("BUG: one split operation stepped 3 times on a frozen range map made %d new ranges, want 1", n-before)
	}
	// The API's side: a split at an epoch the range left is 409
	// condition_failed, and splits nothing.
	r, err := Do(ctx, "POST", h.HTTPAddr, fmt.Sprintf("/v1/cluster/shards/%d/split", id), map[string]any{"epoch": rng.Epoch})
	if err != nil || r.Status != 409 || r.Code() != "condition_failed" {
		t.Fatalf("split at the old epoch %d: %v %v, want 409 condition_failed", rng.Epoch, r, err)
	}
	if n := len(h.Node.Ranges()); n != before+1 {
		t.Fatalf("a refused split made a range: %d new ranges", n-before)
	}
}
