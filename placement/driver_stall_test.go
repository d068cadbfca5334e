package placement

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/clock"
	"github.com/cairndb/cairn/shard"
)

// failingExec is a scriptExec whose shard status cannot be had (every
// member unreachable).
type failingExec struct{ scriptExec }

func (e *failingExec) ShardStatus(context.Context, uint64) (shard.Status, error) {
	return shard.Status{}, errors.New("no route")
}

// Issue 10 item 6: an operation that cannot make progress is reported (a
// warning and cairn_placement_operations_stalled / _total{event="stalled"})
// once it has run StallAfter, and rolled back where that is safe: a
// learner that never catches up is removed and the operation ends; a target
// that already votes can only go forward.
func TestDriverStalledOperation(t *testing.T) {
	nodes := map[string]NodeInfo{"n1": {ID: "n1"}, "n2": {ID: "n2"}, "n3": {ID: "n3"}, "n4": {ID: "n4"}}
	move := Operation{Kind: OpMoveReplica, RangeID: 1, Epoch: 1, From: "n1", To: "n4", Reason: "test"}
	st := &State{Nodes: nodes, Ranges: []fsm.Range{{ID: 1, Epoch: 1, Replicas: []string{"n1", "n2", "n3"}}},
		Ops: map[uint64]Operation{1: move}}
	cases := []struct {
		name         string
		members      []shard.Member
		fail         bool
		wantCall     string
		wantDone     bool
		wantRollback bool
	}{
		{"learner never catches up: removed", []shard.Member{voter("n1"), voter("n2"), voter("n3"), learner("n4")},
			false, "remove n4", true, true},
		{"target never added: dropped", []shard.Member{voter("n1"), voter("n2"), voter("n3")},
			false, "", true, true},
		{"target votes: only forward", []shard.Member{voter("n1"), voter("n2"), voter("n3"), voter("n4")},
			false, "remove n1", false, false},
		{"leader unreachable: reported, kept", nil, true, "", false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Unix(1000, 0)
			reg := prometheus.NewRegistry()
			var ex Executor = &scriptExec{status: shard.Status{Leader: "n2", CommitIndex: 100, Members: tc.members}}
			if tc.fail {
				ex = &failingExec{}
			}
			d, err := NewDriver(DriverConfig{Exec: ex, StallAfter: 10 * time.Second, Metrics: reg,
				Clock: clock.Func(func() time.Time { return now })})
			if err != nil {
				t.Fatal(err)
			}
			calls := func() []string {
				if f, ok := ex.(*failingExec); ok {
					return f.calls
				}
				return ex.(*scriptExec).calls
			}
			if n := d.track(st.Ops, now); n != 0 {
				t.Fatalf("%d stalled at start", n)
			}
			// Before the bound: an ordinary step (a learner behind waits).
			if tc.members != nil && !tc.members[len(tc.members)-1].Voter {
				if done, _, _ := d.step(context.Background(), st, move); done || len(calls()) > 1 {
					t.Fatalf("step before the bound: done %v calls %v", done, calls())
				}
			}
			now = now.Add(11 * time.Second)
			if n := d.track(st.Ops, now); n != 1 {
				t.Fatalf("stalled operations %d, want 1", n)
			}
			before := len(calls())
			done, rolledBack, _ := d.step(context.Background(), st, move)
			call := ""
			if got := calls()[before:]; len(got) == 1 {
				call = got[0]
			} else if len(got) > 1 {
				t.Fatalf("one step took %d actions: %v", len(got), got)
			}
			if call != tc.wantCall || done != tc.wantDone || rolledBack != tc.wantRollback {
				t.Fatalf("stalled step: action %q done %v rolled back %v, want %q %v %v",
					call, done, rolledBack, tc.wantCall, tc.wantDone, tc.wantRollback)
			}
			if got := metricValue(t, d.stalled); got != 1 {
				t.Fatalf("cairn_placement_operations_stalled = %v, want 1", got)
			}
			if got := metricValue(t, d.ops.WithLabelValues(string(OpMoveReplica), "stalled")); got != 1 {
				t.Fatalf(`operations_total{event="stalled"} = %v, want 1`, got)
			}
			// Reported once per StallAfter, not on every step.
			d.step(context.Background(), st, move)
			if got := metricValue(t, d.ops.WithLabelValues(string(OpMoveReplica), "stalled")); got != 1 {
				t.Fatalf(`operations_total{event="stalled"} = %v after a second step, want 1`, got)
			}
		})
	}
}

func metricValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Gauge != nil {
		return m.Gauge.GetValue()
	}
	return m.Counter.GetValue()
}

// Issue 10 item 6: a range one failure away from losing its quorum is
// visible (cairn_placement_ranges_under_replicated), from the map itself,
// until the map shows it repaired.
func TestUnderReplicated(t *testing.T) {
	st := &State{Nodes: map[string]NodeInfo{"n1": {ID: "n1"}, "n2": {ID: "n2"}, "n3": {ID: "n3"}, "n4": {ID: "n4", Removed: true}},
		Ranges: []fsm.Range{
			{ID: 1, Replicas: []string{"n1", "n2", "n3"}},
			{ID: 2, Replicas: []string{"n2", "n3", "n4"}}, // n4 removed
			{ID: 3, Replicas: []string{"n1", "n3", "n5"}}, // n5 dead
		},
		Ops: map[uint64]Operation{3: {Kind: OpMoveReplica, RangeID: 3, From: "n5", To: "n2"}}, // repair under way
	}
	alive := map[string]bool{"n1": true, "n2": true, "n3": true, "n4": true}
	if got := underReplicated(st, alive, 3); got != 2 {
		t.Fatalf("under-replicated ranges %d, want 2", got)
	}
}
