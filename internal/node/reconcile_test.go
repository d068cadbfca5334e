package node

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/placement"
)

// Issue 10 item 3, invariants I1 and I12: which replicas a node opens and
// which it removes, as a table. A replica is removed only with a current
// range map (the meta leader's, read linearizably) that no longer assigns
// it here, its own latest configuration not listing it as a voter, and the
// shard leader's committed configuration not either.
func TestPlanReplicas(t *testing.T) {
	nodes := map[string]placement.NodeInfo{}
	for _, id := range []string{"n1", "n2", "n3", "n4"} {
		nodes[id] = placement.NodeInfo{ID: id, RaftAddr: id + ":7000"}
	}
	rng := func(id, epoch uint64, replicas ...string) fsm.Range {
		return fsm.Range{ID: id, Epoch: epoch, Replicas: replicas}
	}
	state := func(ops map[uint64]placement.Operation, ranges ...fsm.Range) *placement.State {
		return &placement.State{ClusterID: "c", Nodes: nodes, Ranges: ranges, Ops: ops,
			Genesis: map[uint64]fsm.Range{1: rng(1, 1, "n1", "n2", "n3")}}
	}
	moved := []string{"n2", "n3", "n4"}
	cases := []struct {
		name       string
		st         *placement.State
		local      []localReplica
		auth       map[uint64]authority
		wantOpen   []uint64
		wantRemove []uint64
		wantVerify []uint64
	}{
		{name: "formation member opens with bootstrap",
			st: state(nil, rng(1, 1, "n1", "n2", "n3")), wantOpen: []uint64{1}},
		{name: "target of a move opens",
			st:       state(map[uint64]placement.Operation{2: {Kind: placement.OpMoveReplica, RangeID: 2, To: "n1"}}, rng(2, 4, moved...)),
			wantOpen: []uint64{2}},
		{name: "listed replica already running: nothing to do",
			st: state(nil, rng(1, 1, "n1", "n2", "n3")), local: []localReplica{{ID: 1, Epoch: 1, Config: memberVoter}}},
		{name: "local map older than the replica: kept, not even verified",
			st: state(nil, rng(1, 3, moved...)), local: []localReplica{{ID: 1, Epoch: 5, Config: memberVoter}}},
		{name: "not wanted by the local map: verified first, never removed unread",
			st: state(nil, rng(1, 3, moved...)), local: []localReplica{{ID: 1, Epoch: 3, Config: memberAbsent}},
			wantVerify: []uint64{1}},
		// The restart of item 3: an old meta snapshot (epoch 3 without n1)
		// and a state machine rebuilt at the genesis epoch, while n1 is a
		// voter again (epoch 5).
		{name: "old meta snapshot, rebuilt state machine, own configuration lists the voter: kept, nothing read",
			st: state(nil, rng(1, 3, moved...)), local: []localReplica{{ID: 1, Epoch: 1, Config: memberVoter}}},
		{name: "own latest configuration lists the node as a voter: kept whatever the leaders say",
			st: state(nil, rng(1, 3, moved...)), local: []localReplica{{ID: 1, Epoch: 1, Config: memberVoter}},
			auth: map[uint64]authority{1: {Found: true, Epoch: 3, Replicas: moved, Shard: memberAbsent}}},
		{name: "old meta snapshot: the meta leader lists the node again",
			st: state(nil, rng(1, 3, moved...)), local: []localReplica{{ID: 1, Epoch: 1, Config: memberAbsent}},
			auth: map[uint64]authority{1: {Found: true, Epoch: 5, Replicas: []string{"n1", "n2", "n3"}, Shard: memberAbsent}}},
		{name: "own configuration unreadable: kept",
			st: state(nil, rng(1, 3, moved...)), local: []localReplica{{ID: 1, Epoch: 3, Config: memberUnknown}},
			auth: map[uint64]authority{1: {Found: true, Epoch: 3, Replicas: moved, Shard: memberAbsent}}},
		{name: "removal not known committed at the shard leader: kept",
			st: state(nil, rng(1, 3, moved...)), local: []localReplica{{ID: 1, Epoch: 3, Config: memberAbsent}},
			auth: map[uint64]authority{1: {Found: true, Epoch: 3, Replicas: moved, Shard: memberUnknown}}},
		{name: "shard leader's committed configuration still has the voter: kept",
			st: state(nil, rng(1, 3, moved...)), local: []localReplica{{ID: 1, Epoch: 3, Config: memberAbsent}},
			auth: map[uint64]authority{1: {Found: true, Epoch: 3, Replicas: moved, Shard: memberVoter}}},
		{name: "meta leader moves the range here again: kept",
			st: state(nil, rng(1, 3, moved...)), local: []localReplica{{ID: 1, Epoch: 3, Config: memberAbsent}},
			auth: map[uint64]authority{1: {Found: true, Epoch: 3, Replicas: moved, OpTo: "n1", Shard: memberAbsent}}},
		{name: "meta leader at an older epoch than the replica: kept",
			st: state(nil, rng(1, 4, moved...)), local: []localReplica{{ID: 1, Epoch: 4, Config: memberAbsent}},
			auth: map[uint64]authority{1: {Found: true, Epoch: 3, Replicas: moved, Shard: memberAbsent}}},
		{name: "committed removal everywhere: removed",
			st: state(nil, rng(1, 3, moved...)), local: []localReplica{{ID: 1, Epoch: 3, Config: memberAbsent}},
			auth: map[uint64]authority{1: {Found: true, Epoch: 3, Replicas: moved, Shard: memberAbsent}}, wantRemove: []uint64{1}},
		{name: "a learner whose move was rolled back: removed",
			st: state(nil, rng(2, 4, moved...)), local: []localReplica{{ID: 2, Epoch: 4, Config: memberNonVoter}},
			auth: map[uint64]authority{2: {Found: true, Epoch: 4, Replicas: moved, Shard: memberAbsent}}, wantRemove: []uint64{2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := planReplicas("n1", tc.st, tc.local, tc.auth)
			if err != nil {
				t.Fatal(err)
			}
			var open []uint64
			for _, o := range plan.Open {
				open = append(open, o.desc.ID)
				if o.desc.ID == 1 && o.desc.Epoch == 1 && len(o.servers) != 3 {
					t.Errorf("formation member opened without its bootstrap configuration: %v", o.servers)
				}
			}
			if fmt.Sprint(open) != fmt.Sprint(tc.wantOpen) || !reflect.DeepEqual(plan.Remove, tc.wantRemove) ||
				!reflect.DeepEqual(plan.Verify, tc.wantVerify) {
				t.Fatalf("open %v remove %v verify %v (keep %v), want open %v remove %v verify %v",
					open, plan.Remove, plan.Verify, plan.Keep, tc.wantOpen, tc.wantRemove, tc.wantVerify)
			}
		})
	}
}
