package node

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/cairndb/cairn/shard"
	"github.com/hashicorp/raft"
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
		if members, err := n.meta.Members(); err == nil {
			transferToFirst(ctx, liveVoters(members, n.cfg.ID, alive), func(to shard.Member) error {
				return n.meta.TransferLeadership(ctx, to.ID, to.Address)
			}, n.log.Info, n.log.Warn, "leave: hand off meta leadership")
		}
	}
	var led []leader
	for _, rep := range n.host.Replicas() {
		if rep.IsLeader() {
			led = append(led, rep)
		}
	}
	handed := handOff(ctx, led, n.cfg.ID, alive, n.log.Info, n.log.Warn)
	n.log.Info("leaving: leaderships handed off", "shards", handed, "led", len(led), "took", time.Since(start).Round(time.Millisecond))
}

// leader is what a handoff needs of a replica this node leads.
type leader interface {
	ID() uint64
	Members() ([]shard.Member, error)
	TransferLeader(id, addr string) error
}

// handOff transfers each replica's leadership to another voter gossip sees
// alive (lowest id first, the next one when a transfer fails), up to 8
// replicas at a time, and returns how many moved.
func handOff(ctx context.Context, reps []leader, self string, alive map[string]bool, info, warn func(string, ...any)) int {
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
		to := liveVoters(members, self, alive)
		if len(to) == 0 {
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
			if transferToFirst(ctx, to, func(m shard.Member) error { return rep.TransferLeader(m.ID, m.Address) },
				info, warn, "leave: hand off shard leadership", "shard", rep.ID()) {
				mu.Lock()
				moved++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return moved
}

// transferToFirst tries the targets in order until one transfer succeeds or
// ctx ends, and reports whether one did. Gossip can still list a node that
// stopped a moment ago (its leave not yet heard), so a failed transfer is
// routine while another target remains (logged at info); only when every
// target failed is it a warning.
func transferToFirst(ctx context.Context, targets []shard.Member, transfer func(shard.Member) error,
	info, warn func(string, ...any), msg string, args ...any) bool {
	for i, to := range targets {
		err := transfer(to)
		// A transfer that just failed can leave raft busy with it for a
		// moment ("leadership transfer in progress"): the next target is
		// tried again once that clears.
		for errors.Is(err, raft.ErrLeadershipTransferInProgress) && ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(transferBusyPause):
				err = transfer(to)
			}
		}
		if err == nil {
			return true
		}
		log := warn
		if i < len(targets)-1 && ctx.Err() == nil {
			log = info
		}
		log(msg, append(append([]any{}, args...), "to", to.ID, "err", err)...)
		if ctx.Err() != nil {
			return false
		}
	}
	return false
}

// transferBusyPause is how long a handoff waits before asking raft again
// while an earlier transfer is still in progress.
const transferBusyPause = 50 * time.Millisecond

// liveVoters returns the voters among members that are not self and that
// gossip sees alive, lowest id first.
func liveVoters(members []shard.Member, self string, alive map[string]bool) []shard.Member {
	var out []shard.Member
	for _, m := range members {
		if m.Voter && m.ID != self && alive[m.ID] {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
