package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Placement calls the nemesis makes through the nodes' HTTP API: the public
// cluster operations of docs/api.md and the internal ones the placement driver's
// executor uses.

// ShardStatus is a shard leader's view of its shard
// (GET /internal/v1/shards/{id}/status?leader=1).
type ShardStatus struct {
	Shard       uint64   `json:"shard"`
	Leader      string   `json:"leader"`
	IsLeader    bool     `json:"is_leader"`
	Applied     uint64   `json:"applied"`
	CommitIndex uint64   `json:"commit_index"`
	Members     []Member `json:"members"`
}

// Member is one server of a shard's raft configuration.
type Member struct {
	ID    string `json:"id"`
	Voter bool   `json:"voter"`
}

// Member returns the member with id, or nil.
func (s *ShardStatus) Member(id string) *Member {
	for i := range s.Members {
		if s.Members[i].ID == id {
			return &s.Members[i]
		}
	}
	return nil
}

func (c *Cluster) post(ctx context.Context, n *Node, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+n.Endpoint+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s POST %s: %d %s", n.ID, path, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(body, out)
}

// TransferLeader asks node via to hand shard's leadership to node to
// (POST /v1/cluster/shards/{id}/transfer-leader); via forwards it to the
// shard's leader.
func (c *Cluster) TransferLeader(ctx context.Context, via *Node, shard uint64, to string) error {
	return c.post(ctx, via, fmt.Sprintf("/v1/cluster/shards/%d/transfer-leader", shard), map[string]string{"to": to}, nil)
}

// ShardStatus returns shard's status as its leader sees it, asked through
// node via.
func (c *Cluster) ShardStatus(ctx context.Context, via *Node, shard uint64) (*ShardStatus, error) {
	var st ShardStatus
	if err := c.get(ctx, via, fmt.Sprintf("/internal/v1/shards/%d/status?leader=1", shard), &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// RemoveReplica removes node's replica from shard's raft configuration
// (the placement executor's remove step), through node via.
func (c *Cluster) RemoveReplica(ctx context.Context, via *Node, shard uint64, node string) error {
	return c.post(ctx, via, fmt.Sprintf("/internal/v1/shards/%d/membership", shard),
		map[string]string{"action": "remove", "node": node}, nil)
}

// Drain asks the placement driver to move every replica and leadership off
// node (POST /v1/cluster/nodes/{id}/drain).
func (c *Cluster) Drain(ctx context.Context, via *Node, node string) error {
	return c.post(ctx, via, "/v1/cluster/nodes/"+node+"/drain", nil, nil)
}

// Undrain makes node a target for replicas again. There is no public call
// for it: it is the meta group's node-state record, set on the placement
// leader, which via names.
func (c *Cluster) Undrain(ctx context.Context, via *Node, node string) error {
	var v struct {
		PlacementLeader string `json:"placement_leader"`
	}
	if err := c.get(ctx, via, "/v1/cluster", &v); err != nil {
		return err
	}
	leader := c.Node(v.PlacementLeader)
	if leader == nil {
		return fmt.Errorf("undrain %s: placement leader %q is not a known node", node, v.PlacementLeader)
	}
	return c.post(ctx, leader, "/internal/v1/meta/node-state", map[string]any{"node": node, "draining": false, "removed": false}, nil)
}
