package placement

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// Schedule decides what to do next: at most cfg.MaxOps operations, at most one
// per range, none for a Busy range. Rules, in priority order:
//
//  1. Repair: a replica on a removed, unregistered or dead node (down for at
//     least DeadAfter) is moved to a live node; an under-replicated range gets
//     a replica added; an over-replicated range loses one (never the leader's,
//     preferring replicas on dead, then draining, then the most loaded nodes).
//  2. Drain: leadership on a draining node is transferred to another replica
//     (the range's preferred leader when it is eligible), then replicas on
//     draining nodes are moved off.
//     2b. Preference: a range whose PreferredLeader (an operator's
//     transfer-leader) is an eligible replica but not the leader gets its
//     leadership moved back there.
//  3. Split: ranges over SplitSize or SplitWriteRate are split at their middle.
//  4. Replica balance: replicas move from the fullest to the emptiest eligible
//     node until every eligible node is within one of the mean.
//  5. Leader balance: leadership moves between replicas of a range until every
//     eligible node leads within one of the mean.
//
// The balance rules never move leadership off a range's preferred leader, nor
// that node's replica of the range, while the node is eligible: an operator's
// placement sticks until the node fails, drains or is removed, or the
// operator places the range elsewhere.
//
// A node is eligible (a target for replicas and leadership, and counted by the
// balance rules) when it is alive, answering (not Unresponsive), not draining
// and not removed. A node that is down for less than DeadAfter, or alive but
// Unresponsive, is left alone: its replicas are neither repaired nor balanced,
// it receives nothing, and ranges with a replica on it are not moved for
// balance, so a restart does not cost a snapshot, a failure does not cost two
// moves, and a node that died a moment ago (before gossip says so) is never
// chosen as the emptiest target.
//
// Schedule is pure and deterministic: it reads no clock and no randomness, does
// not modify view, and its output does not depend on the order of view.Nodes,
// view.Ranges or a range's Replicas (node and range ids are assumed unique, and
// a range's replicas distinct, as the meta group guarantees). Ties are broken
// by node id, then range id. Each balance decision accounts for the operations
// chosen before it in the same call, but not for operations still in flight
// from earlier calls: the controller marks those ranges Busy.
//
// A zero or negative field of cfg is taken from DefaultSchedulerConfig.
func Schedule(cfg SchedulerConfig, view ClusterView) []Operation {
	p := newSchedPlan(cfg.withDefaults(), view)
	p.repair()
	p.drain()
	p.prefer()
	p.split()
	p.balanceReplicas()
	p.balanceLeaders()
	return p.ops
}

// Validate reports the first field of c that Schedule would replace by its
// default.
func (c SchedulerConfig) Validate() error {
	switch {
	case c.Replication < 1:
		return fmt.Errorf("placement: scheduler replication %d, want >= 1", c.Replication)
	case c.SplitSize <= 0:
		return fmt.Errorf("placement: scheduler split size %d, want > 0", c.SplitSize)
	case c.SplitWriteRate <= 0:
		return fmt.Errorf("placement: scheduler split write rate %g, want > 0", c.SplitWriteRate)
	case c.DeadAfter <= 0:
		return fmt.Errorf("placement: scheduler dead-after %s, want > 0", c.DeadAfter)
	case c.MaxOps < 1:
		return fmt.Errorf("placement: scheduler max ops %d, want >= 1", c.MaxOps)
	}
	return nil
}

func (c SchedulerConfig) withDefaults() SchedulerConfig {
	d := DefaultSchedulerConfig()
	if c.Replication < 1 {
		c.Replication = d.Replication
	}
	if c.SplitSize <= 0 {
		c.SplitSize = d.SplitSize
	}
	if c.SplitWriteRate <= 0 {
		c.SplitWriteRate = d.SplitWriteRate
	}
	if c.DeadAfter <= 0 {
		c.DeadAfter = d.DeadAfter
	}
	if c.MaxOps < 1 {
		c.MaxOps = d.MaxOps
	}
	return c
}

// schedHealth classifies a node; the order is the order in which replicas are
// given up (lowest first).
type schedHealth uint8

const (
	healthGone    schedHealth = iota // removed by the operator, or not registered
	healthDead                       // down for at least DeadAfter
	healthSuspect                    // down for less than DeadAfter, or unresponsive
	healthUp
)

// schedNode is a node with the counts projected by the operations chosen so far.
type schedNode struct {
	id       string
	health   schedHealth
	draining bool
	downFor  time.Duration
	replicas int
	leaders  int
}

// eligible reports whether the node may receive replicas and leadership.
func (n *schedNode) eligible() bool { return n.health == healthUp && !n.draining }

// schedRange is what the plan keeps per range, kept small: one Schedule call
// may look at hundreds of thousands.
type schedRange struct {
	off    int32 // the range's replicas are repIdx[off:next range's off]
	leader int32 // node index of the leader; noNode when unknown or not a replica
	// pref is the node index of the range's preferred leader while that node
	// is an eligible replica; noNode otherwise (no preference, or void).
	pref int32
	busy bool
	used bool // the range has an operation in this call
	// balanceable: not busy, fully replicated, every replica on an eligible
	// node, not due to split.
	balanceable bool
}

// noNode is the node index of a replica on a node absent from view.Nodes.
const noNode = -1

// schedPlan is the state of one Schedule call. Ranges and nodes are referred to
// by their index in the view; indices are identities only, never an order.
type schedPlan struct {
	cfg    SchedulerConfig
	view   ClusterView
	nodes  []schedNode
	byID   map[string]int32
	ranges []schedRange // per view.Ranges[i], and one past the end for its off
	repIdx []int32      // node index per replica, or noNode

	repairCands, drainCands, splitCands, prefCands []int32

	// Built on first use by the balance rules.
	nodeRanges [][]int32 // ranges with a replica on node
	nodeLeads  [][]int32 // ranges led by node

	eligibleIdxs []int32 // nodes that may receive replicas and leadership

	ops []Operation
}

func newSchedPlan(cfg SchedulerConfig, view ClusterView) *schedPlan {
	p := &schedPlan{
		cfg:    cfg,
		view:   view,
		nodes:  make([]schedNode, len(view.Nodes)),
		byID:   make(map[string]int32, len(view.Nodes)),
		ranges: make([]schedRange, len(view.Ranges)+1),
		repIdx: make([]int32, 0, len(view.Ranges)*cfg.Replication),
	}
	for i, n := range view.Nodes {
		sn := schedNode{id: n.ID, draining: n.Draining, downFor: n.DownFor, health: healthUp}
		switch {
		case n.Removed:
			sn.health = healthGone
		case !n.Alive && n.DownFor >= cfg.DeadAfter:
			sn.health = healthDead
		case !n.Alive, n.Unresponsive:
			sn.health = healthSuspect
		}
		p.nodes[i] = sn
		p.byID[n.ID] = int32(i)
		if sn.eligible() {
			p.eligibleIdxs = append(p.eligibleIdxs, int32(i))
		}
	}
	for i := range view.Ranges {
		p.scan(i)
	}
	p.ranges[len(view.Ranges)].off = int32(len(p.repIdx))
	return p
}

// scan records range i's replicas and counts and files it under the rules that
// may apply to it.
func (p *schedPlan) scan(i int) {
	r, sr := &p.view.Ranges[i], &p.ranges[i]
	sr.off, sr.leader, sr.pref, sr.busy = int32(len(p.repIdx)), noNode, noNode, r.Busy
	lost, draining, eligible := false, false, 0
	for _, id := range r.Replicas {
		ni, ok := p.byID[id]
		if !ok {
			ni = noNode
		}
		p.repIdx = append(p.repIdx, ni)
		if ni == noNode {
			lost = true
			continue
		}
		n := &p.nodes[ni]
		n.replicas++
		if id == r.Leader {
			sr.leader = ni
			n.leaders++
		}
		if id == r.PreferredLeader && n.eligible() {
			sr.pref = ni
		}
		switch {
		case n.health <= healthDead:
			lost = true
		case n.draining:
			draining = true
		case n.health == healthUp:
			eligible++
		}
	}
	if r.Busy {
		return
	}
	n := len(r.Replicas)
	splitting := p.splitScore(r) > 1
	// A range due to split is not moved for balance: it is the costliest to
	// move, and its halves will count twice.
	sr.balanceable = n == p.cfg.Replication && eligible == n && !splitting
	switch {
	case lost || n != p.cfg.Replication:
		p.repairCands = append(p.repairCands, int32(i))
	case draining:
		p.drainCands = append(p.drainCands, int32(i))
	}
	if splitting {
		p.splitCands = append(p.splitCands, int32(i))
	}
	if sr.pref != noNode && sr.leader != noNode && sr.leader != sr.pref {
		p.prefCands = append(p.prefCands, int32(i))
	}
}

func (p *schedPlan) full() bool { return len(p.ops) >= p.cfg.MaxOps }

func (p *schedPlan) replicas(ri int32) []int32 {
	return p.repIdx[p.ranges[ri].off:p.ranges[ri+1].off]
}

func (p *schedPlan) holds(ri, ni int32) bool { return slices.Contains(p.replicas(ri), ni) }

// replicaID is the id of the j-th replica of range ri, known or not.
func (p *schedPlan) replicaID(ri int32, j int) string { return p.view.Ranges[ri].Replicas[j] }

// emit records op for range ri and projects its effect on the node counts.
func (p *schedPlan) emit(ri int32, kind OpKind, from, to int32, reason string) {
	r := &p.view.Ranges[ri]
	op := Operation{Kind: kind, RangeID: r.ID, Epoch: r.Epoch, Reason: reason}
	if from != noNode {
		op.From = p.nodes[from].id
	}
	if to != noNode {
		op.To = p.nodes[to].id
	}
	switch kind {
	case OpMoveReplica:
		if from != noNode {
			p.nodes[from].replicas--
		}
		p.nodes[to].replicas++
	case OpAddReplica:
		p.nodes[to].replicas++
	case OpRemoveReplica:
		if from != noNode {
			p.nodes[from].replicas--
		}
	case OpTransferLeader:
		p.nodes[from].leaders--
		p.nodes[to].leaders++
	}
	if (kind == OpMoveReplica || kind == OpRemoveReplica) && from != noNode && from == p.ranges[ri].leader {
		// Leadership lands wherever the group elects; count it nowhere.
		p.nodes[from].leaders--
	}
	p.ranges[ri].used = true
	p.ops = append(p.ops, op)
}

// bestTarget is the eligible node not holding range ri with the fewest
// replicas, ties broken by id; noNode when there is none.
func (p *schedPlan) bestTarget(ri int32) int32 {
	best := int32(noNode)
	for ni := range p.nodes {
		n := &p.nodes[ni]
		if !n.eligible() || p.holds(ri, int32(ni)) {
			continue
		}
		if best == noNode || n.replicas < p.nodes[best].replicas ||
			n.replicas == p.nodes[best].replicas && n.id < p.nodes[best].id {
			best = int32(ni)
		}
	}
	return best
}

// sortRanges orders range indices by range id (unique), so the order of
// view.Ranges never shows in the output.
func (p *schedPlan) sortRanges(rs []int32, key func(ri int32) int) {
	slices.SortFunc(rs, func(a, b int32) int {
		if c := cmp.Compare(key(a), key(b)); c != 0 {
			return c
		}
		return cmp.Compare(p.view.Ranges[a].ID, p.view.Ranges[b].ID)
	})
}

// replicaHealth is the health of the j-th replica of range ri.
func (p *schedPlan) replicaHealth(ri int32, j int) schedHealth {
	ni := p.replicas(ri)[j]
	if ni == noNode {
		return healthGone
	}
	return p.nodes[ni].health
}

// repair handles ranges with lost replicas or the wrong number of them. The
// ranges with the fewest replicas on live nodes go first: they are closest to
// losing quorum.
func (p *schedPlan) repair() {
	live := func(ri int32) int {
		k := 0
		for j := range p.replicas(ri) {
			if p.replicaHealth(ri, j) >= healthSuspect {
				k++
			}
		}
		return k
	}
	p.sortRanges(p.repairCands, live)
	for _, ri := range p.repairCands {
		if p.full() {
			return
		}
		r := &p.view.Ranges[ri]
		switch n := len(r.Replicas); {
		case n > p.cfg.Replication:
			p.removeExtra(ri)
		case n < p.cfg.Replication:
			if to := p.bestTarget(ri); to != noNode {
				p.emit(ri, OpAddReplica, noNode, to,
					fmt.Sprintf("%d replicas < replication %d", n, p.cfg.Replication))
			}
		default:
			p.replaceLost(ri)
		}
	}
}

// replaceLost moves the first lost replica of range ri (gone before dead, then
// by node id) to the best target.
func (p *schedPlan) replaceLost(ri int32) {
	pick := -1
	for j := range p.replicas(ri) {
		h := p.replicaHealth(ri, j)
		if h > healthDead {
			continue
		}
		if pick < 0 || h < p.replicaHealth(ri, pick) ||
			h == p.replicaHealth(ri, pick) && p.replicaID(ri, j) < p.replicaID(ri, pick) {
			pick = j
		}
	}
	if pick < 0 {
		return
	}
	to := p.bestTarget(ri)
	if to == noNode {
		return
	}
	from := p.replicas(ri)[pick]
	p.emit(ri, OpMoveReplica, from, to, p.lostReason(ri, pick))
	if from == noNode {
		// The node is not registered: keep its id on the operation.
		p.ops[len(p.ops)-1].From = p.replicaID(ri, pick)
	}
}

func (p *schedPlan) lostReason(ri int32, j int) string {
	id := p.replicaID(ri, j)
	ni := p.replicas(ri)[j]
	switch {
	case ni == noNode:
		return fmt.Sprintf("node %s not registered", id)
	case p.nodes[ni].health == healthGone:
		return fmt.Sprintf("node %s removed", id)
	default:
		return fmt.Sprintf("node %s dead for %s", id, p.nodes[ni].downFor.Round(time.Second))
	}
}

// removeExtra removes one replica of an over-replicated range: never the
// leader's; lost replicas first, then draining, then down, then the one on the
// node with the most replicas, ties by node id.
func (p *schedPlan) removeExtra(ri int32) {
	rank := func(j int) (int, int) {
		ni := p.replicas(ri)[j]
		if ni == noNode {
			return 0, 0
		}
		n := &p.nodes[ni]
		switch {
		case n.health <= healthDead:
			return 0, -n.replicas
		case n.draining:
			return 1, -n.replicas
		case n.health == healthSuspect:
			return 2, -n.replicas
		}
		return 3, -n.replicas
	}
	pick := -1
	for j := range p.replicas(ri) {
		if p.replicaID(ri, j) == p.view.Ranges[ri].Leader {
			continue
		}
		if pick < 0 {
			pick = j
			continue
		}
		c1, l1 := rank(j)
		c2, l2 := rank(pick)
		if c1 < c2 || c1 == c2 && (l1 < l2 || l1 == l2 && p.replicaID(ri, j) < p.replicaID(ri, pick)) {
			pick = j
		}
	}
	if pick < 0 {
		return
	}
	from := p.replicas(ri)[pick]
	reason := fmt.Sprintf("%d replicas > replication %d", len(p.replicas(ri)), p.cfg.Replication)
	p.emit(ri, OpRemoveReplica, from, noNode, reason)
	if from == noNode {
		p.ops[len(p.ops)-1].From = p.replicaID(ri, pick)
	}
}

// drain moves leadership, then replicas, off draining nodes, range by range in
// id order.
func (p *schedPlan) drain() {
	p.sortRanges(p.drainCands, func(int32) int { return 0 })
	for _, ri := range p.drainCands {
		if p.full() {
			return
		}
		if l := p.ranges[ri].leader; l != noNode && p.nodes[l].draining {
			to := p.ranges[ri].pref
			if to == noNode {
				to = p.leastLeading(ri, l)
			}
			if to != noNode {
				p.emit(ri, OpTransferLeader, l, to, fmt.Sprintf("node %s draining", p.nodes[l].id))
				continue
			}
		}
		// Followers before the leader, then by id.
		from := int32(noNode)
		for _, ni := range p.replicas(ri) {
			if ni == noNode || !p.nodes[ni].draining {
				continue
			}
			if from == noNode {
				from = ni
				continue
			}
			isLeader, fromLeader := ni == p.ranges[ri].leader, from == p.ranges[ri].leader
			if isLeader != fromLeader {
				if fromLeader {
					from = ni
				}
			} else if p.nodes[ni].id < p.nodes[from].id {
				from = ni
			}
		}
		if from == noNode {
			continue
		}
		if to := p.bestTarget(ri); to != noNode {
			p.emit(ri, OpMoveReplica, from, to, fmt.Sprintf("node %s draining", p.nodes[from].id))
		}
	}
}

// prefer moves leadership back to ranges' preferred leaders, range by range
// in id order. A leader that is itself unhealthy is left to the election the
// group is about to hold.
func (p *schedPlan) prefer() {
	p.sortRanges(p.prefCands, func(int32) int { return 0 })
	for _, ri := range p.prefCands {
		if p.full() {
			return
		}
		sr := &p.ranges[ri]
		if sr.used || p.nodes[sr.leader].health != healthUp {
			continue
		}
		p.emit(ri, OpTransferLeader, sr.leader, sr.pref,
			fmt.Sprintf("operator placed the leader on %s", p.nodes[sr.pref].id))
	}
}

// leastLeading is the eligible replica of range ri other than not with the
// fewest leaders, ties by id; noNode when there is none.
func (p *schedPlan) leastLeading(ri, not int32) int32 {
	best := int32(noNode)
	for _, ni := range p.replicas(ri) {
		if ni == noNode || ni == not || !p.nodes[ni].eligible() {
			continue
		}
		if best == noNode || p.nodes[ni].leaders < p.nodes[best].leaders ||
			p.nodes[ni].leaders == p.nodes[best].leaders && p.nodes[ni].id < p.nodes[best].id {
			best = ni
		}
	}
	return best
}

// splitScore is how far over its thresholds a range is; above 1 means split.
func (p *schedPlan) splitScore(r *RangeView) float64 {
	return max(float64(r.SizeBytes)/float64(p.cfg.SplitSize), r.WriteBytes/p.cfg.SplitWriteRate)
}

// split splits the ranges furthest over their thresholds first.
func (p *schedPlan) split() {
	slices.SortFunc(p.splitCands, func(a, b int32) int {
		ra, rb := &p.view.Ranges[a], &p.view.Ranges[b]
		if c := cmp.Compare(p.splitScore(rb), p.splitScore(ra)); c != 0 {
			return c
		}
		return cmp.Compare(ra.ID, rb.ID)
	})
	for _, ri := range p.splitCands {
		if p.full() {
			return
		}
		if p.ranges[ri].used {
			continue
		}
		r := &p.view.Ranges[ri]
		var reason string
		if r.SizeBytes > p.cfg.SplitSize {
			reason = fmt.Sprintf("size %s > %s", humanBytes(float64(r.SizeBytes)), humanBytes(float64(p.cfg.SplitSize)))
		} else {
			reason = fmt.Sprintf("writes %s/s > %s/s", humanBytes(r.WriteBytes), humanBytes(p.cfg.SplitWriteRate))
		}
		p.emit(ri, OpSplitRange, noNode, noNode, reason)
	}
}

// humanBytes formats n bytes in binary units: "512B", "64MiB", "1.5GiB".
func humanBytes(n float64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return fmt.Sprintf("%.0fB", n)
	}
	i := -1
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if n == float64(int64(n)) {
		return fmt.Sprintf("%.0f%ciB", n, units[i])
	}
	return fmt.Sprintf("%.1f%ciB", n, units[i])
}
