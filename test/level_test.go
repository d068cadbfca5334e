package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/node"
)

// TestClusterCommandLevel: the cluster's shard command level (the
// cluster-version gate, placement/level.go) rises only once every node runs
// a binary of that level, is kept in every data dir, and a binary below it
// is refused at start (a downgrade, scenario S22's rolling upgrade gone
// backwards).
func TestClusterCommandLevel(t *testing.T) {
	top := fsm.CommandLevel
	c := StartCluster(t, ClusterConfig{CommandLevels: map[string]int{"n3": 0}}) // n3: a binary from before levels

	levels := func() (int, map[string]int, error) {
		n := c.Node(0).Node
		if n == nil {
			return 0, nil, fmt.Errorf("n1 is down")
		}
		v := n.Cluster()
		per := map[string]int{}
		for _, nv := range v.Nodes {
			per[nv.ID] = nv.Level
		}
		return v.Level, per, nil
	}
	WaitFor(t, 10*time.Second, "every node's level registered", func() error {
		level, per, err := levels()
		if err != nil {
			return err
		}
		if per["n1"] != top || per["n2"] != top || per["n3"] != 0 || level != 0 {
			return fmt.Errorf("cluster level %d, nodes %v", level, per)
		}
		return nil
	})
	// The meta leader reconciles every 200ms: give it several rounds to
	// (wrongly) raise the level while n3 is behind.
	time.Sleep(time.Second)
	if level, per, _ := levels(); level != 0 {
		t.Fatalf("cluster level %d with n3 at level 0 (nodes %v)", level, per)
	}

	// n3 upgraded in place: the level rises to the binaries' level, and
	// every data dir records it.
	c.Kill(2)
	c.SetCommandLevel(2, top)
	c.Restart(2)
	WaitFor(t, 15*time.Second, "cluster level raised", func() error {
		if level, per, err := levels(); err != nil || level != top {
			return fmt.Errorf("cluster level %d, nodes %v, %v", level, per, err)
		}
		return nil
	})
	WaitFor(t, 10*time.Second, "level recorded in every node.json", func() error {
		for _, h := range c.Nodes() {
			b, err := os.ReadFile(filepath.Join(h.DataDir, "node.json"))
			if err != nil {
				return err
			}
			var id struct {
				Level int `json:"level"`
			}
			if err := json.Unmarshal(b, &id); err != nil {
				return err
			}
			if id.Level != top {
				return fmt.Errorf("%s node.json: %s", h.ID, b)
			}
		}
		return nil
	})

	// n3 downgraded below the cluster's level: it does not start.
	c.Kill(2)
	c.SetCommandLevel(2, top-1)
	err := c.TryRestart(2)
	if err == nil || !strings.Contains(err.Error(), "downgrade") {
		t.Fatalf("a binary below the cluster's level started: %v", err)
	}
	// Back on a binary of the cluster's level, it rejoins.
	c.SetCommandLevel(2, top)
	c.Restart(2)
	if level, _, _ := levels(); level != top {
		t.Fatalf("cluster level %d after n3 came back, want %d", level, top)
	}
}

// TestClusterCommandLevelNewNodeBehind: a node whose binary is below the
// cluster's level joins (a fresh data dir, so nothing refuses it at start):
// it learns the level from the meta state, opens no replica and reports
// itself unhealthy; the meta leader does not add it to the meta group.
func TestClusterCommandLevelNewNodeBehind(t *testing.T) {
	c := StartCluster(t, ClusterConfig{CommandLevels: map[string]int{"n1": 2, "n2": 2, "n3": 2, "n4": 1}})
	WaitFor(t, 15*time.Second, "cluster level 2", func() error {
		if v := c.Node(0).Node.Cluster(); v.Level != 2 {
			return fmt.Errorf("cluster level %d", v.Level)
		}
		return nil
	})
	i := c.AddNode()
	n4 := c.Node(i).Node
	WaitFor(t, 15*time.Second, "n4 reports the level it cannot apply", func() error {
		if err := n4.Health(); err == nil || !strings.Contains(err.Error(), "level 2") {
			return fmt.Errorf("n4 health: %v", err)
		}
		return nil
	})
	// Registered (its level shows), but never in the meta group and holding
	// no replica, over several reconcile rounds.
	time.Sleep(time.Second)
	if reps := n4.Ranges(); len(reps) != 0 {
		t.Fatalf("n4 holds replicas %v", reps)
	}
	if reps := n4.Host().Replicas(); len(reps) != 0 {
		t.Fatalf("n4 runs %d replicas", len(reps))
	}
	leader, ids, err := metaMembers(c)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(ids, "n4") {
		t.Fatalf("n4, behind the cluster's level, is a meta member: %v", ids)
	}
	var lvl = -1
	for _, nv := range leader.Cluster().Nodes {
		if nv.ID == "n4" {
			lvl = nv.Level
		}
	}
	if lvl != 1 {
		t.Fatalf("n4 registered at level %d, want 1", lvl)
	}
}

// TestRemovedNodeLeavesMetaGroup: a node removed for good that holds no
// replica leaves the meta group, so it no longer counts for the meta
// quorum or for the command level (which a dead, removed node would
// otherwise hold down forever).
func TestRemovedNodeLeavesMetaGroup(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	i := c.AddNode()
	WaitFor(t, 15*time.Second, "n4 in the meta group", func() error {
		_, ids, err := metaMembers(c)
		if err == nil && !slices.Contains(ids, "n4") {
			err = fmt.Errorf("meta members %v", ids)
		}
		return err
	})
	c.Kill(i)
	ctx := Context(t, 30*time.Second)
	res, err := Do(ctx, "DELETE", c.Node(0).HTTPAddr, "/v1/cluster/nodes/n4", nil)
	if err != nil || res.Status != 200 {
		t.Fatalf("remove n4: %v %v", res, err)
	}
	WaitFor(t, 15*time.Second, "n4 out of the meta group", func() error {
		_, ids, err := metaMembers(c)
		if err == nil && slices.Contains(ids, "n4") {
			err = fmt.Errorf("meta members %v", ids)
		}
		return err
	})
}

// metaMembers returns the node that leads the meta group (among the first
// three) and the ids of the group's members, as its configuration has them.
func metaMembers(c *Cluster) (*node.Node, []string, error) {
	for _, h := range c.Nodes()[:3] {
		if h.Node != nil && h.Node.Meta().IsLeader() {
			ms, err := h.Node.MetaGroup().Members()
			var ids []string
			for _, m := range ms {
				ids = append(ids, m.ID)
			}
			return h.Node, ids, err
		}
	}
	return nil, nil, fmt.Errorf("no meta leader among n1-n3")
}
