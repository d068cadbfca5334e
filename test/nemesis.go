package test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/placement"
)

// ClientStore adapts client.Client to the register workload's KVStore.
type ClientStore struct{ C *client.Client }

// Get reads key linearizably.
func (s ClientStore) Get(ctx context.Context, key string) (string, bool, error) {
	kv, err := s.C.Get(ctx, key)
	if errors.Is(err, client.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return kv.Value, true, nil
}

// Put writes key; the client gives it a request id reused on retries (I7).
func (s ClientStore) Put(ctx context.Context, key, value string) error {
	_, err := s.C.Put(ctx, key, value)
	return err
}

// CAS writes key if it holds expect (or is absent).
func (s ClientStore) CAS(ctx context.Context, key, expect string, expectAbsent bool, value string) (bool, error) {
	opt := client.IfValue(expect)
	if expectAbsent {
		opt = client.IfAbsent()
	}
	_, err := s.C.Put(ctx, key, value, opt)
	if errors.Is(err, client.ErrConditionFailed) {
		return false, nil
	}
	return err == nil, err
}

// ClassifyClientError is sound for the register model: a read error drops
// the read; a write error is indeterminate unless the server said the
// condition failed (CAS returns that as ok=false, nil).
func ClassifyClientError(err error) Outcome {
	if err == nil {
		return OutcomeOK
	}
	if errors.Is(err, client.ErrConditionFailed) {
		return OutcomeConditionFailed
	}
	return OutcomeUnknown
}

// NewClients returns one client per worker; worker i starts at node i mod n
// and fails over to the others.
func NewClients(t testing.TB, c *Cluster, n int) []*client.Client {
	t.Helper()
	addrs := c.HTTPAddrs()
	var out []*client.Client
	for i := 0; i < n; i++ {
		eps := append(append([]string(nil), addrs[i%len(addrs):]...), addrs[:i%len(addrs)]...)
		cl, err := client.New(client.Config{Endpoints: eps, ClientID: fmt.Sprintf("w%d", i),
			MaxRetries: 8, BackoffMin: 20 * time.Millisecond, BackoffMax: 300 * time.Millisecond})
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		t.Cleanup(func() { cl.Close() })
		out = append(out, cl)
	}
	return out
}

// Fault names one kind of fault the in-process nemesis injects. The names
// match the docker chaos suite's (test/chaos) where the faults match.
type Fault string

// The faults.
const (
	FaultKill          Fault = "kill"           // close a node, restart it after the hold
	FaultIsolate       Fault = "isolate"        // cut a node's raft traffic, heal after the hold
	FaultIsolateLeader Fault = "isolate-leader" // the same, to the leader of one of Nemesis.Shards
	// FaultTransferPause hands a shard's leadership to a follower and pauses
	// that node (Cluster.Pause) the moment it leads, past the election
	// timeout; after the pause, leadership is sometimes handed straight back
	// to it: leadership moving to and from a node being paused, as when the
	// chaos suite once lost canary writes acknowledged in one term.
	FaultTransferPause Fault = "transfer-pause"
	// FaultKillAll closes every node at once, under load, and restarts them
	// all after the hold, one after another in a random order.
	FaultKillAll Fault = "kill-all"
	// FaultRestartMidMove records a move of one replica of a shard in the
	// meta group (the placement driver carries it out: learner added,
	// caught up, promoted, old voter removed) and restarts a node the move
	// involves (the source, the target or the shard's leader) at a random
	// one of those steps. It needs a node without a replica of the shard,
	// so more nodes than the replication factor.
	FaultRestartMidMove Fault = "restart-mid-move"
)

// DefaultFaults are the faults the nemesis draws from when Nemesis.Faults
// is nil: all of them, restart-mid-move only when c has a node to move a
// replica to.
func DefaultFaults(c *Cluster) []Fault {
	fs := []Fault{FaultKill, FaultIsolate, FaultIsolateLeader, FaultTransferPause, FaultKillAll}
	if len(c.Nodes()) > c.replication() {
		fs = append(fs, FaultRestartMidMove)
	}
	return fs
}

func (c *Cluster) replication() int { return min(3, c.cfg.Nodes) }

// Nemesis injects random faults into a cluster, one at a time, each healed
// before the next: the kinds of Faults, each once per round in a random
// order. Every choice derives from Seed. Kill, isolate, transfer-pause and
// restart-mid-move leave a majority of every group up; kill-all does not.
type Nemesis struct {
	C        *Cluster
	Seed     uint64
	Interval time.Duration // between faults, and the mean hold; default 1.5s
	Shards   []uint64      // shards the leader faults strike; nil = any
	// Faults are the kinds drawn from; nil means DefaultFaults(C).
	Faults []Fault
	// Max bounds the faults injected; 0 means until the context ends.
	Max    int
	mu     sync.Mutex
	Log    []string
	counts map[Fault]int
}

// Run injects faults until ctx ends (or Max were injected), then heals and
// restarts everything.
func (n *Nemesis) Run(ctx context.Context) {
	rng := rand.New(rand.NewPCG(n.Seed, 0x6e656d))
	interval := n.Interval
	if interval == 0 {
		interval = 1500 * time.Millisecond
	}
	kinds := n.Faults
	if kinds == nil {
		kinds = DefaultFaults(n.C)
	}
	var deck []Fault
	for done := 0; ctx.Err() == nil && (n.Max == 0 || done < n.Max); done++ {
		if len(deck) == 0 {
			deck = append([]Fault(nil), kinds...)
			rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
		}
		kind := deck[0]
		deck = deck[1:]
		hold := interval/2 + time.Duration(rng.Int64N(int64(interval)))
		n.inject(ctx, rng, kind, hold)
		sleepCtx(ctx, interval/2)
	}
	n.C.Heal()
	for i := range n.C.Nodes() {
		n.C.Unpause(i)
		n.C.Restart(i)
	}
}

// inject injects one fault of kind, holds it for hold (or until ctx ends)
// and heals it.
func (n *Nemesis) inject(ctx context.Context, rng *rand.Rand, kind Fault, hold time.Duration) {
	n.mu.Lock()
	if n.counts == nil {
		n.counts = map[Fault]int{}
	}
	n.counts[kind]++
	n.mu.Unlock()
	switch kind {
	case FaultKill, FaultIsolate, FaultIsolateLeader:
		victim := rng.IntN(len(n.C.Nodes()))
		if kind == FaultIsolateLeader {
			if l, err := n.C.Leader(n.pickShard(rng)); err == nil {
				victim = l
			}
		}
		n.note("%s n%d", kind, victim+1)
		if kind == FaultKill {
			n.C.Kill(victim)
		} else {
			n.C.Isolate(victim)
		}
		sleepCtx(ctx, hold)
		n.note("heal n%d", victim+1)
		n.C.Heal()
		n.C.Restart(victim)
	case FaultTransferPause:
		n.transferPause(ctx, rng, hold)
	case FaultKillAll:
		n.killAll(ctx, rng, hold)
	case FaultRestartMidMove:
		n.restartMidMove(ctx, rng, hold)
	default:
		n.note("unknown fault %q skipped", kind)
	}
}

// pickShard returns one of n.Shards, or any shard of the range map.
func (n *Nemesis) pickShard(rng *rand.Rand) uint64 {
	if len(n.Shards) > 0 {
		return n.Shards[rng.IntN(len(n.Shards))]
	}
	for _, h := range n.C.Nodes() {
		if h.Node != nil {
			rs := h.Node.Ranges()
			if len(rs) > 0 {
				return rs[rng.IntN(len(rs))].ID
			}
		}
	}
	return 0
}

// transferPause: FaultTransferPause.
func (n *Nemesis) transferPause(ctx context.Context, rng *rand.Rand, hold time.Duration) {
	id := n.pickShard(rng)
	l, err := n.C.Leader(id)
	if err != nil {
		n.note("%s: shard %d has no leader, nothing done", FaultTransferPause, id)
		return
	}
	nodes := n.C.Nodes()
	rep, ok := nodes[l].Node.Host().Replica(id)
	if !ok {
		n.note("%s: shard %d: leader n%d closed its replica, nothing done", FaultTransferPause, id, l+1)
		return
	}
	ms, _ := rep.Members()
	var targets []int
	for _, m := range ms {
		if i := n.C.index(m.ID); m.Voter && i >= 0 && i != l && nodes[i].Node != nil {
			targets = append(targets, i)
		}
	}
	if len(targets) == 0 {
		n.note("%s: shard %d has no voter to hand leadership to, nothing done", FaultTransferPause, id)
		return
	}
	to := targets[rng.IntN(len(targets))]
	terr := rep.TransferLeader(nodes[to].ID, nodes[to].RaftAddr)
	// Pause it the moment it leads (or 2s after the transfer, whatever
	// became of it): the longer the new leader runs, the less there is in
	// flight when it freezes.
	led := n.waitLeads(ctx, to, id, 2*time.Second)
	frozen := n.C.Pause(to, hold)
	how := "pause"
	if !frozen {
		how = "isolate (cluster not Delayable)"
	}
	n.note("%s: shard %d n%d -> n%d (transfer err %v, leads %v), %s n%d for %v",
		FaultTransferPause, id, l+1, to+1, terr, led, how, to+1, hold.Round(time.Millisecond))
	sleepCtx(ctx, hold)
	n.note("%s: shard %d leaders as the pause ends: %s", FaultTransferPause, id, n.leaders(id))
	n.C.Unpause(to)
	if rng.IntN(2) == 0 || ctx.Err() != nil {
		return
	}
	// Leadership straight back to the node that was just thawed.
	var back error
	WaitForCtx(ctx, 3*time.Second, func() error {
		cur, err := n.C.Leader(id)
		if err != nil {
			return err
		}
		if cur == to {
			back = nil
			return nil
		}
		r, ok := nodes[cur].Node.Host().Replica(id)
		if !ok {
			return fmt.Errorf("n%d has no replica", cur+1)
		}
		back = r.TransferLeader(nodes[to].ID, nodes[to].RaftAddr)
		return back
	})
	n.note("%s: shard %d leadership back to thawed n%d (err %v, leads %v)",
		FaultTransferPause, id, to+1, back, n.waitLeads(ctx, to, id, time.Second))
}

// leaders names every live node that says it leads shard id: during a
// pause, the paused node (until its lease runs out) and its successor.
func (n *Nemesis) leaders(id uint64) string {
	var out []string
	for _, h := range n.C.Nodes() {
		if h.Node == nil {
			continue
		}
		if r, ok := h.Node.Host().Replica(id); ok && r.IsLeader() {
			out = append(out, fmt.Sprintf("%s (term %d)", h.ID, r.Raft().CurrentTerm()))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

// waitLeads waits up to d for node i to lead shard id.
func (n *Nemesis) waitLeads(ctx context.Context, i int, id uint64, d time.Duration) bool {
	return WaitForCtx(ctx, d, func() error {
		h := n.C.Node(i)
		if h.Node == nil {
			return fmt.Errorf("n%d down", i+1)
		}
		if r, ok := h.Node.Host().Replica(id); ok && r.IsLeader() {
			return nil
		}
		return fmt.Errorf("n%d does not lead shard %d", i+1, id)
	}) == nil
}

// killAll: FaultKillAll.
func (n *Nemesis) killAll(ctx context.Context, rng *rand.Rand, hold time.Duration) {
	nodes := n.C.Nodes()
	n.note("%s: n1..n%d", FaultKillAll, len(nodes))
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() { n.C.Kill(i) })
	}
	wg.Wait()
	sleepCtx(ctx, hold/2)
	order := rng.Perm(len(nodes))
	var names []string
	for _, i := range order {
		n.C.Restart(i)
		names = append(names, nodes[i].ID)
	}
	n.note("%s: restarted %s", FaultKillAll, strings.Join(names, ","))
}

// moveStep is how far a replica move has gone, as the shard's configuration
// shows it.
type moveStep int

const (
	moveRecorded moveStep = iota // in the meta log only
	moveLearner                  // the target is a learner
	movePromoted                 // the target votes; the source still does
	moveRemoved                  // the source is out of the configuration
)

var moveStepNames = [...]string{"recorded", "learner added", "promoted", "old voter removed"}

func (s moveStep) String() string { return moveStepNames[s] }

// restartMidMove: FaultRestartMidMove.
func (n *Nemesis) restartMidMove(ctx context.Context, rng *rand.Rand, hold time.Duration) {
	nodes := n.C.Nodes()
	meta := -1
	var st *placement.State
	WaitForCtx(ctx, 5*time.Second, func() error {
		for i, h := range nodes {
			if h.Node != nil && h.Node.MetaGroup().IsLeader() {
				meta = i
				st, _ = h.Node.MetaGroup().State()
				return nil
			}
		}
		return errors.New("no meta leader")
	})
	if meta < 0 || st == nil {
		n.note("%s: no meta leader, nothing done", FaultRestartMidMove)
		return
	}
	// A shard with no operation in progress and a live node without a
	// replica of it, among Shards (any shard when Shards is nil).
	var cands []fsm.Range
	for _, r := range st.Ranges {
		if _, busy := st.Ops[r.ID]; busy || (len(n.Shards) > 0 && !slices.Contains(n.Shards, r.ID)) {
			continue
		}
		cands = append(cands, r)
	}
	rng.Shuffle(len(cands), func(i, j int) { cands[i], cands[j] = cands[j], cands[i] })
	var rng0 fsm.Range
	var spare []string
	for _, r := range cands {
		spare = spare[:0]
		for _, h := range nodes {
			if h.Node != nil && !slices.Contains(r.Replicas, h.ID) {
				spare = append(spare, h.ID)
			}
		}
		if len(spare) > 0 && len(r.Replicas) > 0 {
			rng0 = r
			break
		}
	}
	if rng0.ID == 0 {
		n.note("%s: no idle shard with a node to move a replica to, nothing done", FaultRestartMidMove)
		return
	}
	id := rng0.ID
	op := placement.Operation{Kind: placement.OpMoveReplica, RangeID: id, Epoch: rng0.Epoch,
		From: rng0.Replicas[rng.IntN(len(rng0.Replicas))], To: spare[rng.IntN(len(spare))],
		Reason: "nemesis " + string(FaultRestartMidMove)}
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := nodes[meta].Node.MetaGroup().StartOp(sctx, op)
	cancel()
	if err != nil {
		n.note("%s: shard %d %s -> %s not recorded: %v", FaultRestartMidMove, id, op.From, op.To, err)
		return
	}
	at := moveStep(rng.IntN(4))
	who := rng.IntN(3) // source, target, shard leader
	var reached moveStep
	WaitForCtx(ctx, 10*time.Second, func() error {
		reached = n.moveProgress(id, op.From, op.To)
		if reached < at {
			return fmt.Errorf("move at %s", reached)
		}
		return nil
	})
	victim := n.C.index(op.From)
	role := "source"
	switch who {
	case 1:
		victim, role = n.C.index(op.To), "target"
	case 2:
		if l, err := n.C.Leader(id); err == nil {
			victim, role = l, "shard leader"
		}
	}
	n.note("%s: shard %d %s -> %s, at %q (wanted %q) restart %s n%d",
		FaultRestartMidMove, id, op.From, op.To, reached, at, role, victim+1)
	n.C.Kill(victim)
	sleepCtx(ctx, hold/2)
	n.C.Restart(victim)
}

// moveProgress reads how far the move of shard id from -> to has gone from
// any live replica that knows a leader's configuration.
func (n *Nemesis) moveProgress(id uint64, from, to string) moveStep {
	l, err := n.C.Leader(id)
	if err != nil {
		return moveRecorded
	}
	rep, ok := n.C.Node(l).Node.Host().Replica(id)
	if !ok {
		return moveRecorded
	}
	ms, err := rep.Members()
	if err != nil {
		return moveRecorded
	}
	var hasFrom, hasTo, toVotes bool
	for _, m := range ms {
		switch m.ID {
		case from:
			hasFrom = true
		case to:
			hasTo, toVotes = true, m.Voter
		}
	}
	switch {
	case hasTo && toVotes && !hasFrom:
		return moveRemoved
	case hasTo && toVotes:
		return movePromoted
	case hasTo:
		return moveLearner
	}
	return moveRecorded
}

// index returns the index of the node with id, or -1.
func (c *Cluster) index(id string) int {
	for i, h := range c.Nodes() {
		if h.ID == id {
			return i
		}
	}
	return -1
}

// WaitForCtx polls cond every 5ms until it returns nil, d passes or ctx
// ends, and returns its last error.
func WaitForCtx(ctx context.Context, d time.Duration, cond func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		sleepCtx(ctx, 5*time.Millisecond)
	}
}

// Start runs the nemesis in a goroutine counted by wg for d (or until stop
// is called), after which it heals and restarts everything.
func (n *Nemesis) Start(ctx context.Context, d time.Duration, wg *sync.WaitGroup) (stop func()) {
	ctx, stop = context.WithTimeout(ctx, d)
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.Run(ctx)
	}()
	return stop
}

func (n *Nemesis) note(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.Log = append(n.Log, fmt.Sprintf(format, args...))
}

// Counts returns how many faults of each kind were injected.
func (n *Nemesis) Counts() map[Fault]int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return maps.Clone(n.counts)
}

// Summary lists the faults injected.
func (n *Nemesis) Summary() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.Log, ", ")
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
