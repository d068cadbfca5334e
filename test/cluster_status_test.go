package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/client"
)

// "cairn cluster status" (GET /v1/cluster) shows each shard's applied index
// and size as its leader reports them, also when the placement leader that
// answers holds no replica of the shard, and a shard holding a few small
// keys does not show 0 B (issue 11 item 9).
func TestClusterStatusAppliedAndSize(t *testing.T) {
	c := StartCluster(t, ClusterConfig{Nodes: 4, InitialSplits: []string{"m"}, AutoPlacement: true}) // the driver carries out the drain
	ctx := Context(t, 2*time.Minute)
	cl, err := client.New(client.Config{Endpoints: c.HTTPAddrs(), MaxRetries: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range 30 {
		if _, err := cl.Put(ctx, fmt.Sprintf("key-%02d", i), strings.Repeat("v", 100)); err != nil {
			t.Fatal(err)
		}
	}
	// Shard 2 holds one small key: bbolt keeps such a bucket inline in its
	// parent's page, where it has no pages of its own to count.
	if _, err := cl.Put(ctx, "z", "small"); err != nil {
		t.Fatal(err)
	}
	// n1 gives its replicas away, then leads the meta group: the placement
	// leader answers for shards it holds no replica of.
	n1 := c.Node(0)
	if err := cl.DrainNode(ctx, n1.ID); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 90*time.Second, "n1 drained", func() error {
		for _, r := range n1.Node.Ranges() {
			for _, id := range r.Replicas {
				if id == n1.ID {
					return fmt.Errorf("range %d still has a replica on n1: %v", r.ID, r.Replicas)
				}
			}
		}
		if reps := n1.Node.Host().Replicas(); len(reps) > 0 {
			return fmt.Errorf("n1 still runs %d replicas", len(reps))
		}
		return nil
	})
	WaitFor(t, 30*time.Second, "placement leader on n1", func() error {
		for _, h := range c.Nodes() {
			m := h.Node.MetaGroup()
			if !m.IsLeader() {
				continue
			}
			if h == n1 {
				return nil
			}
			_ = m.Raft().LeadershipTransferToServer(raft.ServerID(n1.ID), raft.ServerAddress(n1.RaftAddr)).Error()
		}
		return fmt.Errorf("placement leader not yet n1")
	})
	n1Client, err := client.New(client.Config{Endpoints: []string{n1.HTTPAddr}, MaxRetries: 50})
	if err != nil {
		t.Fatal(err)
	}
	defer n1Client.Close()
	// Sizes are sampled every few seconds, leaders report every 500ms.
	WaitFor(t, 20*time.Second, "applied index and size of every shard in n1's view", func() error {
		st, err := n1Client.Cluster(ctx)
		if err != nil {
			return err
		}
		if st.PlacementLeader != n1.ID {
			return fmt.Errorf("answered by placement leader %q", st.PlacementLeader)
		}
		for _, s := range st.Shards {
			if s.AppliedIndex == 0 || s.SizeBytes == 0 {
				return fmt.Errorf("shard %d (replicas %v, leader %q): applied index %d, size %d B",
					s.ID, s.Replicas, s.Leader, s.AppliedIndex, s.SizeBytes)
			}
		}
		return nil
	})
}
