package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"unicode/utf8"
)

// ClusterStatus is the answer to GET /v1/cluster (docs/api.md, "Cluster").
type ClusterStatus struct {
	Nodes  []NodeStatus  `json:"nodes"`
	Shards []ShardStatus `json:"shards"`
	// PlacementLeader is the node that leads the meta group and runs the
	// placement driver; "" when the answering node does not know it.
	PlacementLeader string `json:"placement_leader"`
	// Level is the cluster's shard command level: a command a node's binary
	// must know is used only once every node's Level reaches it, and it never
	// goes down (fsm/DESIGN.md, "Command levels").
	Level int `json:"level"`
}

// NodeStatus describes one node as the answering node sees it.
type NodeStatus struct {
	ID       string `json:"id"`
	HTTPAddr string `json:"http_addr"`
	RaftAddr string `json:"raft_addr"`
	State    string `json:"state"` // "alive", "suspect" or "dead" (gossip)
	Shards   int    `json:"shards"`
	Leaders  int    `json:"leaders"`
	Level    int    `json:"level"` // the shard command level its binary applies; 0 before levels
}

// ShardStatus describes one shard, which serves the keys [Start, End); End ""
// is the end of the keyspace. Leader, SizeBytes and AppliedIndex come from the
// answering node's replica when it hosts one, so they can be empty or behind
// on a node that does not.
type ShardStatus struct {
	ID           uint64   `json:"id"`
	Start        string   `json:"start"`
	End          string   `json:"end"`
	Epoch        uint64   `json:"epoch"`
	Replicas     []string `json:"replicas"`
	Leader       string   `json:"leader"`
	SizeBytes    int64    `json:"size_bytes"`
	AppliedIndex uint64   `json:"applied_index"`
}

// ShardRange is a shard's descriptor: its key range [Start, End), epoch and
// replica set.
type ShardRange struct {
	ID       uint64   `json:"id"`
	Start    string   `json:"start"`
	End      string   `json:"end"`
	Epoch    uint64   `json:"epoch"`
	Replicas []string `json:"replicas"`
}

// SplitResult is the answer to a split: Parent keeps the shard's id and the
// lower half, Child is the new shard with the upper half.
type SplitResult struct {
	Parent ShardRange `json:"parent"`
	Child  ShardRange `json:"child"`
}

// The cluster operations below are writes without a request id: the server
// does not deduplicate them. Do therefore retries them only when no attempt
// can have been applied (connection refused, 503 unavailable, 429
// overloaded); any other failure after the request was sent is reported as an
// error matching ErrOutcomeUnknown, and the caller should read Cluster to
// learn what happened before trying again.

// Cluster returns the nodes and shards of the cluster as the answering node
// sees them.
func (c *Client) Cluster(ctx context.Context) (*ClusterStatus, error) { return c.cluster(ctx, nil) }

// ClusterLocal is Cluster as the answering node itself sees it
// (?local=true): its replicas' leaders and applied indexes and the range map
// as it knows it, where Cluster is forwarded to the placement leader. Give
// the client one endpoint to know whose view it is.
func (c *Client) ClusterLocal(ctx context.Context) (*ClusterStatus, error) {
	return c.cluster(ctx, url.Values{"local": {"true"}})
}

func (c *Client) cluster(ctx context.Context, q url.Values) (*ClusterStatus, error) {
	var st ClusterStatus
	if _, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/cluster", Query: q}, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// SplitShard splits shard id at key, which becomes the first key of the new
// child shard; key "" lets the server pick the middle of the range. An
// unknown shard gives an error matching ErrNotFound, a key outside the range
// one matching ErrInvalidArgument, a split that lost a race with another
// change of the range (another split) one matching ErrConditionFailed.
func (c *Client) SplitShard(ctx context.Context, id uint64, key string) (*SplitResult, error) {
	return c.SplitShardAtEpoch(ctx, id, key, 0)
}

// SplitShardAtEpoch is SplitShard on a condition: the shard must still be
// at epoch (ShardStatus.Epoch in ClusterStatus, the EPOCH column), so a split
// planned from a status that has since gone stale (another split, a change
// of its replicas: both move the epoch) is refused with an error matching ErrConditionFailed
// instead of splitting a range the caller did not look at. Epoch 0 sets no
// condition.
func (c *Client) SplitShardAtEpoch(ctx context.Context, id uint64, key string, epoch uint64) (*SplitResult, error) {
	if !utf8.ValidString(key) {
		// JSON would silently replace the invalid bytes and split elsewhere.
		return nil, invalidArgument("split key is not valid UTF-8")
	}
	body := struct {
		Key   string `json:"key,omitempty"`
		Epoch uint64 `json:"epoch,omitempty"`
	}{key, epoch}
	var res SplitResult
	if _, err := c.Do(ctx, Request{Method: http.MethodPost, Path: shardPath(id) + "/split", Body: &body}, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// TransferLeader asks shard id's leader to hand leadership to node to, which
// must hold a voting replica of the shard.
func (c *Client) TransferLeader(ctx context.Context, id uint64, to string) error {
	if to == "" {
		return invalidArgument("empty target node id")
	}
	body := struct {
		To string `json:"to"`
	}{to}
	_, err := c.Do(ctx, Request{Method: http.MethodPost, Path: shardPath(id) + "/transfer-leader", Body: &body}, nil)
	return err
}

// DrainNode marks node id as draining: the placement driver then moves every
// replica and leader off it. It returns once the mark is recorded, not when
// the node is empty; watch Cluster for its shard count to reach 0.
func (c *Client) DrainNode(ctx context.Context, id string) error {
	if id == "" {
		return invalidArgument("empty node id")
	}
	_, err := c.Do(ctx, Request{Method: http.MethodPost, Path: nodePath(id) + "/drain"}, nil)
	return err
}

// RemoveNode removes node id from the cluster for good. The node must be
// drained or dead: a live node that still holds replicas gives an error
// matching ErrConditionFailed, an unknown one ErrNotFound.
func (c *Client) RemoveNode(ctx context.Context, id string) error {
	if id == "" {
		return invalidArgument("empty node id")
	}
	_, err := c.Do(ctx, Request{Method: http.MethodDelete, Path: nodePath(id)}, nil)
	return err
}

func shardPath(id uint64) string { return "/v1/cluster/shards/" + strconv.FormatUint(id, 10) }

// nodePath escapes the node id as one path segment, as EscapeKey does for keys.
func nodePath(id string) string { return "/v1/cluster/nodes/" + EscapeKey(id) }

func invalidArgument(msg string) *Error {
	return &Error{Status: http.StatusBadRequest, Code: CodeInvalidArgument, Message: msg}
}
