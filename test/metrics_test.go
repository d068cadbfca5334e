package test

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricValue returns the value of the sample whose name and labels are
// given exactly as in the exposition format, e.g.
// `cairn_shard_follower_lag_entries{follower="n2",shard="1"}`.
func metricValue(t *testing.T, addr, sample string) (float64, bool) {
	t.Helper()
	res, err := Do(Context(t, 5*time.Second), "GET", addr, "/metrics", nil)
	if err != nil || res.Status != 200 {
		t.Fatalf("GET /metrics: %v %v", res, err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(res.Body)))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			return v, err == nil
		}
	}
	return 0, false
}

// Issue 4, metrics: the leader reports each follower's replication lag in
// entries. A follower cut off while the leader takes writes falls behind by
// at least those writes; healed, it catches up to zero.
func TestFollowerLagMetric(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	ctx := Context(t, 60*time.Second)
	shard := c.Node(0).Node.Ranges()[0].ID
	leader := c.WaitLeader(shard, 10*time.Second)
	follower := (leader + 1) % 3
	sample := fmt.Sprintf(`cairn_shard_follower_lag_entries{follower=%q,shard="%d"}`, c.Node(follower).ID, shard)
	lag := func() float64 {
		v, ok := metricValue(t, c.Node(leader).HTTPAddr, sample)
		if !ok {
			t.Fatalf("leader %s does not export %s", c.Node(leader).ID, sample)
		}
		return v
	}
	WaitFor(t, 10*time.Second, "a heartbeat answer from the follower", func() error {
		if _, ok := metricValue(t, c.Node(leader).HTTPAddr, sample); !ok {
			return fmt.Errorf("no %s yet", sample)
		}
		return nil
	})

	c.Isolate(follower)
	const writes = 30
	for i := range writes {
		expectStatus(t, ctx, "PUT", c.Node(leader).HTTPAddr, KVPath(fmt.Sprintf("lag-%d", i)), `{"value":"x"}`, 200)
	}
	if got := lag(); got < writes {
		t.Errorf("lag of an isolated follower after %d writes = %v", writes, got)
	}
	c.Heal()
	WaitFor(t, 15*time.Second, "the healed follower to catch up", func() error {
		if got := lag(); got != 0 {
			return fmt.Errorf("lag %v", got)
		}
		return nil
	})
}
