package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/shard"
)

// routable is what the routing loop needs from a shard's replica on this
// node (*shard.Replica; a fake in route_test.go). Both methods may be called
// concurrently with anything, and neither writes anything: they only say who
// leads.
type routable interface {
	// IsLeader reports whether this replica leads its group now.
	IsLeader() bool
	// Leader is the group's leader as this replica knows it ("" unknown).
	Leader() (id, addr string)
}

// router is THE routing and retry loop: every request that runs on one
// shard — a write, a point read, a scan's part, a placement call — goes
// through route. It finds the range, picks where the part runs (this node's
// replica or another node), runs it there, and routes again, until RouteWait
// passes, when the failure proves nothing was done: leadership moved, the
// range split, the node we forwarded to could not be dialed or answered 503.
// A failure that may have done something (outcome unknown) is never routed
// again. It is generic only so that it can be tested without a cluster.
type router[R routable] struct {
	self    string                           // this node's id
	replica func(id uint64) (R, bool)        // this node's replica of a shard
	addr    func(node string) (string, bool) // a node's API address
	down    func(addr string) bool           // a dial to addr failed a moment ago
	alive   func(node string) bool           // gossip liveness, a hint (nil: all alive)
	wait    time.Duration                    // RouteWait
	pause   time.Duration                    // between two attempts
	now     func() time.Time                 // nil: time.Now
}

// routeReq is one shard's part of a request.
type routeReq[R routable] struct {
	// rng finds the range the part runs on: by key in the range map (which
	// may lag a split: errStaleRangeMap is routed again), or by id.
	rng func() (fsm.Range, error)
	// leader: only the shard's leader may serve the part (writes,
	// linearizable reads, placement calls); else any replica, this node's
	// own first (session and stale reads).
	leader bool
	// fallback: when the node picked did nothing (could not be dialed, or
	// answered 503), ask the shard's other members at once, which route
	// onward to the leader (placement calls: a dead member must not block a
	// repair). A part any replica may serve always falls back: a member that
	// keeps answering 503 (no state yet, too stale) must not hide the others
	// until RouteWait passes.
	fallback bool
	// local runs the part on this node's replica.
	local func(rep R, rng fsm.Range) error
	// remote runs the part on the node at addr (forwarding).
	remote func(addr string, rng fsm.Range) error
}

func (rt *router[R]) clock() time.Time {
	if rt.now != nil {
		return rt.now()
	}
	return time.Now()
}

// route runs q, routing again while the failure proves nothing was done.
func (rt *router[R]) route(ctx context.Context, q routeReq[R]) error {
	deadline := rt.clock().Add(rt.wait)
	for {
		rng, err := q.rng()
		if err == nil {
			var t target[R]
			if t, err = rt.pick(ctx, rng, q.leader); err != nil {
				return err // pick waited for a leader already
			}
			if t.local {
				err = q.local(t.rep, rng)
			} else {
				err = rt.remote(q, rng, t.addr)
			}
		}
		if err == nil || !rt.again(ctx, deadline, err) {
			return err
		}
	}
}

// remote runs q on addr; with fallback, on the shard's other members next
// when addr did nothing.
func (rt *router[R]) remote(q routeReq[R], rng fsm.Range, addr string) error {
	err := q.remote(addr, rng)
	if !(q.fallback || !q.leader) || !nothingDone(err) {
		return err
	}
	for _, other := range rt.remoteReplicas(rng) {
		if other == addr {
			continue
		}
		if err = q.remote(other, rng); !nothingDone(err) {
			return err
		}
	}
	return err
}

// nothingDone: the node asked could not be reached or refused before doing
// anything.
func nothingDone(err error) bool {
	return errors.Is(err, errPeerUnreachable) || errors.Is(err, errRemoteUnavailable)
}

// again reports whether a request that failed with err may be routed again:
// leadership moved or is moving (a transfer refused it before appending),
// the range split, or the node we forwarded to (or every
// other replica) is down and the shard is electing a new leader. It pauses
// first.
func (rt *router[R]) again(ctx context.Context, deadline time.Time, err error) bool {
	var nl *shard.NotLeaderError
	var ws *fsm.WrongShardError
	if !errors.As(err, &nl) && !errors.Is(err, errPeerUnreachable) && !errors.As(err, &ws) &&
		!errors.Is(err, errStaleRangeMap) && !errors.Is(err, errRemoteUnavailable) && !errors.Is(err, errNoRoute) &&
		!errors.Is(err, shard.ErrTransferring) {
		return false
	}
	if rt.clock().After(deadline) {
		return false
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(rt.pause):
		return true
	}
}

// target is where one shard's part of a request runs: on a local replica, or
// on another node the request is forwarded to.
type target[R routable] struct {
	local bool
	rep   R
	addr  string
}

func (rt *router[R]) pick(ctx context.Context, rng fsm.Range, leader bool) (target[R], error) {
	if leader {
		return rt.leaderTarget(ctx, rng)
	}
	if rep, ok := rt.replica(rng.ID); ok {
		return target[R]{local: true, rep: rep}, nil
	}
	return rt.remoteReplica(rng)
}

// leaderTarget finds the shard's leader, waiting up to RouteWait for one to
// be elected, so a client rarely sees an election.
func (rt *router[R]) leaderTarget(ctx context.Context, rng fsm.Range) (target[R], error) {
	deadline := rt.clock().Add(rt.wait)
	for {
		rep, ok := rt.replica(rng.ID)
		if !ok || !slices.Contains(rng.Replicas, rt.self) {
			// No replica here, or one still joining (a learner knows no
			// leader until the leader contacts it): ask the members.
			if ok && rep.IsLeader() {
				return target[R]{local: true, rep: rep}, nil
			}
			return rt.remoteReplica(rng)
		}
		if rep.IsLeader() {
			return target[R]{local: true, rep: rep}, nil
		}
		unreachable := ""
		if id, _ := rep.Leader(); id != "" && id != rt.self {
			if addr, ok := rt.addr(id); ok {
				if !rt.down(addr) {
					return target[R]{addr: addr}, nil
				}
				// Its node could not be dialed a moment ago: it is most
				// likely dead, and the group is about to elect another.
				unreachable = id
			}
		}
		if rt.clock().After(deadline) {
			if unreachable != "" {
				return target[R]{}, fmt.Errorf("shard %d: leader %s is unreachable and no other has been elected yet: %w",
					rng.ID, unreachable, shard.ErrUnavailable)
			}
			return target[R]{}, fmt.Errorf("shard %d has no leader: %w", rng.ID, shard.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return target[R]{}, fmt.Errorf("shard %d has no leader: %w: %w", rng.ID, shard.ErrUnavailable, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// remoteReplica picks a node that hosts the shard, skipping nodes that could
// not be dialed a moment ago; it routes onward.
func (rt *router[R]) remoteReplica(rng fsm.Range) (target[R], error) {
	if addrs := rt.remoteReplicas(rng); len(addrs) > 0 {
		return target[R]{addr: addrs[0]}, nil
	}
	return target[R]{}, fmt.Errorf("shard %d: %w", rng.ID, errNoRoute)
}

// remoteReplicas lists the API addresses of the other nodes that host the
// shard, leaving out those a dial failed to a moment ago, and those gossip
// reports alive first: the first listed replica may be
// a dead node, and a router that always tried it first would never get
// past it (issue 10 item 6). Liveness only orders the candidates (I12).
func (rt *router[R]) remoteReplicas(rng fsm.Range) []string {
	var alive, rest []string
	for _, id := range rng.Replicas {
		if id == rt.self {
			continue
		}
		addr, ok := rt.addr(id)
		if !ok {
			continue
		}
		switch {
		case rt.down(addr):
			continue // a dial failed a moment ago: skipped until UnreachableFor passes
		case rt.alive == nil || rt.alive(id):
			alive = append(alive, addr)
		default:
			rest = append(rest, addr)
		}
	}
	return append(alive, rest...)
}

// forward proxies the request to another node and copies its answer back
// (internal/cluster.Client.Forward: hops, dial failures, outcome unknown).
func (s *Server) forward(w http.ResponseWriter, r *http.Request, body []byte, addr string) error {
	resp, err := s.peers.Forward(r, body, addr, "Content-Type", hdrSession)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	return nil
}
