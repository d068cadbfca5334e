package test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sessionGet reads key at consistency=session with tok from addr.
func sessionGet(ctx context.Context, t *testing.T, addr, key, tok string) *HTTPResult {
	t.Helper()
	req, _ := newRequest(ctx, "GET", addr, KVPath(key)+"?consistency=session", nil)
	req.Header.Set("X-Cairn-Session", tok)
	res, err := doRequest(req)
	if err != nil {
		t.Fatalf("session get: %v", err)
	}
	return res
}

// Scenario S10: read-your-writes. A write's session token, used at once on a
// lagging follower, never returns older data: the follower waits or refuses.
func TestSessionReadYourWrites(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	ctx := Context(t, time.Minute)
	id := shardOf(c, "ryw")
	leader := c.WaitLeader(id, 10*time.Second)
	follower := (leader + 1) % 3
	mustPut(t, c.Node(leader).HTTPAddr, "ryw", "old")
	c.Isolate(follower) // the follower stops hearing from the leader: it lags
	time.Sleep(100 * time.Millisecond)
	res := mustPut(t, c.Node(leader).HTTPAddr, "ryw", "new")
	tok := res.Header.Get("X-Cairn-Session")

	r := sessionGet(ctx, t, c.Node(follower).HTTPAddr, "ryw", tok)
	switch {
	case r.Status == 200 && !containsValue(r, "new"):
		t.Fatalf("Scenario S10: lagging follower returned data older than the session's write: %s", r)
	case r.Status != 200 && r.Code() != "unavailable":
		t.Fatalf("lagging follower: %s, want the new value or unavailable", r)
	}
	c.Heal()
	WaitFor(t, 20*time.Second, "follower serves the session read after healing", func() error {
		r := sessionGet(ctx, t, c.Node(follower).HTTPAddr, "ryw", tok)
		if r.Status != 200 {
			return fmt.Errorf("%s", r)
		}
		if !containsValue(r, "new") {
			t.Fatalf("Scenario S10: session read returned old data: %s", r)
		}
		return nil
	})
}

// Scenario S11: monotonic reads. Session reads alternating between replicas,
// across a replica crash, never see the shard's index go backwards.
func TestSessionMonotonicReads(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	ctx := Context(t, time.Minute)
	id := shardOf(c, "mono")
	leader := c.WaitLeader(id, 10*time.Second)
	tok := ""
	var last uint64
	for i := 0; i < 30; i++ {
		if i%5 == 0 {
			req, _ := newRequest(ctx, "PUT", c.Node(leader).HTTPAddr, KVPath("mono"),
				strings.NewReader(fmt.Sprintf(`{"value":"%d"}`, i)))
			req.Header.Set("X-Cairn-Session", tok)
			res, err := doRequest(req)
			if err != nil || res.Status != 200 {
				t.Fatalf("put: %v %v", res, err)
			}
			tok = res.Header.Get("X-Cairn-Session") // the session now includes its own write
		}
		if i == 12 {
			c.Kill((leader + 2) % 3)
		}
		h := c.Node(i % 3)
		if h.Node == nil {
			continue
		}
		r := sessionGet(ctx, t, h.HTTPAddr, "mono", tok)
		if r.Status != 200 {
			if r.Code() == "unavailable" {
				continue // a lagging replica may refuse; it must not go back
			}
			t.Fatalf("session read on %s: %s", h.ID, r)
		}
		idx, _ := strconv.ParseUint(r.Header.Get("X-Cairn-Index"), 10, 64)
		if idx < last {
			t.Fatalf("Scenario S11: read on %s reflects index %d after index %d was seen", h.ID, idx, last)
		}
		last = idx
		tok = r.Header.Get("X-Cairn-Session")
	}
}

// Scenario S12: consistent prefix across shards. The question is written on
// one shard, the answer on another; a reader holding the writer's session
// token never sees the answer without the question.
func TestSessionConsistentPrefixAcrossShards(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"m"}})
	ctx := Context(t, time.Minute)
	if shardOf(c, "a-question") == shardOf(c, "z-answer") {
		t.Fatal("test keys must live on different shards")
	}
	for i := 0; i < 10; i++ {
		q, a := fmt.Sprintf("a-question-%d", i), fmt.Sprintf("z-answer-%d", i)
		c.Isolate(2) // the reader's node lags on both shards while the writes happen
		w1 := mustPut(t, c.Node(0).HTTPAddr, q, "why?")
		req, _ := newRequest(ctx, "PUT", c.Node(1).HTTPAddr, KVPath(a), strings.NewReader(`{"value":"because"}`))
		req.Header.Set("X-Cairn-Session", w1.Header.Get("X-Cairn-Session"))
		res, err := doRequest(req)
		if err != nil || res.Status != 200 {
			t.Fatalf("answer: %v %v", res, err)
		}
		tok := res.Header.Get("X-Cairn-Session")
		c.Heal() // node 2 now catches up shard by shard, in no particular order
		reader := c.Node(2).HTTPAddr
		ra := sessionGet(ctx, t, reader, a, tok)
		if ra.Status != 200 {
			continue
		}
		rq := sessionGet(ctx, t, reader, q, ra.Header.Get("X-Cairn-Session"))
		if rq.Status == 404 || (rq.Status == 200 && !containsValue(rq, "why?")) {
			t.Fatalf("Scenario S12: answer seen without its question: %s / %s", ra, rq)
		}
	}
}

func containsValue(r *HTTPResult, v string) bool {
	var kv struct {
		Value string `json:"value"`
	}
	return r.JSON(&kv) == nil && kv.Value == v
}
