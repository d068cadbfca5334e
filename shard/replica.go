package shard

import (
	"context"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
)

// Replica is this node's member of one shard's raft group.
//
// Concurrency: every exported method is safe for concurrent use. Propose and
// the read methods may block until their context ends.
type Replica struct {
	id     uint64
	nodeID string
	g      *Group
	fsm    *fsm.FSM
	claims *claimFSM // what raft drives: fsm, answering claims (claims.go)
	log    *slog.Logger
	clock  Clock

	applyTimeout time.Duration
	verifier     verifier
	ttl          *ttlManager
	locks        *lockManager
	knobs        *ReplicaKnobs // nil in production

	// readiness: a leader serves linearizable reads only after an entry of
	// its own term has been applied (the raft paper's ReadIndex precondition),
	// and only while raft's current term is still that term (readyTerm): a
	// readiness left over from an earlier term is no readiness. gen changes
	// on every leadership change so a read that straddles one is retried
	// rather than served from a stale read index.
	mu        sync.Mutex
	gen       uint64
	ready     bool
	readyTerm uint64        // the term of the no-op that made this generation ready
	readyCh   chan struct{} // closed when ready becomes true for gen
	genCh     chan struct{} // closed when gen changes
	kick      chan struct{} // cap 1: a reader asks the watcher to look now

	// commits is what this replica learned, as a follower, about its
	// leaders' commit indexes and when (stale reads; staleness.go).
	commits commitTracker

	leaderChanges  *prometheus.CounterVec // nil without metrics
	proposeSeconds prometheus.Histogram   // nil without metrics
	settledMetric  *prometheus.CounterVec // nil without metrics

	// settled counts proposals failed by a lost leadership whose fate
	// settle learned (committed or not written).
	settled atomic.Uint64

	written atomic.Uint64 // bytes proposed by this replica as leader (write-rate statistics)

	closed atomic.Bool
	stop   chan struct{}
	wg     sync.WaitGroup
}

// ID returns the shard id.
func (r *Replica) ID() uint64 { return r.id }

// FSM returns the replica's state machine, for local reads and tests.
func (r *Replica) FSM() *fsm.FSM { return r.fsm }

// Raft returns the underlying raft instance (membership changes, tests).
func (r *Replica) Raft() *raft.Raft { return r.g.raft }

// Range returns the shard's current key range as applied locally.
func (r *Replica) Range() fsm.Range { return r.fsm.Range() }

// IsLeader reports whether this replica currently believes it leads.
func (r *Replica) IsLeader() bool { return r.g.raft.State() == raft.Leader }

// Leader returns the leader's node id and raft address as this replica knows
// them; empty when unknown.
func (r *Replica) Leader() (id, addr string) { return r.g.Leader() }

// Propose replicates cmd and returns its result once applied locally.
// Errors: *NotLeaderError (nothing written), ErrUnavailable (nothing
// written), ErrOutcomeUnknown (may have been written), or an encoding error
// wrapping fsm.ErrInvalidCommand. A command-level failure (condition, wrong
// shard, stale token) is in Result.Err, not in the returned error.
func (r *Replica) Propose(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	b, err := fsm.EncodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	return r.propose(ctx, b)
}

func (r *Replica) propose(ctx context.Context, b []byte) (*fsm.Result, error) {
	if r.closed.Load() {
		return nil, fmt.Errorf("shard %d: %w", r.id, ErrUnavailable)
	}
	if r.g.raft.State() != raft.Leader {
		return nil, r.notLeader()
	}
	r.written.Add(uint64(len(b)))
	// A latency, not a decision: the monotonic clock, not r.clock.
	start := time.Now()
	resp, err := r.g.Apply(ctx, b, r.applyTimeout) // bounded and classified (propose.go)
	var lost *LeadershipLostError
	if errors.As(err, &lost) {
		resp, err = r.settle(ctx, lost, start)
	}
	if err != nil {
		var nl *NotLeaderError
		if errors.As(err, &nl) {
			return nil, err
		}
		return nil, fmt.Errorf("shard %d: %w", r.id, err)
	}
	res, ok := resp.(*fsm.Result)
	if !ok || res == nil {
		return nil, fmt.Errorf("shard %d: %w: no result from apply", r.id, ErrOutcomeUnknown)
	}
	if r.proposeSeconds != nil {
		r.proposeSeconds.Observe(time.Since(start).Seconds())
	}
	return res, nil
}

// settle waits, within what is left of the proposal's timeout, to learn
// what became of an entry this replica appended as leader and failed with
// lost leadership (claims.go): its result if it committed, a NotLeaderError
// (nothing written: route to the new leader and retry) if another entry
// took its index, else the outcome unknown it had.
func (r *Replica) settle(ctx context.Context, lost *LeadershipLostError, start time.Time) (any, error) {
	left := r.applyTimeout - time.Since(start)
	if left <= 0 || r.claims == nil {
		return nil, lost
	}
	ch, ok := r.claims.claim(lost.Index, lost.Term)
	if !ok {
		return nil, lost // not named by raft (claims.go): nothing to learn
	}
	defer r.claims.drop(lost.Index, lost.Term)
	t := time.NewTimer(left)
	defer t.Stop()
	select {
	case a := <-ch:
		switch {
		case a.ours:
			r.noteSettled("committed")
			return a.res, nil
		case a.known:
			r.noteSettled("not_written")
			return nil, r.notLeader()
		}
		return nil, lost
	case <-ctx.Done():
	case <-t.C:
	case <-r.stop:
	}
	return nil, lost
}

func (r *Replica) noteSettled(outcome string) {
	r.settled.Add(1)
	if r.settledMetric != nil {
		r.settledMetric.WithLabelValues(outcome).Inc()
	}
}

// Settled returns how many of this replica's proposals failed by a lost
// leadership were settled (settle).
func (r *Replica) Settled() uint64 { return r.settled.Load() }

func (r *Replica) notLeader() error {
	id, addr := r.g.Leader()
	return &NotLeaderError{Group: r.id, LeaderID: id, LeaderAddr: addr}
}

// LinearizableRead returns once a local read reflects every write committed
// before the call (invariant I2): the ReadIndex recipe. It needs this replica
// ready in raft's current term (its own no-op of that term applied), takes
// the commit index, confirms leadership in that term with a quorum round of
// fresh heartbeats (shared by concurrent readers; verify.go), checks the term
// has not moved, and waits for the local FSM to apply up to the read index.
// The returned index is the applied index the read reflects.
func (r *Replica) LinearizableRead(ctx context.Context) (uint64, error) {
	for attempt := 0; attempt < 3; attempt++ {
		if r.g.raft.State() != raft.Leader {
			return 0, r.notLeader()
		}
		gen, term, err := r.waitReady(ctx)
		if err != nil {
			return 0, err
		}
		readIndex := r.g.raft.CommitIndex()
		verified, err := r.verifier.verify(ctx, r.leadershipRound)
		if err != nil {
			if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
				return 0, r.notLeader()
			}
			return 0, fmt.Errorf("shard %d: verify leader: %w: %w", r.id, ErrUnavailable, err)
		}
		if verified != term || !r.stillReady(gen) || r.g.raft.CurrentTerm() != term {
			continue // leadership changed while we verified: take a fresh read index
		}
		if err := r.fsm.WaitApplied(ctx, readIndex); err != nil {
			return 0, fmt.Errorf("shard %d: waiting for apply: %w: %w", r.id, ErrUnavailable, err)
		}
		return r.fsm.Applied(), nil
	}
	return 0, fmt.Errorf("shard %d: leadership keeps changing: %w", r.id, ErrUnavailable)
}

// SessionRead waits until this replica has applied at least index (from the
// client's session token), bounded by wait. Any replica may serve it, once it
// has state: a replica that has applied nothing yet (an empty replica waiting
// for its first snapshot, such as a split's child opened before the local
// parent applied the split) refuses with ErrNoState, whatever the index.
func (r *Replica) SessionRead(ctx context.Context, index uint64, wait time.Duration) (uint64, error) {
	need := max(index, 1)
	if a := r.fsm.Applied(); a >= need {
		return a, nil
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := r.fsm.WaitApplied(wctx, need); err != nil {
		if r.fsm.Applied() == 0 {
			return 0, fmt.Errorf("shard %d: %w", r.id, ErrNoState)
		}
		return 0, fmt.Errorf("shard %d: replica has not applied index %d within %s: %w",
			r.id, index, wait, ErrUnavailable)
	}
	return r.fsm.Applied(), nil
}

// StaleRead admits a read from this replica if its data is at most
// maxStaleness old (docs/api.md, consistency=stale): it has applied an index that
// was its leader's commit index at a moment within maxStaleness. A leader
// ready in its current term knew its commit index was the group's when a
// quorum last answered it (raft.QuorumContact: no other leader can have been
// elected before), so that must be within maxStaleness; it then waits (at
// most maxStaleness) for its FSM to reach the commit index. A follower uses
// what it learned from its leaders' AppendEntries (staleness.go) and must
// also have heard from a leader within maxStaleness. Refusals are
// ErrTooStale or ErrNoState.
func (r *Replica) StaleRead(maxStaleness time.Duration) (uint64, error) {
	applied := r.fsm.Applied()
	if applied == 0 {
		return 0, fmt.Errorf("shard %d: %w", r.id, ErrNoState)
	}
	if term := r.g.raft.CurrentTerm(); r.g.raft.State() == raft.Leader && r.readyIn(term) {
		// A leader cut off from its followers whose main goroutine is
		// stuck (a stalled log write) runs no lease check and keeps
		// leading in its own eyes while others elect a leader.
		if qc := r.g.raft.QuorumContact(); qc.IsZero() || r.clock.Now().Sub(qc) > maxStaleness {
			return 0, fmt.Errorf("shard %d: leader last heard from a quorum more than %s ago: %w",
				r.id, maxStaleness, ErrTooStale)
		}
		commit := r.g.raft.CommitIndex()
		if applied >= commit {
			return applied, nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), min(maxStaleness, r.applyTimeout))
		defer cancel()
		if err := r.fsm.WaitApplied(ctx, commit); err != nil {
			return 0, fmt.Errorf("shard %d: leader has not applied its commit index %d within %s: %w",
				r.id, commit, maxStaleness, ErrTooStale)
		}
		return r.fsm.Applied(), nil
	}
	// Every age in this decision is measured on the host's clock
	// (HostConfig.Clock; raft stamps LastContact with the wall clock, which
	// is what the real clock reads).
	now := r.clock.Now()
	if last := r.g.raft.LastContact(); last.IsZero() || now.Sub(last) > maxStaleness {
		return 0, fmt.Errorf("shard %d: replica last heard from a leader more than %s ago: %w",
			r.id, maxStaleness, ErrTooStale)
	}
	fresh := r.commits.freshAt(applied)
	if fresh.IsZero() || now.Sub(fresh) > maxStaleness {
		age := "never"
		if !fresh.IsZero() {
			age = now.Sub(fresh).Round(time.Millisecond).String() + " ago"
		}
		return 0, fmt.Errorf("shard %d: applied index %d covers a leader commit index learned %s, more than %s: %w",
			r.id, applied, age, maxStaleness, ErrTooStale)
	}
	return applied, nil
}

// waitReady blocks until this leader has applied an entry of raft's current
// term, and returns the generation and that term.
func (r *Replica) waitReady(ctx context.Context) (gen, term uint64, err error) {
	t := time.NewTimer(r.applyTimeout)
	defer t.Stop()
	for {
		r.mu.Lock()
		gen, ready, term, readyCh, genCh := r.gen, r.ready, r.readyTerm, r.readyCh, r.genCh
		r.mu.Unlock()
		if ready {
			if term == r.g.raft.CurrentTerm() {
				return gen, term, nil
			}
			// Ready in an earlier term: leadership changed under the
			// watcher. Have it look, and wait for the new generation.
			r.kickWatcher()
			readyCh = nil
		}
		select {
		case <-readyCh:
		case <-genCh:
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("shard %d: leader not ready: %w: %w", r.id, ErrUnavailable, ctx.Err())
		case <-t.C:
			return 0, 0, fmt.Errorf("shard %d: leader not ready: %w", r.id, ErrUnavailable)
		case <-r.stop:
			return 0, 0, fmt.Errorf("shard %d: %w", r.id, ErrUnavailable)
		}
		if r.g.raft.State() != raft.Leader {
			return 0, 0, r.notLeader()
		}
	}
}

func (r *Replica) stillReady(gen uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready && r.gen == gen
}

// readyIn reports whether this replica is ready as the leader of term.
func (r *Replica) readyIn(term uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready && r.readyTerm == term
}

// WrittenBytes is the total size of the entries this replica proposed.
func (r *Replica) WrittenBytes() uint64 { return r.written.Load() }

// Hash returns the replica's state hash at its applied index (tests, S5/S6).
func (r *Replica) Hash() (uint64, []byte, error) { return r.fsm.Hash() }
