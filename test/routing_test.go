package test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
)

// hopRecorder is an http.RoundTripper that records, for every key-value
// request, the node it was sent to and the node that served it
// (X-Cairn-Node). They differ when the receiving node forwarded the request.
type hopRecorder struct {
	next   http.RoundTripper
	byAddr map[string]string // HTTP address -> node id

	mu   sync.Mutex
	hops []routedHop
}

type routedHop struct{ sentTo, servedBy string }

func (h *hopRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := h.next.RoundTrip(req)
	if err == nil && len(req.URL.Path) > len("/v1/kv/") && req.URL.Path[:len("/v1/kv/")] == "/v1/kv/" {
		h.mu.Lock()
		h.hops = append(h.hops, routedHop{sentTo: h.byAddr[req.URL.Host], servedBy: resp.Header.Get(client.HeaderNode)})
		h.mu.Unlock()
	}
	return resp, err
}

// take returns and forgets the hops recorded so far.
func (h *hopRecorder) take() []routedHop {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := h.hops
	h.hops = nil
	return out
}

// The client's range cache sends writes and linearizable reads straight to
// the shard leader, follows a leader change and a dead node, and never fails a
// request because its cache was stale (issue 3, routing cache).
func TestClientRoutesToLeaders(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"m"}})
	rec := &hopRecorder{next: http.DefaultTransport.(*http.Transport).Clone(), byAddr: map[string]string{}}
	for _, h := range c.Nodes() {
		rec.byAddr[h.HTTPAddr] = h.ID
	}
	cl, err := client.New(client.Config{
		Endpoints:  c.HTTPAddrs(),
		HTTPClient: &http.Client{Transport: rec},
		BackoffMin: 5 * time.Millisecond, BackoffMax: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := Context(t, 60*time.Second)
	keys := []string{"apple", "banana", "mango", "zebra"} // both shards
	n := 0
	// writeAll puts every key once and fails the test on any error: a stale
	// route must cost a hop, never a failed request.
	writeAll := func() {
		t.Helper()
		for _, k := range keys {
			n++
			if _, err := cl.Put(ctx, k, fmt.Sprint(n)); err != nil {
				t.Fatalf("put %s: %v", k, err)
			}
		}
		if _, err := cl.Get(ctx, keys[n%len(keys)]); err != nil {
			t.Fatalf("get: %v", err)
		}
	}
	direct := func() error {
		rec.take()
		writeAll()
		for _, h := range rec.take() {
			if h.sentTo != h.servedBy {
				return fmt.Errorf("a request sent to %s was served by %s", h.sentTo, h.servedBy)
			}
		}
		return nil
	}
	// moveLeader makes node to the leader of shard.
	moveLeader := func(shard uint64, to int) {
		t.Helper()
		from := c.WaitLeader(shard, 10*time.Second)
		if from == to {
			return
		}
		rep, _ := c.Node(from).Node.Host().Replica(shard)
		if err := rep.TransferLeader(c.Node(to).ID, c.Node(to).RaftAddr); err != nil {
			t.Fatalf("transfer leader of shard %d to %s: %v", shard, c.Node(to).ID, err)
		}
		WaitFor(t, 10*time.Second, "leader moved", func() error {
			if l, err := c.Leader(shard); err != nil || l != to {
				return fmt.Errorf("leader of shard %d is %d, want %d (%v)", shard, l, to, err)
			}
			return nil
		})
	}
	// Neither leader on node 0, the client's first endpoint: without routing
	// every request would be forwarded.
	ranges := c.Node(0).Node.Ranges()
	low, high := ranges[0].ID, ranges[1].ID
	moveLeader(low, 1)
	moveLeader(high, 2)
	WaitFor(t, 10*time.Second, "requests to go straight to the leaders", direct)
	for range 5 {
		if err := direct(); err != nil {
			t.Fatalf("with a warm cache and no leader change: %v", err)
		}
	}

	// A leader change: the first answers come through a forward, whose
	// X-Cairn-Node teaches the cache the new leader.
	moveLeader(low, 2)
	WaitFor(t, 10*time.Second, "routing to follow the leader change", direct)

	// A dead node (leading both shards): routed attempts to it fail to
	// connect and go through the configured endpoints instead; every request
	// still succeeds.
	c.Kill(2)
	c.WaitLeader(low, 15*time.Second, 2)
	c.WaitLeader(high, 15*time.Second, 2)
	WaitFor(t, 15*time.Second, "routing to avoid the dead node", direct)
}
