package node

import (
	"fmt"
	"sort"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/placement"
	"github.com/cairndb/cairn/shard"
)

// Forming the cluster and growing the meta group are decisions in the same
// shape as the scheduler's and planReplicas': a pure function from what the
// node sees (a view) to what to do (a plan), table-tested without a cluster
// (formation_test.go); node.go gathers the view and carries the plan out
// through placement.Meta. Gossip only proposes; raft decides (invariant
// I12): every change the plans ask for is a meta-group entry or
// configuration change, refused or retried as raft says.

// formationView is what the node knows while the cluster is not formed.
type formationView struct {
	Self            string
	BootstrapExpect int
	Replication     int
	// HasConfig: this node's meta replica knows a membership (it was
	// bootstrapped or added).
	HasConfig bool
	// MetaLeader: this node leads the meta group.
	MetaLeader bool
	// Gossip is every node gossip lists, sorted by id.
	Gossip []placement.NodeInfo
	// MetaServers is the meta group's latest configuration.
	MetaServers []shard.Member
}

// formationPlan is what to do for formation; at most one of Bootstrap and
// InitReplicas is set. Waiting says why nothing happens, when nothing does.
type formationPlan struct {
	// Bootstrap: form the meta group with these voters.
	Bootstrap []raft.Server
	// InitReplicas: propose the first range map, every range on these nodes
	// (after registering the gossip members).
	InitReplicas []string
	Waiting      string
}

// planFormation bootstraps the meta group once BootstrapExpect nodes have
// met, from the lowest id among the first BootstrapExpect (every node sorts
// the same list, so exactly one bootstraps); then the meta leader writes the
// range map, its ranges on the Replication lowest ids of the meta group.
func planFormation(v formationView) formationPlan {
	if !v.HasConfig {
		switch {
		case v.BootstrapExpect == 0:
			return formationPlan{Waiting: "no meta membership yet: waiting to be added to a cluster (--join)"}
		case len(v.Gossip) < v.BootstrapExpect:
			return formationPlan{Waiting: fmt.Sprintf("waiting for %d nodes to meet, %d so far (--bootstrap-expect)",
				v.BootstrapExpect, len(v.Gossip))}
		}
		first := v.Gossip[:v.BootstrapExpect]
		if first[0].ID != v.Self {
			return formationPlan{Waiting: fmt.Sprintf("waiting for %s to bootstrap the meta group", first[0].ID)}
		}
		servers := make([]raft.Server, 0, len(first))
		for _, m := range first {
			servers = append(servers, raft.Server{ID: raft.ServerID(m.ID), Address: raft.ServerAddress(m.RaftAddr)})
		}
		return formationPlan{Bootstrap: servers}
	}
	if !v.MetaLeader {
		return formationPlan{Waiting: "waiting for the meta leader to write the range map"}
	}
	ids := make([]string, 0, len(v.MetaServers))
	for _, s := range v.MetaServers {
		ids = append(ids, s.ID)
	}
	sort.Strings(ids)
	if len(ids) > v.Replication {
		ids = ids[:v.Replication]
	}
	return formationPlan{InitReplicas: ids}
}

// metaVoters is the meta group's size once the cluster has that many nodes:
// five voters survive two failures; more would only slow its commits.
const metaVoters = 5

// metaView is what the meta leader knows about the meta group's members.
type metaView struct {
	// State is the meta group's applied state (registered nodes, formed).
	State *placement.State
	// Gossip is every node gossip lists, sorted by id; Alive the ids gossip
	// sees alive.
	Gossip []placement.NodeInfo
	Alive  map[string]bool
	// Config is the meta group's latest configuration.
	Config []shard.Member
	// Self is the meta leader's own id.
	Self string
}

// metaPlan is what the meta leader does about membership, in order.
type metaPlan struct {
	// Register: gossip members whose addresses the meta state lacks or has
	// wrong (RegisterNode).
	Register []placement.NodeInfo
	// AddNonvoters: registered nodes outside the meta group's configuration,
	// added as non-voters so every node holds a copy of the range map.
	AddNonvoters []placement.NodeInfo
	// Promote: the non-voter to make a voter, nil for none.
	Promote *shard.Member
	// RemoveMembers: members of the meta group the operator removed for good
	// that no range or operation names any more (never the leader itself).
	RemoveMembers []string
	// PrepareLevel, RaiseLevel: the command level to prepare, or to raise
	// the cluster to (placement/level.go); 0 for none. CancelPending: set
	// the pending level back to the cluster's (a node went back to an
	// older binary before recording it).
	PrepareLevel, RaiseLevel int
	CancelPending            bool
}

// planMeta registers every gossip member's addresses; once the cluster is
// formed, adds each registered node the configuration lacks as a non-voter;
// and promotes one live, non-removed non-voter (lowest id first) while the
// meta group has fewer than metaVoters voters and the cluster has at least
// metaVoters live nodes.
func planMeta(v metaView) metaPlan {
	var p metaPlan
	for _, m := range v.Gossip {
		if cur, ok := v.State.Nodes[m.ID]; !ok || cur.HTTPAddr != m.HTTPAddr || cur.RaftAddr != m.RaftAddr ||
			cur.Level != m.Level || cur.Recorded != m.Recorded {
			p.Register = append(p.Register, m)
		}
	}
	if !v.State.Formed() {
		return p
	}
	// The level rises only once every registration is current, and the meta
	// group's members (which replay the meta log and may lead it) count as
	// well as the nodes the state counts.
	if len(p.Register) == 0 {
		ready, recorded := v.State.ReadyLevel(), v.State.RecordedLevel()
		for _, m := range v.Config {
			ready, recorded = min(ready, v.State.Nodes[m.ID].Level), min(recorded, v.State.Nodes[m.ID].Recorded)
		}
		switch {
		case ready <= v.State.Level:
			p.CancelPending = v.State.Pending > v.State.Level
		case v.State.Pending != ready:
			p.PrepareLevel = ready
		case recorded >= ready:
			p.RaiseLevel = ready
		}
	}
	named := map[string]bool{} // by a range or an operation
	for _, r := range v.State.Ranges {
		for _, id := range r.Replicas {
			named[id] = true
		}
	}
	for _, op := range v.State.Ops {
		named[op.To], named[op.From] = true, true
	}
	inConfig := map[string]bool{}
	voters := 0
	var candidates []shard.Member
	for _, s := range v.Config {
		inConfig[s.ID] = true
		if ni := v.State.Nodes[s.ID]; ni.Removed && !named[s.ID] && s.ID != v.Self {
			// Removed for good and holding nothing: it leaves the meta
			// group, and no longer counts for its quorum or the level.
			p.RemoveMembers = append(p.RemoveMembers, s.ID)
			continue
		}
		if s.Voter {
			voters++
		} else if ni, ok := v.State.Nodes[s.ID]; ok && v.Alive[ni.ID] && !ni.Removed && !v.State.BehindLevel(ni.ID) {
			candidates = append(candidates, s)
		}
	}
	live := 0
	for id, ni := range v.State.Nodes {
		// A node behind the cluster's command level must not replay the
		// meta log (an older binary would drop the level from its state),
		// nor one that has not recorded the level yet (it could still
		// restart on such a binary); a removed one never again.
		if !inConfig[id] && !ni.Removed && !v.State.BehindLevel(id) && ni.Recorded >= v.State.Level {
			p.AddNonvoters = append(p.AddNonvoters, ni)
		}
		if v.Alive[id] && !ni.Removed {
			live++
		}
	}
	sort.Slice(p.AddNonvoters, func(i, j int) bool { return p.AddNonvoters[i].ID < p.AddNonvoters[j].ID })
	if voters >= metaVoters || live < metaVoters || len(candidates) == 0 {
		return p
	}
	sort.Slice(candidates, func(i, j int) bool { return candidates[i].ID < candidates[j].ID })
	p.Promote = &candidates[0]
	return p
}
