package placement

import (
	"encoding/json"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
)

func applyMeta(t *testing.T, f *metaFSM, index uint64, c metaCommand) {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if res := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: b}); res != nil {
		if err, ok := res.(error); ok {
			t.Fatalf("apply %s: %v", c.Op, err)
		}
	}
}

// A state handed out by State is shared, not copied per call, so it must
// never change: every applied entry replaces the state instead.
func TestMetaStateIsImmutable(t *testing.T) {
	f := newMetaFSM()
	m := &Meta{fsm: f}
	applyMeta(t, f, 1, metaCommand{V: 1, Op: opInit, Cluster: "c1",
		Ranges: []fsm.Range{{ID: 1, Epoch: 1}}})
	applyMeta(t, f, 2, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n1", HTTPAddr: "a:1"}})
	before, changed := m.State()

	applyMeta(t, f, 3, metaCommand{V: 1, Op: opRegisterNode, Node: &NodeInfo{ID: "n2", HTTPAddr: "a:2"}})
	applyMeta(t, f, 4, metaCommand{V: 1, Op: opNodeState, Node: &NodeInfo{ID: "n1", Draining: true}})
	applyMeta(t, f, 5, metaCommand{V: 1, Op: opStartOp, Operation: &Operation{RangeID: 1}})
	applyMeta(t, f, 6, metaCommand{V: 1, Op: opReportRanges, Ranges: []fsm.Range{{ID: 1, Epoch: 2, Start: []byte("x")}}})
	applyMeta(t, f, 7, metaCommand{V: 1, Op: opAllocRangeID})

	select {
	case <-changed:
	default:
		t.Fatal("no change signalled")
	}
	if len(before.Nodes) != 1 || before.Nodes["n1"].Draining || len(before.Ops) != 0 ||
		before.Ranges[0].Epoch != 1 || before.NextRangeID != 2 {
		t.Fatalf("a state handed out earlier changed: %+v", before)
	}
	after, _ := m.State()
	if len(after.Nodes) != 2 || !after.Nodes["n1"].Draining || len(after.Ops) != 1 ||
		after.Ranges[0].Epoch != 2 || after.NextRangeID != 3 {
		t.Fatalf("the current state misses the changes: %+v", after)
	}
}
