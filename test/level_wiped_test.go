package test

import (
	"os"
	"testing"
	"time"

	"github.com/cairndb/cairn/fsm"
)

// TestWipedNodeOnOlderBinary (fsm/DESIGN.md "Command levels"): a node whose
// data dir was wiped comes back under its id on a binary below the
// cluster's level. No node.json is left to refuse the start, so it must
// learn the level from the cluster and open no replica: a replica on a
// binary below the level would refuse or skip commands the others apply,
// and diverge.
func TestWipedNodeOnOlderBinary(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	waitClusterLevel(t, c, fsm.CommandLevel)
	c.Kill(2)
	if err := os.RemoveAll(c.Node(2).DataDir); err != nil {
		t.Fatal(err)
	}
	c.SetCommandLevel(2, fsm.CommandLevel-1)
	if err := c.TryRestart(2); err != nil {
		t.Logf("the wiped node on the older binary refused to start: %v", err)
		return
	}
	deadline := time.Now().Add(15 * time.Second)
	learned := false // the node knows the range map: the check below tests something
	for time.Now().Before(deadline) {
		n := c.Node(2).Node
		learned = learned || len(n.Ranges()) > 0
		for _, r := range n.Ranges() {
			if _, ok := n.Replica(r.ID); ok {
				t.Fatalf("the wiped node on a level-%d binary opened a replica of range %d in a level-%d cluster",
					fsm.CommandLevel-1, r.ID, fsm.CommandLevel)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !learned {
		t.Fatal("the wiped node never learned the range map: the case tests nothing")
	}
	if err := c.Node(2).Node.Health(); err == nil {
		t.Fatal("the wiped node on an older binary reports itself healthy")
	}
}
