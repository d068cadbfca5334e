package placement

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// A scheduler simulation at the scale of docs/architecture.md's "Scale plan", with no
// cluster and no goroutines: a model of the range map applies each round's
// operations at once (as a controller that never fails would), and time
// advances one tick per round.

const simTick = 10 * time.Second

type simCluster struct {
	t      testing.TB
	cfg    SchedulerConfig
	nodes  []NodeView
	ranges []RangeView
	pos    map[uint64]int // range id -> index in ranges
	nodeAt map[string]int // node id -> index in nodes
	nextID uint64
	count  map[OpKind]int // operations applied
}

func newSimCluster(t testing.TB, cfg SchedulerConfig, rnd *rand.Rand, nodes, ranges int) *simCluster {
	c := &simCluster{t: t, cfg: cfg, pos: make(map[uint64]int, ranges), nodeAt: make(map[string]int), count: make(map[OpKind]int)}
	c.addNodes(nodes)
	// Sizes and write rates are Zipf-like: most ranges are small and quiet, a
	// few are many times over the split thresholds.
	sizes := rand.NewZipf(rnd, 1.5, 1, 1023)
	writes := rand.NewZipf(rnd, 1.5, 1, 255)
	for range ranges {
		// Replicas on distinct random nodes, so the spread starts uneven.
		reps := make([]string, 0, cfg.Replication)
		for len(reps) < cfg.Replication {
			if id := c.nodes[rnd.IntN(nodes)].ID; !slices.Contains(reps, id) {
				reps = append(reps, id)
			}
		}
		c.nextID++
		c.pos[c.nextID] = len(c.ranges)
		c.ranges = append(c.ranges, RangeView{
			ID: c.nextID, Epoch: 1, Replicas: reps, Leader: reps[rnd.IntN(len(reps))],
			SizeBytes:  int64(sizes.Uint64()+1)<<20 - rnd.Int64N(1<<20),
			WriteBytes: float64(writes.Uint64() << 17),
		})
	}
	return c
}

func (c *simCluster) addNodes(n int) {
	for range n {
		id := fmt.Sprintf("n%03d", len(c.nodes))
		c.nodeAt[id] = len(c.nodes)
		c.nodes = append(c.nodes, NodeView{ID: id, Alive: true})
	}
}

func (c *simCluster) view() ClusterView { return ClusterView{Nodes: c.nodes, Ranges: c.ranges} }

func (c *simCluster) node(id string) NodeView { return c.nodes[c.nodeAt[id]] }

// tick advances the clock for down nodes.
func (c *simCluster) tick() {
	for i := range c.nodes {
		if !c.nodes[i].Alive {
			c.nodes[i].DownFor += simTick
		}
	}
}

// kill stops nodes; raft re-elects a live replica of every range they led
// (invariant I12: gossip's view of liveness decides nothing here, the
// election does).
func (c *simCluster) kill(ids ...string) {
	for _, id := range ids {
		c.nodes[c.nodeAt[id]].Alive = false
	}
	for i := range c.ranges {
		if r := &c.ranges[i]; r.Leader == "" || !c.node(r.Leader).Alive {
			c.elect(r, "")
		}
	}
}

// elect makes the first live replica other than not the leader.
func (c *simCluster) elect(r *RangeView, not string) {
	r.Leader = ""
	for _, id := range r.Replicas {
		if n := c.node(id); id != not && n.Alive && !n.Removed {
			r.Leader = id
			return
		}
	}
}

// apply carries out ops, failing the test on any operation a controller would
// have to reject.
func (c *simCluster) apply(ops []Operation) {
	c.t.Helper()
	if len(ops) > c.cfg.MaxOps {
		c.t.Fatalf("%d operations > MaxOps %d", len(ops), c.cfg.MaxOps)
	}
	seen := make(map[uint64]bool, len(ops))
	for _, o := range ops {
		i, ok := c.pos[o.RangeID]
		if !ok || seen[o.RangeID] {
			c.t.Fatalf("%v: unknown range or second operation for it", o)
		}
		seen[o.RangeID] = true
		r := &c.ranges[i]
		if o.Epoch != r.Epoch { // Invariant I6: a stale operation would be dropped.
			c.t.Fatalf("%v: range is at epoch %d", o, r.Epoch)
		}
		if o.To != "" {
			n := c.node(o.To)
			holds := slices.Contains(r.Replicas, o.To)
			if holds != (o.Kind == OpTransferLeader) || !n.Alive || n.Draining || n.Removed {
				c.t.Fatalf("%v: bad target %+v for replicas %v", o, n, r.Replicas)
			}
		}
		if o.From != "" && !slices.Contains(r.Replicas, o.From) {
			c.t.Fatalf("%v: source does not hold the range %v", o, r.Replicas)
		}
		c.count[o.Kind]++
		switch o.Kind {
		case OpMoveReplica:
			r.Replicas = slices.Clone(r.Replicas)
			r.Replicas[slices.Index(r.Replicas, o.From)] = o.To
			r.Epoch++
			if r.Leader == o.From {
				c.elect(r, "")
			}
		case OpAddReplica:
			r.Replicas = append(slices.Clone(r.Replicas), o.To)
			r.Epoch++
		case OpRemoveReplica:
			if r.Leader == o.From {
				c.t.Fatalf("%v: removes the leader", o)
			}
			r.Replicas = slices.DeleteFunc(slices.Clone(r.Replicas), func(id string) bool { return id == o.From })
			r.Epoch++
		case OpTransferLeader:
			r.Leader = o.To
		case OpSplitRange:
			r.Epoch++
			c.nextID++
			child := RangeView{
				ID: c.nextID, Epoch: r.Epoch, Replicas: slices.Clone(r.Replicas), Leader: r.Leader,
				SizeBytes: r.SizeBytes - r.SizeBytes/2, WriteBytes: r.WriteBytes / 2,
			}
			r.SizeBytes /= 2
			r.WriteBytes /= 2
			c.pos[child.ID] = len(c.ranges)
			c.ranges = append(c.ranges, child) // may move r: not used below
		default:
			c.t.Fatalf("%v: unknown kind", o)
		}
	}
}

// eligibleCounts returns the replica and leader counts of the nodes that are
// alive, not draining and not removed.
func (c *simCluster) eligibleCounts() (replicas, leaders map[string]int) {
	replicas, leaders = make(map[string]int), make(map[string]int)
	for _, n := range c.nodes {
		if n.Alive && !n.Draining && !n.Removed {
			replicas[n.ID], leaders[n.ID] = 0, 0
		}
	}
	for _, r := range c.ranges {
		for _, id := range r.Replicas {
			if _, ok := replicas[id]; ok {
				replicas[id]++
			}
		}
		if _, ok := leaders[r.Leader]; ok {
			leaders[r.Leader]++
		}
	}
	return replicas, leaders
}

// minMoves is the fewest one-unit moves that bring the values of counts (the
// eligible nodes) within one of each other when total units must end on them
// (total - sum(counts) arrive from elsewhere): the nodes that end at the
// ceiling are best chosen among the fullest, and each node must send at least
// its excess over its final count.
func minMoves(counts map[string]int, total int) int {
	cs := make([]int, 0, len(counts))
	for _, n := range counts {
		cs = append(cs, n)
	}
	slices.Sort(cs)
	slices.Reverse(cs)
	q, r, lb := total/len(cs), total%len(cs), 0
	for i, n := range cs {
		target := q
		if i < r {
			target++
		}
		lb += max(0, n-target)
	}
	return lb
}

func spread(counts map[string]int) (lo, hi int) {
	first := true
	for _, n := range counts {
		if first {
			lo, hi, first = n, n, false
		}
		lo, hi = min(lo, n), max(hi, n)
	}
	return lo, hi
}

// checkConverged asserts the end state of a phase: (a) every range fully
// replicated on distinct live nodes and led by one of them, (b) replica and
// (c) leader counts of eligible nodes within one of each other (hence of the
// mean), (d) no range over a split threshold.
func (c *simCluster) checkConverged(phase string) {
	c.t.Helper()
	for _, r := range c.ranges {
		ok := len(r.Replicas) == c.cfg.Replication && slices.Contains(r.Replicas, r.Leader)
		for j, id := range r.Replicas {
			n := c.node(id)
			ok = ok && n.Alive && !n.Draining && !n.Removed && !slices.Contains(r.Replicas[:j], id)
		}
		if !ok {
			c.t.Fatalf("%s: range %d replicas %v leader %q: not fully replicated on live nodes", phase, r.ID, r.Replicas, r.Leader)
		}
		if r.SizeBytes > c.cfg.SplitSize || r.WriteBytes > c.cfg.SplitWriteRate {
			c.t.Fatalf("%s: range %d of %d bytes, %.0f B/s not split", phase, r.ID, r.SizeBytes, r.WriteBytes)
		}
	}
	replicas, leaders := c.eligibleCounts()
	if lo, hi := spread(replicas); hi-lo > 1 {
		c.t.Fatalf("%s: replica counts from %d to %d", phase, lo, hi)
	}
	if lo, hi := spread(leaders); hi-lo > 1 {
		c.t.Fatalf("%s: leader counts from %d to %d", phase, lo, hi)
	}
}

// run schedules and applies rounds until Schedule has nothing to do while no
// node is between down and dead, and returns the rounds taken.
func (c *simCluster) run(phase string, maxRounds int) int {
	c.t.Helper()
	for round := 1; ; round++ {
		if round > maxRounds {
			c.t.Fatalf("%s: not converged after %d rounds", phase, maxRounds)
		}
		c.tick()
		ops := Schedule(c.cfg, c.view())
		if len(ops) == 0 && !c.anySuspect() {
			return round
		}
		c.apply(ops)
	}
}

func (c *simCluster) anySuspect() bool {
	for _, n := range c.nodes {
		if !n.Alive && n.DownFor < c.cfg.DeadAfter {
			return true
		}
	}
	return false
}

func (c *simCluster) moves() int { return c.count[OpMoveReplica] + c.count[OpAddReplica] }

// TestScheduleSimulation: 100 nodes and 10,000 ranges with Zipf-like sizes and
// write rates, placed at random; then 10 empty nodes join; then 3 nodes die;
// then one node is drained. Each phase must converge within a bounded number
// of rounds, and each phase with a known lower bound on replica moves must
// stay within twice it.
func TestScheduleSimulation(t *testing.T) {
	const seed = 20261101
	t.Logf("seed %d", seed)
	cfg := DefaultSchedulerConfig()
	// A large budget keeps the rounds (and the test under -race) short; the
	// number of operations does not depend on it, only how they are batched.
	cfg.MaxOps = 128
	c := newSimCluster(t, cfg, rand.New(rand.NewPCG(seed, seed)), 100, 10_000)

	type phase struct {
		name  string
		event func()
	}
	phases := []phase{
		{"initial (splits, random placement)", func() {}},
		{"10 empty nodes join", func() { c.addNodes(10) }},
		{"3 nodes die", func() { c.kill("n007", "n042", "n105") }},
		{"1 node drains", func() { c.nodes[c.nodeAt["n011"]].Draining = true }},
	}
	for _, p := range phases {
		before := map[OpKind]int{}
		for k, v := range c.count {
			before[k] = v
		}
		movesBefore := c.moves()
		p.event()

		// Lower bounds, taken after the event. Splits are done in place, and
		// a range due to split is not moved before it is, so the end state
		// holds splitsNeeded+1 copies of each range's replica set: weight
		// each replica (and leader) by that. Then every replica not on an
		// eligible node moves once, and every eligible node sends at least
		// its excess over its share.
		replicas, leaders := c.eligibleCounts()
		for id := range replicas {
			replicas[id], leaders[id] = 0, 0
		}
		moveLB, leaderLB, total, pieces, splitLB := 0, 0, 0, 0, 0
		for _, r := range c.ranges {
			w := splitsNeeded(cfg, r.SizeBytes, r.WriteBytes) + 1
			splitLB += w - 1
			pieces += w
			total += w * len(r.Replicas)
			for _, id := range r.Replicas {
				if _, ok := replicas[id]; ok {
					replicas[id] += w
				} else {
					moveLB += w
				}
			}
			if _, ok := leaders[r.Leader]; ok {
				leaders[r.Leader] += w
			} else {
				leaderLB += w
			}
		}
		moveLB += minMoves(replicas, pieces*cfg.Replication)
		leaderLB += minMoves(leaders, pieces)
		splits := c.count[OpSplitRange]

		// Budget: the work at MaxOps per round twice over, plus the rounds a
		// dead node waits, plus slack for split chains.
		deadRounds := int(cfg.DeadAfter/simTick) + 1
		bound := 2*(moveLB+leaderLB+splitLB+cfg.MaxOps-1)/cfg.MaxOps + deadRounds + 20
		rounds := c.run(p.name, bound)
		c.checkConverged(p.name)

		moves := c.moves() - movesBefore
		split := c.count[OpSplitRange] - splits
		t.Logf("%-36s rounds %3d (bound %3d)  moves %5d (lower bound %5d)  adds %d removes %d  transfers %5d (lower bound %5d)  splits %4d (needed %4d)  ranges %d",
			p.name, rounds, bound, moves, moveLB, c.count[OpAddReplica]-before[OpAddReplica],
			c.count[OpRemoveReplica]-before[OpRemoveReplica],
			c.count[OpTransferLeader]-before[OpTransferLeader], leaderLB, split, splitLB, len(c.ranges))
		if split != splitLB {
			t.Errorf("%s: %d splits, %d needed", p.name, split, splitLB)
		}
		if moves > 2*moveLB {
			t.Errorf("%s: %d moves > 2 x lower bound %d", p.name, moves, moveLB)
		}
		if transfers := c.count[OpTransferLeader] - before[OpTransferLeader]; transfers > 2*leaderLB {
			t.Errorf("%s: %d leader transfers > 2 x lower bound %d", p.name, transfers, leaderLB)
		}
	}
}

// splitsNeeded is the number of splits that bring a range of size bytes and
// writes B/s under the thresholds by halving.
func splitsNeeded(cfg SchedulerConfig, size int64, writes float64) int {
	if size <= cfg.SplitSize && writes <= cfg.SplitWriteRate {
		return 0
	}
	return 1 + splitsNeeded(cfg, size/2, writes/2) + splitsNeeded(cfg, size-size/2, writes/2)
}

// benchView is n nodes and r ranges, every replica and leader spread evenly:
// the steady state, in which Schedule has to look at everything and decide
// nothing.
func benchView(n, r int) ClusterView {
	var v ClusterView
	for i := range n {
		v.Nodes = append(v.Nodes, NodeView{ID: fmt.Sprintf("n%03d", i), Alive: true})
	}
	for i := range r {
		reps := []string{v.Nodes[i%n].ID, v.Nodes[(i+1)%n].ID, v.Nodes[(i+2)%n].ID}
		v.Ranges = append(v.Ranges, RangeView{
			ID: uint64(i + 1), Epoch: 1, Replicas: reps, Leader: reps[0], SizeBytes: 32 << 20, WriteBytes: 1 << 20,
		})
	}
	return v
}

func BenchmarkSchedule(b *testing.B) {
	cfg := DefaultSchedulerConfig()
	balanced := benchView(100, 100_000)
	// Troubled: 3 dead nodes, 10 empty ones and 1% of ranges to split, so every
	// rule has work and the budget is spent.
	troubled := benchView(100, 100_000)
	for i := range 10 {
		troubled.Nodes = append(troubled.Nodes, NodeView{ID: fmt.Sprintf("m%03d", i), Alive: true})
	}
	for _, i := range []int{7, 42, 77} {
		troubled.Nodes[i].Alive, troubled.Nodes[i].DownFor = false, time.Minute
	}
	for i := 0; i < len(troubled.Ranges); i += 100 {
		troubled.Ranges[i].SizeBytes = 100 << 20
	}
	for _, bc := range []struct {
		name string
		view ClusterView
		ops  int
	}{
		{"100x100k/balanced", balanced, 0},
		{"100x100k/troubled", troubled, cfg.MaxOps},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ops := Schedule(cfg, bc.view); len(ops) != bc.ops {
					b.Fatalf("%d operations, want %d", len(ops), bc.ops)
				}
			}
		})
	}
}
