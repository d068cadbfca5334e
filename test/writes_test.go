package test

import (
	"fmt"
	"testing"
	"time"
)

type putAnswer struct {
	ModIndex uint64 `json:"mod_index"`
	Version  uint64 `json:"version"`
}

type getAnswer struct {
	Value    string `json:"value"`
	ModIndex uint64 `json:"mod_index"`
	Version  uint64 `json:"version"`
}

// Invariant I7: a write retried with the same request id is applied once and
// the retry gets the original answer.
func TestRequestIDDedup(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	ctx := Context(t, 30*time.Second)
	var first putAnswer
	for i, addr := range c.HTTPAddrs() {
		res, err := Do(ctx, "PUT", addr, KVPath("dedup"), map[string]any{
			"value": fmt.Sprintf("attempt-%d", i), "request_id": "req-1"})
		if err != nil || res.Status != 200 {
			t.Fatalf("put attempt %d: %v %v", i, res, err)
		}
		var a putAnswer
		if err := res.JSON(&a); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = a
		} else if a != first {
			t.Fatalf("retry %d answered %+v, first answer %+v", i, a, first)
		}
	}
	res, _ := Do(ctx, "GET", c.Node(0).HTTPAddr, KVPath("dedup"), nil)
	var g getAnswer
	if err := res.JSON(&g); err != nil || g.Value != "attempt-0" || g.Version != 1 {
		t.Fatalf("after retries: %s", res)
	}
}

// Scenario S8, Invariant I7: a write whose outcome is unknown because the
// leader died mid-commit is retried with its request id and applied once.
func TestOutcomeUnknownRetryAppliesOnce(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	id := shardOf(c, "s8")
	for i := 0; i < iterations(3, 50); i++ {
		key := fmt.Sprintf("s8-%d", i)
		leader := c.WaitLeader(id, 15*time.Second)
		done := make(chan *HTTPResult, 1)
		go func() {
			res, err := Do(Context(t, 30*time.Second), "PUT", c.Node(leader).HTTPAddr, KVPath(key),
				map[string]any{"value": "v", "request_id": key})
			if err != nil {
				res = &HTTPResult{Status: 0, Body: []byte(err.Error())}
			}
			done <- res
		}()
		time.Sleep(time.Duration(i%3) * time.Millisecond)
		c.Kill(leader)
		first := <-done
		if first.Status != 200 && first.Status != 0 && first.Code() != "outcome_unknown" && first.Code() != "unavailable" {
			t.Fatalf("first attempt failed with %s; a write cut short by a leader death is outcome_unknown", first)
		}
		other := (leader + 1) % 3
		WaitFor(t, 20*time.Second, "retry succeeds", func() error {
			res, err := Do(Context(t, 10*time.Second), "PUT", c.Node(other).HTTPAddr, KVPath(key),
				map[string]any{"value": "v", "request_id": key})
			if err != nil || res.Status != 200 {
				return fmt.Errorf("retry: %v %v", res, err)
			}
			return nil
		})
		res, err := Do(Context(t, 10*time.Second), "GET", c.Node(other).HTTPAddr, KVPath(key), nil)
		var g getAnswer
		if err != nil || res.JSON(&g) != nil || g.Version != 1 {
			t.Fatalf("iteration %d: key written %d times (want once): %v %v", i, g.Version, res, err)
		}
		c.Restart(leader)
	}
}

// Invariant I10 (mechanism shared with leases): a TTL key is expired by a
// committed command from the leader, on every replica, never before its TTL,
// and a leader change restarts the countdown rather than expiring early.
func TestTTLExpiresAcrossLeaderChange(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	ctx := Context(t, 60*time.Second)
	id := shardOf(c, "ttl")
	leader := c.WaitLeader(id, 10*time.Second)
	start := time.Now()
	res, err := Do(ctx, "PUT", c.Node(leader).HTTPAddr, KVPath("ttl"), map[string]any{"value": "v", "ttl": "3s"})
	if err != nil || res.Status != 200 {
		t.Fatalf("put: %v %v", res, err)
	}
	time.Sleep(time.Second)
	c.Kill(leader)
	newLeader := c.WaitLeader(id, 15*time.Second, leader)
	leaderAt := time.Now()
	for time.Since(leaderAt) < 2500*time.Millisecond {
		r, err := Do(ctx, "GET", c.Node(newLeader).HTTPAddr, KVPath("ttl"), nil)
		if err == nil && r.Status == 404 && time.Since(start) < 3*time.Second {
			t.Fatalf("key expired after %s, before its 3s TTL", time.Since(start))
		}
		if err == nil && r.Status == 404 && time.Since(leaderAt) < 3*time.Second {
			t.Fatalf("new leader expired the key %s into its countdown; it must restart the 3s countdown", time.Since(leaderAt))
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.Restart(leader)
	WaitFor(t, 20*time.Second, "ttl key gone on every replica", func() error {
		for _, h := range c.Nodes() {
			rep, ok := h.Node.Host().Replica(id)
			if !ok {
				return fmt.Errorf("%s has no replica", h.ID)
			}
			kv, err := rep.FSM().Get([]byte("ttl"))
			if err != nil {
				return err
			}
			if kv != nil {
				return fmt.Errorf("%s still has the key", h.ID)
			}
		}
		return nil
	})
	assertReplicasConverge(t, c, id)
}
