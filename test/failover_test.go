package test

import (
	"fmt"
	"testing"
	"time"
)

// Issue 10 item 7: `cairn cluster transfer-leader` was undone by the leader
// balancer within two seconds. An operator's explicit placement sticks: every
// shard's leadership is moved to one node, which the balancer would otherwise
// spread at once, and it stays there over several placement rounds.
func TestTransferLeaderSticks(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"g", "n", "t"}, AutoPlacement: true})
	ctx := Context(t, time.Minute)
	to := c.Node(0).ID
	ranges := c.Node(0).Node.Ranges()
	// Let the balancer finish spreading the leaders it found at formation,
	// so what follows tests its reaction to the operator, not a race with
	// its own earlier decisions.
	WaitFor(t, 30*time.Second, "leaders balanced and no placement operation in flight", func() error {
		_, leaders := placementCounts(c)
		if err := withinOne(leaders, []string{"n1", "n2", "n3"}); err != nil {
			return err
		}
		for _, h := range c.Nodes() {
			if st, _ := h.Node.MetaGroup().State(); len(st.Ops) > 0 {
				return fmt.Errorf("%d operations in flight", len(st.Ops))
			}
		}
		return nil
	})
	for _, r := range ranges {
		path := fmt.Sprintf("/v1/cluster/shards/%d/transfer-leader", r.ID)
		WaitFor(t, 10*time.Second, fmt.Sprintf("transfer shard %d to %s", r.ID, to), func() error {
			res, err := Do(ctx, "POST", c.Node(1).HTTPAddr, path, map[string]string{"to": to})
			if err != nil || res.Status != 200 {
				return fmt.Errorf("%v %v", res, err)
			}
			return nil
		})
	}
	// The driver schedules every second; give it several rounds.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range ranges {
			if i, err := c.Leader(r.ID); err == nil && i != 0 {
				t.Fatalf("shard %d: leadership moved to %s after the operator placed it on %s", r.ID, c.Node(i).ID, to)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	st, _ := c.Node(0).Node.MetaGroup().State()
	for _, r := range ranges {
		if st.LeaderPrefs[r.ID] != to {
			t.Errorf("shard %d: preferred leader %q in the meta state, want %s", r.ID, st.LeaderPrefs[r.ID], to)
		}
	}
}
