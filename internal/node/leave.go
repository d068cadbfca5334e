package node

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/cairndb/cairn/placement"
	"github.com/cairndb/cairn/shard"
)

// Leave is the graceful stop a SIGTERM asks for: the node stops taking
// requests (Ready turns false, so /readyz and the API answer 503 unavailable,
// retryable, and forwarding nodes route elsewhere), leaves gossip so the
// placement driver targets it no more, and hands every leadership it holds,
// the meta group's first, to another live voter, so its shards do not sit out
// an election timeout. It returns when every handoff has finished or timeout
// has passed, whichever is first; Close then stops the node.
//
// A handoff needs a live target: when every other node is leaving too (all
// of a cluster stopped at once), there is none and Leave returns at once.
func (n *Node) Leave(timeout time.Duration) {
	start := time.Now()
	n.leaving.Store(true)
	alive := map[string]bool{}
	if n.gossip != nil {
		suspect := n.gossip.suspect()
		for id := range n.gossip.alive() {
			if id != n.cfg.ID && !suspect[id] {
				alive[id] = true
			}
		}
		_ = n.gossip.leave()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if n.meta != nil && n.meta.IsLeader() && len(alive) > 0 {
		// To a live voter (lowest id first): raft's own choice, the most
		// up-to-date voter, may be a node that has just stopped. Wait for it
		// so the next placement leader, not this one, runs the driver from
		// here on.
		if to, ok := liveMetaVoter(n.meta, n.cfg.ID, alive); ok {
			if err := n.meta.TransferLeadership(ctx, to.ID, to.Address); err != nil {
				n.log.Warn("leave: hand off meta leadership", "to", to.ID, "err", err)
			}
		}
	}
	var led []*shard.Replica
	for _, rep := range n.host.Replicas() {
		if rep.IsLeader() {
			led = append(led, rep)
		}
	}
	handed := handOff(ctx, led, n.cfg.ID, alive, n.log.Warn)
	n.log.Info("leaving: leaderships handed off", "shards", handed, "led", len(led), "took", time.Since(start).Round(time.Millisecond))
}

// handOff transfers each replica's leadership to another voter gossip sees
// alive (lowest id first), up to 8 at a time, and returns how many moved.
func handOff(ctx context.Context, reps []*shard.Replica, self string, alive map[string]bool, warn func(string, ...any)) int {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		moved int
	)
	sem := make(chan struct{}, 8)
	for _, rep := range reps {
		members, err := rep.Members()
		if err != nil {
			continue
		}
		sort.Slice(members, func(i, j int) bool { return members[i].ID < members[j].ID })
		var to *shard.Member
		for i := range members {
			if m := &members[i]; m.Voter && m.ID != self && alive[m.ID] {
				to = m
				break
			}
		}
		if to == nil {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return moved
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// Bounded by raft: a transfer that does not complete within an
			// election timeout fails and leadership stays here.
			if err := rep.TransferLeader(to.ID, to.Address); err != nil {
				warn("leave: hand off shard leadership", "shard", rep.ID(), "to", to.ID, "err", err)
				return
			}
			mu.Lock()
			moved++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return moved
}

// liveMetaVoter returns the meta group's voter with the lowest id that is
// not self and that gossip sees alive.
func liveMetaVoter(meta *placement.Meta, self string, alive map[string]bool) (shard.Member, bool) {
	members, err := meta.Members()
	if err != nil {
		return shard.Member{}, false
	}
	sort.Slice(members, func(i, j int) bool { return members[i].ID < members[j].ID })
	for _, m := range members {
		if m.Voter && m.ID != self && alive[m.ID] {
			return m, true
		}
	}
	return shard.Member{}, false
}
