package placement

import (
	"bytes"
	"io"
	"testing"
	"time"

	"github.com/cairndb/cairn/fsm"
)

// ReadyLevel is the lowest level among the nodes that count: registered and
// not removed, or listed as a replica by any range (removed or not, even
// unregistered).
func TestStateReadyLevel(t *testing.T) {
	st := &State{Nodes: map[string]NodeInfo{
		"n1": {ID: "n1", Level: 2}, "n2": {ID: "n2", Level: 3}, "n3": {ID: "n3", Level: 2},
	}}
	if got := st.ReadyLevel(); got != 2 {
		t.Fatalf("ReadyLevel = %d, want 2", got)
	}
	st.Nodes["n4"] = NodeInfo{ID: "n4"} // a binary from before levels
	if got := st.ReadyLevel(); got != 0 {
		t.Fatalf("with a level-0 node: ReadyLevel = %d, want 0", got)
	}
	st.Nodes["n4"] = NodeInfo{ID: "n4", Removed: true}
	if got := st.ReadyLevel(); got != 2 {
		t.Fatalf("level-0 node removed: ReadyLevel = %d, want 2", got)
	}
	st.Ranges = []fsm.Range{{ID: 1, Replicas: []string{"n1", "n2", "n4"}}}
	if got := st.ReadyLevel(); got != 0 {
		t.Fatalf("a removed level-0 node still holds a replica: ReadyLevel = %d, want 0", got)
	}
	st.Ranges = []fsm.Range{{ID: 1, Replicas: []string{"n1", "n2", "n9"}}}
	if got := st.ReadyLevel(); got != 0 {
		t.Fatalf("an unregistered replica: ReadyLevel = %d, want 0", got)
	}
	if got := (&State{}).ReadyLevel(); got != 0 {
		t.Fatalf("no node: ReadyLevel = %d, want 0", got)
	}
}

// raise_level moves the level up only as far as every counted node is
// ready, never down; register_node keeps a node's advertised level; a node
// below the level is BehindLevel and the driver's view drains it.
func TestMetaRaiseLevel(t *testing.T) {
	f := newMetaFSM()
	applyMeta(t, f, 1, metaCommand{V: 1, Op: opInit, Cluster: "c1", Ranges: []fsm.Range{{ID: 1, Epoch: 1, Replicas: []string{"n1", "n2"}}}})
	applyMeta(t, f, 2, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n1", Level: 2}})
	applyMeta(t, f, 3, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n2", Level: 1}})
	if err, _ := f.apply(&metaCommand{Op: opRaiseLevel, Level: 2}).(error); err == nil {
		t.Fatal("raised to 2 while n2 runs level 1")
	}
	applyMeta(t, f, 4, metaCommand{V: 1, Op: opRaiseLevel, Level: 1})
	applyMeta(t, f, 5, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n2", Level: 2}})
	applyMeta(t, f, 6, metaCommand{V: 1, Op: opRaiseLevel, Level: 2})
	applyMeta(t, f, 7, metaCommand{V: 1, Op: opRaiseLevel, Level: 1}) // a stale raise: no change
	if f.state.Level != 2 {
		t.Fatalf("level %d, want 2", f.state.Level)
	}
	// A binary from before levels joins (or n2 is downgraded): the level
	// stays, and the node is behind it.
	applyMeta(t, f, 8, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n3"}})
	applyMeta(t, f, 9, metaCommand{V: 1, Op: opNodeState, Node: &NodeInfo{ID: "n1", Draining: true}})
	st := f.state
	if st.Level != 2 || st.Nodes["n1"].Level != 2 || !st.BehindLevel("n3") || st.BehindLevel("n2") {
		t.Fatalf("state %+v: want level 2 kept, n1's level kept by node_state, n3 behind", st)
	}
	if c := st.clone(); c.Level != 2 {
		t.Fatalf("clone lost the level: %d", c.Level)
	}
	// Snapshot and restore keep it.
	b, err := encodeMetaSnapshot(st)
	if err != nil {
		t.Fatal(err)
	}
	f2 := newMetaFSM()
	if err := f2.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if f2.state.Level != 2 || f2.state.Nodes["n2"].Level != 2 {
		t.Fatalf("restored state lost levels: %+v", f2.state)
	}

	now := time.Unix(1000, 0)
	d := driverAt(&now, nil)
	v := d.view(st)
	for _, n := range v.Nodes {
		if want := n.ID == "n1" || n.ID == "n3"; n.Draining != want {
			t.Fatalf("view node %s Draining=%v, want %v (n1 by the operator, n3 behind the level)", n.ID, n.Draining, want)
		}
	}
}
