package node

import (
	"reflect"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/placement"
	"github.com/cairndb/cairn/shard"
)

func gossipNodes(ids ...string) []placement.NodeInfo {
	out := make([]placement.NodeInfo, 0, len(ids))
	for _, id := range ids {
		out = append(out, placement.NodeInfo{ID: id, HTTPAddr: id + ":80", RaftAddr: id + ":70"})
	}
	return out
}

func members(voters []string, nonvoters ...string) []shard.Member {
	var out []shard.Member
	for _, id := range voters {
		out = append(out, shard.Member{ID: id, Address: id + ":70", Voter: true})
	}
	for _, id := range nonvoters {
		out = append(out, shard.Member{ID: id, Address: id + ":70"})
	}
	return out
}

// Cluster formation as a table (scenario S1, invariant I12): exactly one
// node, the lowest id among the first BootstrapExpect that met, bootstraps
// the meta group; only the meta leader writes the range map, on the
// Replication lowest ids of the meta group.
func TestPlanFormation(t *testing.T) {
	cases := []struct {
		name          string
		v             formationView
		wantBootstrap []string
		wantInit      []string
		waiting       bool
	}{
		{name: "no --bootstrap-expect and no membership: waits to be added, and says so",
			v: formationView{Self: "n1", Gossip: gossipNodes("n1")}, waiting: true},
		{name: "too few nodes met: waits",
			v:       formationView{Self: "n1", BootstrapExpect: 3, Gossip: gossipNodes("n1", "n2")},
			waiting: true},
		{name: "enough nodes, lowest id bootstraps the first expected",
			v:             formationView{Self: "n1", BootstrapExpect: 3, Gossip: gossipNodes("n1", "n2", "n3", "n4")},
			wantBootstrap: []string{"n1", "n2", "n3"}},
		{name: "enough nodes, not the lowest id: waits for it",
			v:       formationView{Self: "n2", BootstrapExpect: 3, Gossip: gossipNodes("n1", "n2", "n3")},
			waiting: true},
		{name: "membership known, not the meta leader: waits for the range map",
			v:       formationView{Self: "n2", BootstrapExpect: 3, HasConfig: true},
			waiting: true},
		{name: "meta leader writes the range map on the lowest ids, at most Replication",
			v: formationView{Self: "n2", BootstrapExpect: 5, Replication: 3, HasConfig: true, MetaLeader: true,
				MetaServers: members([]string{"n5", "n2", "n4", "n1", "n3"})},
			wantInit: []string{"n1", "n2", "n3"}},
		{name: "meta leader of a smaller group than Replication uses every member",
			v: formationView{Self: "n1", BootstrapExpect: 1, Replication: 3, HasConfig: true, MetaLeader: true,
				MetaServers: members([]string{"n1"})},
			wantInit: []string{"n1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := planFormation(tc.v)
			var boot []string
			for _, s := range p.Bootstrap {
				boot = append(boot, string(s.ID))
				if want := raft.ServerAddress(string(s.ID) + ":70"); s.Address != want {
					t.Errorf("bootstrap server %s at %s, want its raft address %s", s.ID, s.Address, want)
				}
			}
			if !reflect.DeepEqual(boot, tc.wantBootstrap) {
				t.Errorf("bootstrap %v, want %v", boot, tc.wantBootstrap)
			}
			if !reflect.DeepEqual(p.InitReplicas, tc.wantInit) {
				t.Errorf("init replicas %v, want %v", p.InitReplicas, tc.wantInit)
			}
			if got := p.Waiting != ""; got != tc.waiting {
				t.Errorf("waiting %q, want a reason: %v", p.Waiting, tc.waiting)
			}
		})
	}
}

// Meta membership as a table (invariant I12): addresses registered from
// gossip, registered nodes added as non-voters once formed, and the group
// grown one voter at a time to metaVoters, only from live, non-removed
// non-voters and only when that many nodes are live.
func TestPlanMeta(t *testing.T) {
	registered := func(formed bool, ids ...string) *placement.State {
		st := &placement.State{Nodes: map[string]placement.NodeInfo{}}
		if formed {
			st.ClusterID = "c"
		}
		for _, n := range gossipNodes(ids...) {
			st.Nodes[n.ID] = n
		}
		return st
	}
	alive := func(ids ...string) map[string]bool {
		m := map[string]bool{}
		for _, id := range ids {
			m[id] = true
		}
		return m
	}
	six := []string{"n1", "n2", "n3", "n4", "n5", "n6"}
	removedN4 := registered(true, six...)
	n4 := removedN4.Nodes["n4"]
	n4.Removed = true
	removedN4.Nodes["n4"] = n4
	moved := registered(true, "n1", "n2")
	moved.Nodes["n2"] = placement.NodeInfo{ID: "n2", HTTPAddr: "old:80", RaftAddr: "n2:70"}
	// Levels: gossipNodes advertise level 0; leveled(r) advertises level 2
	// with level r recorded.
	leveled := func(r int, ids ...string) []placement.NodeInfo {
		ns := gossipNodes(ids...)
		for i := range ns {
			ns[i].Level, ns[i].Recorded = 2, r
		}
		return ns
	}
	at := func(level, pending int, nodes ...[]placement.NodeInfo) *placement.State {
		st := registered(true)
		for _, ns := range nodes {
			for _, n := range ns {
				st.Nodes[n.ID] = n
			}
		}
		st.Level, st.Pending = level, pending
		return st
	}
	three := []string{"n1", "n2", "n3"}
	upgraded := registered(true, three...) // registered at level 0
	// n4: registered at level 0 and removed, but still a meta member.
	n4removed := []placement.NodeInfo{{ID: "n4", Removed: true}}
	cases := []struct {
		name         string
		v            metaView
		wantRegister []string
		wantAdd      []string
		wantPromote  string
		wantPrepare  int
		wantRaise    int
		wantRemove   []string
		wantCancel   bool
	}{
		{name: "a removed meta member that holds nothing leaves the meta group",
			v:          metaView{State: at(0, 0, leveled(0, three...), n4removed), Gossip: leveled(0, three...), Alive: alive(three...), Config: members(three, "n4")},
			wantRemove: []string{"n4"}},
		{name: "a removed meta member a range still lists stays",
			v: metaView{State: func() *placement.State {
				st := at(0, 0, leveled(0, three...), n4removed)
				st.Ranges = []fsm.Range{{ID: 1, Replicas: []string{"n1", "n2", "n4"}}}
				return st
			}(), Gossip: leveled(0, three...), Alive: alive(three...), Config: members(three, "n4")}},
		{name: "the leader never removes itself",
			v: metaView{State: at(0, 0, leveled(0, "n2", "n3"), []placement.NodeInfo{{ID: "n1", Removed: true}}), Gossip: leveled(0, "n2", "n3"),
				Alive: alive(three...), Config: members(three), Self: "n1"}},
		{name: "a removed node outside the meta group is not added back",
			v:           metaView{State: at(0, 0, leveled(0, three...), n4removed), Gossip: leveled(0, three...), Alive: alive(three...), Config: members(three)},
			wantPrepare: 2},
		{name: "a node that has not recorded the cluster's level is not added yet",
			v: metaView{State: at(2, 2, leveled(2, three...), leveled(0, "n4")), Gossip: append(leveled(2, three...), leveled(0, "n4")...),
				Alive: alive("n1", "n2", "n3", "n4"), Config: members(three)}},
		{name: "once it has, it is",
			v: metaView{State: at(2, 2, leveled(2, three...), leveled(2, "n4")), Gossip: append(leveled(2, three...), leveled(2, "n4")...),
				Alive: alive("n1", "n2", "n3", "n4"), Config: members(three)},
			wantAdd: []string{"n4"}},
		{name: "a pending level no node is ready for any more is cancelled",
			v: metaView{State: at(0, 2, leveled(2, "n1", "n2"), gossipNodes("n3")), Gossip: append(leveled(2, "n1", "n2"), gossipNodes("n3")...),
				Alive: alive(three...), Config: members(three)},
			wantCancel: true},
		{name: "a changed level is registered again, and nothing prepared until it is",
			v:            metaView{State: upgraded, Gossip: leveled(0, three...), Alive: alive(three...), Config: members(three)},
			wantRegister: three},
		{name: "every node registered at level 2: level 2 is prepared",
			v:           metaView{State: at(0, 0, leveled(0, three...)), Gossip: leveled(0, three...), Alive: alive(three...), Config: members(three)},
			wantPrepare: 2},
		{name: "level 2 pending, one node has not recorded it: wait",
			v: metaView{State: at(0, 2, leveled(2, "n1", "n2"), leveled(0, "n3")), Gossip: append(leveled(2, "n1", "n2"), leveled(0, "n3")...),
				Alive: alive(three...), Config: members(three)}},
		{name: "level 2 pending, every node recorded it: raised",
			v:         metaView{State: at(0, 2, leveled(2, three...)), Gossip: leveled(2, three...), Alive: alive(three...), Config: members(three)},
			wantRaise: 2},
		{name: "a recorded level changed is registered again first",
			v:            metaView{State: at(0, 2, leveled(0, three...)), Gossip: leveled(2, three...), Alive: alive(three...), Config: members(three)},
			wantRegister: three},
		{name: "a registration pending: nothing prepared until it is done",
			v:            metaView{State: at(0, 0, leveled(0, three...)), Gossip: append(leveled(0, three...), gossipNodes("n4")...), Alive: alive("n1", "n2", "n3", "n4"), Config: members(three)},
			wantRegister: []string{"n4"}},
		{name: "a meta member below the level holds it, removed or not (until it leaves)",
			v:          metaView{State: at(0, 0, leveled(0, three...), n4removed), Gossip: leveled(0, three...), Alive: alive(three...), Config: members(three, "n4")},
			wantRemove: []string{"n4"}},
		{name: "a node behind the level is not added to the meta group",
			v: metaView{State: at(2, 2, leveled(2, three...), gossipNodes("n4")), Gossip: append(leveled(2, three...), gossipNodes("n4")...),
				Alive: alive("n1", "n2", "n3", "n4"), Config: members(three)}},
		{name: "already at level 2: nothing to do",
			v: metaView{State: at(2, 2, leveled(2, three...)), Gossip: leveled(2, three...), Alive: alive(three...), Config: members(three)}},
		{name: "not formed: only registers, never changes membership",
			v:            metaView{State: registered(false, "n1"), Gossip: gossipNodes("n1", "n2"), Alive: alive("n1", "n2"), Config: members([]string{"n1"})},
			wantRegister: []string{"n2"}},
		{name: "a changed address is registered again",
			v:            metaView{State: moved, Gossip: gossipNodes("n1", "n2"), Alive: alive("n1", "n2"), Config: members([]string{"n1"}, "n2")},
			wantRegister: []string{"n2"}},
		{name: "registered nodes outside the configuration become non-voters",
			v:       metaView{State: registered(true, "n1", "n2", "n3", "n4"), Gossip: gossipNodes("n1", "n2", "n3", "n4"), Alive: alive("n1", "n2", "n3", "n4"), Config: members([]string{"n1", "n2", "n3"})},
			wantAdd: []string{"n4"}},
		{name: "fewer than five live nodes: three voters stay three",
			v: metaView{State: registered(true, "n1", "n2", "n3", "n4"), Gossip: gossipNodes("n1", "n2", "n3", "n4"), Alive: alive("n1", "n2", "n3", "n4"),
				Config: members([]string{"n1", "n2", "n3"}, "n4")}},
		{name: "five live nodes: the lowest live non-voter is promoted",
			v: metaView{State: registered(true, six...), Gossip: gossipNodes(six...), Alive: alive(six...),
				Config: members([]string{"n1", "n2", "n3"}, "n6", "n4", "n5")},
			wantPromote: "n4"},
		{name: "a removed non-voter is never promoted",
			v: metaView{State: removedN4, Gossip: gossipNodes(six...), Alive: alive(six...),
				Config: members([]string{"n1", "n2", "n3"}, "n4", "n5", "n6")},
			wantPromote: "n5", wantRemove: []string{"n4"}},
		{name: "a dead non-voter is never promoted",
			v: metaView{State: registered(true, six...), Gossip: gossipNodes(six...), Alive: alive("n1", "n2", "n3", "n5", "n6"),
				Config: members([]string{"n1", "n2", "n3"}, "n4", "n5", "n6")},
			wantPromote: "n5"},
		{name: "five voters: no more",
			v: metaView{State: registered(true, six...), Gossip: gossipNodes(six...), Alive: alive(six...),
				Config: members([]string{"n1", "n2", "n3", "n4", "n5"}, "n6")}},
		{name: "five live nodes counted without removed ones",
			v: metaView{State: removedN4, Gossip: gossipNodes(six...), Alive: alive("n1", "n2", "n3", "n4", "n5"),
				Config: members([]string{"n1", "n2", "n3"}, "n4", "n5", "n6")},
			wantRemove: []string{"n4"}},
	}
	ids := func(ns []placement.NodeInfo) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n.ID)
		}
		return out
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := planMeta(tc.v)
			if got := ids(p.Register); !reflect.DeepEqual(got, tc.wantRegister) {
				t.Errorf("register %v, want %v", got, tc.wantRegister)
			}
			if got := ids(p.AddNonvoters); !reflect.DeepEqual(got, tc.wantAdd) {
				t.Errorf("add non-voters %v, want %v", got, tc.wantAdd)
			}
			got := ""
			if p.Promote != nil {
				got = p.Promote.ID
			}
			if got != tc.wantPromote {
				t.Errorf("promote %q, want %q", got, tc.wantPromote)
			}
			if !reflect.DeepEqual(p.RemoveMembers, tc.wantRemove) || p.CancelPending != tc.wantCancel {
				t.Errorf("remove members %v, cancel pending %v; want %v, %v", p.RemoveMembers, p.CancelPending, tc.wantRemove, tc.wantCancel)
			}
			if p.PrepareLevel != tc.wantPrepare || p.RaiseLevel != tc.wantRaise {
				t.Errorf("prepare level %d, raise level %d; want %d, %d", p.PrepareLevel, p.RaiseLevel, tc.wantPrepare, tc.wantRaise)
			}
		})
	}
}
