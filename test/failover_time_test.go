package test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/placement"
	"github.com/cairndb/cairn/shard"
)

// Issue 10 item 7: failover measured the way a user meets it. A client
// writes through a surviving node to a key whose shard leader fails; the
// time is from the fault to the end of the first write that succeeds. Two
// faults: the leader's node stops (Kill: raft and HTTP gone, gossip told),
// and the leader's node is cut off (Isolate: gossip still sees it alive, as
// in the first seconds after a `docker kill`, the case in which the balancer
// moved leadership onto the dead node). The balancer runs throughout, with
// raft timeouts as in the compose cluster (500ms).
//
// The figures are reported, not asserted (the machine is shared); only a
// generous bound is, and that no placement decision targets the cut-off node.
// Goal (issue 10): median under 2s, p99 under 5s.
func TestFailoverTime(t *testing.T) {
	tuning := shard.DefaultRaftTuning()
	tuning.HeartbeatTimeout, tuning.ElectionTimeout, tuning.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 250*time.Millisecond
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"g", "n", "t"}, AutoPlacement: true, Tuning: tuning})
	ctx := Context(t, 3*time.Minute)
	keys := []string{"a-fo", "h-fo", "o-fo", "u-fo"} // one per shard
	for _, k := range keys {
		mustPut(t, c.Node(0).HTTPAddr, k, "0")
	}
	const rounds = 3
	took := map[string][]time.Duration{}
	for i := range 2 * rounds {
		kind := []string{"kill", "isolate"}[i%2]
		key := keys[i%len(keys)]
		rng, ok := c.Node(0).Node.Lookup([]byte(key))
		if !ok {
			t.Fatalf("no range for %s", key)
		}
		leader := c.WaitLeader(rng.ID, 10*time.Second)
		via := (leader + 1 + i%2) % 3
		victim := c.Node(leader).ID
		before := placementOps(c) // decided before the fault: not a reaction to it
		start := time.Now()
		if kind == "kill" {
			c.Kill(leader)
		} else {
			c.Isolate(leader)
		}
		d, targeted := firstWrite(t, ctx, c, c.Node(via).HTTPAddr, key, victim, before, start)
		took[kind] = append(took[kind], d)
		t.Logf("round %d: %s %s (leader of shard %d), write via %s succeeded after %v", i, kind, victim, rng.ID, c.Node(via).ID, d.Round(time.Millisecond))
		if targeted != "" {
			t.Errorf("round %d: a placement decision targeted %s while it was cut off: %s", i, victim, targeted)
		}
		if d > 15*time.Second {
			t.Errorf("round %d: failover took %v", i, d)
		}
		if kind == "kill" {
			c.Restart(leader)
		} else {
			c.Heal()
		}
		c.WaitReady(30 * time.Second)
	}
	for _, kind := range []string{"kill", "isolate"} {
		ds := took[kind]
		slices.Sort(ds)
		t.Logf("failover after %s of the leader: n=%d median %v p99 %v max %v (goal: median < 2s, p99 < 5s)",
			kind, len(ds), ds[len(ds)/2].Round(time.Millisecond), ds[(99*len(ds)+99)/100-1].Round(time.Millisecond),
			ds[len(ds)-1].Round(time.Millisecond))
	}
}

// firstWrite writes key through addr until a write succeeds and returns the
// time from start to the end of that write. Meanwhile it watches the meta
// state for a leadership transfer to victim not among before, and returns
// the first it saw.
func firstWrite(t *testing.T, ctx context.Context, c *Cluster, addr, key, victim string, before map[string]bool,
	start time.Time) (time.Duration, string) {
	t.Helper()
	targeted := ""
	watch := func() {
		for op := range placementOps(c) {
			if targeted == "" && !before[op] && strings.HasPrefix(op, string(placement.OpTransferLeader)) &&
				strings.Contains(op, fmt.Sprintf("to=%q", victim)) {
				targeted = op
			}
		}
	}
	for attempt := 0; attempt < 10000; attempt++ {
		watch()
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		res, err := Do(actx, "PUT", addr, KVPath(key), map[string]string{"value": fmt.Sprint(attempt)})
		cancel()
		if err == nil && res.Status == 200 {
			d := time.Since(start)
			// Watch a little longer: the balancer acts every second.
			for range 15 {
				watch()
				time.Sleep(100 * time.Millisecond)
			}
			return d, targeted
		}
		if testing.Verbose() {
			t.Logf("  attempt %d at %v: %v %v", attempt, time.Since(start).Round(time.Millisecond), res, err)
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("no write via %s succeeded 30s after the fault (last: %v %v)", addr, res, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no write via %s succeeded", addr)
	return 0, ""
}

// placementOps is the set of placement operations recorded in the meta
// state, as every live node's replica shows it.
func placementOps(c *Cluster) map[string]bool {
	out := map[string]bool{}
	for _, n := range c.LiveNodes() {
		st, _ := n.MetaGroup().State()
		for _, op := range st.Ops {
			out[op.String()] = true
		}
	}
	return out
}
