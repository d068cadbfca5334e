package shard

import (
	"errors"
	"fmt"
)

// NotLeaderError is returned when a request that needs the leader reaches a
// follower. LeaderID and LeaderAddr (raft address) are hints, possibly empty.
// The request never entered the log, so retrying it elsewhere is safe.
type NotLeaderError struct {
	Group      uint64
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return fmt.Sprintf("shard %d: not the leader, leader unknown", e.Group)
	}
	return fmt.Sprintf("shard %d: not the leader, leader is %s", e.Group, e.LeaderID)
}

var (
	// ErrUnavailable means the replica cannot serve now (no leader yet, not
	// caught up, shutting down); nothing was written. Retryable.
	ErrUnavailable = errors.New("shard unavailable")
	// ErrOutcomeUnknown means a write may or may not have committed (timeout,
	// leadership lost after the entry was appended). Retry only with the same
	// request id (invariant I7).
	ErrOutcomeUnknown = errors.New("write outcome unknown")
	// ErrClosed is returned by a replica or host that has been shut down.
	ErrClosed = errors.New("shard closed")
	// ErrLogFailed means a write or sync of the node's raft log failed. What
	// the failed writes left on disk is unknown, so the log refuses every
	// later call, and the node's groups stop, until the node restarts and
	// replays what is on disk. Never retryable on this node.
	ErrLogFailed = errors.New("node raft log failed")
	// ErrNoState means the replica has applied nothing yet (an empty
	// replica waiting for its first snapshot) and cannot serve reads. It
	// wraps ErrUnavailable: retryable, on this replica later or elsewhere.
	ErrNoState = fmt.Errorf("replica has no state yet: %w", ErrUnavailable)
	// ErrTooStale means the replica cannot show that its data is within the
	// read's max_staleness. It wraps ErrUnavailable: retryable.
	ErrTooStale = fmt.Errorf("replica too stale for the requested max_staleness: %w", ErrUnavailable)
	// ErrTransferring means the leader is handing leadership to another
	// replica and refused the proposal before appending it: nothing was
	// written. It wraps ErrUnavailable; a router waits for the new leader
	// and sends the request there (api's router), so a planned leader move
	// does not reach the client.
	ErrTransferring = fmt.Errorf("leadership transfer in progress: %w", ErrUnavailable)
)

// LeadershipLostError is an outcome unknown (it wraps ErrOutcomeUnknown)
// with more to go on: the leader appended the entry at Index in Term, then
// lost leadership before it committed. The entry commits if and only if the
// entry committed at Index has that Term (one leader per term, one entry per
// index and term), which this replica learns once it applies Index as a
// follower (Replica.settle).
type LeadershipLostError struct {
	Index, Term uint64
	err         error
}

func (e *LeadershipLostError) Error() string { return e.err.Error() }
func (e *LeadershipLostError) Unwrap() error { return e.err }
