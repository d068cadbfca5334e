package test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// groupTerms returns the highest raft term any live node holds for the meta
// group (id 0 here) and each data shard.
func groupTerms(c *Cluster) map[uint64]uint64 {
	out := map[uint64]uint64{}
	note := func(id uint64, r *raft.Raft) {
		if v := r.CurrentTerm(); v > out[id] {
			out[id] = v
		}
	}
	for _, h := range c.Nodes() {
		if h.Node == nil {
			continue
		}
		note(0, h.Node.MetaGroup().Raft())
		for _, rep := range h.Node.Host().Replicas() {
			note(rep.ID(), rep.Raft())
		}
	}
	return out
}

// elections sums the term increases from a to b, per group and in all.
func elections(a, b map[uint64]uint64) (total uint64, per string) {
	ids := make([]uint64, 0, len(b))
	for id := range b {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var parts []string
	for _, id := range ids {
		n := b[id] - min(a[id], b[id])
		total += n
		name := fmt.Sprintf("shard %d", id)
		if id == 0 {
			name = "meta"
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, n))
	}
	return total, strings.Join(parts, ", ")
}

// Scenario S20: network delay close to the election timeout. Raft traffic
// on every link takes 250 ms one way against a 300 ms election timeout and
// a 150 ms leader lease, so leaders lose their lease and candidates give up
// before votes come back: elections that no failure explains. They are
// counted per phase and reported; the delay must cause some (else it was
// not in the path), porcupine must find the whole history linearizable,
// and once the delay is gone the cluster serves writes again.
func TestS20DelayNearElectionTimeout(t *testing.T) {
	seed := testSeed(t)
	const (
		prefix  = "s20/"
		delay   = 250 * time.Millisecond
		before  = 3 * time.Second
		delayed = 8 * time.Second
		after   = 6 * time.Second
	)
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{prefix + "k4"}, Delayable: true})
	clients := NewClients(t, c, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var (
		wg     sync.WaitGroup
		phases [4]map[uint64]uint64
	)
	phases[0] = groupTerms(c)
	wg.Add(1)
	go func() {
		defer wg.Done()
		sleepCtx(ctx, before)
		phases[1] = groupTerms(c)
		c.SetDelay(delay)
		sleepCtx(ctx, delayed)
		phases[2] = groupTerms(c)
		c.SetDelay(0)
	}()

	cfg := clusterWorkload(seed, clients, prefix, before+delayed+after)
	rec := RunRegisterWorkload(ctx, t, cfg)
	wg.Wait()
	phases[3] = groupTerms(c)

	nBefore, perBefore := elections(phases[0], phases[1])
	nDelayed, perDelayed := elections(phases[1], phases[2])
	nAfter, perAfter := elections(phases[2], phases[3])
	t.Logf("S20 elections: %d in %v without delay (%s); %d in %v with %v one way (%s); %d in %v after (%s)",
		nBefore, before, perBefore, nDelayed, delayed, delay, perDelayed, nAfter, after, perAfter)
	st := rec.Stats()
	t.Logf("operations: %+v", st)
	if nDelayed == 0 {
		t.Errorf("no election while every link was %v slow against a 300 ms election timeout: the delay was not in the path", delay)
	}

	// Serving again without the delay: a write through every node.
	WaitFor(t, 20*time.Second, "writes after the delay is gone", func() error {
		for i, cl := range clients[:3] {
			wctx, wcancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := cl.Put(wctx, fmt.Sprintf("%sprobe-%d", prefix, i), "v")
			wcancel()
			if err != nil {
				return err
			}
		}
		return nil
	})
	if st.OK < 100 {
		t.Fatalf("only %d operations succeeded", st.OK)
	}
	rec.Check(t, 60*time.Second)
}
