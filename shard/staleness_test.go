package shard

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// The stale-read bound (docs/api.md, consistency=stale): which leader commit
// indexes a follower trusts, and when its data counts as fresh.
func TestCommitTracker(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	entry := func(term, index uint64) *raft.Log { return &raft.Log{Term: term, Index: index} }
	type step struct {
		req     raft.AppendEntriesRequest
		ms      int    // received at
		applied uint64 // the FSM's applied index then
	}
	cases := []struct {
		name    string
		steps   []step
		applied uint64 // at the read
		fresh   int    // ms of the expected freshness; -1 = none
	}{
		{"no entry of the leader's term seen: its commit index is not trusted",
			[]step{{raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 5, PrevLogTerm: 1, LeaderCommitIndex: 5}, 10, 5}},
			5, -1},
		{"the leader's first entry of its term makes later commit indexes count",
			[]step{
				{raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 5, PrevLogTerm: 1, Entries: []*raft.Log{entry(2, 6)}, LeaderCommitIndex: 5}, 10, 5},
				{raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 6, PrevLogTerm: 2, LeaderCommitIndex: 6}, 20, 5},
			},
			6, 20},
		{"covered only up to the applied index: an older sample is the freshness",
			[]step{
				{raft.AppendEntriesRequest{Term: 2, Entries: []*raft.Log{entry(2, 6)}, LeaderCommitIndex: 6}, 10, 6},
				{raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 6, PrevLogTerm: 2, Entries: []*raft.Log{entry(2, 7)}, LeaderCommitIndex: 7}, 20, 6},
				{raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 7, PrevLogTerm: 2, LeaderCommitIndex: 9}, 30, 6},
			},
			8, 20},
		{"the same commit index learned again later is fresher",
			[]step{
				{raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 6, PrevLogTerm: 2, LeaderCommitIndex: 8}, 10, 6},
				{raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 8, PrevLogTerm: 2, LeaderCommitIndex: 8}, 40, 6},
			},
			8, 40},
		{"a deposed leader's request after a newer term is ignored",
			[]step{
				{raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 9, PrevLogTerm: 3, LeaderCommitIndex: 9}, 10, 9},
				{raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 8, PrevLogTerm: 2, LeaderCommitIndex: 8}, 50, 9},
			},
			9, 10},
		{"a new term's leader counts only once its commit index reaches its own term",
			[]step{
				{raft.AppendEntriesRequest{Term: 2, PrevLogEntry: 6, PrevLogTerm: 2, LeaderCommitIndex: 6}, 10, 6},
				// T3's leader has not committed an entry of T3: its
				// commit index 6 may miss writes T2 acknowledged later.
				{raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 8, PrevLogTerm: 2, Entries: []*raft.Log{entry(3, 9)}, LeaderCommitIndex: 6}, 30, 6},
				{raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 9, PrevLogTerm: 3, LeaderCommitIndex: 9}, 40, 6},
			},
			8, 10},
		{"once applied, the new term's commit index is the freshness",
			[]step{
				{raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 8, PrevLogTerm: 2, Entries: []*raft.Log{entry(3, 9)}, LeaderCommitIndex: 6}, 30, 6},
				{raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 9, PrevLogTerm: 3, LeaderCommitIndex: 9}, 40, 6},
			},
			9, 40},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var c commitTracker
			for _, s := range tc.steps {
				req := s.req
				c.observe(&req, at(s.ms), s.applied)
			}
			got := c.freshAt(tc.applied)
			if tc.fresh < 0 {
				if !got.IsZero() {
					t.Fatalf("fresh at %v, want none", got.Sub(t0))
				}
				return
			}
			if !got.Equal(at(tc.fresh)) {
				t.Fatalf("fresh at %v, want %dms", got.Sub(t0), tc.fresh)
			}
		})
	}
}

// A replica far behind keeps at most maxCommitSamples samples; dropping newer
// ones only makes its data look older.
func TestCommitTrackerBounded(t *testing.T) {
	var c commitTracker
	t0 := time.Unix(1000, 0)
	for i := uint64(1); i <= 3*maxCommitSamples; i++ {
		c.observe(&raft.AppendEntriesRequest{Term: 1, PrevLogEntry: 1, PrevLogTerm: 1, LeaderCommitIndex: i + 1},
			t0.Add(time.Duration(i)*time.Millisecond), 1)
	}
	if n := len(c.pending); n != maxCommitSamples {
		t.Fatalf("%d samples kept, want %d", n, maxCommitSamples)
	}
	if got, want := c.freshAt(maxCommitSamples+1), t0.Add(maxCommitSamples*time.Millisecond); !got.Equal(want) {
		t.Fatalf("fresh at %v, want %v", got.Sub(t0), want.Sub(t0))
	}
	if got, want := c.freshAt(3*maxCommitSamples+1), t0.Add(maxCommitSamples*time.Millisecond); !got.Equal(want) {
		t.Fatalf("past the kept samples: fresh at %v, want the last kept one, %v", got.Sub(t0), want.Sub(t0))
	}
}
