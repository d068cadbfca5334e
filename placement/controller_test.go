package placement

import (
	"context"
	"testing"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/shard"
)

func TestCaughtUp(t *testing.T) {
	cases := []struct {
		applied, commit uint64
		want            bool
	}{
		{0, 30, false}, // an empty learner on a short log waits
		{23, 30, true},
		{22, 30, false},
		{1000, 1064, true},
		{1000, 1065, false},
		{0, 0, true},
	}
	for _, c := range cases {
		if got := caughtUp(c.applied, c.commit); got != c.want {
			t.Errorf("caughtUp(%d, %d) = %v, want %v", c.applied, c.commit, got, c.want)
		}
	}
}

// scriptExec is a scripted executor: the shard's status is given, and each
// call is recorded so a test sees the single action a Step takes.
type scriptExec struct {
	status  shard.Status
	learner shard.Status
	calls   []string
}

func (e *scriptExec) ShardStatus(context.Context, uint64) (shard.Status, error) { return e.status, nil }
func (e *scriptExec) ReplicaStatus(context.Context, uint64, string) (shard.Status, error) {
	return e.learner, nil
}
func (e *scriptExec) AddLearner(_ context.Context, _ uint64, n NodeInfo) error {
	e.calls = append(e.calls, "add_learner "+n.ID)
	return nil
}
func (e *scriptExec) Promote(_ context.Context, _ uint64, n NodeInfo) error {
	e.calls = append(e.calls, "promote "+n.ID)
	return nil
}
func (e *scriptExec) RemoveMember(_ context.Context, _ uint64, id string) error {
	e.calls = append(e.calls, "remove "+id)
	return nil
}
func (e *scriptExec) TransferLeader(_ context.Context, _ uint64, n NodeInfo) error {
	e.calls = append(e.calls, "transfer "+n.ID)
	return nil
}
func (e *scriptExec) Split(_ context.Context, id uint64, key []byte, _ uint64) error {
	e.calls = append(e.calls, "split "+string(key))
	return nil
}

func voter(id string) shard.Member   { return shard.Member{ID: id, Voter: true} }
func learner(id string) shard.Member { return shard.Member{ID: id} }

// The move state machine: each Step derives the next action from the shard's
// actual configuration, so a resumed operation continues where it stands.
func TestStepMoveTransitions(t *testing.T) {
	nodes := map[string]NodeInfo{"n1": {ID: "n1"}, "n2": {ID: "n2"}, "n3": {ID: "n3"}, "n4": {ID: "n4"}}
	move := Operation{Kind: OpMoveReplica, RangeID: 1, Epoch: 1, From: "n1", To: "n4"}
	cases := []struct {
		name     string
		op       Operation
		members  []shard.Member
		leader   string
		applied  uint64 // the learner's
		mapReps  []string
		nodes    map[string]NodeInfo
		wantCall string
		wantDone bool
	}{
		{"add learner", move, []shard.Member{voter("n1"), voter("n2"), voter("n3")}, "n2", 0,
			[]string{"n1", "n2", "n3"}, nodes, "add_learner n4", false},
		{"learner behind waits", move, []shard.Member{voter("n1"), voter("n2"), voter("n3"), learner("n4")}, "n2", 10,
			[]string{"n1", "n2", "n3"}, nodes, "", false},
		{"learner caught up is promoted", move, []shard.Member{voter("n1"), voter("n2"), voter("n3"), learner("n4")}, "n2", 100,
			[]string{"n1", "n2", "n3"}, nodes, "promote n4", false},
		{"leadership moves off From first", move, []shard.Member{voter("n1"), voter("n2"), voter("n3"), voter("n4")}, "n1", 100,
			[]string{"n1", "n2", "n3"}, nodes, "transfer n4", false},
		{"From removed", move, []shard.Member{voter("n1"), voter("n2"), voter("n3"), voter("n4")}, "n2", 100,
			[]string{"n1", "n2", "n3"}, nodes, "remove n1", false},
		{"waits for the map", move, []shard.Member{voter("n2"), voter("n3"), voter("n4")}, "n2", 100,
			[]string{"n1", "n2", "n3"}, nodes, "", false},
		{"done when the map agrees", move, []shard.Member{voter("n2"), voter("n3"), voter("n4")}, "n2", 100,
			[]string{"n2", "n3", "n4"}, nodes, "", true},
		{"target removed: roll back the learner", move, []shard.Member{voter("n1"), voter("n2"), voter("n3"), learner("n4")}, "n2", 0,
			[]string{"n1", "n2", "n3"}, map[string]NodeInfo{"n1": {ID: "n1"}, "n2": {ID: "n2"}, "n3": {ID: "n3"}, "n4": {ID: "n4", Removed: true}},
			"remove n4", false},
		{"target removed and rolled back: done", move, []shard.Member{voter("n1"), voter("n2"), voter("n3")}, "n2", 0,
			[]string{"n1", "n2", "n3"}, map[string]NodeInfo{"n1": {ID: "n1"}, "n4": {ID: "n4", Removed: true}}, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ex := &scriptExec{status: shard.Status{Leader: tc.leader, CommitIndex: 100, Members: tc.members},
				learner: shard.Status{Applied: tc.applied}}
			st := &State{Nodes: tc.nodes, Ranges: []fsm.Range{{ID: 1, Epoch: 1, Replicas: tc.mapReps}}}
			done, err := Step(context.Background(), ex, st, tc.op)
			if err != nil && !IsWaiting(err) {
				t.Fatalf("step: %v", err)
			}
			call := ""
			if len(ex.calls) > 1 {
				t.Fatalf("one step took %d actions: %v", len(ex.calls), ex.calls)
			}
			if len(ex.calls) == 1 {
				call = ex.calls[0]
			}
			if call != tc.wantCall || done != tc.wantDone {
				t.Fatalf("step: action %q done %v, want %q %v", call, done, tc.wantCall, tc.wantDone)
			}
		})
	}
}
