package node

import (
	"fmt"
	"slices"
	"sort"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/placement"
)

// Reconciling this node's replicas with the range map is a pure decision,
// planReplicas, from what the node knows to which replicas to open and
// which to remove; node.go gathers the inputs and carries the plan out.
//
// Deleting a replica deletes its raft log and vote. Doing that to a voter
// lets it vote twice in a term and can make a committed write vanish
// (invariant I1), so a replica is removed only when all of these hold:
//   - the local range map does not want it here and knows the range at an
//     epoch at least the replica's own (the cheap pre-filter it always had);
//   - a linearizable read of the range from the meta leader agrees (the local
//     meta copy may be an old snapshot being replayed after a restart), and
//     no operation in progress moves the range here;
//   - the replica's own latest raft configuration (uncommitted entries
//     included) does not list this node as a voter;
//   - the shard leader's committed configuration does not either: removal
//     follows the committed configuration change that removed it.
//
// A voter that was down while it was removed never receives the change, so
// its own configuration keeps listing it: it is kept (a leftover, never a
// lost vote). An applied range epoch is no evidence either way: a state
// machine rebuilt after a machine crash starts from an older descriptor
// than its log.

// membership is this node's place in a raft configuration.
type membership int

const (
	memberUnknown  membership = iota // configuration not known or not committed
	memberVoter                      // listed as a voter
	memberNonVoter                   // listed as a non-voter (learner)
	memberAbsent                     // not listed
)

func (m membership) String() string {
	return [...]string{"unknown", "voter", "non-voter", "absent"}[m]
}

// membershipIn returns self's place in conf.
func membershipIn(conf raft.Configuration, self string) membership {
	for _, s := range conf.Servers {
		if string(s.ID) == self {
			if s.Suffrage == raft.Voter {
				return memberVoter
			}
			return memberNonVoter
		}
	}
	return memberAbsent
}

// removedIn reports whether a configuration is known and does not count
// this node as a voter.
func removedIn(m membership) bool { return m == memberAbsent || m == memberNonVoter }

// localReplica is one replica running on this node, as the plan sees it.
type localReplica struct {
	ID    uint64
	Epoch uint64 // the epoch of the range the replica has applied
	// Config is this node's place in the replica's own latest raft
	// configuration (raft.GetConfiguration, uncommitted entries included);
	// memberUnknown when it cannot be read.
	Config membership
}

// authority is what linearizable reads say about one range: the meta
// leader's range map (after a barrier) and the shard leader's committed
// configuration.
type authority struct {
	Found    bool // the meta leader knows the range
	Epoch    uint64
	Replicas []string
	OpTo     string // target of an operation in progress, "" when none
	// Shard is this node's place in the shard leader's committed
	// configuration; memberUnknown when not known.
	Shard membership
}

// opening is one replica to open.
type opening struct {
	desc    fsm.Range
	servers []raft.Server // bootstrap configuration, formation members only
}

// replicaPlan is what reconcile does.
type replicaPlan struct {
	Open []opening
	// Remove are replicas proven removable (see the top of this file).
	Remove []uint64
	// Verify are replicas the local map no longer wants here but whose
	// removal needs the linearizable reads first (no authority given).
	Verify []uint64
	// Keep explains, per replica the local map does not want, why it stays.
	Keep map[uint64]string
}

// planReplicas decides which replicas to open (every range that lists self,
// or that an operation is moving to self, not yet open) and which to remove,
// from the local meta state st, the replicas running here and, for removal
// candidates, the authoritative reads in auth (nil entries: not read yet).
func planReplicas(self string, st *placement.State, local []localReplica, auth map[uint64]authority) (replicaPlan, error) {
	plan := replicaPlan{Keep: map[uint64]string{}}
	running := make(map[uint64]localReplica, len(local))
	for _, r := range local {
		running[r.ID] = r
	}
	want := map[uint64]bool{}
	for _, r := range st.Ranges {
		op, hasOp := st.Ops[r.ID]
		if !slices.Contains(r.Replicas, self) && !(hasOp && op.To == self) {
			continue
		}
		want[r.ID] = true
		if _, ok := running[r.ID]; ok {
			continue
		}
		initial := r
		if g, ok := st.Genesis[r.ID]; ok {
			initial = g // a joiner may replay the log from index 1: start where the first replicas did
		}
		var servers []raft.Server
		if r.Epoch == 1 && slices.Contains(r.Replicas, self) { // a formation member, not a joiner
			for _, id := range r.Replicas {
				ni, ok := st.Nodes[id]
				if !ok {
					return replicaPlan{}, fmt.Errorf("range %d: replica node %s not registered yet", r.ID, id)
				}
				servers = append(servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(ni.RaftAddr)})
			}
		}
		plan.Open = append(plan.Open, opening{initial, servers})
	}
	ids := make([]uint64, 0, len(local))
	for id := range running {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		if want[id] {
			continue
		}
		rep := running[id]
		mr, ok := st.Range(id)
		if !ok || mr.Epoch < rep.Epoch {
			// The local map lags the replica (just restarted): it may
			// have been given the replica recently.
			plan.Keep[id] = "local range map older than the replica"
			continue
		}
		if !removedIn(rep.Config) {
			// Checked before any read: a voter left over after a removal
			// it never received stays for good, and must not cost a meta
			// barrier on every pass.
			plan.Keep[id] = fmt.Sprintf("its own latest configuration lists this node as %s", rep.Config)
			continue
		}
		a, ok := auth[id]
		if !ok {
			plan.Verify = append(plan.Verify, id)
			plan.Keep[id] = "awaiting a linearizable read of the range map"
			continue
		}
		switch {
		case !a.Found || a.Epoch < rep.Epoch:
			plan.Keep[id] = "meta leader's map does not know the range at the replica's epoch"
			continue
		case slices.Contains(a.Replicas, self) || a.OpTo == self:
			plan.Keep[id] = "meta leader's map still assigns the range here"
			continue
		}
		if !removedIn(a.Shard) {
			plan.Keep[id] = fmt.Sprintf("the shard leader's committed configuration lists this node as %s", a.Shard)
			continue
		}
		delete(plan.Keep, id)
		plan.Remove = append(plan.Remove, id)
	}
	return plan, nil
}
