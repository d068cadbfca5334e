package placement

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/shard"
)

// NodeExecutor carries out placement steps through a node's API, which
// routes each call to the shard's leader. Every call is made by
// internal/cluster's client, so a step whose connection broke after it was
// sent fails as outcome unknown, and one that never reached a node as
// failed; the controller re-reads the shard's status before its next step
// either way.
type NodeExecutor struct {
	c    *cluster.Client
	self string                           // this node's id
	addr func(node string) (string, bool) // a node's API address
}

var _ Executor = (*NodeExecutor)(nil)

// NewNodeExecutor returns an executor that calls the API of node self, and
// a node's own API for ReplicaStatus. Addresses are looked up at each call:
// a node learns its own address only once it is registered.
func NewNodeExecutor(c *cluster.Client, self string, addr func(node string) (string, bool)) *NodeExecutor {
	return &NodeExecutor{c: c, self: self, addr: addr}
}

// local is this node's API address.
func (e *NodeExecutor) local() string {
	a, _ := e.addr(e.self)
	return a
}

// ShardStatus asks the shard's leader.
func (e *NodeExecutor) ShardStatus(ctx context.Context, id uint64) (shard.Status, error) {
	var st shard.Status
	err := e.c.Call(ctx, e.local(), http.MethodGet, cluster.PathShardStatus(id)+"?leader=1", nil, &st)
	return st, err
}

// CommittedShardStatus asks the shard's leader for its status with a
// committed configuration (shard.Replica.CommittedStatus).
func (e *NodeExecutor) CommittedShardStatus(ctx context.Context, id uint64) (shard.Status, error) {
	var st shard.Status
	err := e.c.Call(ctx, e.local(), http.MethodGet, cluster.PathShardStatus(id)+"?committed=1", nil, &st)
	return st, err
}

// ReplicaStatus asks node's own replica.
func (e *NodeExecutor) ReplicaStatus(ctx context.Context, id uint64, node string) (shard.Status, error) {
	var st shard.Status
	addr, ok := e.addr(node)
	if !ok {
		return st, fmt.Errorf("node %q: %w", node, cluster.ErrNotFound)
	}
	err := e.c.Call(ctx, addr, http.MethodGet, cluster.PathShardStatus(id), nil, &st)
	return st, err
}

func (e *NodeExecutor) member(ctx context.Context, id uint64, action, node string) error {
	return e.c.Call(ctx, e.local(), http.MethodPost, cluster.PathMembership(id),
		cluster.MembershipRequest{Action: action, Node: node}, nil)
}

// AddLearner adds node as a non-voter.
func (e *NodeExecutor) AddLearner(ctx context.Context, id uint64, n NodeInfo) error {
	return e.member(ctx, id, "add_learner", n.ID)
}

// Promote makes node a voter.
func (e *NodeExecutor) Promote(ctx context.Context, id uint64, n NodeInfo) error {
	return e.member(ctx, id, "promote", n.ID)
}

// RemoveMember removes node from the shard.
func (e *NodeExecutor) RemoveMember(ctx context.Context, id uint64, node string) error {
	return e.member(ctx, id, "remove", node)
}

// TransferLeader hands leadership to node.
func (e *NodeExecutor) TransferLeader(ctx context.Context, id uint64, n NodeInfo) error {
	return e.member(ctx, id, "transfer_leader", n.ID)
}

// Split splits the range at key (nil = middle) if it is at epoch (0: any).
func (e *NodeExecutor) Split(ctx context.Context, id uint64, key []byte, epoch uint64) error {
	body := map[string]any{}
	if key != nil {
		body["key"] = string(key)
	}
	if epoch != 0 {
		body["epoch"] = epoch
	}
	err := e.c.Call(ctx, e.local(), http.MethodPost, cluster.PathSplit(id), body, nil)
	if epoch != 0 && errors.Is(err, cluster.ErrInvalidArgument) && strings.Contains(err.Error(), "epoch") {
		// A shard leader of an older binary (a rolling upgrade) refuses the
		// field it does not know: split unconditionally, as it always did.
		delete(body, "epoch")
		err = e.c.Call(ctx, e.local(), http.MethodPost, cluster.PathSplit(id), body, nil)
	}
	return err
}
