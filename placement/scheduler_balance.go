package placement

import (
	"cmp"
	"fmt"
	"slices"
)

// The balance rules move one replica (or one leadership) at a time from the
// node with the most to the node with the fewest, and stop when the two differ
// by at most one: every eligible node is then within one of the mean (floor or
// ceiling), which is also why a balanced cluster gets no operation at all.
// Each step lowers the sum of squared counts, so a call and a sequence of calls
// converge; moving from the fullest to the emptiest never moves a replica twice
// when nothing else changes, so the number of moves is the minimum needed.

// buildIndexes lists, per node, the ranges it holds and leads. Only the
// balance rules need them, and only when there is budget left and something
// to balance, so neither a busy repair round nor a balanced cluster pays for
// them.
func (p *schedPlan) buildIndexes() {
	if p.nodeRanges != nil {
		return
	}
	held := make([]int32, len(p.nodes))
	led := make([]int32, len(p.nodes))
	for ri := range p.view.Ranges {
		for _, ni := range p.replicas(int32(ri)) {
			if ni != noNode {
				held[ni]++
			}
		}
		if l := p.ranges[ri].leader; l != noNode {
			led[l]++
		}
	}
	// One backing array each, cut per node, to keep this to four allocations.
	var nh, nl int32
	for ni := range p.nodes {
		nh += held[ni]
		nl += led[ni]
	}
	heldAll, ledAll := make([]int32, 0, nh), make([]int32, 0, nl)
	p.nodeRanges = make([][]int32, len(p.nodes))
	p.nodeLeads = make([][]int32, len(p.nodes))
	for ni := range p.nodes {
		p.nodeRanges[ni] = heldAll[len(heldAll) : len(heldAll) : len(heldAll)+int(held[ni])]
		heldAll = heldAll[:len(heldAll)+int(held[ni])]
		p.nodeLeads[ni] = ledAll[len(ledAll) : len(ledAll) : len(ledAll)+int(led[ni])]
		ledAll = ledAll[:len(ledAll)+int(led[ni])]
	}
	for ri := range p.view.Ranges {
		for _, ni := range p.replicas(int32(ri)) {
			if ni != noNode {
				p.nodeRanges[ni] = append(p.nodeRanges[ni], int32(ri))
			}
		}
		if l := p.ranges[ri].leader; l != noNode {
			p.nodeLeads[l] = append(p.nodeLeads[l], int32(ri))
		}
	}
}

// spread is the difference between the highest and the lowest count among
// the eligible nodes; 0 when there are fewer than two.
func (p *schedPlan) spread(count func(*schedNode) int) int {
	if len(p.eligibleIdxs) < 2 {
		return 0
	}
	lo, hi := count(&p.nodes[p.eligibleIdxs[0]]), count(&p.nodes[p.eligibleIdxs[0]])
	for _, ni := range p.eligibleIdxs[1:] {
		lo, hi = min(lo, count(&p.nodes[ni])), max(hi, count(&p.nodes[ni]))
	}
	return hi - lo
}

// sortNodes orders the eligible nodes by count, descending or ascending, ties
// by id.
func (p *schedPlan) sortNodes(desc bool, count func(*schedNode) int) []int32 {
	ns := slices.Clone(p.eligibleIdxs)
	slices.SortFunc(ns, func(a, b int32) int {
		ca, cb := count(&p.nodes[a]), count(&p.nodes[b])
		if desc {
			ca, cb = cb, ca
		}
		if c := cmp.Compare(ca, cb); c != 0 {
			return c
		}
		return cmp.Compare(p.nodes[a].id, p.nodes[b].id)
	})
	return ns
}

func replicaCount(n *schedNode) int { return n.replicas }
func leaderCount(n *schedNode) int  { return n.leaders }

// balanceReplicas is rule 4.
func (p *schedPlan) balanceReplicas() {
	if p.full() || p.spread(replicaCount) < 2 {
		return
	}
	p.buildIndexes()
	for !p.full() && p.balanceReplicaOnce() {
	}
}

// balanceReplicaOnce emits one move from the fullest node that has a movable
// range to the emptiest node that can take it, and reports whether it did.
func (p *schedPlan) balanceReplicaOnce() bool {
	// Almost always the fullest node has a range the emptiest lacks: try that
	// pair before sorting.
	s, d := p.extremes(replicaCount)
	if p.nodes[s].replicas-p.nodes[d].replicas < 2 {
		return false
	}
	if ri := p.pickMovable(s, d); ri != noNode {
		p.emit(ri, OpMoveReplica, s, d, p.balanceReason("replicas", s, d, replicaCount))
		return true
	}
	srcs := p.sortNodes(true, replicaCount)
	dsts := p.sortNodes(false, replicaCount)
	for _, s := range srcs {
		if p.pickMovable(s, noNode) == noNode {
			continue // all busy or unhealthy: no need to try every target
		}
		for _, d := range dsts {
			if p.nodes[s].replicas-p.nodes[d].replicas < 2 {
				break
			}
			if ri := p.pickMovable(s, d); ri != noNode {
				p.emit(ri, OpMoveReplica, s, d, p.balanceReason("replicas", s, d, replicaCount))
				return true
			}
		}
	}
	return false
}

// extremes are the eligible nodes with the highest and the lowest count, ties
// broken by id: the first of sortNodes(true) and of sortNodes(false).
func (p *schedPlan) extremes(count func(*schedNode) int) (hi, lo int32) {
	hi, lo = p.eligibleIdxs[0], p.eligibleIdxs[0]
	for _, ni := range p.eligibleIdxs[1:] {
		n, c := &p.nodes[ni], count(&p.nodes[ni])
		if ch := count(&p.nodes[hi]); c > ch || c == ch && n.id < p.nodes[hi].id {
			hi = ni
		}
		if cl := count(&p.nodes[lo]); c < cl || c == cl && n.id < p.nodes[lo].id {
			lo = ni
		}
	}
	return hi, lo
}

// pickMovable is the range to move from node s to node d: balanceable, not
// yet used, not on d and not the range's preferred leader's replica on s;
// followers before leaders (no leadership transfer
// needed), then the smallest (cheapest snapshot), then the lowest id. With d
// noNode it is the range s would move to a node holding none of them.
func (p *schedPlan) pickMovable(s, d int32) int32 {
	best := int32(noNode)
	var bestLeads bool
	for _, ri := range p.nodeRanges[s] {
		if !p.ranges[ri].balanceable || p.ranges[ri].used || p.holds(ri, d) || p.ranges[ri].pref == s {
			continue
		}
		leads := p.ranges[ri].leader == s
		if best == noNode || !leads && bestLeads || leads == bestLeads && p.lessBySize(ri, best) {
			best, bestLeads = ri, leads
		}
	}
	return best
}

func (p *schedPlan) lessBySize(a, b int32) bool {
	ra, rb := &p.view.Ranges[a], &p.view.Ranges[b]
	return ra.SizeBytes < rb.SizeBytes || ra.SizeBytes == rb.SizeBytes && ra.ID < rb.ID
}

func (p *schedPlan) balanceReason(what string, s, d int32, count func(*schedNode) int) string {
	total := 0
	for _, ni := range p.eligibleIdxs {
		total += count(&p.nodes[ni])
	}
	mean := float64(total) / float64(len(p.eligibleIdxs))
	return fmt.Sprintf("balance %s: %s has %d, %s has %d, mean %.1f",
		what, p.nodes[s].id, count(&p.nodes[s]), p.nodes[d].id, count(&p.nodes[d]), mean)
}

// balanceLeaders is rule 5.
func (p *schedPlan) balanceLeaders() {
	if p.full() || p.spread(leaderCount) < 2 {
		return
	}
	p.buildIndexes()
	for !p.full() && p.balanceLeaderOnce() {
	}
}

// balanceLeaderOnce transfers one leadership from the node leading the most
// that can shed one, to the replica of one of its ranges leading the fewest,
// and reports whether it did.
func (p *schedPlan) balanceLeaderOnce() bool {
	s, lo := p.extremes(leaderCount)
	least := p.nodes[lo].leaders
	if p.nodes[s].leaders-least < 2 {
		return false
	}
	if p.transferFrom(s) {
		return true
	}
	for _, s := range p.sortNodes(true, leaderCount) {
		if p.nodes[s].leaders-least < 2 {
			return false
		}
		if p.transferFrom(s) {
			return true
		}
	}
	return false
}

// transferFrom emits the best leadership transfer away from node s, if any:
// to the replica leading the fewest (by at least two fewer than s), ties by
// node id, then range id.
func (p *schedPlan) transferFrom(s int32) bool {
	bestR, bestD := int32(noNode), int32(noNode)
	for _, ri := range p.nodeLeads[s] {
		if p.ranges[ri].busy || p.ranges[ri].used || p.ranges[ri].pref != noNode {
			continue // an operator's placement is not balanced away
		}
		d := p.leastLeading(ri, s)
		if d == noNode || p.nodes[s].leaders-p.nodes[d].leaders < 2 {
			continue
		}
		if bestD == noNode || p.nodes[d].leaders < p.nodes[bestD].leaders ||
			d == bestD && p.view.Ranges[ri].ID < p.view.Ranges[bestR].ID ||
			d != bestD && p.nodes[d].leaders == p.nodes[bestD].leaders && p.nodes[d].id < p.nodes[bestD].id {
			bestR, bestD = ri, d
		}
	}
	if bestR == noNode {
		return false
	}
	p.emit(bestR, OpTransferLeader, s, bestD, p.balanceReason("leaders", s, bestD, leaderCount))
	return true
}
