package shard

import (
	"context"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
)

// watchLeadership follows the replica's raft state. On gaining leadership it
// commits a no-op of the new term (the ReadIndex precondition), marks the
// replica ready for that term and starts the TTL countdowns (invariant I10: a
// new leader restarts every countdown, so failover never expires a key
// early). On losing it stops them. Level-triggered: a dropped observation is
// caught by the tick or by a reader's kick. A look compares the term as well
// as the state: Leader(T) → follower → Leader(T+2) between two looks (quick
// transfers, or this goroutine starved) is a change of leadership although
// both looks see a leader.
func (r *Replica) watchLeadership() {
	defer r.wg.Done()
	obsCh := make(chan raft.Observation, 8)
	obs := raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RaftState)
		return ok
	})
	r.g.raft.RegisterObserver(obs)
	defer r.g.raft.DeregisterObserver(obs)
	if r.leaderChanges != nil {
		// The series exists from the replica's start, at 0 on a node that
		// never led it, rather than appearing at its first leadership.
		r.leaderChanges.WithLabelValues(strconv.FormatUint(r.id, 10))
	}
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()

	leading := false
	var leadTerm uint64
	stopLeading := func() {}
	defer func() { stopLeading() }()
	for {
		r.knobs.beforeLeadershipLook(r.id)
		// The term is read first: if it moves on before State is read, the
		// next look (the observation or a reader's kick) sees it again.
		term := r.g.raft.CurrentTerm()
		isLeader := r.g.raft.State() == raft.Leader
		if isLeader != leading || (isLeader && term != leadTerm) {
			leading, leadTerm = isLeader, term
			if r.leaderChanges != nil {
				r.leaderChanges.WithLabelValues(strconv.FormatUint(r.id, 10)).Inc()
			}
			stopLeading()
			stopLeading = func() {}
			r.resetReadiness()
			if leading {
				stopLeading = r.startLeading()
			}
		}
		select {
		case <-obsCh:
		case <-tick.C:
		case <-r.kick:
		case <-r.stop:
			return
		}
	}
}

// kickWatcher makes the leadership watcher look now rather than at its next
// tick (a reader found readiness from an earlier term).
func (r *Replica) kickWatcher() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// startLeading runs becomeLeader until the returned func is called.
func (r *Replica) startLeading() func() {
	ctx, cancel := context.WithCancel(context.Background())
	r.wg.Add(1)
	go r.becomeLeader(ctx)
	return cancel
}

// resetReadiness starts a new leadership generation that is not yet ready.
func (r *Replica) resetReadiness() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	r.ready, r.readyTerm = false, 0
	r.readyCh = make(chan struct{})
	close(r.genCh)
	r.genCh = make(chan struct{})
}

// becomeLeader commits a no-op, then marks the replica ready for the term the
// no-op belongs to and runs the TTL countdowns until ctx ends (leadership lost
// or shutdown). The no-op's term is the current term read before proposing
// and again after it applied, when both agree: raft appends an entry in the
// leader's term at that moment, and terms only grow.
func (r *Replica) becomeLeader(ctx context.Context) {
	defer r.wg.Done()
	r.mu.Lock()
	gen := r.gen
	r.mu.Unlock()
	noop, err := fsm.EncodeCommand(&fsm.Command{Op: fsm.OpNoop})
	if err != nil {
		r.log.Error("encode noop", "err", err)
		return
	}
	var term uint64
	for ctx.Err() == nil {
		before := r.g.raft.CurrentTerm()
		if _, err := r.propose(ctx, noop); err == nil {
			if r.g.raft.CurrentTerm() == before {
				term = before
				break
			}
			continue // the no-op may be of an earlier term than the one led now
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	r.mu.Lock()
	if r.gen != gen || ctx.Err() != nil {
		r.mu.Unlock()
		return
	}
	r.ready, r.readyTerm = true, term
	close(r.readyCh)
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.locks.run(ctx, r)
	}()
	r.ttl.run(ctx, r)
}
