package test

import (
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cairndb/cairn/shard"
)

// Invariant I1: a node whose raft log fails (fdatasync returns EIO) while it
// leads a shard acknowledges nothing more and stops serving; the other nodes
// take over, every acknowledged write stays readable, and the failed node's
// /readyz answers 503.
func TestNodeLogFailureClusterGoesOn(t *testing.T) {
	c := StartCluster(t, ClusterConfig{LogStore: shard.LogStoreWAL}) // the knob below is the WAL's
	id := shardOf(c, "disk")
	doomed := c.WaitLeader(id, 15*time.Second)
	h := c.Node(doomed)
	var armed atomic.Bool
	c.Kill(doomed)
	h.cfg.Knobs.WAL = &shard.WALKnobs{Sync: func(by shard.WALWriter, f *os.File) error {
		if armed.Load() {
			return syscall.EIO
		}
		return f.Sync()
	}}
	c.Restart(doomed)
	WaitFor(t, 30*time.Second, h.ID+" leading the shard again", func() error {
		cur := c.WaitLeader(id, 15*time.Second)
		if cur == doomed {
			return nil
		}
		rep, ok := c.Node(cur).Node.Replica(id)
		if !ok {
			return fmt.Errorf("no replica on %s", c.Node(cur).ID)
		}
		if err := rep.TransferLeader(h.ID, h.RaftAddr); err != nil {
			return err
		}
		return fmt.Errorf("transferred to %s", h.ID)
	})
	WaitFor(t, 30*time.Second, h.ID+" ready", func() error {
		if !h.Node.Ready() {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	acked := map[string]string{}
	for i := 0; i < 5; i++ {
		k, v := fmt.Sprintf("disk-%d", i), fmt.Sprintf("v%d", i)
		mustPut(t, h.HTTPAddr, k, v)
		acked[k] = v
	}

	armed.Store(true)
	res, err := Do(Context(t, 15*time.Second), "PUT", h.HTTPAddr, KVPath("disk-lost"), map[string]any{"value": "x"})
	if err == nil && res.Status == 200 {
		t.Fatalf("a write whose log commit failed was acknowledged: %s", res)
	}
	armed.Store(false) // the disk "works" again: the node must stay down

	other := c.Node((doomed + 1) % 3)
	WaitFor(t, 30*time.Second, "a write through another node", func() error {
		res, err := Do(Context(t, 10*time.Second), "PUT", other.HTTPAddr, KVPath("disk-after"), map[string]any{"value": "y"})
		if err != nil {
			return err
		}
		if res.Status != 200 {
			return fmt.Errorf("put: %s", res)
		}
		return nil
	})
	for k, want := range acked {
		got, res, err := getValue(Context(t, 10*time.Second), other.HTTPAddr, k)
		if err != nil || res.Status != 200 || got != want {
			t.Errorf("acknowledged %s=%s: read %q, %v %v", k, want, got, res, err)
		}
	}
	WaitFor(t, 10*time.Second, h.ID+" unready", func() error {
		res, err := Do(Context(t, 5*time.Second), "GET", h.HTTPAddr, "/readyz", nil)
		if err != nil {
			return err
		}
		if res.Status != 503 {
			return fmt.Errorf("readyz: %s", res)
		}
		return nil
	})
	if n := len(h.Node.Host().Replicas()); n != 0 {
		t.Errorf("%d replicas still open on the node whose log failed", n)
	}
}
