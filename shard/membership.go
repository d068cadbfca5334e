package shard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
)

// Member is one server of a shard's raft configuration.
type Member struct {
	ID      string `json:"id"`
	Address string `json:"address"`
	Voter   bool   `json:"voter"`
}

// Status is a replica's view of its shard, for placement and operators.
type Status struct {
	Shard       uint64   `json:"shard"`
	Leader      string   `json:"leader"`
	IsLeader    bool     `json:"is_leader"`
	Applied     uint64   `json:"applied"`
	CommitIndex uint64   `json:"commit_index"`
	Members     []Member `json:"members"`
	// MembersCommitted is set when Members is known committed (a leader's
	// CommittedStatus), not merely the latest configuration in the log.
	MembersCommitted bool  `json:"members_committed,omitempty"`
	SizeBytes        int64 `json:"size_bytes"`
}

// Status returns the replica's current view.
func (r *Replica) Status() Status {
	id, _ := r.g.Leader()
	st := Status{Shard: r.id, Leader: id, IsLeader: r.IsLeader(), Applied: r.fsm.Applied(),
		CommitIndex: r.g.raft.CommitIndex(), SizeBytes: r.fsm.SizeBytes()}
	st.Members, _ = r.Members()
	return st
}

// CommittedStatus is the leader's Status with a committed configuration:
// the latest configuration is read, then a no-op of this leader's term is
// committed after it, so that configuration is committed (hashicorp/raft
// has no call that returns the committed configuration). A node decides
// from it that a configuration change removing it has committed before it
// deletes its replica (issue 10 item 3). Leader only.
//
// The no-op is cairn's OpNoop, which the FSM applies, not a raft Barrier:
// raft never hands a LogBarrier entry to the FSM, so a linearizable read
// taking the commit index after a barrier would wait for an applied index
// the FSM does not reach until the next write
// (TestLinearizableReadAfterCommittedStatus).
func (r *Replica) CommittedStatus(ctx context.Context) (Status, error) {
	if !r.IsLeader() {
		return Status{}, r.notLeader()
	}
	members, err := r.Members()
	if err != nil {
		return Status{}, err
	}
	noop, err := fsm.EncodeCommand(&fsm.Command{Op: fsm.OpNoop})
	if err != nil {
		return Status{}, err
	}
	if _, err := r.propose(ctx, noop); err != nil {
		return Status{}, fmt.Errorf("shard %d: commit a no-op after the configuration: %w", r.id, err)
	}
	st := r.Status()
	st.Members, st.MembersCommitted = members, true
	return st, nil
}

// Members returns the latest raft configuration as this replica knows it.
func (r *Replica) Members() ([]Member, error) {
	f := r.g.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []Member
	for _, s := range f.Configuration().Servers {
		out = append(out, Member{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// membershipTimeout bounds one configuration change.
const membershipTimeout = 10 * time.Second

// AddLearner adds node id at raft address addr as a non-voter: it receives
// the log (a snapshot first, when the log no longer reaches back) but does
// not count toward quorum until promoted. Idempotent. Leader only.
func (r *Replica) AddLearner(id, addr string) error {
	if m, ok := r.member(id); ok && m.Address == addr {
		return nil
	}
	return r.configChange(func(rf *raft.Raft, timeout time.Duration) raft.IndexFuture {
		return rf.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	})
}

// Promote makes node id a voter. Idempotent. Leader only.
func (r *Replica) Promote(id, addr string) error {
	if m, ok := r.member(id); ok && m.Voter {
		return nil
	}
	return r.configChange(func(rf *raft.Raft, timeout time.Duration) raft.IndexFuture {
		return rf.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	})
}

// RemoveMember removes node id from the configuration. The leader does not
// remove itself: transfer leadership first. Idempotent. Leader only.
func (r *Replica) RemoveMember(id string) error {
	if _, ok := r.member(id); !ok {
		return nil
	}
	if id == r.nodeID {
		return fmt.Errorf("shard %d: the leader cannot remove itself; transfer leadership first: %w", r.id, ErrUnavailable)
	}
	return r.configChange(func(rf *raft.Raft, timeout time.Duration) raft.IndexFuture {
		return rf.RemoveServer(raft.ServerID(id), 0, timeout)
	})
}

// TransferLeader hands leadership to node id. Leader only.
func (r *Replica) TransferLeader(id, addr string) error {
	if !r.IsLeader() {
		return r.notLeader()
	}
	if id == r.nodeID {
		return nil
	}
	m, ok := r.member(id)
	if !ok || !m.Voter {
		return fmt.Errorf("shard %d: node %s is not a voter of this shard", r.id, id)
	}
	if err := r.g.TransferLeadership(context.Background(), membershipTimeout, id, addr); err != nil {
		return fmt.Errorf("shard %d: transfer leadership to %s: %w", r.id, id, err)
	}
	return nil
}

func (r *Replica) member(id string) (Member, bool) {
	ms, err := r.Members()
	if err != nil {
		return Member{}, false
	}
	for _, m := range ms {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

// configChange runs one membership change, bounded and classified as a
// proposal is (propose.go): appended but not known committed is
// ErrOutcomeUnknown (invariant I7).
func (r *Replica) configChange(change func(*raft.Raft, time.Duration) raft.IndexFuture) error {
	err := r.g.ChangeMembership(context.Background(), membershipTimeout, change)
	var nl *NotLeaderError
	if err == nil || errors.As(err, &nl) {
		return err
	}
	return fmt.Errorf("shard %d: membership change: %w", r.id, err)
}
