package cluster

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/cairndb/cairn/fsm"
)

// Internal routes: node-to-node calls, not part of the public API. The API
// serves them; this package calls them.
const (
	PathAllocRangeID = "/internal/v1/meta/alloc-range-id"
	PathReportRanges = "/internal/v1/meta/report-ranges"
	PathHeartbeat    = "/internal/v1/meta/heartbeat"
	PathNodeState    = "/internal/v1/meta/node-state"
	PathMetaRanges   = "/internal/v1/meta/read-ranges"
	PathLeaderPref   = "/internal/v1/meta/leader-pref"
)

// Directory resolves where to send a call.
type Directory interface {
	// MetaLeader is the meta group's leader's node id, "" when unknown.
	MetaLeader() string
	// NodeHTTPAddr is a node's API address.
	NodeHTTPAddr(id string) (string, bool)
}

// RangeHeartbeat is one shard leader's statistics in a heartbeat.
type RangeHeartbeat struct {
	ID           uint64  `json:"id"`
	Leader       string  `json:"leader"`
	SizeBytes    int64   `json:"size_bytes"`
	WriteBytes   float64 `json:"write_bytes_per_s"`
	AppliedIndex uint64  `json:"applied_index"`
}

// MetaRange is one range as the meta leader knows it (ReadMetaRanges).
type MetaRange struct {
	ID       uint64   `json:"id"`
	Found    bool     `json:"found"`
	Epoch    uint64   `json:"epoch"`
	Replicas []string `json:"replicas"`
	OpTo     string   `json:"op_to,omitempty"` // target of an operation in progress
}

// LeaderPrefRequest records a range's preferred leader.
type LeaderPrefRequest struct {
	Range uint64 `json:"range"`
	Node  string `json:"node"`
}

// NodeStateRequest records a drain or a removal.
type NodeStateRequest struct {
	Node     string `json:"node"`
	Draining bool   `json:"draining"`
	Removed  bool   `json:"removed"`
}

// CallMeta makes an internal call on the meta group's leader. A leader that
// is not known fails with ErrNoRoute (nothing was sent).
func (c *Client) CallMeta(ctx context.Context, dir Directory, path string, in, out any) error {
	leader := dir.MetaLeader()
	addr, ok := dir.NodeHTTPAddr(leader)
	if leader == "" || !ok {
		return fmt.Errorf("meta group has no known leader: %w", ErrNoRoute)
	}
	if err := c.Call(ctx, addr, http.MethodPost, path, in, out); err != nil {
		return fmt.Errorf("meta leader %s: %w", leader, err)
	}
	return nil
}

// AllocRangeID reserves a range id on the meta leader.
func (c *Client) AllocRangeID(ctx context.Context, dir Directory) (uint64, error) {
	var out struct {
		ID uint64 `json:"id"`
	}
	if err := c.CallMeta(ctx, dir, PathAllocRangeID, nil, &out); err != nil {
		return 0, err
	}
	return out.ID, nil
}

// ReportRanges sends shard leaders' descriptors to the meta leader.
func (c *Client) ReportRanges(ctx context.Context, dir Directory, ranges []fsm.Range) error {
	return c.CallMeta(ctx, dir, PathReportRanges, ranges, nil)
}

// Heartbeat reports that node is answering, with its leaders' statistics.
func (c *Client) Heartbeat(ctx context.Context, dir Directory, node string, hb []RangeHeartbeat) error {
	if hb == nil {
		hb = []RangeHeartbeat{}
	}
	return c.CallMeta(ctx, dir, PathHeartbeat+"?node="+url.QueryEscape(node), hb, nil)
}

// ReadMetaRanges reads ranges linearizably on the meta leader.
func (c *Client) ReadMetaRanges(ctx context.Context, dir Directory, ids []uint64) ([]MetaRange, error) {
	var out []MetaRange
	err := c.CallMeta(ctx, dir, PathMetaRanges, ids, &out)
	return out, err
}

// Shard routes, served by every node's API (which routes each to the
// shard's leader) and called by the placement executor.
const (
	pathShardStatus = "/internal/v1/shards/%d/status"
	pathMembership  = "/internal/v1/shards/%d/membership"
	pathSplit       = "/v1/cluster/shards/%d/split"
)

// PathShardStatus is a shard's status route; query leader=1 asks the
// leader, committed=1 the leader with a committed configuration.
func PathShardStatus(id uint64) string { return fmt.Sprintf(pathShardStatus, id) }

// PathMembership is a shard's membership-change route.
func PathMembership(id uint64) string { return fmt.Sprintf(pathMembership, id) }

// PathSplit is a shard's split route.
func PathSplit(id uint64) string { return fmt.Sprintf(pathSplit, id) }

// MembershipRequest is one membership change.
type MembershipRequest struct {
	Action string `json:"action"` // add_learner, promote, remove, transfer_leader
	Node   string `json:"node"`
}
