package placement

import (
	"context"
	"errors"
	"fmt"

	"github.com/cairndb/cairn/shard"
)

// Executor carries out single steps on the cluster for the controller. The
// node implements it over the internal HTTP API; every call is routed to the
// shard's current leader (or, for ReplicaApplied, to the named node).
type Executor interface {
	// ShardStatus is the shard leader's view: members, commit index, leader.
	ShardStatus(ctx context.Context, rangeID uint64) (shard.Status, error)
	// ReplicaStatus is node's own replica's view (its applied index).
	ReplicaStatus(ctx context.Context, rangeID uint64, node string) (shard.Status, error)
	AddLearner(ctx context.Context, rangeID uint64, node NodeInfo) error
	Promote(ctx context.Context, rangeID uint64, node NodeInfo) error
	RemoveMember(ctx context.Context, rangeID uint64, node string) error
	TransferLeader(ctx context.Context, rangeID uint64, node NodeInfo) error
	// Split splits the range at key (nil: the middle) if it is still at
	// epoch, the epoch the split was decided at (0: whatever it is); a
	// range that moved on refuses (fsm.StaleEpochError), so a split
	// operation stepped again, by a placement leader whose range map is
	// stale, splits once.
	Split(ctx context.Context, rangeID uint64, key []byte, epoch uint64) error
}

// CatchUpLag is how far (in log entries) a learner may trail the leader's
// commit index and still be promoted: close enough that promotion does not
// stall the quorum.
const CatchUpLag = 64

// caughtUp reports whether a learner that has applied `applied` is close
// enough to the leader's commit index to be promoted. The allowed lag is
// CatchUpLag, but never more than a quarter of the log, so on a short log
// an empty learner is not promoted before it has anything.
func caughtUp(applied, commit uint64) bool {
	lag := min(uint64(CatchUpLag), commit/4)
	return applied+lag >= commit
}

// errWaiting means the step is in progress; call Step again later.
var errWaiting = errors.New("operation in progress")

// Step advances op by at most one action and reports whether it is finished
// (completed, or rolled back because it can no longer complete). Each call
// derives where op stands from the shard's actual configuration, so steps
// are idempotent and a new placement leader resumes an operation from the
// record in the meta group: it completes or rolls back, never stays half done.
func Step(ctx context.Context, ex Executor, st *State, op Operation) (done bool, err error) {
	rng, ok := st.Range(op.RangeID)
	if !ok {
		return true, nil // the range is gone (never happens without merges)
	}
	switch op.Kind {
	case OpSplitRange:
		if rng.Epoch != op.Epoch {
			return true, nil // split (or something else) happened: decision is spent
		}
		return false, ex.Split(ctx, op.RangeID, op.SplitKey, op.Epoch)
	case OpTransferLeader:
		s, err := ex.ShardStatus(ctx, op.RangeID)
		if err != nil {
			return false, err
		}
		if s.Leader == op.To || !ctlIsVoter(s.Members, op.To) {
			return true, nil
		}
		to, ok := st.Nodes[op.To]
		if !ok {
			return true, nil
		}
		if err := ex.TransferLeader(ctx, op.RangeID, to); err != nil {
			// Spent, not retried: raft gave up after an election timeout
			// in which the range refused writes, and the target may be
			// gone. The scheduler decides again from a fresh view.
			return true, err
		}
		return false, nil
	case OpMoveReplica, OpAddReplica, OpRemoveReplica:
		return stepMembership(ctx, ex, st, op)
	}
	return true, fmt.Errorf("unknown operation kind %q", op.Kind)
}

// stepMembership moves a replica: add To as a learner, wait for it to catch
// up, promote it, move leadership off From if needed, remove From, then wait
// for the range map to show the result. A range never has fewer voters than
// before the operation began.
func stepMembership(ctx context.Context, ex Executor, st *State, op Operation) (bool, error) {
	s, err := ex.ShardStatus(ctx, op.RangeID)
	if err != nil {
		return false, err
	}
	to, hasTo := st.Nodes[op.To]
	if op.To != "" && (!hasTo || to.Removed || st.BehindLevel(op.To)) {
		// The target is gone, or runs a binary below the cluster's command
		// level (level.go): roll back by removing whatever was added.
		if ctlMember(s.Members, op.To) != nil {
			return false, ex.RemoveMember(ctx, op.RangeID, op.To)
		}
		return true, nil
	}
	if op.To != "" {
		m := ctlMember(s.Members, op.To)
		if m == nil {
			return false, ex.AddLearner(ctx, op.RangeID, to)
		}
		if !m.Voter {
			rs, err := ex.ReplicaStatus(ctx, op.RangeID, op.To)
			if err != nil {
				return false, err
			}
			if !caughtUp(rs.Applied, s.CommitIndex) {
				return false, errWaiting
			}
			return false, ex.Promote(ctx, op.RangeID, to)
		}
	}
	if op.From != "" && ctlMember(s.Members, op.From) != nil {
		if s.Leader == op.From {
			next := ctlOtherVoter(s.Members, op.From, op.To)
			if next == "" {
				return false, errWaiting
			}
			return false, ex.TransferLeader(ctx, op.RangeID, st.Nodes[next])
		}
		return false, ex.RemoveMember(ctx, op.RangeID, op.From)
	}
	// The shard's configuration is final; finish once the range map agrees,
	// so no node deletes a replica the map does not list yet.
	rng, _ := st.Range(op.RangeID)
	if (op.To == "" || ctlHas(rng.Replicas, op.To)) && (op.From == "" || !ctlHas(rng.Replicas, op.From)) {
		return true, nil
	}
	return false, errWaiting
}

func ctlMember(ms []shard.Member, id string) *shard.Member {
	for i := range ms {
		if ms[i].ID == id {
			return &ms[i]
		}
	}
	return nil
}

func ctlIsVoter(ms []shard.Member, id string) bool {
	m := ctlMember(ms, id)
	return m != nil && m.Voter
}

func ctlOtherVoter(ms []shard.Member, not, prefer string) string {
	if ctlIsVoter(ms, prefer) && prefer != not {
		return prefer
	}
	for _, m := range ms {
		if m.Voter && m.ID != not {
			return m.ID
		}
	}
	return ""
}

func ctlHas(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// IsWaiting reports whether a Step error only means "not yet".
func IsWaiting(err error) bool { return errors.Is(err, errWaiting) }

// Rollback undoes what a stalled operation did, where that is safe, and
// reports whether the operation is over. A membership operation whose
// target is not yet a voter is rolled back by removing the target (a
// learner never counts toward quorum, so the range is as before); one whose
// target already votes can only go forward (rolling back would remove a
// voter the range may need): it stays, and the caller keeps stepping it and
// reporting it. A split or leader transfer that stalled is simply dropped:
// neither leaves anything half done (a split is one entry in the shard's
// log), and the scheduler decides again from a fresh view.
func Rollback(ctx context.Context, ex Executor, st *State, op Operation) (done bool, err error) {
	switch op.Kind {
	case OpSplitRange, OpTransferLeader:
		return true, nil
	case OpMoveReplica, OpAddReplica, OpRemoveReplica:
	default:
		return true, nil
	}
	if op.To == "" {
		return false, errCannotRollBack // a removal: only forward
	}
	s, err := ex.ShardStatus(ctx, op.RangeID)
	if err != nil {
		return false, err
	}
	m := ctlMember(s.Members, op.To)
	switch {
	case m == nil:
		return true, nil
	case !m.Voter:
		if err := ex.RemoveMember(ctx, op.RangeID, op.To); err != nil {
			return false, err
		}
		return true, nil
	}
	return false, errCannotRollBack
}

// errCannotRollBack means a stalled operation's target already votes: it
// can only complete.
var errCannotRollBack = errors.New("operation cannot be rolled back: its target already votes")
