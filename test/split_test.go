package test

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
)

// splitShard asks any node to split shard id at key ("" = the middle).
func splitShard(t *testing.T, c *Cluster, id uint64, key string) (parent, child struct {
	ID    uint64 `json:"id"`
	Start string `json:"start"`
	End   string `json:"end"`
	Epoch uint64 `json:"epoch"`
}) {
	t.Helper()
	body := map[string]any{}
	if key != "" {
		body["key"] = key
	}
	var out struct {
		Parent, Child struct {
			ID    uint64 `json:"id"`
			Start string `json:"start"`
			End   string `json:"end"`
			Epoch uint64 `json:"epoch"`
		}
	}
	WaitFor(t, 30*time.Second, fmt.Sprintf("split shard %d at %q", id, key), func() error {
		res, err := Do(Context(t, 20*time.Second), "POST", c.Node(0).HTTPAddr,
			fmt.Sprintf("/v1/cluster/shards/%d/split", id), body)
		if err != nil {
			return err
		}
		if res.Status != 200 {
			return fmt.Errorf("%s", res)
		}
		return res.JSON(&out)
	})
	return out.Parent, out.Child
}

// assertOwnership checks invariant I5 on every running replica: each holds
// only keys inside its own range, and each acknowledged key is held by the
// replicas of exactly the range that owns it.
func assertOwnership(t *testing.T, c *Cluster, acked map[string]string) {
	t.Helper()
	assertOwnershipMaybe(t, c, acked, nil)
}

// assertOwnershipMaybe is assertOwnership where a key may also hold a value
// from maybe[key]: writes after its last acknowledged one whose outcome is
// unknown (a timeout or 504 outcome_unknown), which may have taken effect.
func assertOwnershipMaybe(t *testing.T, c *Cluster, acked map[string]string, maybe map[string]map[string]bool) {
	t.Helper()
	WaitFor(t, 30*time.Second, "every acknowledged key in its owning shard", func() error {
		for _, h := range c.Nodes() {
			if h.Node == nil {
				continue
			}
			for key, val := range acked {
				holders := 0
				for _, rep := range h.Node.Host().Replicas() {
					rng := rep.Range()
					kvs, _, err := rep.FSM().Scan(rng.Start, rng.End, 100000, false)
					if err != nil {
						return err
					}
					for _, kv := range kvs {
						if !rng.Contains(kv.Key) {
							t.Fatalf("Invariant I5: %s shard %d holds key %q outside its range %+v", h.ID, rng.ID, kv.Key, rng)
						}
						if string(kv.Key) == key {
							holders++
							if string(kv.Value) != val && !maybe[key][string(kv.Value)] {
								return fmt.Errorf("%s shard %d: %q = %q, want %q", h.ID, rng.ID, key, kv.Value, val)
							}
						}
					}
				}
				if holders != 1 {
					return fmt.Errorf("%s: key %q held by %d shards, want 1", h.ID, key, holders)
				}
			}
		}
		return nil
	})
}

// Invariants I5, I6: a manual split moves the upper half into a new shard;
// both halves keep serving, the range map follows, and a key lives in
// exactly one shard on every node.
func TestManualSplit(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	acked := map[string]string{}
	for i := 0; i < 40; i++ {
		k := fmt.Sprintf("k%02d", i)
		mustPut(t, c.Node(i%3).HTTPAddr, k, "v"+k)
		acked[k] = "v" + k
	}
	parent, child := splitShard(t, c, 1, "k20")
	if parent.End != "k20" || child.Start != "k20" || child.ID == parent.ID || child.Epoch != parent.Epoch {
		t.Fatalf("split answer: parent %+v child %+v", parent, child)
	}
	WaitFor(t, 20*time.Second, "range map shows the split on every node", func() error {
		for _, h := range c.Nodes() {
			if n := len(h.Node.Ranges()); n != 2 {
				return fmt.Errorf("%s has %d ranges", h.ID, n)
			}
		}
		return nil
	})
	c.WaitReady(20 * time.Second)
	for k, v := range acked {
		got, res, err := getValue(Context(t, 10*time.Second), c.Node(2).HTTPAddr, k)
		if err != nil || res.Status != 200 || got != v {
			t.Fatalf("after split, %s = %q (%v %v), want %q", k, got, res, err, v)
		}
	}
	mustPut(t, c.Node(1).HTTPAddr, "k99", "new")
	acked["k99"] = "new"
	assertOwnership(t, c, acked)
	assertReplicasConverge(t, c, child.ID)
	assertReplicasConverge(t, c, parent.ID)
}

// Repeated splits down to many small ranges under a concurrent writer, then
// a full scan returns every acknowledged key exactly once, in order.
func TestRepeatedSplitsThenScan(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var mu sync.Mutex
	acked := map[string]string{}
	// maybe holds, per key, the values of writes after its last acknowledged
	// one whose outcome is unknown; failed those refused outright (4xx, 503:
	// nothing was written), which must never show (Invariant I7).
	maybe := map[string]map[string]bool{}
	failed := map[string]string{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // writer under load, bounded in count and time
		defer wg.Done()
		for i := 0; i < 1500; i++ {
			k := fmt.Sprintf("key-%04d", (i*37)%1000)
			v := strconv.Itoa(i)
			res, err := Do(ctx, "PUT", c.Node(i%3).HTTPAddr, KVPath(k), map[string]any{"value": v})
			mu.Lock()
			switch {
			case err == nil && res.Status == 200:
				acked[k] = v
				delete(maybe, k)
			case err != nil || res.Status == 504 || res.Status == 500:
				if maybe[k] == nil {
					maybe[k] = map[string]bool{}
				}
				maybe[k][v] = true
			default:
				failed[v] = fmt.Sprintf("%d %s", res.Status, res.Body)
			}
			mu.Unlock()
		}
	}()
	for _, key := range []string{"key-0500", "key-0250", "key-0750", "key-0125", "key-0375", "key-0625", "key-0875"} {
		st := c.Node(0).Node.Ranges()
		var id uint64
		for _, r := range st {
			if r.Contains([]byte(key)) {
				id = r.ID
			}
		}
		splitShard(t, c, id, key)
	}
	wg.Wait() // the writer finishes its bounded run: splits happened in its middle
	WaitFor(t, 20*time.Second, "8 ranges on every node", func() error {
		for _, h := range c.Nodes() {
			if n := len(h.Node.Ranges()); n != 8 {
				return fmt.Errorf("%s has %d ranges", h.ID, n)
			}
		}
		return nil
	})
	keys := ScanKeys(t, ctx, func(page int) string { return c.Node(page % 3).HTTPAddr }, "keys_only=0", 97)
	if !sort.StringsAreSorted(keys) {
		t.Fatalf("scan out of order")
	}
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			t.Fatalf("scan returned %q twice", k)
		}
		seen[k] = true
	}
	mu.Lock()
	defer mu.Unlock()
	for k := range acked {
		if !seen[k] {
			t.Fatalf("scan lost acknowledged key %q", k)
		}
	}
	unknown := 0
	for _, vs := range maybe {
		unknown += len(vs)
	}
	t.Logf("%d acknowledged keys, %d scanned, 8 ranges; %d writes refused, %d of unknown outcome", len(acked), len(keys), len(failed), unknown)
	for _, h := range c.Nodes() {
		for _, rep := range h.Node.Host().Replicas() {
			rng := rep.Range()
			kvs, _, err := rep.FSM().Scan(rng.Start, rng.End, 100000, false)
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range kvs {
				if why, ok := failed[string(kv.Value)]; ok {
					t.Fatalf("Invariant I7: %s holds %q = %q, written by a put that was refused (%s): a refusal must mean nothing was written", h.ID, kv.Key, kv.Value, why)
				}
			}
		}
	}
	assertOwnershipMaybe(t, c, acked, maybe)
}

// Invariants I5, I6, Scenario S25: splits in the middle of a concurrent
// get/put/CAS workload across the split keys; porcupine must find the
// history linearizable, and every key must end in exactly the shard that
// owns it, on every node.
func TestSplitUnderLinearizableLoad(t *testing.T) {
	seed := testSeed(t)
	c := StartCluster(t, ClusterConfig{})
	clients := NewClients(t, c, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, key := range []string{"lin/k4", "lin/k2", "lin/k6", "lin/k1", "lin/k5"} {
			time.Sleep(1500 * time.Millisecond)
			var id uint64
			for _, r := range c.Node(0).Node.Ranges() {
				if r.Contains([]byte(key)) {
					id = r.ID
				}
			}
			splitShard(t, c, id, key)
		}
	}()
	cfg := DefaultWorkloadConfig()
	cfg.Seed = int64(seed)
	cfg.Clients = len(clients)
	cfg.Keys = 8
	cfg.KeyPrefix = "lin/"
	cfg.Ops = 100000
	cfg.Duration = 10 * time.Second
	cfg.Stores = func(i int) KVStore { return ClientStore{C: clients[i]} }
	cfg.Classify = ClassifyClientError
	rec := RunRegisterWorkload(ctx, t, cfg)
	wg.Wait()
	t.Logf("operations: %+v", rec.Stats())
	if rec.Stats().OK < 100 {
		t.Fatalf("only %d operations succeeded", rec.Stats().OK)
	}
	rec.Check(t, 60*time.Second)

	final := map[string]string{}
	for i := 0; i < cfg.Keys; i++ {
		k := fmt.Sprintf("lin/k%d", i)
		if v, res, err := getValue(ctx, c.Node(0).HTTPAddr, k); err == nil && res.Status == 200 {
			final[k] = v
		}
	}
	if n := len(c.Node(0).Node.Ranges()); n != 6 {
		t.Fatalf("%d ranges after 5 splits, want 6", n)
	}
	assertOwnership(t, c, final)
}
