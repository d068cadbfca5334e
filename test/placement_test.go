package test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairndb/cairn/placement"
)

// counts returns replicas and leaders per node in the range map of node i,
// with leaders taken from the shards' own replicas.
func placementCounts(c *Cluster) (replicas, leaders map[string]int) {
	replicas, leaders = map[string]int{}, map[string]int{}
	var ref *NodeHandle
	for _, h := range c.Nodes() {
		if h.Node != nil {
			ref = h
			break
		}
	}
	for _, r := range ref.Node.Ranges() {
		for _, id := range r.Replicas {
			replicas[id]++
		}
		if l, err := c.Leader(r.ID); err == nil {
			leaders[c.Node(l).ID]++
		}
	}
	return replicas, leaders
}

// withinOne reports whether every node in ids has a count within one of
// every other's.
func withinOne(counts map[string]int, ids []string) error {
	lo, hi := 1<<30, -1
	for _, id := range ids {
		lo, hi = min(lo, counts[id]), max(hi, counts[id])
	}
	if hi-lo > 1 {
		return fmt.Errorf("counts %v not within one of even over %v", counts, ids)
	}
	return nil
}

// assertConfigsMatchMap checks that every shard's raft configuration (from
// its leader) has exactly the range map's replicas as voters and no learner
// left over: no operation is half done.
func assertConfigsMatchMap(t *testing.T, c *Cluster) {
	t.Helper()
	WaitFor(t, 60*time.Second, "shard configurations match the range map", func() error {
		var ref *NodeHandle
		for _, h := range c.Nodes() {
			if h.Node != nil {
				ref = h
			}
		}
		for _, r := range ref.Node.Ranges() {
			l, err := c.Leader(r.ID)
			if err != nil {
				return err
			}
			rep, _ := c.Node(l).Node.Host().Replica(r.ID)
			ms, err := rep.Members()
			if err != nil {
				return err
			}
			var voters []string
			for _, m := range ms {
				if !m.Voter {
					return fmt.Errorf("shard %d still has learner %s", r.ID, m.ID)
				}
				voters = append(voters, m.ID)
			}
			sort.Strings(voters)
			want := append([]string(nil), r.Replicas...)
			sort.Strings(want)
			if strings.Join(voters, ",") != strings.Join(want, ",") {
				return fmt.Errorf("shard %d voters %v, range map %v", r.ID, voters, want)
			}
		}
		st, _ := ref.Node.MetaGroup().State()
		if len(st.Ops) > 0 {
			return fmt.Errorf("%d operations still in progress", len(st.Ops))
		}
		return nil
	})
}

// writer keeps writing distinct keys and records the longest gap between
// successful writes. Bounded by count and by ctx.
type writer struct {
	mu     sync.Mutex
	acked  map[string]string
	maxGap time.Duration
	n      atomic.Int64
}

func startWriter(ctx context.Context, c *Cluster, wg *sync.WaitGroup) *writer {
	w := &writer{acked: map[string]string{}}
	wg.Add(1)
	go func() {
		defer wg.Done()
		last := time.Now()
		for i := 0; i < 20000 && ctx.Err() == nil; i++ {
			k := fmt.Sprintf("w/%05d", i)
			addrs := c.HTTPAddrs()
			res, err := Do(ctx, "PUT", addrs[i%3], KVPath(k), map[string]any{"value": k})
			if err != nil || res.Status != 200 {
				continue
			}
			w.mu.Lock()
			w.acked[k] = k
			if gap := time.Since(last); gap > w.maxGap {
				w.maxGap = gap
			}
			w.mu.Unlock()
			last = time.Now()
			w.n.Add(1)
		}
	}()
	return w
}

// Scenario S7: new replicas join under load. Draining n1 moves every
// replica and leader off it onto the new n4, which catches up from the
// leaders (log, or snapshot when the log is compacted: S6 covers that
// path) while writes go on: no write pauses longer than about one
// election, and afterwards the replicas agree, the map matches every
// shard's configuration and acknowledged writes read back through n4.
func TestReplicaMoveUnderLoad(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"m"}, AutoPlacement: true})
	four := c.AddNode()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	w := startWriter(ctx, c, &wg)
	time.Sleep(time.Second)
	res, err := Do(ctx, "POST", c.Node(0).HTTPAddr, "/v1/cluster/nodes/n1/drain", nil)
	if err != nil || res.Status != 200 {
		t.Fatalf("drain: %v %v", res, err)
	}
	WaitFor(t, 90*time.Second, "n1 drained", func() error {
		reps, leaders := placementCounts(c)
		if reps["n1"] != 0 || leaders["n1"] != 0 {
			return fmt.Errorf("n1 still has %d replicas, %d leaderships", reps["n1"], leaders["n1"])
		}
		return nil
	})
	cancel()
	wg.Wait()
	w.mu.Lock()
	t.Logf("%d writes, longest pause %s", w.n.Load(), w.maxGap)
	if w.maxGap > 3*time.Second {
		t.Fatalf("a write paused %s during the move; more than one election", w.maxGap)
	}
	acked := w.acked
	w.mu.Unlock()
	assertConfigsMatchMap(t, c)
	for _, r := range c.Node(four).Node.Ranges() {
		assertReplicasConvergeOn(t, c, r.ID, r.Replicas)
	}
	sample := map[string]string{}
	for k, v := range acked {
		if len(sample) < 200 {
			sample[k] = v
		}
	}
	for k, v := range sample {
		got, res, err := getValue(Context(t, 10*time.Second), c.Node(four).HTTPAddr, k)
		if err != nil || res.Status != 200 || got != v {
			t.Fatalf("acknowledged %s lost after the move: %q %v %v", k, got, res, err)
		}
	}
}

// assertReplicasConvergeOn is assertReplicasConverge over the named nodes.
func assertReplicasConvergeOn(t *testing.T, c *Cluster, id uint64, nodes []string) {
	t.Helper()
	WaitFor(t, 30*time.Second, fmt.Sprintf("shard %d converges on %v", id, nodes), func() error {
		var first []byte
		var firstIdx uint64
		for _, h := range c.Nodes() {
			if h.Node == nil || !slices.Contains(nodes, h.ID) {
				continue
			}
			rep, ok := h.Node.Host().Replica(id)
			if !ok {
				return fmt.Errorf("%s has no replica of shard %d", h.ID, id)
			}
			idx, sum, err := rep.Hash()
			if err != nil {
				return err
			}
			if first == nil {
				first, firstIdx = sum, idx
				continue
			}
			if idx != firstIdx {
				return fmt.Errorf("%s applied %d, want %d", h.ID, idx, firstIdx)
			}
			if string(sum) != string(first) {
				t.Fatalf("Invariant I3 violated: shard %d on %s differs at index %d", id, h.ID, idx)
			}
		}
		return nil
	})
}

// A fourth node joins: replicas and leaders spread to it within one of even.
func TestFourthNodeJoinsAndBalances(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"g", "n", "t"}, AutoPlacement: true})
	for i := 0; i < 20; i++ {
		mustPut(t, c.Node(i%3).HTTPAddr, fmt.Sprintf("%c-key", 'a'+i), "v")
	}
	c.AddNode()
	ids := []string{"n1", "n2", "n3", "n4"}
	WaitFor(t, 90*time.Second, "replicas and leaders within one of even", func() error {
		reps, leaders := placementCounts(c)
		if err := withinOne(reps, ids); err != nil {
			return fmt.Errorf("replicas: %w", err)
		}
		return withinOne(leaders, ids)
	})
	reps, leaders := placementCounts(c)
	t.Logf("replicas %v leaders %v", reps, leaders)
	assertConfigsMatchMap(t, c)
}

// A node killed for good: after --dead-after every range is back to full
// replication on live nodes, and no acknowledged write is lost.
func TestDeadNodeRepaired(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"m"}, AutoPlacement: true, DeadAfter: 3 * time.Second})
	c.AddNode()
	acked := map[string]string{}
	for i := 0; i < 50; i++ {
		k := fmt.Sprintf("%c%02d", 'a'+i%26, i)
		mustPut(t, c.Node(i%3).HTTPAddr, k, k)
		acked[k] = k
	}
	c.Kill(2) // n3, never to return
	WaitFor(t, 90*time.Second, "every range fully replicated on live nodes", func() error {
		for _, r := range c.Node(0).Node.Ranges() {
			if len(r.Replicas) != 3 || slices.Contains(r.Replicas, "n3") {
				return fmt.Errorf("range %d replicas %v", r.ID, r.Replicas)
			}
		}
		return nil
	})
	assertConfigsMatchMap(t, c)
	for k, v := range acked {
		got, res, err := getValue(Context(t, 10*time.Second), c.Node(3).HTTPAddr, k)
		if err != nil || res.Status != 200 || got != v {
			t.Fatalf("Invariant I1: acknowledged %s lost after repair: %q %v %v", k, got, res, err)
		}
	}
	for _, r := range c.Node(0).Node.Ranges() {
		assertReplicasConvergeOn(t, c, r.ID, r.Replicas)
	}
}

// The placement leader killed in the middle of a move: the move completes
// or is rolled back, never left half done.
func TestPlacementLeaderKilledMidMove(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"g", "n", "t"}, AutoPlacement: true})
	c.AddNode()
	ctx := Context(t, 2*time.Minute)
	metaLeader := -1
	WaitFor(t, 10*time.Second, "meta leader", func() error {
		for i, h := range c.Nodes() {
			if h.Node != nil && h.Node.MetaGroup().IsLeader() {
				metaLeader = i
				return nil
			}
		}
		return fmt.Errorf("no meta leader")
	})
	drain := (metaLeader + 1) % 3 // a replica holder that is not the meta leader
	res, err := Do(ctx, "POST", c.Node(metaLeader).HTTPAddr, fmt.Sprintf("/v1/cluster/nodes/%s/drain", c.Node(drain).ID), nil)
	if err != nil || res.Status != 200 {
		t.Fatalf("drain: %v %v", res, err)
	}
	WaitFor(t, 30*time.Second, "a move in progress", func() error {
		st, _ := c.Node(metaLeader).Node.MetaGroup().State()
		for _, op := range st.Ops {
			if op.Kind == placement.OpMoveReplica {
				return nil
			}
		}
		return fmt.Errorf("no move recorded yet")
	})
	c.Kill(metaLeader)
	WaitFor(t, 30*time.Second, "new meta leader", func() error {
		for _, h := range c.Nodes() {
			if h.Node != nil && h.Node.MetaGroup().IsLeader() {
				return nil
			}
		}
		return fmt.Errorf("no meta leader")
	})
	c.Restart(metaLeader)
	WaitFor(t, 120*time.Second, "drained node empty", func() error {
		reps, _ := placementCounts(c)
		if reps[c.Node(drain).ID] != 0 {
			return fmt.Errorf("%s still holds %d replicas", c.Node(drain).ID, reps[c.Node(drain).ID])
		}
		return nil
	})
	assertConfigsMatchMap(t, c)
}

// Splits by size: a range that grows past --split-size is split at its
// middle by the placement driver, repeatedly, without losing or duplicating
// a key.
func TestAutoSplitBySize(t *testing.T) {
	c := StartCluster(t, ClusterConfig{AutoPlacement: true, SplitSize: 48 << 10})
	value := strings.Repeat("x", 1024)
	for i := 0; i < 300; i++ {
		mustPut(t, c.Node(i%3).HTTPAddr, fmt.Sprintf("auto/%04d", i), value)
	}
	WaitFor(t, 90*time.Second, "the range split by size", func() error {
		rs := c.Node(0).Node.Ranges()
		if len(rs) < 4 {
			return fmt.Errorf("%d ranges", len(rs))
		}
		return nil
	})
	res, err := Do(Context(t, 20*time.Second), "GET", c.Node(1).HTTPAddr, "/v1/kv?prefix=auto/&keys_only=1&limit=1000", nil)
	if err != nil || res.Status != 200 {
		t.Fatalf("scan: %v %v", res, err)
	}
	var sr struct {
		KVs []struct{ Key string } `json:"kvs"`
	}
	if err := res.JSON(&sr); err != nil || len(sr.KVs) != 300 {
		t.Fatalf("scan after auto splits: %d keys (want 300), %v", len(sr.KVs), err)
	}
	t.Logf("%d ranges after writing 300 KiB with a 48 KiB split size", len(c.Node(0).Node.Ranges()))
	assertConfigsMatchMap(t, c)
}

// The meta group grows from 3 to 5 voters once the cluster has 5 nodes, so
// the range map survives two failures.
func TestMetaGroupGrowsToFive(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	c.AddNode()
	c.AddNode()
	WaitFor(t, 60*time.Second, "five meta voters", func() error {
		for _, h := range c.Nodes() {
			m := h.Node.MetaGroup()
			if !m.IsLeader() {
				continue
			}
			f := m.Raft().GetConfiguration()
			if err := f.Error(); err != nil {
				return err
			}
			voters := 0
			for _, s := range f.Configuration().Servers {
				if s.Suffrage == 0 { // raft.Voter
					voters++
				}
			}
			if voters != 5 {
				return fmt.Errorf("%d meta voters", voters)
			}
			return nil
		}
		return fmt.Errorf("no meta leader")
	})
}
