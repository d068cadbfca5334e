package client

import (
	"net/http"
	"testing"
	"time"
)

func TestRouteCacheLookupAndObserve(t *testing.T) {
	c, err := New(Config{Endpoints: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rc := c.routes
	rc.mu.Lock()
	rc.install(&ClusterStatus{
		Nodes: []NodeStatus{{ID: "n1", HTTPAddr: "h1:1"}, {ID: "n2", HTTPAddr: "h2:1"}, {ID: "n3", HTTPAddr: "h3:1", State: "dead"}},
		// Out of order on purpose: install sorts by start key.
		Shards: []ShardStatus{{ID: 2, Start: "m", End: "", Leader: "n2"}, {ID: 1, Start: "", End: "m", Leader: "n1"}},
	})
	rc.last = time.Now() // no background refresh during the test
	rc.mu.Unlock()
	for key, want := range map[string]string{"": "http://h1:1", "a": "http://h1:1", "l\xff": "http://h1:1", "m": "http://h2:1", "zz": "http://h2:1"} {
		if got := rc.lookup(key); got != want {
			t.Errorf("lookup(%q) = %q, want %q", key, got, want)
		}
	}
	// An answer for shard 1 served by n2 moves shard 1's leader.
	rc.observe("a", http.Header{HeaderShard: {"1"}, HeaderNode: {"n2"}})
	if got := rc.lookup("b"); got != "http://h2:1" {
		t.Errorf("after observe: lookup(b) = %q", got)
	}
	// A node that cannot be connected to is not routed to.
	rc.unreachable("http://h2:1")
	if got := rc.lookup("b"); got != "" {
		t.Errorf("unreachable leader still routed: %q", got)
	}
	// A dead leader's address is not known: nothing is routed there.
	rc.mu.Lock()
	rc.install(&ClusterStatus{
		Nodes:  []NodeStatus{{ID: "n3", HTTPAddr: "h3:1", State: "dead"}},
		Shards: []ShardStatus{{ID: 1, Start: "", End: "", Leader: "n3"}},
	})
	rc.mu.Unlock()
	if got := rc.lookup("a"); got != "" {
		t.Errorf("routed to a dead node: %q", got)
	}
	// Overlapping ranges (a view caught mid-split) route nothing.
	rc.mu.Lock()
	rc.install(&ClusterStatus{
		Nodes:  []NodeStatus{{ID: "n1", HTTPAddr: "h1:1"}},
		Shards: []ShardStatus{{ID: 1, Start: "", End: "", Leader: "n1"}, {ID: 2, Start: "m", End: "", Leader: "n1"}},
	})
	rc.mu.Unlock()
	if got := rc.lookup("z"); got != "" {
		t.Errorf("routed from an overlapping map: %q", got)
	}
}
