package api

import (
	"context"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/lock"
	"github.com/cairndb/cairn/shard"
)

// Replica is what the key-value edge needs from one shard's replica on this
// node: propose, the three read paths, the range and the leader. It is
// declared here, where it is used; *shard.Replica implements it, and the
// routing loop is tested over a fake (route_test.go).
//
// Concurrency: every method may be called at any time from any number of
// request goroutines, concurrently with each other and with the replica
// applying its log; none of them blocks another request's method.
//
// Which errors mean nothing was written (so the routing loop may send the
// request again, here or to another node):
//
//   - Propose is the only method that writes. A nil error means the command
//     was applied at Result.Index; a refusal by the state machine (condition
//     failed, stale token, wrong shard applied as a no-op) is in Result.Err.
//     *shard.NotLeaderError, shard.ErrUnavailable and context.DeadlineExceeded
//     without shard.ErrOutcomeUnknown mean the entry never entered the log.
//     shard.ErrOutcomeUnknown means it may have been applied: it is never
//     sent again, and answers 504 outcome_unknown. An error wrapping
//     fsm.ErrInvalidCommand means the command could not be encoded.
//   - LinearizableRead, SessionRead and StaleRead write nothing. Each admits
//     a read at its consistency and returns the applied index the read will
//     reflect; the caller then reads FSM(), whose reads check the key against
//     the range stored with the data (fsm.WrongShardError when a split moved
//     it). Their refusals (*shard.NotLeaderError, shard.ErrUnavailable,
//     shard.ErrNoState, shard.ErrTooStale) are all retryable.
//   - Lock proposes one lock command (lock/) like Propose, with the same
//     errors; what Apply did (granted, queued, refused with a *lock.Error)
//     is in the result. WaitLockGrant and WaitLockChange write nothing:
//     they watch this replica's applied log (leader or not) until the
//     waiter is granted or the lock's holders change, or ctx ends.
//     LockStatus reads a lock's record and status index (the one
//     WaitLockChange takes); after LinearizableRead it is linearizable.
//     LockRemaining is the leader's countdown for a lease (false when this
//     replica does not lead or has not observed it).
//   - Range, IsLeader and Leader are snapshots that may be stale the moment
//     they return; routing treats them as hints and the state machine checks
//     again (invariant I2).
type Replica interface {
	routable
	ID() uint64
	Range() fsm.Range
	Propose(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error)
	LinearizableRead(ctx context.Context) (uint64, error)
	SessionRead(ctx context.Context, index uint64, wait time.Duration) (uint64, error)
	StaleRead(maxStaleness time.Duration) (uint64, error)
	FSM() *fsm.FSM
	Lock(ctx context.Context, cmd lock.Command, epoch uint64) (*fsm.LockResult, uint64, error)
	WaitLockGrant(ctx context.Context, name, waiterID string) (lock.Holder, uint64, error)
	WaitLockChange(ctx context.Context, name string, afterSeq uint64) error
	LockStatus(name string) (*lock.Record, uint64, error)
	LockRemaining(name string, token uint64) (time.Duration, bool)
}

var _ Replica = (*shard.Replica)(nil)
