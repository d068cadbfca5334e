package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
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
			WaitFor(t, 15*time.Second, fmt.Sprintf("cluster level %d on every node", tc.level), func() error {
				for i := range c.Nodes() {
					if l := c.Node(i).Node.ClusterLevel(); l != tc.level {
						return fmt.Errorf("%s at cluster level %d", c.Node(i).ID, l)
					}
				}
				return nil
			})
			cl := NewClients(t, c, 1)[0]
			ctx := Context(t, 2*time.Minute)
			const n, waves = 24, 5
			for i := range n {
				for _, k := range []string{fmt.Sprintf("tpe/a%02d", i), fmt.Sprintf("tpe/z%02d", i)} {
					if _, err := cl.Put(ctx, k, "0"); err != nil {
						t.Fatal(err)
					}
				}
			}
			concurrentTxns(t, c, n, func(i int) error {
				a, z := fmt.Sprintf("tpe/a%02d", i), fmt.Sprintf("tpe/z%02d", i)
				for w := range waves {
					v := fmt.Sprint(w + 1)
					res, err := cl.Txn().If(client.Compare(a, client.TargetValue, "==", fmt.Sprint(w)),
						client.Compare(z, client.TargetValue, "==", fmt.Sprint(w))).
						Then(client.OpPut(a, v), client.OpPut(z, v)).Commit(ctx)
					if err == nil && (!res.Succeeded || len(res.Shards) != 2) {
						err = fmt.Errorf("transaction %d of client %d: %+v", w, i, res)
					}
					if err != nil {
						return err
					}
				}
				return nil
			})
			var entries, prepares float64
			for i := range c.Nodes() {
				v, _ := metricValue(t, c.Node(i).HTTPAddr, `cairn_txn_batch_size_count{kind="prepare_entry"}`)
				entries += v
				v, _ = metricValue(t, c.Node(i).HTTPAddr, `cairn_txn_batch_size_sum{kind="prepare_entry"}`)
				prepares += v
			}
			t.Logf("%d two-shard transactions at level %d: %.0f prepares in %.0f shared entries", n*waves, tc.level, prepares, entries)
			switch {
			case tc.level >= 3 && prepares < 2*entries || entries == 0 && tc.level >= 3:
				t.Fatalf("%.0f prepares in %.0f shared entries at level %d: the prepares did not share entries", prepares, entries, tc.level)
			case tc.level < 3 && entries != 0:
				t.Fatalf("%.0f shared prepare entries at level %d: a level-2 replica would have refused them", entries, tc.level)
			}
			for i := range n {
				for _, k := range []string{fmt.Sprintf("tpe/a%02d", i), fmt.Sprintf("tpe/z%02d", i)} {
					if kv, err := cl.Get(ctx, k); err != nil || kv.Value != fmt.Sprint(waves) {
						t.Fatalf("%s after %d waves: %+v %v", k, waves, kv, err)
					}
				}
			}
			for _, k := range []string{"tpe/a", "tpe/z"} {
				assertReplicasConverge(t, c, shardOf(c, k))
			}
		})
	}
}
