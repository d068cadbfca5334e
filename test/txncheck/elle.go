package txncheck

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// The list-append checker follows Elle (Kingsbury and Alvaro, "Elle:
// Inferring Isolation Anomalies from Experimental Observations", VLDB
// 2020). Every append writes a value unique to its key, so a read of a list
// names the writer of each element and, since a list only grows, the order
// of those writes: the longest read of a key is a prefix of the key's
// version order, and every other read must be a prefix of it. From that:
//
//	ww  T1 -> T2  T2 appended the element right after T1's (T2 overwrote T1)
//	wr  T1 -> T2  T2 read a list whose last element T1 appended (T2 saw T1)
//	rw  T1 -> T2  T1 read a list that T2's element extends next (T1 did not see T2)
//	rt  T1 -> T2  T1 completed before T2 was invoked (strict serializability)
//
// A serializable history has an acyclic ww+wr+rw graph; a strictly
// serializable one stays acyclic with rt added. Cycles are classified as
// Adya's: G0 (ww only: dirty write), G1c (ww and wr: circular information
// flow), G-single (exactly one rw: read skew, lost update, fractured read),
// G2 (several rw: write skew); a "-realtime" suffix when the cycle needs an
// rt edge. Non-cyclic anomalies: G1a (a read saw an aborted append),
// incompatible-order (two reads of a key that are not prefixes of one
// another), duplicate-elements, garbage (an element nobody appended),
// internal (a transaction's read after its own append misses it).

// EdgeKind is a dependency type.
type EdgeKind uint8

const (
	WW EdgeKind = 1
	WR EdgeKind = 2
	RW EdgeKind = 3
	RT EdgeKind = 4
)

func (k EdgeKind) String() string {
	switch k {
	case WW:
		return "ww"
	case WR:
		return "wr"
	case RW:
		return "rw"
	case RT:
		return "rt"
	}
	return "?"
}

// Step is one edge of a reported cycle, with the key and element that
// justify it.
type Step struct {
	From, To int // transaction ids
	Kind     EdgeKind
	Key      string
	Value    int // the element involved; -1 when none (an rw from an empty read names the next element)
}

func (s Step) String() string {
	if s.Kind == RT {
		return fmt.Sprintf("T%d -rt-> T%d", s.From, s.To)
	}
	return fmt.Sprintf("T%d -%s(%s:%d)-> T%d", s.From, s.Kind, s.Key, s.Value, s.To)
}

// Anomaly is one violation found.
type Anomaly struct {
	Kind  string // "G0", "G1a", "G1c", "G-single", "G2", "G-single-realtime", ..., "incompatible-order", ...
	Cycle []Step // for cycles
	Txns  []Txn  // the transactions involved, with their ops
	Msg   string
}

func (a Anomaly) String() string {
	var b strings.Builder
	b.WriteString(a.Kind)
	if a.Msg != "" {
		b.WriteString(": " + a.Msg)
	}
	if len(a.Cycle) > 0 {
		steps := make([]string, len(a.Cycle))
		for i, s := range a.Cycle {
			steps[i] = s.String()
		}
		b.WriteString(": " + strings.Join(steps, ", "))
	}
	for i := range a.Txns {
		b.WriteString("\n    " + a.Txns[i].String())
	}
	return b.String()
}

// Options select what is checked.
type Options struct {
	// Realtime adds rt edges: the check is then for strict serializability.
	Realtime bool
	// MaxAnomalies bounds the report (0: 20).
	MaxAnomalies int
}

// Result of a check.
type Result struct {
	Anomalies []Anomaly
	Txns      int // transactions in the history
	Edges     map[EdgeKind]int
}

// Valid reports whether no anomaly was found.
func (r Result) Valid() bool { return len(r.Anomalies) == 0 }

func (r Result) String() string {
	if r.Valid() {
		return fmt.Sprintf("valid: %d transactions, edges %v", r.Txns, r.Edges)
	}
	s := make([]string, len(r.Anomalies))
	for i, a := range r.Anomalies {
		s[i] = a.String()
	}
	return fmt.Sprintf("%d anomalies in %d transactions:\n  %s", len(r.Anomalies), r.Txns, strings.Join(s, "\n  "))
}

type edge struct {
	to    int // index into the history
	kind  EdgeKind
	key   string
	value int
}

type checker struct {
	h      []Txn
	opts   Options
	res    Result
	writer map[string]map[int]int // key -> value -> txn index
	order  map[string][]int       // key -> version order (longest read)
	adj    [][]edge
	node   []bool // takes part in the graph
}

func (c *checker) report(a Anomaly) {
	if len(c.res.Anomalies) < c.opts.MaxAnomalies {
		c.res.Anomalies = append(c.res.Anomalies, a)
	}
}

// externalReads calls fn for each read of an OK transaction made before
// the transaction's own append to that key (reads after it check the
// transaction's own consistency, not the order of others).
func (c *checker) externalReads(fn func(ti int, m Mop)) {
	for ti := range c.h {
		t := &c.h[ti]
		if t.Status != OK {
			continue
		}
		own := map[string]bool{}
		for _, m := range t.Ops {
			switch m.Kind {
			case Append:
				own[m.Key] = true
			case Read:
				if !own[m.Key] {
					fn(ti, m)
				}
			}
		}
	}
}

// CheckListAppend checks a list-append history for the anomalies above.
func CheckListAppend(h []Txn, opts Options) Result {
	if opts.MaxAnomalies == 0 {
		opts.MaxAnomalies = 20
	}
	c := &checker{h: h, opts: opts, writer: map[string]map[int]int{}, order: map[string][]int{},
		adj: make([][]edge, len(h)), node: make([]bool, len(h))}
	c.res.Txns = len(h)
	c.res.Edges = map[EdgeKind]int{}
	c.indexWrites()
	c.checkReads()
	c.versionOrders()
	c.buildEdges()
	c.findCycles()
	return c.res
}

func (c *checker) indexWrites() {
	for ti := range c.h {
		t := &c.h[ti]
		for _, m := range t.Ops {
			if m.Kind != Append {
				continue
			}
			if c.writer[m.Key] == nil {
				c.writer[m.Key] = map[int]int{}
			}
			if prev, dup := c.writer[m.Key][m.Value]; dup {
				c.report(Anomaly{Kind: "duplicate-append", Txns: []Txn{c.h[prev], *t},
					Msg: fmt.Sprintf("%s:%d appended twice (the workload must make appends unique)", m.Key, m.Value)})
				continue
			}
			c.writer[m.Key][m.Value] = ti
		}
	}
}

// checkReads finds the anomalies a single read shows: G1a, garbage,
// duplicates, and internal inconsistency.
func (c *checker) checkReads() {
	for ti := range c.h {
		t := &c.h[ti]
		if t.Status != OK {
			continue
		}
		own := map[string]int{}
		for _, m := range t.Ops {
			if m.Kind == Append {
				own[m.Key] = m.Value
				continue
			}
			if v, ok := own[m.Key]; ok && (len(m.List) == 0 || m.List[len(m.List)-1] != v) {
				c.report(Anomaly{Kind: "internal", Txns: []Txn{*t},
					Msg: fmt.Sprintf("read(%s)=%v misses its own append %d", m.Key, m.List, v)})
			}
			seen := map[int]bool{}
			for _, v := range m.List {
				if seen[v] {
					c.report(Anomaly{Kind: "duplicate-elements", Txns: []Txn{*t},
						Msg: fmt.Sprintf("read(%s)=%v holds %d twice", m.Key, m.List, v)})
				}
				seen[v] = true
				wi, ok := c.writer[m.Key][v]
				switch {
				case !ok:
					c.report(Anomaly{Kind: "garbage", Txns: []Txn{*t},
						Msg: fmt.Sprintf("read(%s)=%v holds %d, which nobody appended", m.Key, m.List, v)})
				case c.h[wi].Status == Aborted:
					c.report(Anomaly{Kind: "G1a", Txns: []Txn{c.h[wi], *t},
						Msg: fmt.Sprintf("T%d read %s:%d appended by aborted T%d", t.ID, m.Key, v, c.h[wi].ID)})
				}
			}
		}
	}
}

// versionOrders takes each key's longest read as its version order and
// checks every read is a prefix of it.
func (c *checker) versionOrders() {
	longest := map[string]int{} // key -> txn index of the longest read
	for ti := range c.h {
		if c.h[ti].Status != OK {
			continue
		}
		for _, m := range c.h[ti].Ops {
			if m.Kind == Read && len(m.List) >= len(c.order[m.Key]) {
				c.order[m.Key] = m.List
				longest[m.Key] = ti
			}
		}
	}
	for ti := range c.h {
		if c.h[ti].Status != OK {
			continue
		}
		for _, m := range c.h[ti].Ops {
			if m.Kind != Read {
				continue
			}
			full := c.order[m.Key]
			if !slices.Equal(full[:len(m.List)], m.List) {
				c.report(Anomaly{Kind: "incompatible-order", Txns: []Txn{c.h[longest[m.Key]], c.h[ti]},
					Msg: fmt.Sprintf("reads of %s: %v is not a prefix of %v", m.Key, m.List, full)})
			}
		}
	}
}

func (c *checker) add(from, to int, kind EdgeKind, key string, value int) {
	if from == to {
		return
	}
	c.node[from], c.node[to] = true, true
	c.adj[from] = append(c.adj[from], edge{to: to, kind: kind, key: key, value: value})
	c.res.Edges[kind]++
}

// writerOf returns the txn index that appended v to key, or -1 when the
// writer cannot be part of the graph (unknown or aborted: those reads are
// reported by checkReads).
func (c *checker) writerOf(key string, v int) int {
	wi, ok := c.writer[key][v]
	if !ok || c.h[wi].Status == Aborted {
		return -1
	}
	return wi
}

func (c *checker) buildEdges() {
	for key, ord := range c.order {
		for i := 1; i < len(ord); i++ {
			a, b := c.writerOf(key, ord[i-1]), c.writerOf(key, ord[i])
			if a >= 0 && b >= 0 {
				c.add(a, b, WW, key, ord[i])
			}
		}
	}
	c.externalReads(func(ti int, m Mop) {
		if n := len(m.List); n > 0 {
			if w := c.writerOf(m.Key, m.List[n-1]); w >= 0 {
				c.add(w, ti, WR, m.Key, m.List[n-1])
			}
		}
		ord := c.order[m.Key]
		if len(m.List) < len(ord) && slices.Equal(ord[:len(m.List)], m.List) {
			next := ord[len(m.List)]
			if w := c.writerOf(m.Key, next); w >= 0 {
				c.add(ti, w, RW, m.Key, next)
			}
		}
	})
	if c.opts.Realtime {
		c.realtimeEdges()
	}
}

// realtimeEdges adds T1 -rt-> T2 for T1 completed before T2 was invoked,
// reduced: with transactions sorted by completion, the ones completed
// before T2's invocation form a prefix, and of those only the ones that
// completed after the latest invocation in that prefix are needed (any
// other is ordered before one of them already). OK transactions are
// sources; OK and Unknown ones (which never complete) are targets. Every
// such transaction is kept, even one with no data edge: it may carry the
// order between two that have.
func (c *checker) realtimeEdges() {
	var done []int
	for i := range c.h {
		if c.h[i].Status == OK {
			done = append(done, i)
		}
	}
	sort.Slice(done, func(a, b int) bool { return c.h[done[a]].End < c.h[done[b]].End })
	prefixMaxStart := make([]int64, len(done))
	for i, ti := range done {
		prefixMaxStart[i] = c.h[ti].Start
		if i > 0 {
			prefixMaxStart[i] = max(prefixMaxStart[i], prefixMaxStart[i-1])
		}
	}
	for t2 := range c.h {
		if c.h[t2].Status == Aborted {
			continue
		}
		start := c.h[t2].Start
		n := sort.Search(len(done), func(i int) bool { return c.h[done[i]].End >= start })
		if n == 0 {
			continue
		}
		m := prefixMaxStart[n-1]
		for i := n - 1; i >= 0 && c.h[done[i]].End >= m; i-- {
			c.add(done[i], t2, RT, "", -1)
		}
	}
}

type edgeSet uint8

func kinds(ks ...EdgeKind) edgeSet {
	var s edgeSet
	for _, k := range ks {
		s |= 1 << k
	}
	return s
}

func (s edgeSet) has(k EdgeKind) bool { return s&(1<<k) != 0 }

// sccs returns the strongly connected components of more than one node of
// the graph restricted to members (nil: all) and the allowed edge kinds
// (Tarjan's algorithm, iterative so a long chain cannot exhaust the stack).
func (c *checker) sccs(members map[int]bool, allowed edgeSet) [][]int {
	n := len(c.h)
	index, low := make([]int, n), make([]int, n)
	onStack := make([]bool, n)
	for i := range index {
		index[i] = -1
	}
	var out [][]int
	var st []int
	next := 0
	in := func(v int) bool { return c.node[v] && (members == nil || members[v]) }
	type frame struct{ v, ei int }
	for root := range n {
		if !in(root) || index[root] >= 0 {
			continue
		}
		call := []frame{{root, 0}}
		index[root], low[root] = next, next
		next++
		st = append(st, root)
		onStack[root] = true
		for len(call) > 0 {
			f := &call[len(call)-1]
			if f.ei < len(c.adj[f.v]) {
				e := c.adj[f.v][f.ei]
				f.ei++
				if !allowed.has(e.kind) || !in(e.to) {
					continue
				}
				if index[e.to] < 0 {
					index[e.to], low[e.to] = next, next
					next++
					st = append(st, e.to)
					onStack[e.to] = true
					call = append(call, frame{e.to, 0})
				} else if onStack[e.to] {
					low[f.v] = min(low[f.v], index[e.to])
				}
				continue
			}
			v := f.v
			call = call[:len(call)-1]
			if len(call) > 0 {
				p := call[len(call)-1].v
				low[p] = min(low[p], low[v])
			}
			if low[v] == index[v] {
				var comp []int
				for {
					w := st[len(st)-1]
					st = st[:len(st)-1]
					onStack[w] = false
					comp = append(comp, w)
					if w == v {
						break
					}
				}
				if len(comp) > 1 {
					out = append(out, comp)
				}
			}
		}
	}
	return out
}

// path returns the edges of a shortest path from a to b over members and
// allowed kinds (BFS), or nil.
func (c *checker) path(a, b int, members map[int]bool, allowed edgeSet) []Step {
	type via struct {
		from int
		e    edge
	}
	prev := map[int]via{a: {from: -1}}
	queue := []int{a}
	for len(queue) > 0 {
		v := queue[0]
		queue = queue[1:]
		for _, e := range c.adj[v] {
			if !allowed.has(e.kind) || !members[e.to] {
				continue
			}
			if _, seen := prev[e.to]; seen && e.to != b {
				continue
			}
			if e.to == b {
				steps := []Step{c.step(v, e)}
				for u := v; u != a; u = prev[u].from {
					steps = append(steps, c.step(prev[u].from, prev[u].e))
				}
				slices.Reverse(steps)
				return steps
			}
			prev[e.to] = via{from: v, e: e}
			queue = append(queue, e.to)
		}
	}
	return nil
}

func (c *checker) step(from int, e edge) Step {
	return Step{From: c.h[from].ID, To: c.h[e.to].ID, Kind: e.kind, Key: e.key, Value: e.value}
}

// findCycles reports, for each strongly connected component of the whole
// graph, the most severe cycle class it holds.
func (c *checker) findCycles() {
	all := kinds(WW, WR, RW, RT)
	for _, comp := range c.sccs(nil, all) {
		members := map[int]bool{}
		for _, v := range comp {
			members[v] = true
		}
		slices.Sort(comp)
		if cyc, kind := c.classify(comp, members); cyc != nil {
			ids := map[int]bool{}
			var txns []Txn
			for _, s := range cyc {
				if !ids[s.From] {
					ids[s.From] = true
					txns = append(txns, c.byID(s.From))
				}
			}
			c.report(Anomaly{Kind: kind, Cycle: cyc, Txns: txns})
		}
	}
}

func (c *checker) byID(id int) Txn {
	for i := range c.h {
		if c.h[i].ID == id {
			return c.h[i]
		}
	}
	return Txn{ID: id}
}

// classify finds a cycle among members, trying the classes from the most
// to the least severe, without real-time edges first.
func (c *checker) classify(comp []int, members map[int]bool) ([]Step, string) {
	suffixes := []struct {
		rt     []EdgeKind
		suffix string
	}{{nil, ""}, {[]EdgeKind{RT}, "-realtime"}}
	for _, sx := range suffixes {
		if sx.rt != nil && !c.opts.Realtime {
			break
		}
		if cyc := c.cycle(members, kinds(append([]EdgeKind{WW}, sx.rt...)...)); cyc != nil {
			return cyc, "G0" + sx.suffix
		}
		if cyc := c.cycle(members, kinds(append([]EdgeKind{WW, WR}, sx.rt...)...)); cyc != nil {
			return cyc, "G1c" + sx.suffix
		}
		noRW := kinds(append([]EdgeKind{WW, WR}, sx.rt...)...)
		for _, a := range comp {
			for _, e := range c.adj[a] {
				if e.kind != RW || !members[e.to] {
					continue
				}
				if back := c.path(e.to, a, members, noRW); back != nil {
					return append([]Step{c.step(a, e)}, back...), "G-single" + sx.suffix
				}
			}
		}
		if cyc := c.cycle(members, kinds(append([]EdgeKind{WW, WR, RW}, sx.rt...)...)); cyc != nil {
			return cyc, "G2" + sx.suffix
		}
	}
	return nil, ""
}

// cycle returns a cycle among members over the allowed kinds, or nil.
func (c *checker) cycle(members map[int]bool, allowed edgeSet) []Step {
	comps := c.sccs(members, allowed)
	if len(comps) == 0 {
		return nil
	}
	sub := map[int]bool{}
	for _, v := range comps[0] {
		sub[v] = true
	}
	s := comps[0][0]
	return c.path(s, s, sub, allowed)
}
