package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/shard"
)

// target is where one shard's part of a request runs: on a local replica, or
// on another node the request is forwarded to.
type target struct {
	rep  *shard.Replica
	addr string
}

// leaderTarget finds the shard's leader, waiting up to RouteWait for one to
// be elected, so a client rarely sees an election.
func (s *Server) leaderTarget(ctx context.Context, rng fsm.Range) (target, error) {
	deadline := time.Now().Add(s.cfg.RouteWait)
	for {
		rep, ok := s.be.Replica(rng.ID)
		if !ok || !containsID(rng.Replicas, s.be.NodeID()) {
			// No replica here, or one still joining (a learner knows no
			// leader until the leader contacts it): ask the members.
			if ok && rep.IsLeader() {
				return target{rep: rep}, nil
			}
			return s.remoteReplica(rng)
		}
		if rep.IsLeader() {
			return target{rep: rep}, nil
		}
		unreachable := ""
		if id, _ := rep.Leader(); id != "" && id != s.be.NodeID() {
			if addr, ok := s.be.NodeHTTPAddr(id); ok {
				if !s.peers.Down(addr) {
					return target{addr: addr}, nil
				}
				// Its node could not be dialed a moment ago: it is most
				// likely dead, and the group is about to elect another.
				unreachable = id
			}
		}
		if time.Now().After(deadline) {
			if unreachable != "" {
				return target{}, fmt.Errorf("shard %d: leader %s is unreachable and no other has been elected yet: %w",
					rng.ID, unreachable, shard.ErrUnavailable)
			}
			return target{}, fmt.Errorf("shard %d has no leader: %w", rng.ID, shard.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return target{}, fmt.Errorf("shard %d has no leader: %w: %w", rng.ID, shard.ErrUnavailable, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// retryRoute reports whether a request that failed with err before anything
// was sent may be routed again: leadership moved, or the node we forwarded to
// (or every other replica) is down and the shard is electing a new leader. It sleeps briefly first.
func (s *Server) retryRoute(ctx context.Context, deadline time.Time, err error) bool {
	var nl *shard.NotLeaderError
	var ws *fsm.WrongShardError
	if !errors.As(err, &nl) && !errors.Is(err, errPeerUnreachable) && !errors.As(err, &ws) &&
		!errors.Is(err, errStaleRangeMap) && !errors.Is(err, errRemoteUnavailable) && !errors.Is(err, errNoRoute) {
		return false
	}
	if time.Now().After(deadline) {
		return false
	}
	select {
	case <-ctx.Done():
		return false
	case <-time.After(25 * time.Millisecond):
		return true
	}
}

// replicaTarget prefers a local replica (session and stale reads).
func (s *Server) replicaTarget(rng fsm.Range) (target, error) {
	if rep, ok := s.be.Replica(rng.ID); ok {
		return target{rep: rep}, nil
	}
	return s.remoteReplica(rng)
}

// remoteReplica picks a node that hosts the shard, skipping nodes that could
// not be dialed a moment ago; it routes onward.
func (s *Server) remoteReplica(rng fsm.Range) (target, error) {
	if addrs := s.remoteReplicas(rng); len(addrs) > 0 {
		return target{addr: addrs[0]}, nil
	}
	return target{}, fmt.Errorf("shard %d: %w", rng.ID, errNoRoute)
}

// remoteReplicas lists the API addresses of the other nodes that host the
// shard, leaving out those a dial failed to a moment ago, and those gossip
// reports alive first: the first listed replica may be
// a dead node, and a router that always tried it first would never get
// past it (issue 10 item 6). Liveness only orders the candidates (I12).
func (s *Server) remoteReplicas(rng fsm.Range) []string {
	var alive, rest []string
	for _, id := range rng.Replicas {
		if id == s.be.NodeID() {
			continue
		}
		addr, ok := s.be.NodeHTTPAddr(id)
		if !ok {
			continue
		}
		switch {
		case s.peers.Down(addr):
			continue // a dial failed a moment ago: skipped until UnreachableFor passes
		case s.pb == nil || s.pb.NodeAlive(id):
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

func containsID(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
