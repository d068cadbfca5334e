package placement

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/shard"
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

// The level rises in two steps: prepare_level only as far as every counted
// node advertises, raise_level only to the pending level and only once every
// counted node recorded it; never down. register_node keeps a node's
// advertised and recorded levels; a node below the level is BehindLevel and
// the driver's view drains it.
func TestMetaRaiseLevel(t *testing.T) {
	f := newMetaFSM()
	applyMeta(t, f, 1, metaCommand{V: 1, Op: opInit, Cluster: "c1", Ranges: []fsm.Range{{ID: 1, Epoch: 1, Replicas: []string{"n1", "n2"}}}})
	applyMeta(t, f, 2, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n1", Level: 2}})
	applyMeta(t, f, 3, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n2", Level: 1}})
	refused := func(op string, level int) {
		t.Helper()
		if err, _ := f.apply(&metaCommand{Op: op, Level: level}).(error); err == nil {
			t.Fatalf("%s %d applied on %+v", op, level, f.state)
		}
	}
	refused(opPrepareLevel, 2) // n2 runs level 1
	refused(opRaiseLevel, 1)   // nothing pending
	applyMeta(t, f, 4, metaCommand{V: 1, Op: opPrepareLevel, Level: 1})
	refused(opRaiseLevel, 1) // nobody recorded it
	applyMeta(t, f, 5, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n1", Level: 2, Recorded: 1}})
	refused(opRaiseLevel, 1) // n2 has not recorded it
	applyMeta(t, f, 6, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n2", Level: 1, Recorded: 1}})
	applyMeta(t, f, 7, metaCommand{V: 1, Op: opRaiseLevel, Level: 1})
	if f.state.Level != 1 {
		t.Fatalf("level %d, want 1", f.state.Level)
	}
	applyMeta(t, f, 8, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n2", Level: 2, Recorded: 1}})
	applyMeta(t, f, 9, metaCommand{V: 1, Op: opPrepareLevel, Level: 2})
	applyMeta(t, f, 10, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n1", Level: 2, Recorded: 2}})
	applyMeta(t, f, 11, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n2", Level: 2, Recorded: 2}})
	applyMeta(t, f, 12, metaCommand{V: 1, Op: opRaiseLevel, Level: 2})
	applyMeta(t, f, 13, metaCommand{V: 1, Op: opRaiseLevel, Level: 1})   // a stale raise: no change
	applyMeta(t, f, 14, metaCommand{V: 1, Op: opPrepareLevel, Level: 1}) // a stale prepare: no change
	if f.state.Level != 2 || f.state.Pending != 2 {
		t.Fatalf("level %d pending %d, want 2 and 2", f.state.Level, f.state.Pending)
	}
	// n2 re-registers at level 1 (a binary of level 1 on a data dir that
	// refuses it is never running, but its registration may say so):
	// the level stays.
	applyMeta(t, f, 15, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n2", Level: 1, Recorded: 2}})
	if f.state.Level != 2 || !f.state.BehindLevel("n2") {
		t.Fatalf("level %d, n2 behind %v: want 2, true", f.state.Level, f.state.BehindLevel("n2"))
	}
	applyMeta(t, f, 16, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n2", Level: 2, Recorded: 2}})
	// A binary from before levels joins (or n2 is downgraded): the level
	// stays, and the node is behind it.
	applyMeta(t, f, 8, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n3"}})
	applyMeta(t, f, 9, metaCommand{V: 1, Op: opNodeState, Node: &NodeInfo{ID: "n1", Draining: true}})
	st := f.state
	if st.Level != 2 || st.Nodes["n1"].Level != 2 || st.Nodes["n1"].Recorded != 2 || !st.BehindLevel("n3") || st.BehindLevel("n2") {
		t.Fatalf("state %+v: want level 2 kept, n1's level kept by node_state, n3 behind", st)
	}
	if c := st.clone(); c.Level != 2 || c.Pending != 2 {
		t.Fatalf("clone lost the level: %+v", c)
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
	if f2.state.Level != 2 || f2.state.Pending != 2 || f2.state.Nodes["n2"].Level != 2 || f2.state.Nodes["n2"].Recorded != 2 {
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

// A move whose target runs a binary below the cluster's level is rolled back
// like a move to a removed node; the move's target counts in ReadyLevel
// while it is in progress.
func TestLevelMoveTargetBehind(t *testing.T) {
	move := Operation{Kind: OpMoveReplica, RangeID: 1, Epoch: 1, From: "n1", To: "n4"}
	st := &State{Level: 1, Nodes: map[string]NodeInfo{
		"n1": {ID: "n1", Level: 1}, "n2": {ID: "n2", Level: 1}, "n3": {ID: "n3", Level: 1}, "n4": {ID: "n4"},
	}, Ranges: []fsm.Range{{ID: 1, Epoch: 1, Replicas: []string{"n1", "n2", "n3"}}}}
	ex := &scriptExec{status: shard.Status{Leader: "n2", CommitIndex: 100,
		Members: []shard.Member{voter("n1"), voter("n2"), voter("n3"), learner("n4")}}}
	if _, err := Step(context.Background(), ex, st, move); err != nil && !IsWaiting(err) {
		t.Fatal(err)
	}
	if len(ex.calls) != 1 || ex.calls[0] != "remove n4" {
		t.Fatalf("move to a node behind the level: actions %v, want [remove n4]", ex.calls)
	}

	n4 := st.Nodes["n4"]
	n4.Removed = true
	st.Nodes["n4"] = n4
	st.Level = 0
	st.Ops = map[uint64]Operation{1: move}
	if got := st.ReadyLevel(); got != 0 {
		t.Fatalf("ReadyLevel %d with a level-0 move target in progress, want 0", got)
	}
	st.Ops = nil
	if got := st.ReadyLevel(); got != 1 {
		t.Fatalf("ReadyLevel %d once the move is over, want 1", got)
	}
}

// A pending level is cancelled by preparing the current one: nothing can
// raise to it any more.
func TestMetaCancelPendingLevel(t *testing.T) {
	f := newMetaFSM()
	applyMeta(t, f, 1, metaCommand{V: 1, Op: opInit, Cluster: "c1", Ranges: []fsm.Range{{ID: 1, Epoch: 1, Replicas: []string{"n1", "n2"}}}})
	applyMeta(t, f, 2, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n1", Level: 3, Recorded: 2}})
	applyMeta(t, f, 3, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n2", Level: 3, Recorded: 2}})
	applyMeta(t, f, 4, metaCommand{V: 1, Op: opPrepareLevel, Level: 2})
	applyMeta(t, f, 5, metaCommand{V: 1, Op: opRaiseLevel, Level: 2})
	applyMeta(t, f, 6, metaCommand{V: 1, Op: opPrepareLevel, Level: 3})
	applyMeta(t, f, 7, metaCommand{V: 1, Op: opPrepareLevel, Level: 2})
	if f.state.Level != 2 || f.state.Pending != 2 {
		t.Fatalf("after a cancel: level %d pending %d, want 2 and 2", f.state.Level, f.state.Pending)
	}
	applyMeta(t, f, 8, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n1", Level: 3, Recorded: 3}})
	applyMeta(t, f, 9, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n2", Level: 3, Recorded: 3}})
	if err, _ := f.apply(&metaCommand{Op: opRaiseLevel, Level: 3}).(error); err == nil {
		t.Fatal("raised to a cancelled level")
	}
}
