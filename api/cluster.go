package api

import (
	"github.com/cairndb/cairn/internal/cluster"
	"net/http"
)

// ClusterView is the body of GET /v1/cluster (docs/api.md, "Cluster").
type ClusterView struct {
	Nodes           []NodeView  `json:"nodes"`
	Shards          []ShardView `json:"shards"`
	PlacementLeader string      `json:"placement_leader"`
	Level           int         `json:"level"` // the cluster's shard command level (placement.State.Level)
}

// NodeView describes one node.
type NodeView struct {
	ID       string `json:"id"`
	HTTPAddr string `json:"http_addr"`
	RaftAddr string `json:"raft_addr"`
	State    string `json:"state"` // alive, suspect or dead (gossip)
	Shards   int    `json:"shards"`
	Leaders  int    `json:"leaders"`
	Level    int    `json:"level"` // the shard command level its binary applies, as registered
}

// ShardView describes one shard. Leader, size and applied index come from the
// answering node's replica when it hosts one.
type ShardView struct {
	ID           uint64   `json:"id"`
	Start        string   `json:"start"`
	End          string   `json:"end"`
	Epoch        uint64   `json:"epoch"`
	Replicas     []string `json:"replicas"`
	Leader       string   `json:"leader"`
	SizeBytes    int64    `json:"size_bytes"`
	AppliedIndex uint64   `json:"applied_index"`
}

// cluster answers from the placement leader, which has every shard leader's
// heartbeat; another node forwards there, or answers itself if it cannot.
// ?local=true answers from this node's own view (its replicas' leaders and
// applied indexes, the range map as it knows it), without forwarding.
func (s *Server) cluster(w http.ResponseWriter, r *http.Request) error {
	if !s.be.Ready() {
		return errNotReady
	}
	local, err := flagParam(r.URL.Query(), "local")
	if err != nil {
		return err
	}
	if m := s.be.Meta(); !local && !m.IsLeader() && cluster.Hops(r.Header) == 0 {
		if addr, ok := s.be.NodeHTTPAddr(m.Leader()); ok && m.Leader() != "" {
			if err := s.forward(w, r, nil, addr); err == nil {
				return nil
			}
		}
	}
	writeJSON(w, http.StatusOK, s.be.Cluster())
	return nil
}
