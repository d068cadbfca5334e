package test

import (
	"testing"

	"github.com/cairndb/cairn/fsm"
)

// TestTxnPrepareEntries (issue 13, txn/DESIGN.md "Prepares in one entry";
// command level 3): once the cluster runs level 3, a shard's leader proposes
// the prepares it holds at once (a shared call's, or its own coordinators'
// queued ones) as one entry, and every transaction still commits on both
// shards with the replicas identical. With one node on a level-2 binary the
// cluster stays at level 2 and no such entry is proposed (the gate: a
// level-2 replica would refuse the op and diverge).
func TestTxnPrepareEntries(t *testing.T) {
	for _, tc := range []struct {
		name   string
		levels map[string]int
		level  int
	}{
		{"level 3", nil, fsm.CommandLevel},
		{"one node at level 2", map[string]int{"n3": 2}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := StartCluster(t, ClusterConfig{InitialSplits: []string{"tpe/m"}, CommandLevels: tc.levels})
			waitClusterLevel(t, c, tc.level)
			twoShardChains(t, c, "tpe", 24, 5)
			var entries, prepares float64
			for i := range c.Nodes() {
				v, _ := metricValue(t, c.Node(i).HTTPAddr, `cairn_txn_batch_size_count{kind="prepare_entry"}`)
				entries += v
				v, _ = metricValue(t, c.Node(i).HTTPAddr, `cairn_txn_batch_size_sum{kind="prepare_entry"}`)
				prepares += v
			}
			t.Logf("120 two-shard transactions at level %d: %.0f prepares in %.0f shared entries", tc.level, prepares, entries)
			switch {
			case tc.level >= 3 && (entries == 0 || prepares < 2*entries):
				t.Fatalf("%.0f prepares in %.0f shared entries at level %d: the prepares did not share entries", prepares, entries, tc.level)
			case tc.level < 3 && entries != 0:
				t.Fatalf("%.0f shared prepare entries at level %d: a level-2 replica would have refused them", entries, tc.level)
			}
			for _, k := range []string{"tpe/a", "tpe/z"} {
				assertReplicasConverge(t, c, shardOf(c, k))
			}
		})
	}
}
