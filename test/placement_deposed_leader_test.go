package test

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/shard"
)

// A deposed placement leader whose raft is stuck never drives placement.
// Node L leads the meta group; its disk stalls (a meta write then holds its
// raft main goroutine in its own log write, so it runs no lease check) and
// its links are cut; the others elect a meta leader. L still says it leads
// (raft.State), but no quorum answers it, so its driver runs no round:
// cairn_placement_rounds_total on L stops. Before, the driver trusted
// State() and kept stepping the operations of its frozen range map against
// the new leader's (re-splitting a range every round until the split
// carried its epoch; transfers and moves fought the new leader's until
// StallAfter).
func TestDeposedMetaLeaderDrivesNoPlacement(t *testing.T) {
	var stalls sync.Map // node id -> chan struct{}, closed to release
	c := StartCluster(t, ClusterConfig{WALKnobs: func(id string) *shard.WALKnobs {
		return &shard.WALKnobs{Sync: func(_ shard.WALWriter, f *os.File) error {
			if ch, ok := stalls.Load(id); ok {
				<-ch.(chan struct{})
			}
			return f.Sync()
		}}
	}})
	leader := func() (int, *NodeHandle) {
		for i, h := range c.Nodes() {
			if h.Node != nil && h.Node.MetaGroup().IsLeader() {
				return i, h
			}
		}
		return -1, nil
	}
	var li int
	var l *NodeHandle
	WaitFor(t, 10*time.Second, "a meta leader", func() error {
		if li, l = leader(); l == nil {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	rounds := func() float64 {
		v, ok := metricValue(t, l.HTTPAddr, "cairn_placement_rounds_total")
		if !ok {
			t.Fatalf("%s: no cairn_placement_rounds_total", l.ID)
		}
		return v
	}
	r0 := rounds()
	WaitFor(t, 10*time.Second, "the placement leader's driver to run rounds", func() error {
		if r := rounds(); r < r0+2 {
			return fmt.Errorf("%v rounds", r)
		}
		return nil
	})

	release := make(chan struct{})
	t.Cleanup(func() { close(release) }) // before the cluster closes (cleanups run last-in first-out)
	stalls.Store(l.ID, release)
	c.Isolate(li)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = l.Node.MetaGroup().SetNodeState(ctx, l.ID, false, false) // held in L's stalled log write
	}()
	WaitFor(t, 15*time.Second, "another meta leader", func() error {
		for i, h := range c.Nodes() {
			if i != li && h.Node != nil && h.Node.MetaGroup().IsLeader() {
				return nil
			}
		}
		return fmt.Errorf("none yet")
	})
	time.Sleep(time.Second) // past the meta group's heartbeat timeout and a driver interval
	if st := l.Node.MetaGroup().Raft().State(); st != raft.Leader {
		t.Fatalf("%s is %v: the setup needs its raft stuck as leader", l.ID, st)
	}
	before := rounds()
	time.Sleep(3 * time.Second) // three driver intervals
	if st := l.Node.MetaGroup().Raft().State(); st != raft.Leader {
		t.Fatalf("%s is %v: the setup needs its raft stuck as leader", l.ID, st)
	}
	if after := rounds(); after > before {
		t.Fatalf("BUG: %s, deposed as meta leader with its raft stuck, ran %v placement rounds in 3s "+
			"on its frozen range map", l.ID, after-before)
	}
}
