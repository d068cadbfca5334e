package shard

import (
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
)

// Settling an unknown outcome after a lost leadership.
//
// A leader that loses leadership fails every entry it appended and had not
// committed with raft.ErrLeadershipLost: "outcome unknown", since the next
// leader may still commit them. The entry is named by its index and term, and
// raft's log matching decides it: the entry committed at that index has that
// term if and only if it is this one. The replica stays in the group as a
// follower and applies the committed entry at that index like any other, so
// the proposer can wait for that apply (bounded by its own timeout) and
// learn either the entry's result (it committed: the same result the leader
// would have answered, since applying is deterministic, I3) or that another
// entry holds the index (it never commits: nothing was written, so the
// request may be routed to the new leader and retried).
//
// claimFSM wraps what raft drives. raft names the entries it had in flight
// when it loses leadership (raft.Config.LeadershipLost, on its own goroutine,
// before it processes anything as a follower: the AppendEntries that ends
// its leadership may already commit them), and expect registers a claim for
// each; the batch that applies the index answers it (entries are applied
// only after that point, so none is missed). The proposer, whose future
// then fails with ErrLeadershipLost, picks its claim up (claim) and waits.
// An answered claim stays until picked up, or one to two minutes. A restore
// (snapshot install) answers the claims it jumps over with "unknown".

// claimAnswer is what applying a claimed index found.
type claimAnswer struct {
	// ours: the entry applied at the index has the claimed term: it is the
	// proposer's entry, and res its result. Otherwise (known) another entry
	// holds the index; !known: the index was passed without applying it
	// (a snapshot install), so nothing is known.
	ours, known bool
	res         *fsm.Result
}

type claimFSM struct {
	raft.BatchingFSM
	f *fsm.FSM
	// passed is the highest index a batch or a restore went past. A claim
	// registered at or below it can no longer be answered (unknown).
	// Registration stores the claim and n, then reads passed; ApplyBatch
	// stores passed, then reads n: with sequentially consistent atomics one
	// of them sees the other, so no claim is left for a later batch to
	// misread as passed over.
	passed atomic.Uint64
	n      atomic.Int64 // len(claims), read without mu by ApplyBatch
	mu     sync.Mutex
	claims map[uint64]*claim
	swept  time.Time // the last pass over claims for aged ones
	now    func() time.Time
}

type claim struct {
	term     uint64
	ch       chan claimAnswer // buffered: answered once, read by the proposer
	answered bool
	at       time.Time
}

const (
	claimMaxAge = time.Minute
	claimMax    = 1 << 14
)

var _ raft.BatchingFSM = (*claimFSM)(nil)

// newClaimFSM wraps inner (f, or f behind test hooks); f gives the applied
// index.
func newClaimFSM(inner raft.FSM, f *fsm.FSM) *claimFSM {
	b, ok := inner.(raft.BatchingFSM)
	if !ok {
		panic("shard: the state machine must apply batches")
	}
	c := &claimFSM{BatchingFSM: b, f: f, claims: map[uint64]*claim{}, now: time.Now}
	c.passed.Store(f.Applied())
	return c
}

// expect registers a claim on index, appended in term (raft's
// LeadershipLost hook). Never blocks for long: the map's mutex is never held
// across an apply.
func (c *claimFSM) expect(index, term uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.registerLocked(index, term)
}

func (c *claimFSM) registerLocked(index, term uint64) *claim {
	if cl := c.claims[index]; cl != nil && cl.term == term {
		return cl
	}
	now := c.now()
	if now.Sub(c.swept) > claimMaxAge || len(c.claims) >= claimMax {
		c.swept = now
		c.sweepLocked(now)
		if len(c.claims) >= claimMax {
			return nil
		}
	}
	cl := &claim{term: term, ch: make(chan claimAnswer, 1), at: now}
	c.claims[index] = cl
	c.n.Store(int64(len(c.claims)))
	if index <= c.passed.Load() {
		// Applied (or restored over) already: its result is gone.
		cl.answered = true
		cl.ch <- claimAnswer{}
	}
	return cl
}

// sweepLocked drops claims nobody picked up (their proposer had given up,
// or none was waiting) after a minute or two.
func (c *claimFSM) sweepLocked(now time.Time) {
	for idx, cl := range c.claims {
		if now.Sub(cl.at) > claimMaxAge {
			delete(c.claims, idx)
		}
	}
	c.n.Store(int64(len(c.claims)))
}

// claim returns the channel that answers what became of the entry at index
// appended in term, from the claim raft's hook registered; false when there
// is none (an entry the hook did not name, or a claim swept or refused for
// room): the outcome stays unknown.
func (c *claimFSM) claim(index, term uint64) (<-chan claimAnswer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl := c.claims[index]; cl != nil && cl.term == term {
		return cl.ch, true
	}
	return nil, false
}

// drop forgets the claim on index (its proposer has its answer, or gave up).
func (c *claimFSM) drop(index, term uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl := c.claims[index]; cl != nil && cl.term == term {
		delete(c.claims, index)
		c.n.Store(int64(len(c.claims)))
	}
}

func (c *claimFSM) ApplyBatch(logs []*raft.Log) []any {
	out := c.BatchingFSM.ApplyBatch(logs)
	if len(logs) == 0 {
		return out
	}
	last := logs[len(logs)-1].Index
	if last > c.passed.Load() {
		c.passed.Store(last) // only raft's FSM goroutine stores it
	}
	if c.n.Load() == 0 {
		return out
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, l := range logs {
		cl := c.claims[l.Index]
		if cl == nil || cl.answered {
			continue
		}
		a := claimAnswer{known: true, ours: l.Term == cl.term}
		if a.ours {
			a.res, _ = out[i].(*fsm.Result)
			a.known = a.res != nil
			a.ours = a.known
		}
		cl.answered = true
		cl.ch <- a
	}
	// raft applies committed entries in order but hands the state machine
	// commands and configurations only: a claimed index this batch passed
	// without applying holds a new leader's no-op or a barrier, not the
	// claimed command, which therefore never commits.
	for idx, cl := range c.claims {
		if idx < last && !cl.answered {
			cl.answered = true
			cl.ch <- claimAnswer{known: true}
		}
	}
	if now := c.now(); now.Sub(c.swept) > claimMaxAge {
		c.swept = now
		c.sweepLocked(now) // answered claims nobody picked up
	}
	return out
}

func (c *claimFSM) Apply(l *raft.Log) any {
	return c.ApplyBatch([]*raft.Log{l})[0]
}

func (c *claimFSM) Restore(rc io.ReadCloser) error {
	err := c.BatchingFSM.Restore(rc)
	applied := c.f.Applied()
	if applied > c.passed.Load() {
		c.passed.Store(applied) // on raft's FSM goroutine, as ApplyBatch
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for idx, cl := range c.claims {
		if idx <= applied && !cl.answered {
			cl.answered = true
			cl.ch <- claimAnswer{}
		}
	}
	return err
}
