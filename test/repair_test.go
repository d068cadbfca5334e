package test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/api"
)

// Issue 10 item 6 (invariants I1, I12): a range whose replica was moved
// before is repaired like any other when one of its nodes dies. Four nodes,
// a range R moved off one of the first three (its replicas are two of them
// and n4), the placement leader on the node R left, then R's first listed
// replica killed for good: the only repair target is the placement leader's
// own node, which opens an empty replica for R before it is a member. After
// --dead-after R must be back to three live replicas, and every shard's
// leader must be in the cluster view the whole way.
func TestRepairOfMovedRange(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"m"}, AutoPlacement: true, DeadAfter: 2 * time.Second})
	acked := map[string]string{}
	for i := 0; i < 20; i++ {
		k := fmt.Sprintf("%c%02d", 'a'+i%26, i)
		mustPut(t, c.Node(i%3).HTTPAddr, k, k)
		acked[k] = k
	}
	four := c.AddNode()
	// Wait for the balancer to move one replica to n4.
	var moved uint64
	WaitFor(t, 60*time.Second, "a range moved to n4", func() error {
		st, _ := c.Node(0).Node.MetaGroup().State()
		if len(st.Ops) > 0 {
			return fmt.Errorf("%d operations in progress", len(st.Ops))
		}
		for _, r := range st.Ranges {
			if slices.Contains(r.Replicas, "n4") && len(r.Replicas) == 3 {
				moved = r.ID
				return nil
			}
		}
		return fmt.Errorf("no range on n4 yet")
	})
	rng, _ := c.Node(0).Node.MetaGroup().State()
	r, _ := rng.Range(moved)
	// left is the node among n1..n3 that R no longer lists; victim is R's
	// first listed replica (the one a router not in R tries first).
	left, victim := -1, -1
	for i := 0; i < 3; i++ {
		if !slices.Contains(r.Replicas, c.Node(i).ID) {
			left = i
		}
	}
	for i := 0; i < 3; i++ {
		if c.Node(i).ID == r.Replicas[0] {
			victim = i
		}
	}
	if left < 0 || victim < 0 {
		t.Fatalf("range %d replicas %v: layout not as arranged", moved, r.Replicas)
	}
	t.Logf("range %d replicas %v (epoch %d); placement leader to %s, killing %s", moved, r.Replicas, r.Epoch,
		c.Node(left).ID, c.Node(victim).ID)
	// Hand the meta group's leadership to the node R left (n4 is a non-voter).
	WaitFor(t, 30*time.Second, "placement leader on "+c.Node(left).ID, func() error {
		for _, h := range c.Nodes() {
			if h.Node == nil {
				continue
			}
			m := h.Node.MetaGroup()
			if !m.IsLeader() {
				continue
			}
			if h.ID == c.Node(left).ID {
				return nil
			}
			_ = m.Raft().LeadershipTransferToServer(raft.ServerID(c.Node(left).ID), raft.ServerAddress(c.Node(left).RaftAddr)).Error()
		}
		return fmt.Errorf("placement leader not yet %s", c.Node(left).ID)
	})
	c.Kill(victim)
	dead := c.Node(victim).ID
	WaitFor(t, 40*time.Second, "every range fully replicated on live nodes, leaders in the cluster view", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := Do(ctx, "GET", c.Node(left).HTTPAddr, "/v1/cluster", nil)
		if err != nil || res.Status != 200 {
			return fmt.Errorf("cluster view: %v %v", res, err)
		}
		var v api.ClusterView
		if err := res.JSON(&v); err != nil {
			return err
		}
		for _, s := range v.Shards {
			if len(s.Replicas) != 3 || slices.Contains(s.Replicas, dead) {
				return fmt.Errorf("shard %d replicas %v (leader %q)", s.ID, s.Replicas, s.Leader)
			}
			if s.Leader == "" {
				return fmt.Errorf("shard %d: no leader in the cluster view", s.ID)
			}
		}
		return nil
	})
	assertConfigsMatchMap(t, c)
	// The suspected cause (a joiner's descriptor at an older epoch, its
	// reports discarded) would leave the map behind its shard's leader.
	WaitFor(t, 10*time.Second, "the map at every shard leader's epoch", func() error {
		for _, r := range c.Node(left).Node.Ranges() {
			l, err := c.Leader(r.ID)
			if err != nil {
				return err
			}
			rep, _ := c.Node(l).Node.Host().Replica(r.ID)
			if e := rep.Range().Epoch; e != r.Epoch {
				return fmt.Errorf("shard %d: map epoch %d, leader %s at %d", r.ID, r.Epoch, c.Node(l).ID, e)
			}
		}
		return nil
	})
	WaitFor(t, 10*time.Second, "no range reported under-replicated", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := Do(ctx, "GET", c.Node(left).HTTPAddr, "/metrics", nil)
		if err != nil || res.Status != 200 {
			return fmt.Errorf("GET /metrics: %v %v", res, err)
		}
		if !strings.Contains(string(res.Body), "\ncairn_placement_ranges_under_replicated 0\n") {
			return fmt.Errorf("cairn_placement_ranges_under_replicated is not 0")
		}
		return nil
	})
	for k, v := range acked {
		got, res, err := getValue(Context(t, 10*time.Second), c.Node(four).HTTPAddr, k)
		if err != nil || res.Status != 200 || got != v {
			t.Fatalf("Invariant I1: acknowledged %s lost after repair: %q %v %v", k, got, res, err)
		}
	}
}
