package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/placement"
	"github.com/cairndb/cairn/shard"
)

// Placement endpoints: the public cluster operations of docs/api.md and the
// internal calls the placement driver's executor makes.
const (
	pathHeartbeat  = cluster.PathHeartbeat
	pathNodeState  = cluster.PathNodeState
	pathMetaRanges = cluster.PathMetaRanges
	pathLeaderPref = cluster.PathLeaderPref
)

// RangeHeartbeat is one shard leader's statistics in a heartbeat.
type RangeHeartbeat = cluster.RangeHeartbeat

// PlacementBackend is what the placement endpoints need from the node.
type PlacementBackend interface {
	// Observe hands heartbeat statistics to the placement driver.
	Observe(hb []RangeHeartbeat)
	// ObserveNode tells the placement driver that node id reported: it is
	// answering (placement.Driver.ObserveNode).
	ObserveNode(id string)
	// SetLeaderPref records an operator's preferred leader for a range, ""
	// to clear it (meta leader only).
	SetLeaderPref(ctx context.Context, rangeID uint64, node string) error
	// NodeRaftAddr returns a registered node's raft address.
	NodeRaftAddr(id string) (string, bool)
	// SetNodeState records a drain or removal (meta leader only).
	SetNodeState(ctx context.Context, id string, draining, removed bool) error
	// NodeAlive reports gossip liveness (a hint).
	NodeAlive(id string) bool
	// ReadMetaRanges reads ranges from the meta group linearizably (meta
	// leader only): after a barrier, so it reflects every committed change.
	ReadMetaRanges(ctx context.Context, ids []uint64) ([]MetaRange, error)
}

// MetaRange is one range as the meta leader knows it (ReadMetaRanges).
type MetaRange = cluster.MetaRange

type membershipRequest = cluster.MembershipRequest

// MemberReplica is what the placement executor's routes need of a shard's
// replica: its status and its raft membership. *shard.Replica implements it.
//
// Concurrency: every method may be called at any time from any number of
// request goroutines, concurrently with each other and with Replica's
// methods; raft serializes the membership changes.
//
//   - Status writes nothing: this replica's view (leader, indexes, the latest
//     configuration), stale the moment it returns.
//   - CommittedStatus (leader only) commits a no-op after the latest
//     configuration, so the members it returns are known committed; its
//     errors are Propose's (Replica): *shard.NotLeaderError and
//     shard.ErrUnavailable mean nothing was written.
//   - AddLearner, Promote and RemoveMember change the configuration
//     (leader only), classified as Propose: *shard.NotLeaderError and
//     shard.ErrUnavailable mean nothing was changed, shard.ErrOutcomeUnknown
//     that the change was appended and may commit. Each is idempotent (a
//     change already made returns nil), so a retry is harmless.
//   - TransferLeader (leader only) writes nothing to the log; a transfer
//     that failed is shard.ErrUnavailable, or *shard.NotLeaderError when
//     this replica does not lead.
type MemberReplica interface {
	Status() shard.Status
	CommittedStatus(ctx context.Context) (shard.Status, error)
	AddLearner(id, addr string) error
	Promote(id, addr string) error
	RemoveMember(id string) error
	TransferLeader(id, addr string) error
}

var _ MemberReplica = (*shard.Replica)(nil)

func (s *Server) placementRoutes() {
	s.handle("POST /v1/cluster/shards/{id}/transfer-leader", "cluster_transfer", s.transferLeader)
	s.handle("POST /v1/cluster/nodes/{id}/drain", "cluster_drain", s.drainNode)
	s.handle("DELETE /v1/cluster/nodes/{id}", "cluster_remove_node", s.removeNode)
	s.handle("GET /internal/v1/shards/{id}/status", "internal", s.shardStatus)
	s.handle("POST /internal/v1/shards/{id}/membership", "internal", s.membership)
	s.handle("POST "+pathHeartbeat, "internal", s.heartbeat)
	s.handle("POST "+pathNodeState, "internal", s.nodeState)
	s.handle("POST "+pathMetaRanges, "internal", s.metaRanges)
	s.handle("POST "+pathLeaderPref, "internal", s.leaderPref)
}

// metaRanges answers a linearizable read of ranges on the meta leader.
func (s *Server) metaRanges(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var ids []uint64
	if err := unmarshalStrict(body, &ids); err != nil {
		return err
	}
	if !s.be.Meta().IsLeader() {
		return fmt.Errorf("%w: not the meta leader", errNoRoute)
	}
	out, err := s.pb.ReadMetaRanges(r.Context(), ids)
	if err != nil {
		return fmt.Errorf("%w: %w", errNoRoute, err)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// ReadMetaRanges reads ranges linearizably from the meta leader, wherever
// it is (issue 10 item 3: a node decides to delete a replica only from a
// map known to be current).
func (s *Server) ReadMetaRanges(ctx context.Context, ids []uint64) ([]MetaRange, error) {
	if s.be.Meta().IsLeader() {
		return s.pb.ReadMetaRanges(ctx, ids)
	}
	return s.peers.ReadMetaRanges(ctx, directory{s}, ids)
}

func shardIDParam(r *http.Request) (uint64, error) {
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		return 0, invalidf("bad shard id %q", r.PathValue("id"))
	}
	return id, nil
}

// onLeader runs fn on the shard's leader replica: locally, or by forwarding
// the request to the leader's node.
func (s *Server) onLeader(w http.ResponseWriter, r *http.Request, body []byte, fn func(ShardReplica) error) error {
	id, err := shardIDParam(r)
	if err != nil {
		return err
	}
	if !s.be.Ready() {
		return errNotReady
	}
	return s.rt.route(r.Context(), routeReq[ShardReplica]{
		rng: func() (fsm.Range, error) {
			if rng, ok := s.rangeByID(id); ok {
				return rng, nil
			}
			return fsm.Range{}, fmt.Errorf("shard %d: %w", id, errNotFound)
		},
		leader:   true,
		fallback: true,
		local:    func(rep ShardReplica, _ fsm.Range) error { return fn(rep) },
		remote:   func(addr string, _ fsm.Range) error { return s.forward(w, r, body, addr) },
	})
}

func (s *Server) shardStatus(w http.ResponseWriter, r *http.Request) error {
	reply := func(rep ShardReplica) error {
		writeJSON(w, http.StatusOK, rep.Status())
		return nil
	}
	if r.URL.Query().Get("committed") == "1" {
		return s.onLeader(w, r, nil, func(rep ShardReplica) error {
			st, err := rep.CommittedStatus(r.Context())
			if err != nil {
				return err
			}
			writeJSON(w, http.StatusOK, st)
			return nil
		})
	}
	if r.URL.Query().Get("leader") == "1" {
		return s.onLeader(w, r, nil, reply)
	}
	id, err := shardIDParam(r)
	if err != nil {
		return err
	}
	rep, ok := s.be.Replica(id)
	if !ok {
		return fmt.Errorf("node %s has no replica of shard %d: %w", s.be.NodeID(), id, errNotFound)
	}
	return reply(rep)
}

func (s *Server) membership(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var req membershipRequest
	if err := unmarshalStrict(body, &req); err != nil {
		return err
	}
	return s.onLeader(w, r, body, func(rep ShardReplica) error {
		if err := s.changeMembership(rep, req); err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, rep.Status())
		return nil
	})
}

func (s *Server) changeMembership(rep MemberReplica, req membershipRequest) error {
	addr, ok := s.pb.NodeRaftAddr(req.Node)
	if !ok && req.Action != "remove" {
		return fmt.Errorf("node %q is not registered: %w", req.Node, errNotFound)
	}
	switch req.Action {
	case "add_learner":
		return rep.AddLearner(req.Node, addr)
	case "promote":
		return rep.Promote(req.Node, addr)
	case "remove":
		return rep.RemoveMember(req.Node)
	case "transfer_leader":
		return rep.TransferLeader(req.Node, addr)
	}
	return invalidf("unknown membership action %q", req.Action)
}

// transferLeader: POST /v1/cluster/shards/{id}/transfer-leader {"to":"n3"}.
func (s *Server) transferLeader(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var req struct {
		To string `json:"to"`
	}
	if err := unmarshalStrict(body, &req); err != nil {
		return err
	}
	if req.To == "" {
		return invalidf(`"to" names the node to hand leadership to`)
	}
	return s.onLeader(w, r, body, func(rep ShardReplica) error {
		if err := s.changeMembership(rep, membershipRequest{Action: "transfer_leader", Node: req.To}); err != nil {
			return err
		}
		// The placement driver keeps leadership where the operator put it
		// (placement/prefs.go). Recorded after the transfer, so the driver
		// does not race the operator's own transfer; if recording fails the
		// call fails retryably, and a retry is a no-op transfer and a record.
		pref := leaderPrefRequest{Range: rep.ID(), Node: req.To}
		if err := s.callMeta(r.Context(), pathLeaderPref, pref, nil); err != nil {
			return fmt.Errorf("shard %d: leader is now %s, but the preference that keeps it there was not recorded: %w",
				rep.ID(), req.To, err)
		}
		writeJSON(w, http.StatusOK, map[string]any{"shard": rep.ID(), "leader": req.To, "preferred": true})
		return nil
	})
}

type leaderPrefRequest = cluster.LeaderPrefRequest

// leaderPref records a range's preferred leader (meta leader only).
func (s *Server) leaderPref(w http.ResponseWriter, r *http.Request) error {
	var req leaderPrefRequest
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if err := unmarshalStrict(body, &req); err != nil {
		return err
	}
	if err := s.pb.SetLeaderPref(r.Context(), req.Range, req.Node); err != nil {
		return fmt.Errorf("%w: %w", errNoRoute, err)
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	return nil
}

// drainNode: POST /v1/cluster/nodes/{id}/drain. The placement driver then
// moves every replica and leader off the node.
func (s *Server) drainNode(w http.ResponseWriter, r *http.Request) error {
	return s.setNodeState(w, r, true, false)
}

// removeNode: DELETE /v1/cluster/nodes/{id}, for a drained or dead node.
func (s *Server) removeNode(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if s.pb.NodeAlive(id) {
		for _, rng := range s.be.Ranges() {
			for _, rep := range rng.Replicas {
				if rep == id {
					return fmt.Errorf("%w: node %s is alive and still holds replicas; drain it first", errConflict, id)
				}
			}
		}
	}
	return s.setNodeState(w, r, true, true)
}

func (s *Server) setNodeState(w http.ResponseWriter, r *http.Request, draining, removed bool) error {
	id := r.PathValue("id")
	if _, ok := s.be.NodeHTTPAddr(id); !ok {
		return fmt.Errorf("node %q: %w", id, errNotFound)
	}
	in := nodeStateRequest{Node: id, Draining: draining, Removed: removed}
	if err := s.callMeta(r.Context(), pathNodeState, in, nil); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"node": id, "draining": draining, "removed": removed})
	return nil
}

type nodeStateRequest = cluster.NodeStateRequest

func (s *Server) nodeState(w http.ResponseWriter, r *http.Request) error {
	var req nodeStateRequest
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if err := unmarshalStrict(body, &req); err != nil {
		return err
	}
	if err := s.pb.SetNodeState(r.Context(), req.Node, req.Draining, req.Removed); err != nil {
		return fmt.Errorf("%w: %w", errNoRoute, err)
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	return nil
}

// callMeta runs an internal meta call here when this node leads the meta
// group, else on the leader.
func (s *Server) callMeta(ctx context.Context, path string, in, out any) error {
	if s.be.Meta().IsLeader() {
		addr, _ := s.be.NodeHTTPAddr(s.be.NodeID())
		return s.callNode(ctx, addr, http.MethodPost, path, in, out)
	}
	return s.peers.CallMeta(ctx, directory{s}, path, in, out)
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) error {
	var hb []RangeHeartbeat
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, &hb); err != nil {
		return invalidf("bad heartbeat: %v", err)
	}
	if id := r.URL.Query().Get("node"); id != "" {
		s.pb.ObserveNode(id)
	}
	s.pb.Observe(hb)
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	return nil
}

// SendHeartbeat delivers this node's shard statistics to the meta leader,
// and with them the news that this node is answering: every node sends one
// every tick, with or without statistics.
func (s *Server) SendHeartbeat(ctx context.Context, hb []RangeHeartbeat) error {
	if s.be.Meta().IsLeader() {
		s.pb.ObserveNode(s.node)
		s.pb.Observe(hb)
		return nil
	}
	return s.peers.Heartbeat(ctx, directory{s}, s.node, hb)
}

// callNode makes one internal call to the node at addr.
func (s *Server) callNode(ctx context.Context, addr, method, path string, in, out any) error {
	return s.peers.Call(ctx, addr, method, path, in, out)
}

// NewExecutor returns the placement executor backed by this node's API
// (placement.NodeExecutor), making its calls with this node's client.
func (s *Server) NewExecutor() *placement.NodeExecutor {
	return placement.NewNodeExecutor(s.peers, s.be.NodeID(), s.be.NodeHTTPAddr)
}
