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
// replica ready and starts the TTL countdowns (invariant I10: a new leader
// restarts every countdown, so failover never expires a key early). On losing
// it stops them. Level-triggered: a dropped observation is caught by the tick.
func (r *Replica) watchLeadership() {
	defer r.wg.Done()
	obsCh := make(chan raft.Observation, 8)
	obs := raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.RaftState)
		return ok
	})
	r.g.raft.RegisterObserver(obs)
	defer r.g.raft.DeregisterObserver(obs)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()

	leading := false
	stopLeading := func() {}
	defer func() { stopLeading() }()
	for {
		r.knobs.beforeLeadershipLook(r.id)
		isLeader := r.g.raft.State() == raft.Leader
		if isLeader != leading {
			leading = isLeader
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
		case <-r.stop:
			return
		}
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
	r.ready = false
	r.readyCh = make(chan struct{})
}

// becomeLeader commits a no-op in the new term, then marks the replica ready
// and runs the TTL countdowns until ctx ends (leadership lost or shutdown).
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
	for ctx.Err() == nil {
		if _, err := r.propose(ctx, noop); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	r.mu.Lock()
	if r.gen != gen {
		r.mu.Unlock()
		return
	}
	r.ready = true
	close(r.readyCh)
	r.mu.Unlock()
	r.ttl.run(ctx, r)
}
