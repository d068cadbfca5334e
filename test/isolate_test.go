package test

import (
	"testing"
	"time"
)

// TestIsolateCutsOpenConnections: Isolate cuts a node's node-to-node HTTP
// connections that are already open (kept alive in a pool), not only new
// dials, as a real partition does. Before, an isolated node went on
// forwarding writes, and sending the placement driver its heartbeats, over
// connections opened before the fault, so the driver took it for responsive
// and could move a leadership to it (TestFailoverTime: "a placement
// decision targeted n2 while it was cut off").
func TestIsolateCutsOpenConnections(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	const key = "iso/k"
	mustPut(t, c.Node(0).HTTPAddr, key, "0")
	rng, ok := c.Node(0).Node.Lookup([]byte(key))
	if !ok {
		t.Fatalf("no range for %s", key)
	}
	leader := c.WaitLeader(rng.ID, 10*time.Second)
	via := (leader + 1) % 3
	for range 3 { // forwarded to the leader: via's connection to it is now open and pooled
		mustPut(t, c.Node(via).HTTPAddr, key, "1")
	}
	c.Isolate(via)
	ctx := Context(t, 5*time.Second)
	res, err := Do(ctx, "PUT", c.Node(via).HTTPAddr, KVPath(key), map[string]string{"value": "2"})
	if err == nil && res.Status == 200 {
		t.Fatalf("a write through isolated %s reached leader %s over a connection opened before the partition: %+v",
			c.Node(via).ID, c.Node(leader).ID, res)
	}
	t.Logf("write through the isolated node: %v %v", res, err)
}
