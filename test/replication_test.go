package test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/cairndb/cairn/shard"
)

// iterations scales loop counts: short in make test, long under CAIRN_CHAOS.
func iterations(short, long int) int {
	if os.Getenv("CAIRN_CHAOS") != "" {
		return long
	}
	return short
}

func mustPut(t *testing.T, addr, key, value string) *HTTPResult {
	t.Helper()
	res, err := Do(Context(t, 30*time.Second), "PUT", addr, KVPath(key), map[string]any{"value": value})
	if err != nil || res.Status != 200 {
		t.Fatalf("put %s via %s: %v %v", key, addr, res, err)
	}
	return res
}

func getValue(ctx context.Context, addr, key string) (string, *HTTPResult, error) {
	res, err := Do(ctx, "GET", addr, KVPath(key), nil)
	if err != nil {
		return "", nil, err
	}
	var kv struct {
		Value string `json:"value"`
	}
	if res.Status == 200 {
		_ = res.JSON(&kv)
	}
	return kv.Value, res, nil
}

// shardOf returns the shard owning key in node 0's range map.
func shardOf(c *Cluster, key string) uint64 {
	for _, h := range c.Nodes() {
		if h.Node != nil {
			r, _ := h.Node.Lookup([]byte(key))
			return r.ID
		}
	}
	return 0
}

// Scenario S1, Invariant I1: a write acknowledged by the leader survives the
// leader's death the moment after the ack.
func TestLeaderKilledAfterAckedWrite(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	id := shardOf(c, "canary")
	for i := 0; i < iterations(6, 200); i++ {
		leader := c.WaitLeader(id, 15*time.Second)
		val := fmt.Sprintf("v%d", i)
		mustPut(t, c.Node(leader).HTTPAddr, "canary", val)
		c.Kill(leader)
		other := (leader + 1) % 3
		WaitFor(t, 20*time.Second, "canary readable from the new leader", func() error {
			got, res, err := getValue(Context(t, 10*time.Second), c.Node(other).HTTPAddr, "canary")
			if err != nil {
				return err
			}
			if res.Status != 200 {
				return fmt.Errorf("get: %s", res)
			}
			if got != val {
				t.Fatalf("iteration %d: acknowledged write lost: read %q, want %q", i, got, val)
			}
			return nil
		})
		c.Restart(leader)
	}
}

// Scenario S2 and S3, Invariant I2: a leader cut off from its followers
// commits nothing and answers no linearizable read; after healing it steps
// down and its unacknowledged entries are gone.
func TestIsolatedLeader(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	id := shardOf(c, "x")
	leader := c.WaitLeader(id, 10*time.Second)
	mustPut(t, c.Node(leader).HTTPAddr, "x", "before")
	c.Isolate(leader)
	isolated := c.Node(leader).HTTPAddr

	// Writes and linearizable reads on the isolated side must never succeed.
	ctx := Context(t, 30*time.Second)
	w, err := Do(ctx, "PUT", isolated, KVPath("y"), map[string]any{"value": "isolated"})
	if err == nil && w.Status == 200 {
		t.Fatalf("isolated leader acknowledged a write: %s", w)
	}
	for i := 0; i < 5; i++ {
		r, err := Do(ctx, "GET", isolated, KVPath("x"), nil)
		if err == nil && r.Status == 200 {
			t.Fatalf("isolated node answered a linearizable read: %s", r)
		}
	}
	// The majority elects a new leader and carries on.
	newLeader := c.WaitLeader(id, 15*time.Second, leader)
	mustPut(t, c.Node(newLeader).HTTPAddr, "x", "after")

	c.Heal()
	WaitFor(t, 20*time.Second, "old leader steps down and converges", func() error {
		rep, _ := c.Node(leader).Node.Host().Replica(id)
		if rep.IsLeader() && leader != newLeader {
			return fmt.Errorf("old leader still leads")
		}
		return nil
	})
	got, res, err := getValue(ctx, isolated, "x")
	if err != nil || res.Status != 200 || got != "after" {
		t.Fatalf("read after heal via old leader: %q %v %v", got, res, err)
	}
	// The isolated write was never acknowledged and must not have survived.
	r, err := Do(ctx, "GET", c.Node(newLeader).HTTPAddr, KVPath("y"), nil)
	if err != nil || r.Status != 404 {
		t.Fatalf("unacknowledged isolated write survived: %v %v", r, err)
	}
	assertReplicasConverge(t, c, id)
}

// assertReplicasConverge waits until every running replica of shard id has
// the same applied index and state hash. Invariant I3, I4.
func assertReplicasConverge(t *testing.T, c *Cluster, id uint64) {
	t.Helper()
	var ids []string
	for _, h := range c.Nodes() {
		if h.Node != nil {
			ids = append(ids, h.ID)
		}
	}
	assertReplicasConvergeOn(t, c, id, ids)
}

// Scenario S5: a follower that crashes and returns catches up from the log.
func TestFollowerRestartCatchesUp(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	id := shardOf(c, "k")
	leader := c.WaitLeader(id, 10*time.Second)
	follower := (leader + 1) % 3
	c.Kill(follower)
	for i := 0; i < 200; i++ {
		mustPut(t, c.Node(leader).HTTPAddr, "k"+strconv.Itoa(i), "v")
	}
	c.Restart(follower)
	assertReplicasConverge(t, c, id)
}

// Scenario S6: a follower down past log truncation catches up by snapshot.
func TestFollowerSnapshotCatchUp(t *testing.T) {
	tuning := shard.FastRaftTuning()
	tuning.TrailingLogs = 16
	tuning.SnapshotThreshold = 64
	c := StartCluster(t, ClusterConfig{Tuning: tuning})
	id := shardOf(c, "k")
	leader := c.WaitLeader(id, 10*time.Second)
	follower := (leader + 1) % 3
	rep, _ := c.Node(follower).Node.Host().Replica(id)
	appliedAtKill := rep.FSM().Applied()
	c.Kill(follower)
	for i := 0; i < 300; i++ {
		mustPut(t, c.Node(leader).HTTPAddr, "k"+strconv.Itoa(i), "v")
	}
	// Every live replica snapshots and truncates its log, so whichever leads
	// when the follower returns no longer has the entries it missed.
	for i, h := range c.Nodes() {
		if h.Node == nil {
			continue
		}
		rep, _ := h.Node.Host().Replica(id)
		if err := rep.Raft().Snapshot().Error(); err != nil {
			t.Fatalf("%s snapshot: %v", h.ID, err)
		}
		t.Logf("node %d snapshot at %s; follower applied %d when killed", i, rep.Raft().Stats()["last_snapshot_index"], appliedAtKill)
	}
	c.Restart(follower)
	assertReplicasConverge(t, c, id)
	// Raft records the installed snapshot only after the state machine has
	// restored it, so the replicas can converge a moment before it does.
	frep, _ := c.Node(follower).Node.Host().Replica(id)
	WaitFor(t, 5*time.Second, "follower records the snapshot it installed", func() error {
		snapIdx, err := strconv.ParseUint(frep.Raft().Stats()["last_snapshot_index"], 10, 64)
		if err != nil || snapIdx <= appliedAtKill {
			return fmt.Errorf("last_snapshot_index %d (applied at kill %d) %v", snapIdx, appliedAtKill, err)
		}
		return nil
	})
}
