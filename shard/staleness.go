package shard

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Bounded staleness on followers (docs/api.md, consistency=stale: data at most
// max_staleness old).
//
// Hearing from a leader recently says nothing about how far this replica has
// applied. What bounds the age of its data: the leader sends its commit index
// C in every AppendEntries; when the follower receives one at time t, every
// write that leader acknowledged before sending it has an index <= C. So once
// the follower's FSM has applied C, its data is at most as old as t. The
// follower records (C, t) as it receives them, and a stale read is admitted
// when the applied index covers a C learned within max_staleness.
//
// Two details keep this sound:
//   - A new leader's commit index may lag what its predecessor acknowledged
//     until an entry of its own term commits. A C counts only once it reaches
//     an index known to hold an entry of the sender's term (its no-op, seen
//     in an AppendEntries' entries or PrevLogTerm), so it covers every write
//     of earlier terms.
//   - Requests of a term lower than one already seen are ignored (a deposed
//     leader); C never goes backwards.
//
// What it cannot see, like any bound without synchronised clocks: the time a
// message spent in flight (t is when it arrived), and a deposed leader that
// does not know it yet and still reaches this follower on the minority side
// of a partition, for at most its leader lease. Commit indexes travel on
// appends and on the leader's commit pings (every CommitTimeout, 250 ms in
// data groups; heartbeats carry none), so max_staleness below that is
// refused more often than not.

// maxCommitSamples bounds the samples kept above the applied index. When a
// replica falls further behind, newer samples are dropped, which only makes
// its data look older than it is.
const maxCommitSamples = 256

type commitSample struct {
	index uint64
	at    time.Time
}

// commitTracker is what a follower learned about its leaders' commit indexes.
type commitTracker struct {
	mu      sync.Mutex
	term    uint64         // the highest term seen in an AppendEntries
	floor   uint64         // the lowest index known to hold an entry of term; 0 = none known yet
	last    uint64         // the highest commit index recorded
	fresh   time.Time      // the applied index covered a commit index learned at this time
	pending []commitSample // recorded commit indexes above the applied index, oldest first
}

// observe records the commit index an AppendEntries carries, received at now
// while the FSM had applied applied.
func (c *commitTracker) observe(req *raft.AppendEntriesRequest, now time.Time, applied uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if req.Term < c.term {
		return // a deposed leader's
	}
	if req.Term > c.term {
		c.term, c.floor = req.Term, 0
	}
	if req.PrevLogTerm == req.Term && req.PrevLogEntry > 0 {
		c.lowerFloor(req.PrevLogEntry)
	}
	for _, e := range req.Entries {
		if e.Term == req.Term {
			c.lowerFloor(e.Index)
			break
		}
	}
	lc := req.LeaderCommitIndex
	if c.floor == 0 || lc < c.floor || lc < c.last {
		return
	}
	c.last = lc
	c.popCovered(applied)
	if lc <= applied {
		c.fresh = now
		return
	}
	if n := len(c.pending); n > 0 && c.pending[n-1].index == lc {
		c.pending[n-1].at = now // the same commit index, learned again later
		return
	}
	if len(c.pending) < maxCommitSamples {
		c.pending = append(c.pending, commitSample{index: lc, at: now})
	}
}

func (c *commitTracker) lowerFloor(index uint64) {
	if c.floor == 0 || index < c.floor {
		c.floor = index
	}
}

// popCovered moves the samples that applied covers into fresh.
func (c *commitTracker) popCovered(applied uint64) {
	n := 0
	for n < len(c.pending) && c.pending[n].index <= applied {
		if c.pending[n].at.After(c.fresh) {
			c.fresh = c.pending[n].at
		}
		n++
	}
	if n > 0 {
		c.pending = append(c.pending[:0], c.pending[n:]...)
	}
}

// freshAt returns when the newest leader commit index that applied covers was
// learned; zero when none is known.
func (c *commitTracker) freshAt(applied uint64) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.popCovered(applied)
	return c.fresh
}

// observedTransport hands every AppendEntries request to a hook before raft
// sees it: raft reads requests from Consumer, and this transport's Consumer
// is a copy of the group transport's fed through the hook.
type observedTransport struct {
	*GroupTransport
	hook func(*raft.AppendEntriesRequest)
	out  chan raft.RPC
	once sync.Once
	stop chan struct{}
	done sync.Once
}

func newObservedTransport(t *GroupTransport, hook func(*raft.AppendEntriesRequest)) *observedTransport {
	return &observedTransport{GroupTransport: t, hook: hook, out: make(chan raft.RPC), stop: make(chan struct{})}
}

// Consumer returns the channel raft reads requests from.
func (t *observedTransport) Consumer() <-chan raft.RPC {
	t.once.Do(func() { go t.forward(t.GroupTransport.Consumer()) })
	return t.out
}

func (t *observedTransport) forward(in <-chan raft.RPC) {
	for {
		select {
		case rpc := <-in:
			if req, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
				t.hook(req)
			}
			select {
			case t.out <- rpc:
			case <-t.stop:
				return
			}
		case <-t.stop:
			return
		}
	}
}

// close stops forwarding; call it after raft has shut down.
func (t *observedTransport) close() {
	t.done.Do(func() { close(t.stop) })
}

// observeAppend is the replica's AppendEntries hook.
func (r *Replica) observeAppend(req *raft.AppendEntriesRequest) {
	r.commits.observe(req, r.clock.Now(), r.fsm.Applied())
}
