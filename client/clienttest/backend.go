package clienttest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/api"
	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/lock"
	"github.com/cairndb/cairn/shard"
)

// The in-memory backend: one node ("n1") hosting one shard (id 1, the whole
// keyspace) whose replica is a real fsm.FSM. A proposal is applied to the
// FSM at once, at the next log index, with no raft: the replica always
// leads, every read reflects every write, and indexes start at 1 with the
// first write. What raft would add (elections, followers, a leader's no-op)
// is tested in shard/ and test/.

const (
	nodeID  = "n1"
	shardID = 1
)

// errUnsupported answers what a one-replica shard without raft cannot do:
// splits, membership changes and locks (500 internal).
var errUnsupported = errors.New("not served by the in-memory backend of client/clienttest")

// backend implements api.Backend.
type backend struct {
	addr string // the test server's address, this node's API address
	rep  *replica
}

var _ api.Backend = (*backend)(nil)

func (b *backend) NodeID() string                        { return nodeID }
func (b *backend) Ready() bool                           { return true }
func (b *backend) Lookup([]byte) (fsm.Range, bool)       { return b.rep.Range(), true }
func (b *backend) Ranges() []fsm.Range                   { return []fsm.Range{b.rep.Range()} }
func (b *backend) Meta() api.MetaBackend                 { return meta{} }
func (b *backend) NodeHTTPAddr(id string) (string, bool) { return b.addr, id == nodeID }

func (b *backend) Replica(id uint64) (api.ShardReplica, bool) {
	if id != shardID {
		return nil, false
	}
	return b.rep, true
}

func (b *backend) Cluster() api.ClusterView {
	rng := b.rep.Range()
	return api.ClusterView{
		Nodes: []api.NodeView{{ID: nodeID, HTTPAddr: b.addr, State: "alive", Shards: 1, Leaders: 1}},
		Shards: []api.ShardView{{ID: rng.ID, Start: string(rng.Start), End: string(rng.End), Epoch: rng.Epoch,
			Replicas: rng.Replicas, Leader: nodeID, SizeBytes: b.rep.fsm.SizeBytes(), AppliedIndex: b.rep.fsm.Applied()}},
		PlacementLeader: nodeID,
	}
}

// meta is the meta group of a one-node cluster that never splits.
type meta struct{}

func (meta) IsLeader() bool { return true }
func (meta) Leader() string { return nodeID }
func (meta) AllocRangeID(context.Context) (uint64, error) {
	return 0, fmt.Errorf("split: %w", errUnsupported)
}
func (meta) ReportRanges(context.Context, []fsm.Range) error { return nil }

// replica implements api.ShardReplica over a real FSM.
type replica struct {
	fsm  *fsm.FSM
	hang <-chan struct{} // closed when the server closes: ends injected hangs

	mu      sync.Mutex     // one apply at a time, in index order
	applied map[string]int // request id -> times a write with it changed the store
}

var _ api.ShardReplica = (*replica)(nil)

func (r *replica) ID() uint64                { return shardID }
func (r *replica) Range() fsm.Range          { return r.fsm.Range() }
func (r *replica) FSM() *fsm.FSM             { return r.fsm }
func (r *replica) IsLeader() bool            { return true }
func (r *replica) Leader() (id, addr string) { return nodeID, "" }

// Propose applies cmd at the next index, with the fault injected into the
// request ctx belongs to (faults.go) before or after it.
func (r *replica) Propose(ctx context.Context, cmd *fsm.Command) (*fsm.Result, error) {
	fault := takeFault(ctx)
	if err := r.before(fault); err != nil {
		return nil, err
	}
	res, err := r.apply(cmd)
	if err != nil {
		return nil, err
	}
	return res, r.after(ctx, fault)
}

func (r *replica) apply(cmd *fsm.Command) (*fsm.Result, error) {
	b, err := fsm.EncodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	index := r.fsm.Applied() + 1
	res, ok := r.fsm.Apply(&raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: b}).(*fsm.Result)
	if !ok || res == nil {
		return nil, fmt.Errorf("shard %d: no result at index %d: %w", shardID, index, shard.ErrOutcomeUnknown)
	}
	// A duplicate request id answers the first result, with its index
	// (invariant I7): only a write applied at this index changed the store.
	if cmd.RequestID != "" && res.Index == index && res.Err == nil {
		r.applied[cmd.RequestID]++
	}
	return res, nil
}

// The reads admit at once: this replica leads, and has applied everything
// committed.

func (r *replica) LinearizableRead(ctx context.Context) (uint64, error) {
	fault := takeFault(ctx)
	if err := r.before(fault); err != nil {
		return 0, err
	}
	return r.fsm.Applied(), r.after(ctx, fault)
}

// SessionRead waits for a session's index as shard.Replica does: one ahead
// of this store (a token from another server) is refused after wait.
func (r *replica) SessionRead(ctx context.Context, index uint64, wait time.Duration) (uint64, error) {
	applied, err := r.LinearizableRead(ctx)
	if err != nil || applied >= index {
		return applied, err
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := r.fsm.WaitApplied(wctx, index); err != nil {
		return 0, fmt.Errorf("shard %d has not applied index %d within %s: %w", shardID, index, wait, shard.ErrUnavailable)
	}
	return r.fsm.Applied(), nil
}

// StaleRead takes no context, so no fault reaches it.
func (r *replica) StaleRead(time.Duration) (uint64, error) { return r.fsm.Applied(), nil }

// before fails a request the way a fault that strikes before anything is
// applied does.
func (r *replica) before(f Fault) error {
	switch f {
	case FaultUnavailable:
		return fmt.Errorf("shard %d has no leader (injected): %w", shardID, shard.ErrUnavailable)
	case FaultInternal:
		return errors.New("injected internal failure")
	case FaultTimeoutBeforeApply:
		return fmt.Errorf("shard %d: proposal timed out (injected): %w", shardID, shard.ErrOutcomeUnknown)
	case FaultResetBeforeApply:
		panic(http.ErrAbortHandler)
	}
	return nil
}

// after fails a request that was served, as a fault after the apply does.
func (r *replica) after(ctx context.Context, f Fault) error {
	switch f {
	case FaultTimeoutAfterApply:
		return fmt.Errorf("shard %d: leadership lost after the apply (injected): %w", shardID, shard.ErrOutcomeUnknown)
	case FaultResetAfterApply:
		panic(http.ErrAbortHandler)
	case FaultHangAfterApply:
		select {
		case <-ctx.Done():
		case <-r.hang:
		}
		return fmt.Errorf("shard %d: %w: %w", shardID, shard.ErrOutcomeUnknown, context.Cause(ctx))
	}
	return nil
}

// TokenCeiling is shard.Replica's: above every token handed out as of the
// applied index.
func (r *replica) TokenCeiling() uint64 { return r.fsm.TokenBase() + r.fsm.Applied() + lock.MaxHolders }

func (r *replica) RaiseTokenBase(ctx context.Context, floor uint64) error {
	res, err := r.Propose(ctx, &fsm.Command{Op: fsm.OpRaiseBase, Value: binary.BigEndian.AppendUint64(nil, floor)})
	if err != nil {
		return err
	}
	return res.Err
}

func (r *replica) Status() shard.Status {
	a := r.fsm.Applied()
	return shard.Status{Shard: shardID, Leader: nodeID, IsLeader: true, Applied: a, CommitIndex: a,
		Members: []shard.Member{{ID: nodeID, Voter: true}}, SizeBytes: r.fsm.SizeBytes()}
}

func (r *replica) CommittedStatus(context.Context) (shard.Status, error) {
	st := r.Status()
	st.MembersCommitted = true
	return st, nil
}

func (r *replica) AddLearner(string, string) error     { return errUnsupported }
func (r *replica) Promote(string, string) error        { return errUnsupported }
func (r *replica) RemoveMember(string) error           { return errUnsupported }
func (r *replica) TransferLeader(string, string) error { return errUnsupported }

func (r *replica) Split(context.Context, []byte, uint64, uint64) (*fsm.Result, error) {
	return nil, fmt.Errorf("split: %w", errUnsupported)
}

func (r *replica) Lock(context.Context, lock.Command, uint64) (*fsm.LockResult, uint64, error) {
	return nil, 0, fmt.Errorf("locks: %w", errUnsupported)
}

func (r *replica) WaitLockGrant(context.Context, string, string) (lock.Holder, uint64, error) {
	return lock.Holder{}, 0, fmt.Errorf("locks: %w", errUnsupported)
}

func (r *replica) WaitLockChange(context.Context, string, uint64) error {
	return fmt.Errorf("locks: %w", errUnsupported)
}

func (r *replica) LockStatus(string) (*lock.Record, uint64, error) {
	return nil, 0, fmt.Errorf("locks: %w", errUnsupported)
}

func (r *replica) LockRemaining(string, uint64) (time.Duration, bool) { return 0, false }
