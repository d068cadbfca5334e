package placement

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/shard"
)

// The executor is built when the node starts, before the node knows its own
// API address (it learns it when it registers): it must look the address up
// at each call, not once. Each action is the internal call the API serves.
func TestNodeExecutorCalls(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.RequestURI())
		mu.Unlock()
		if r.Method == http.MethodGet {
			_ = json.NewEncoder(w).Encode(shard.Status{Shard: 4, Leader: "n1"})
			return
		}
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	var registered bool
	addrs := func(node string) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		if node == "n1" && registered {
			return srv.Listener.Addr().String(), true
		}
		return "", false
	}
	c := cluster.New(cluster.Config{})
	defer c.Close()
	e := NewNodeExecutor(c, "n1", addrs)
	mu.Lock()
	registered = true // the node registers after the executor was built
	mu.Unlock()

	ctx := context.Background()
	st, err := e.ShardStatus(ctx, 4)
	if err != nil || st.Shard != 4 {
		t.Fatalf("ShardStatus: %+v %v", st, err)
	}
	if _, err := e.CommittedShardStatus(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ReplicaStatus(ctx, 4, "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ReplicaStatus(ctx, 4, "n9"); !errors.Is(err, cluster.ErrNotFound) {
		t.Fatalf("ReplicaStatus on an unknown node: %v; want not found", err)
	}
	n2 := NodeInfo{ID: "n2"}
	for _, f := range []func() error{
		func() error { return e.AddLearner(ctx, 4, n2) },
		func() error { return e.Promote(ctx, 4, n2) },
		func() error { return e.RemoveMember(ctx, 4, "n2") },
		func() error { return e.TransferLeader(ctx, 4, n2) },
		func() error { return e.Split(ctx, 4, []byte("m"), 0) },
	} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{
		"GET /internal/v1/shards/4/status?leader=1", "GET /internal/v1/shards/4/status?committed=1",
		"GET /internal/v1/shards/4/status", "POST /internal/v1/shards/4/membership",
		"POST /internal/v1/shards/4/membership", "POST /internal/v1/shards/4/membership",
		"POST /internal/v1/shards/4/membership", "POST /v1/cluster/shards/4/split",
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != len(want) {
		t.Fatalf("calls %v; want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("call %d: %s; want %s", i, seen[i], want[i])
		}
	}
}

// During a rolling upgrade the shard leader may run a binary that predates
// the split's epoch and refuses the unknown field: the executor then splits
// as it did before (unconditionally) rather than never splitting.
func TestNodeExecutorSplitOnOlderNode(t *testing.T) {
	var mu sync.Mutex
	var bodies []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		bodies = append(bodies, body)
		mu.Unlock()
		if _, ok := body["epoch"]; ok {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":{"code":"invalid_argument","message":"json: unknown field \"epoch\"","retryable":false}}`))
			return
		}
		_, _ = w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	c := cluster.New(cluster.Config{})
	defer c.Close()
	e := NewNodeExecutor(c, "n1", func(string) (string, bool) { return srv.Listener.Addr().String(), true })
	if err := e.Split(context.Background(), 4, nil, 7); err != nil {
		t.Fatalf("split on an older node: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 || bodies[0]["epoch"] != float64(7) || bodies[1]["epoch"] != nil {
		t.Fatalf("bodies %v: want the split with epoch 7, then without", bodies)
	}
}
