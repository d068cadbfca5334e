package node

import (
	"context"

	"github.com/cairndb/cairn/api"
	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/placement"
	"github.com/cairndb/cairn/shard"
)

// The node is the API's Backend (through apiBackend), and reports its health.
var (
	_ api.Backend        = apiBackend{}
	_ api.HealthReporter = apiBackend{}
	_ api.LevelReporter  = apiBackend{}
)

// apiBackend is the node as the API sees it: the same node, whose Replica
// hands out the replica as the interface the API declares.
type apiBackend struct{ *Node }

// Replica returns this node's replica of shard id.
func (b apiBackend) Replica(id uint64) (api.ShardReplica, bool) {
	if rep, ok := b.host.Replica(id); ok {
		return rep, true
	}
	return nil, false // never a nil *shard.Replica in a non-nil interface
}

// NodeID returns this node's id.
func (n *Node) NodeID() string { return n.cfg.ID }

// Ready reports whether the cluster is formed, this node is registered in
// the range map it holds, and its raft log works (Health).
func (n *Node) Ready() bool {
	if n.Health() != nil {
		return false
	}
	if n.leaving.Load() {
		return false // handing off before a graceful stop (Leave)
	}
	st, _ := n.meta.State()
	_, registered := st.Nodes[n.cfg.ID]
	return st.Formed() && registered && len(st.Ranges) > 0
}

// Lookup returns the range owning key.
func (n *Node) Lookup(key []byte) (fsm.Range, bool) {
	st, _ := n.meta.State()
	return st.Lookup(key)
}

// Ranges returns the range map sorted by start key.
func (n *Node) Ranges() []fsm.Range {
	st, _ := n.meta.State()
	return st.Ranges
}

// Replica returns this node's replica of shard id.
func (n *Node) Replica(id uint64) (*shard.Replica, bool) { return n.host.Replica(id) }

// NodeHTTPAddr returns a registered node's API address.
func (n *Node) NodeHTTPAddr(id string) (string, bool) {
	st, _ := n.meta.State()
	ni, ok := st.Nodes[id]
	return ni.HTTPAddr, ok && ni.HTTPAddr != ""
}

// Cluster describes nodes and shards as this node sees them.
func (n *Node) Cluster() api.ClusterView {
	st, _ := n.meta.State()
	v := api.ClusterView{PlacementLeader: n.meta.Leader(), Level: st.Level, Nodes: []api.NodeView{}, Shards: []api.ShardView{}}
	perNode := map[string]*api.NodeView{}
	for _, ni := range st.Nodes {
		v.Nodes = append(v.Nodes, api.NodeView{ID: ni.ID, HTTPAddr: ni.HTTPAddr, RaftAddr: ni.RaftAddr,
			State: n.gossip.state(ni.ID), Level: ni.Level})
	}
	for i := range v.Nodes {
		perNode[v.Nodes[i].ID] = &v.Nodes[i]
	}
	for _, r := range st.Ranges {
		sv := api.ShardView{ID: r.ID, Start: string(r.Start), End: string(r.End), Epoch: r.Epoch, Replicas: r.Replicas}
		rep, local := n.host.Replica(r.ID)
		if local {
			sv.Leader, _ = rep.Leader()
			sv.AppliedIndex = rep.FSM().Applied()
			sv.SizeBytes = rep.FSM().SizeBytes()
		}
		// A replica still joining (opened for a move, not yet a member)
		// knows no leader: the leaders' heartbeats do (issue 10 item 6).
		// Without a replica here (the placement leader need not hold one),
		// the applied index is the leader's too (issue 11 item 9).
		if s, ok := n.driver.Stats(r.ID); ok && sv.Leader == "" {
			sv.Leader, sv.SizeBytes = s.Leader, s.SizeBytes
			if !local {
				sv.AppliedIndex = s.AppliedIndex
			}
		}
		for _, id := range r.Replicas {
			if nv := perNode[id]; nv != nil {
				nv.Shards++
				if id == sv.Leader {
					nv.Leaders++
				}
			}
		}
		v.Shards = append(v.Shards, sv)
	}
	return v
}

// The node serves the placement endpoints.
var _ api.PlacementBackend = (*Node)(nil)

// Observe hands shard leaders' statistics to the placement driver.
func (n *Node) Observe(hb []api.RangeHeartbeat) {
	for _, h := range hb {
		n.driver.Observe(h.ID, placement.RangeStats{Leader: h.Leader, SizeBytes: h.SizeBytes, WriteBytes: h.WriteBytes,
			AppliedIndex: h.AppliedIndex})
	}
}

// ObserveNode tells the placement driver that node id reported.
func (n *Node) ObserveNode(id string) { n.driver.ObserveNode(id) }

// SetLeaderPref records an operator's preferred leader for a range.
func (n *Node) SetLeaderPref(ctx context.Context, rangeID uint64, node string) error {
	return n.meta.SetLeaderPref(ctx, rangeID, node)
}

// NodeRaftAddr returns a registered node's raft address.
func (n *Node) NodeRaftAddr(id string) (string, bool) {
	st, _ := n.meta.State()
	ni, ok := st.Nodes[id]
	return ni.RaftAddr, ok && ni.RaftAddr != ""
}

// SetNodeState records a drain or removal in the meta group.
func (n *Node) SetNodeState(ctx context.Context, id string, draining, removed bool) error {
	return n.meta.SetNodeState(ctx, id, draining, removed)
}

// ClusterLevel is the cluster's shard command level in this node's meta
// state (api.LevelReporter): proposals that need a level check it.
func (n *Node) ClusterLevel() int {
	st, _ := n.meta.State()
	return st.Level
}

// NodeAlive reports gossip liveness.
func (n *Node) NodeAlive(id string) bool { return n.gossip.alive()[id] }

// ReadMetaRanges reads ranges from the meta group after a barrier: the
// barrier commits in this leader's term, so the state it leaves applied
// holds every change committed before the read began (meta leader only).
func (n *Node) ReadMetaRanges(ctx context.Context, ids []uint64) ([]api.MetaRange, error) {
	if err := n.meta.Barrier(ctx); err != nil {
		return nil, err
	}
	st, _ := n.meta.State()
	out := make([]api.MetaRange, 0, len(ids))
	for _, id := range ids {
		mr := api.MetaRange{ID: id}
		if r, ok := st.Range(id); ok {
			mr.Found, mr.Epoch, mr.Replicas = true, r.Epoch, r.Replicas
		}
		if op, ok := st.Ops[id]; ok {
			mr.OpTo = op.To
		}
		out = append(out, mr)
	}
	return out, nil
}
