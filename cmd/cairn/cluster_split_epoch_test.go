package main

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/test"
)

// TestClusterSplitAtEpoch: "cairn cluster split --epoch" on a real cluster
// splits only a shard still at the epoch given. A split planned from a
// status read before another split is refused (condition_failed, exit 1)
// and leaves the range map as it was; at the current epoch it splits.
func TestClusterSplitAtEpoch(t *testing.T) {
	c := test.StartCluster(t, test.ClusterConfig{})
	ep := "--endpoints=" + strings.Join(c.HTTPAddrs(), ",")
	cl, err := client.New(client.Config{Endpoints: c.HTTPAddrs()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// shard waits until the status (from any node: each answers from its
	// own replica) shows shard 1 as ok wants, and returns it.
	shard := func(ok func(client.ShardStatus) bool) client.ShardStatus {
		t.Helper()
		var last client.ShardStatus
		for range 100 {
			st, err := cl.Cluster(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range st.Shards {
				if s.ID == 1 {
					if last = s; ok(s) {
						return s
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("shard 1 is %+v", last)
		return last
	}
	first := shard(func(s client.ShardStatus) bool { return s.Epoch > 0 })
	seen := strconv.FormatUint(first.Epoch, 10)

	// Someone else splits shard 1 after we read its epoch.
	if _, err := cl.SplitShard(ctx, 1, "m"); err != nil {
		t.Fatal(err)
	}
	moved := shard(func(s client.ShardStatus) bool { return s.End == "m" && s.Epoch > first.Epoch })
	out, errOut, code := runCommand(newClusterCmd, "cluster", "split", "1", "g", "--epoch", seen, ep)
	if code != 1 || !strings.Contains(errOut, "condition_failed") {
		t.Fatalf("split at the stale epoch %s: exit %d, stdout %q, stderr %q", seen, code, out, errOut)
	}
	for _, addr := range c.HTTPAddrs() { // every node's view, not just one
		one, err := client.New(client.Config{Endpoints: []string{addr}, DisableRouting: true})
		if err != nil {
			t.Fatal(err)
		}
		st, err := one.Cluster(ctx)
		one.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range st.Shards {
			if s.ID == 1 && (s.End == "g" || s.Epoch > moved.Epoch) {
				t.Fatalf("the refused split changed shard 1 on %s: %+v, was %+v", addr, s, moved)
			}
		}
	}

	cur := strconv.FormatUint(moved.Epoch, 10)
	out, errOut, code = runCommand(newClusterCmd, "cluster", "split", "1", "g", "--epoch", cur, "-o", "json", ep)
	if code != 0 || !strings.Contains(out, `"end":"g"`) {
		t.Fatalf("split at the current epoch %s: exit %d, stdout %q, stderr %q", cur, code, out, errOut)
	}
	shard(func(s client.ShardStatus) bool { return s.End == "g" && s.Epoch == moved.Epoch+1 })
}
