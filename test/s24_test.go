package test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/internal/node"
	"github.com/cairndb/cairn/placement"
	"github.com/cairndb/cairn/shard"
)

// leaderWatch records, for every group, which node led each term it saw.
type leaderWatch struct {
	mu      sync.Mutex
	leaders map[[2]uint64]string // (group, term) -> node id
	samples int
	errs    []string
}

// sample looks at every raft instance of n once. A node counts as leader of
// term t only if its term read t both before and after its state read
// Leader: terms only grow, so it was leader while its term was t.
func (w *leaderWatch) sample(id string, n *node.Node) {
	see := func(group uint64, r *raft.Raft) {
		t1 := r.CurrentTerm()
		if r.State() != raft.Leader || r.CurrentTerm() != t1 {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		k := [2]uint64{group, t1}
		switch prev, ok := w.leaders[k]; {
		case !ok:
			w.leaders[k] = id
		case prev != id:
			w.errs = append(w.errs, fmt.Sprintf("group %d term %d: both %s and %s led", group, t1, prev, id))
		}
	}
	see(placement.MetaGroupID, n.MetaGroup().Raft())
	for _, rep := range n.Host().Replicas() {
		see(rep.ID(), rep.Raft())
	}
	w.mu.Lock()
	w.samples++
	w.mu.Unlock()
}

// Scenario S24: raft safety under random faults. While the nemesis kills,
// restarts, isolates and pauses nodes (DefaultFaults: kill-all and
// transfer-pause too) under a register workload, a watcher samples
// every group on every live node every few milliseconds: no term may have
// two leaders (Election Safety). Afterwards every shard's replicas converge
// on one applied index and state hash (every replica applied the same entry
// at each index), and their logs hold the same entries up to that index
// wherever two of them still keep an entry (Log Matching). Invariant I1.
func TestS24RaftSafetyUnderRandomFaults(t *testing.T) {
	seed := testSeed(t)
	prefix := "s24/"
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{prefix + "k4"}, Delayable: true}) // Delayable: the nemesis pauses nodes
	clients := NewClients(t, c, 4)
	const duration = 12 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), duration+time.Minute)
	defer cancel()

	w := &leaderWatch{leaders: map[[2]uint64]string{}}
	watchCtx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-watchCtx.Done():
				return
			case <-tick.C:
			}
			for _, n := range c.LiveNodes() {
				w.sample(n.ID(), n)
			}
		}
	}()

	nem := &Nemesis{C: c, Seed: seed, Shards: []uint64{1, 2}}
	stopNemesis := nem.Start(ctx, duration, &wg)
	defer stopNemesis()

	cfg := clusterWorkload(seed, clients, prefix, duration)
	rec := RunRegisterWorkload(ctx, t, cfg)
	stopNemesis()
	for len(c.LiveNodes()) < 3 && ctx.Err() == nil { // the nemesis restarts every node when it stops
		time.Sleep(10 * time.Millisecond)
	}
	stopWatch()
	wg.Wait()

	t.Logf("faults: %s", nem.Summary())
	t.Logf("leader watch: %d samples, %d (group, term) pairs with a leader", w.samples, len(w.leaders))
	for _, e := range w.errs {
		t.Error("election safety: " + e)
	}
	if len(w.leaders) < 3 {
		t.Errorf("saw leaders in only %d terms: the watch or the faults did not work", len(w.leaders))
	}

	for _, id := range []uint64{1, 2} {
		assertReplicasConverge(t, c, id)
		assertLogsMatch(t, c, id)
	}
	rec.Check(t, 60*time.Second)
}

// assertLogsMatch compares shard id's log entries across its replicas, up
// to the applied index they converged on, wherever both still hold the
// entry: same term, type and data.
func assertLogsMatch(t *testing.T, c *Cluster, id uint64) {
	t.Helper()
	type replicaLog struct {
		node    string
		log     interface{ GetLog(uint64, *raft.Log) error }
		first   uint64
		applied uint64
	}
	var logs []replicaLog
	for _, n := range c.LiveNodes() {
		rep, ok := n.Host().Replica(id)
		if !ok {
			continue
		}
		w, ok := n.RaftLog().(*shard.WAL)
		if !ok {
			// The boltdb store's raft.db is held open by the running group.
			t.Logf("shard %d: log matching compared on the WAL only (this cluster runs %T)", id, n.RaftLog())
			return
		}
		g := w.Group(id)
		first, err := g.FirstIndex()
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, replicaLog{node: n.ID(), log: g, first: first, applied: rep.FSM().Applied()})
	}
	if len(logs) < 2 {
		t.Fatalf("shard %d: %d replicas to compare", id, len(logs))
	}
	compared := 0
	for i := 1; i < len(logs); i++ {
		a, b := logs[0], logs[i]
		from, to := max(a.first, b.first), min(a.applied, b.applied)
		for idx := from; idx <= to && from > 0; idx++ {
			var la, lb raft.Log
			ea, eb := a.log.GetLog(idx, &la), b.log.GetLog(idx, &lb)
			if ea != nil || eb != nil {
				continue // compacted meanwhile on one side
			}
			if la.Term != lb.Term || la.Type != lb.Type || !bytes.Equal(la.Data, lb.Data) {
				t.Errorf("shard %d index %d: %s has term %d type %v, %s has term %d type %v (log matching)",
					id, idx, a.node, la.Term, la.Type, b.node, lb.Term, lb.Type)
				return
			}
			compared++
		}
	}
	if compared == 0 {
		t.Errorf("shard %d: no log entry held by two replicas to compare", id)
	}
	t.Logf("shard %d: %d log entries compared across %d replicas", id, compared, len(logs))
}
