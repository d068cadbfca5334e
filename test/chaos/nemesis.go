package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// FaultKind names one kind of fault the nemesis injects.
type FaultKind string

// The faults. The -leader variants strike the node leading the probe shard
// (the canary's), so the canary measures how long writes stop.
const (
	FaultKill            FaultKind = "kill"             // docker kill a node, docker start it later
	FaultKillLeader      FaultKind = "kill-leader"      // the same, to the probe shard's leader
	FaultPause           FaultKind = "pause"            // docker pause a node past the election timeout
	FaultPauseLeader     FaultKind = "pause-leader"     // the same, to the probe shard's leader
	FaultPartition       FaultKind = "partition"        // docker network disconnect a node, connect later
	FaultPartitionLeader FaultKind = "partition-leader" // the same, to the probe shard's leader
	FaultRollingRestart  FaultKind = "rolling-restart"  // docker restart every node in turn (S22)
	FaultCombo           FaultKind = "combo"            // two faults at once, chosen at random
	// FaultTransferPause hands the probe shard's leadership to a follower,
	// docker pauses that node the moment it leads, past the election
	// timeout, and after unpausing it sometimes hands leadership straight
	// back to it: leadership moving to and from a node docker is pausing,
	// as when canary writes acknowledged in one term were once lost.
	FaultTransferPause FaultKind = "transfer-pause"
	// FaultKillAll docker kills every node at once, under load, and starts
	// them all again.
	FaultKillAll FaultKind = "kill-all"
	// FaultRestartMidMove starts a replica move and kills and restarts a
	// node the move involves (source, target or shard leader) at a random
	// step of it: learner added, promoted, old voter removed. With a node
	// holding no replica of the shard (more nodes than replicas), the move
	// is a drain of one replica holder (undone afterwards); on three nodes,
	// a follower's replica is removed and the placement driver adds it back
	// (removed, learner added, promoted).
	FaultRestartMidMove FaultKind = "restart-mid-move"
)

// deck is one round of faults: every kind at least once, leader kills more
// often because each one is a failover measurement. It is shuffled with the
// seed, so the order is random and replayable.
var deck = []FaultKind{
	FaultKillLeader, FaultKillLeader, FaultKillLeader, FaultKill,
	FaultPause, FaultPauseLeader, FaultPartition, FaultPartitionLeader,
	FaultCombo, FaultCombo, FaultRollingRestart,
	FaultTransferPause, FaultKillAll, FaultRestartMidMove,
}

// Fault is the record of one injected fault.
type Fault struct {
	Kind     FaultKind
	What     string        // what was done, e.g. "pause n2 + partition n3"
	Start    time.Duration // since the run began
	At       time.Time     // wall clock, to find the fault in the node logs
	Held     time.Duration // from the fault to its healing
	Recovery time.Duration // from healing to a healthy cluster
	Err      string        // the fault could not be injected or the cluster did not recover
}

// Nemesis injects faults into the compose cluster one after another, each
// followed by healing and a wait until the cluster is healthy again.
type Nemesis struct {
	C          *Cluster
	D          Containers
	Seed       uint64
	ProbeShard uint64 // the shard whose leader the -leader faults strike
	// OnLeaderFault is called right after a -leader fault struck node at t.
	OnLeaderFault func(kind FaultKind, node string, t time.Time)
	// RecoverTimeout bounds the wait for a healthy cluster after healing.
	RecoverTimeout time.Duration
	Logf           func(format string, args ...any)
	// TimeScale multiplies every hold and pause between faults; 0 means 1.
	// A test knob: the suite's own tests run faults against a fake in
	// milliseconds.
	TimeScale float64

	begin   time.Time
	rng     *rand.Rand
	mu      sync.Mutex
	faults  []Fault
	drained []string // nodes drained by restart-mid-move and not yet undrained
}

// Run injects faults until ctx ends or no fault fits before until, then heals
// every node. Failures to inject or to recover are recorded in the faults.
func (n *Nemesis) Run(ctx context.Context, until time.Time) {
	n.init()
	var cards []FaultKind
	for ctx.Err() == nil {
		if len(cards) == 0 {
			cards = append([]FaultKind(nil), deck...)
			n.rng.Shuffle(len(cards), func(i, j int) { cards[i], cards[j] = cards[j], cards[i] })
		}
		kind := cards[0]
		cards = cards[1:]
		need := 20 * time.Second
		switch kind {
		case FaultRollingRestart:
			need = time.Duration(len(n.C.Nodes)) * 20 * time.Second
		case FaultRestartMidMove:
			need = 60 * time.Second
		}
		if time.Until(until) < need {
			if time.Until(until) < 20*time.Second {
				break
			}
			continue // too long for the time left: draw the next card
		}
		n.one(ctx, kind)
		n.hold(ctx, 2*time.Second, 2*time.Second)
	}
	n.HealAll(context.WithoutCancel(ctx))
}

func (n *Nemesis) init() {
	n.begin = time.Now()
	n.rng = rand.New(rand.NewPCG(n.Seed, 0x6e656d65736973))
	if n.RecoverTimeout == 0 {
		n.RecoverTimeout = 60 * time.Second
	}
}

// one injects, holds and heals one fault, then waits for recovery.
func (n *Nemesis) one(ctx context.Context, kind FaultKind) {
	f := Fault{Kind: kind, Start: time.Since(n.begin).Round(time.Millisecond), At: time.Now()}
	heal := context.WithoutCancel(ctx) // healing must happen even when the run ends
	var err error
	switch kind {
	case FaultKill, FaultKillLeader:
		err = n.kill(ctx, heal, &f)
	case FaultPause, FaultPauseLeader:
		err = n.pause(ctx, heal, &f)
	case FaultPartition, FaultPartitionLeader:
		err = n.partition(ctx, heal, &f)
	case FaultRollingRestart:
		err = n.rollingRestart(heal, &f)
	case FaultCombo:
		err = n.combo(ctx, heal, &f)
	case FaultTransferPause:
		err = n.transferPause(ctx, heal, &f)
	case FaultKillAll:
		err = n.killAll(ctx, heal, &f)
	case FaultRestartMidMove:
		err = n.restartMidMove(ctx, heal, &f)
	}
	if err != nil {
		f.Err = err.Error()
		n.HealAll(heal)
	}
	rec, rerr := n.C.WaitHealthy(heal, n.RecoverTimeout)
	f.Recovery = rec.Round(time.Millisecond)
	if rerr != nil {
		f.Err = strings.TrimPrefix(f.Err+"; ", "; ") + "no recovery: " + rerr.Error()
		n.HealAll(heal)
	}
	n.logf("fault %-16s %-36s at %s UTC held %-8v recovered in %v %s", f.Kind, f.What,
		f.At.UTC().Format("15:04:05.000"), f.Held, f.Recovery, f.Err)
	n.mu.Lock()
	n.faults = append(n.faults, f)
	n.mu.Unlock()
}

// victim picks the node a fault strikes: the probe shard's leader for the
// -leader kinds, else any node.
func (n *Nemesis) victim(ctx context.Context, leader bool) (*Node, error) {
	if !leader {
		return n.C.Nodes[n.rng.IntN(len(n.C.Nodes))], nil
	}
	// The cluster was healthy a moment ago; a leadership change since is
	// given a few seconds to settle.
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, err := n.C.Leader(ctx, n.ProbeShard, n.C.Nodes)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return v, err
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
}

// LeaderFault reports whether faults of kind strike the probe shard's
// leader, so the canary measures the failover.
func LeaderFault(kind FaultKind) bool {
	return strings.HasSuffix(string(kind), "-leader") || kind == FaultTransferPause
}

func (n *Nemesis) struck(kind FaultKind, node *Node) {
	t := time.Now()
	if n.OnLeaderFault != nil && LeaderFault(kind) {
		n.OnLeaderFault(kind, node.ID, t)
	}
}

func (n *Nemesis) kill(ctx, heal context.Context, f *Fault) error {
	v, err := n.victim(ctx, f.Kind == FaultKillLeader)
	if err != nil {
		return err
	}
	f.What = "kill " + v.ID
	if err := n.D.Kill(heal, v.Container); err != nil {
		return err
	}
	n.struck(f.Kind, v)
	start := time.Now()
	n.hold(ctx, 3*time.Second, 5*time.Second)
	err = n.D.Start(heal, v.Container)
	f.Held = time.Since(start).Round(time.Millisecond)
	return err
}

func (n *Nemesis) pause(ctx, heal context.Context, f *Fault) error {
	v, err := n.victim(ctx, f.Kind == FaultPauseLeader)
	if err != nil {
		return err
	}
	f.What = "pause " + v.ID
	if err := n.D.Pause(heal, v.Container); err != nil {
		return err
	}
	n.struck(f.Kind, v)
	start := time.Now()
	n.hold(ctx, 3*time.Second, 4*time.Second)
	err = n.D.Unpause(heal, v.Container)
	f.Held = time.Since(start).Round(time.Millisecond)
	return err
}

func (n *Nemesis) partition(ctx, heal context.Context, f *Fault) error {
	v, err := n.victim(ctx, f.Kind == FaultPartitionLeader)
	if err != nil {
		return err
	}
	f.What = "partition " + v.ID
	if err := n.D.Disconnect(heal, n.C.Network, v.Container); err != nil {
		return err
	}
	n.struck(f.Kind, v)
	start := time.Now()
	n.hold(ctx, 4*time.Second, 6*time.Second)
	err = n.D.Connect(heal, n.C.Network, v.Container, v.IP, v.Aliases)
	f.Held = time.Since(start).Round(time.Millisecond)
	return err
}

// transferPause: FaultTransferPause.
func (n *Nemesis) transferPause(ctx, heal context.Context, f *Fault) error {
	l, err := n.victim(ctx, true)
	if err != nil {
		return err
	}
	v, err := n.C.View(ctx, l)
	if err != nil {
		return err
	}
	var followers []*Node
	for _, s := range v.Shards {
		if s.ID != n.ProbeShard {
			continue
		}
		for _, id := range s.Replicas {
			if x := n.C.Node(id); x != nil && id != l.ID {
				followers = append(followers, x)
			}
		}
	}
	if len(followers) == 0 {
		return fmt.Errorf("shard %d: no follower of %s to hand leadership to", n.ProbeShard, l.ID)
	}
	to := followers[n.rng.IntN(len(followers))]
	f.What = fmt.Sprintf("transfer s%d %s->%s, pause %s", n.ProbeShard, l.ID, to.ID, to.ID)
	if err := n.C.TransferLeader(ctx, l, n.ProbeShard, to.ID); err != nil {
		// Not a fault of the cluster (the target may lag, or leadership
		// moved meanwhile): pause the node all the same.
		f.What += fmt.Sprintf(" (transfer failed: %v)", err)
	}
	// Pause it the moment it says it leads (or 3s after the transfer,
	// whatever became of it): the less it has done as leader, the more is
	// in flight when it freezes.
	leads := n.waitLeads(ctx, to, 3*time.Second)
	if err := n.D.Pause(heal, to.Container); err != nil {
		return err
	}
	n.struck(f.Kind, to)
	if !leads {
		f.What += " (not yet leading)"
	}
	start := time.Now()
	n.hold(ctx, 3*time.Second, 4*time.Second)
	err = n.D.Unpause(heal, to.Container)
	f.Held = time.Since(start).Round(time.Millisecond)
	if err != nil || n.rng.IntN(2) == 0 {
		return err
	}
	// Leadership straight back to the node just thawed, from whoever
	// leads now.
	f.What += ", back to " + to.ID
	var terr error
	deadline := time.Now().Add(5 * time.Second)
	for ctx.Err() == nil {
		cur, err := n.C.Leader(ctx, n.ProbeShard, n.C.Nodes)
		if err == nil && cur == to {
			return nil
		}
		if err == nil {
			if terr = n.C.TransferLeader(ctx, cur, n.ProbeShard, to.ID); terr == nil {
				return nil
			}
		} else {
			terr = err
		}
		if time.Now().After(deadline) {
			break
		}
		sleepCtx(ctx, 100*time.Millisecond)
	}
	f.What += fmt.Sprintf(" (failed: %v)", terr) // not a fault of the cluster: the thawed node may lag
	return nil
}

// waitLeads polls until node v reports itself leader of the probe shard or
// d passes.
func (n *Nemesis) waitLeads(ctx context.Context, v *Node, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for ctx.Err() == nil {
		if view, err := n.C.View(ctx, v); err == nil {
			for _, s := range view.Shards {
				if s.ID == n.ProbeShard && s.Leader == v.ID {
					return true
				}
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		sleepCtx(ctx, 20*time.Millisecond)
	}
	return false
}

// killAll: FaultKillAll. Every container is killed and started at once.
func (n *Nemesis) killAll(ctx, heal context.Context, f *Fault) error {
	var ids []string
	for _, v := range n.C.Nodes {
		ids = append(ids, v.ID)
	}
	f.What = "kill " + strings.Join(ids, ",")
	if err := n.each(func(v *Node) error { return n.D.Kill(heal, v.Container) }); err != nil {
		return err
	}
	start := time.Now()
	n.hold(ctx, 2*time.Second, 3*time.Second)
	err := n.each(func(v *Node) error { return n.D.Start(heal, v.Container) })
	f.Held = time.Since(start).Round(time.Millisecond)
	return err
}

// each runs fn on every node at once and joins the errors.
func (n *Nemesis) each(fn func(v *Node) error) error {
	errs := make([]error, len(n.C.Nodes))
	var wg sync.WaitGroup
	for i, v := range n.C.Nodes {
		wg.Go(func() { errs[i] = fn(v) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// moveStep is how far a move has gone, as the shard's configuration shows.
type moveStep int

const (
	stepStarted  moveStep = iota // requested; the configuration is unchanged
	stepFirst                    // move: learner added; re-add: the replica removed
	stepSecond                   // move: learner promoted; re-add: learner added
	stepThird                    // move: old voter removed; re-add: promoted
	moveStepsLen                 // number of steps
)

// stepNames name the steps of a move and of a re-add.
var stepNames = map[bool][moveStepsLen]string{
	true:  {"started", "learner added", "promoted", "old voter removed"},
	false: {"started", "replica removed", "learner added", "promoted"},
}

// restartMidMove: FaultRestartMidMove.
func (n *Nemesis) restartMidMove(ctx, heal context.Context, f *Fault) error {
	via := n.C.Nodes[n.rng.IntN(len(n.C.Nodes))]
	v, err := n.C.View(ctx, via)
	if err != nil {
		return err
	}
	if len(v.Shards) == 0 {
		return errors.New("no shards in the view")
	}
	s := v.Shards[n.rng.IntN(len(v.Shards))]
	var st *ShardStatus
	if err := retry(ctx, func() (err error) { st, err = n.C.ShardStatus(ctx, via, s.ID); return err }); err != nil {
		return err
	}
	var spare, followers []string
	for _, x := range n.C.Nodes {
		if !slices.Contains(s.Replicas, x.ID) {
			spare = append(spare, x.ID)
		}
	}
	for _, id := range s.Replicas {
		if id != st.Leader {
			followers = append(followers, id)
		}
	}
	move := len(spare) > 0
	var from string
	if move {
		// Drain one replica holder: the placement driver moves its replicas
		// (this shard's among them) to the spare nodes, learner first.
		from = s.Replicas[n.rng.IntN(len(s.Replicas))]
		f.What = fmt.Sprintf("drain %s (s%d)", from, s.ID)
		if err := retry(ctx, func() error { return n.C.Drain(ctx, via, from) }); err != nil {
			return err
		}
		n.mu.Lock()
		n.drained = append(n.drained, from)
		n.mu.Unlock()
	} else {
		// Every node holds the shard: remove a follower's replica; the
		// placement driver repairs the shard by adding it back.
		if len(followers) == 0 {
			return fmt.Errorf("shard %d: no follower (leader %q, replicas %v)", s.ID, st.Leader, s.Replicas)
		}
		from = followers[n.rng.IntN(len(followers))]
		f.What = fmt.Sprintf("remove %s from s%d", from, s.ID)
		if err := retry(ctx, func() error { return n.C.RemoveReplica(ctx, via, s.ID, from) }); err != nil {
			return err
		}
	}
	at := moveStep(n.rng.IntN(int(moveStepsLen)))
	reached, to, leader := n.waitStep(ctx, via, s.ID, s.Replicas, from, move, at, 30*time.Second)
	// The victim: the node giving up its replica, the node receiving one,
	// or the shard's leader.
	cands := []string{from}
	if to != "" && to != from {
		cands = append(cands, to)
	}
	if leader != "" && !slices.Contains(cands, leader) {
		cands = append(cands, leader)
	}
	victim := n.C.Node(cands[n.rng.IntN(len(cands))])
	names := stepNames[move]
	f.What += fmt.Sprintf(", at %q (wanted %q) kill %s", names[reached], names[at], victim.ID)
	if err := n.D.Kill(heal, victim.Container); err != nil {
		return err
	}
	start := time.Now()
	n.hold(ctx, 2*time.Second, 3*time.Second)
	err = n.D.Start(heal, victim.Container)
	f.Held = time.Since(start).Round(time.Millisecond)
	if err != nil {
		return err
	}
	if move {
		return n.undrain(heal, from)
	}
	return nil
}

// waitStep polls shard's configuration until the move (or re-add) of
// from's replica reaches step at, or d passes, and returns the step
// reached, the node receiving a replica (move: the first member not among
// replicas; re-add: from) and the shard's leader.
func (n *Nemesis) waitStep(ctx context.Context, via *Node, shard uint64, replicas []string, from string, move bool, at moveStep, d time.Duration) (reached moveStep, to, leader string) {
	deadline := time.Now().Add(d)
	if !move {
		to = from
	}
	for ctx.Err() == nil {
		if st, err := n.C.ShardStatus(ctx, via, shard); err == nil {
			leader = st.Leader
			step := stepStarted
			if move {
				for _, m := range st.Members {
					if !slices.Contains(replicas, m.ID) {
						to = m.ID
					}
				}
				switch m := st.Member(to); {
				case m != nil && m.Voter && st.Member(from) == nil:
					step = stepThird
				case m != nil && m.Voter:
					step = stepSecond
				case m != nil:
					step = stepFirst
				}
			} else {
				switch m := st.Member(from); {
				case m == nil:
					step = stepFirst
				case !m.Voter:
					step = stepSecond
				}
				if step == stepStarted && reached > stepStarted {
					step = stepThird // removed and back as a voter
				}
			}
			reached = max(reached, step)
		}
		if reached >= at || time.Now().After(deadline) {
			return reached, to, leader
		}
		sleepCtx(ctx, 20*time.Millisecond)
	}
	return reached, to, leader
}

// retry calls fn up to three times, half a second apart, until it succeeds:
// a placement call fails while the shard or meta group changes leader.
func retry(ctx context.Context, fn func() error) error {
	var err error
	for i := 0; i < 3; i++ {
		if err = fn(); err == nil || ctx.Err() != nil {
			return err
		}
		sleepCtx(ctx, 500*time.Millisecond)
	}
	return err
}

// undrain makes node id a replica target again and forgets it was drained.
func (n *Nemesis) undrain(ctx context.Context, id string) error {
	var errs []error
	for _, via := range n.C.Nodes {
		err := n.C.Undrain(ctx, via, id)
		if err == nil {
			n.mu.Lock()
			n.drained = slices.DeleteFunc(n.drained, func(x string) bool { return x == id })
			n.mu.Unlock()
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("undrain %s: %w", id, errors.Join(errs...))
}

// rollingRestart restarts every node gracefully in turn and waits for a
// healthy cluster before the next one, as an operator upgrading would.
func (n *Nemesis) rollingRestart(heal context.Context, f *Fault) error {
	order := n.rng.Perm(len(n.C.Nodes))
	var ids []string
	start := time.Now()
	for _, i := range order {
		v := n.C.Nodes[i]
		ids = append(ids, v.ID)
		if err := n.D.Restart(heal, v.Container, 10*time.Second); err != nil {
			return err
		}
		if _, err := n.C.WaitHealthy(heal, n.RecoverTimeout); err != nil {
			f.What = "restart " + strings.Join(ids, ",")
			return fmt.Errorf("after restarting %s: %w", v.ID, err)
		}
	}
	f.What = "restart " + strings.Join(ids, ",")
	f.Held = time.Since(start).Round(time.Millisecond)
	return nil
}

// combo strikes twice at once: two nodes (quorum is lost while both last),
// or one node twice (killed while cut off; paused and cut off). A node is
// never started while cut off: it could not resolve its own service name and
// would exit at once.
func (n *Nemesis) combo(ctx, heal context.Context, f *Fault) error {
	nodes := n.C.Nodes
	a := nodes[n.rng.IntN(len(nodes))]
	var steps []func() error
	var undo [3][]func() error // by kind; healed network first, start last
	var what []string
	prim := func(v *Node, which int) {
		switch which {
		case 0:
			what = append(what, "kill "+v.ID)
			steps = append(steps, func() error { return n.D.Kill(heal, v.Container) })
			undo[2] = append(undo[2], func() error { return n.D.Start(heal, v.Container) })
		case 1:
			what = append(what, "pause "+v.ID)
			steps = append(steps, func() error { return n.D.Pause(heal, v.Container) })
			undo[1] = append(undo[1], func() error { return n.D.Unpause(heal, v.Container) })
		default:
			what = append(what, "partition "+v.ID)
			steps = append(steps, func() error { return n.D.Disconnect(heal, n.C.Network, v.Container) })
			undo[0] = append(undo[0], func() error { return n.D.Connect(heal, n.C.Network, v.Container, v.IP, v.Aliases) })
		}
	}
	switch n.rng.IntN(3) {
	case 0: // two nodes at once
		b := nodes[(indexOf(nodes, a)+1+n.rng.IntN(len(nodes)-1))%len(nodes)]
		prim(a, n.rng.IntN(3))
		prim(b, n.rng.IntN(3))
	case 1: // dies while cut off (a deposed leader's unacknowledged entries die with it), back after healing
		prim(a, 2)
		prim(a, 0)
	default: // paused, then cut off
		prim(a, 1)
		prim(a, 2)
	}
	f.What = strings.Join(what, " + ")
	var errs []error
	for _, s := range steps {
		if err := s(); err != nil {
			errs = append(errs, err)
			break // the caller heals whatever was done
		}
	}
	start := time.Now()
	if len(errs) == 0 {
		n.hold(ctx, 2*time.Second, 3*time.Second)
		for _, fns := range undo {
			for _, fn := range fns {
				errs = append(errs, fn())
			}
		}
	}
	f.Held = time.Since(start).Round(time.Millisecond)
	return errors.Join(errs...)
}

// HealAll undoes every fault, whatever state the nodes are in: unpause,
// reconnect with the fixed address and aliases, start, and undrain the
// nodes restart-mid-move drained.
func (n *Nemesis) HealAll(ctx context.Context) error {
	err := HealAll(ctx, n.D, n.C)
	n.mu.Lock()
	drained := n.drained
	n.drained = nil
	n.mu.Unlock()
	var errs []error
	for _, id := range drained {
		if uerr := n.undrain(ctx, id); uerr != nil {
			errs = append(errs, uerr)
			n.mu.Lock()
			n.drained = append(n.drained, id)
			n.mu.Unlock()
		}
	}
	return errors.Join(append(errs, err)...)
}

// HealAll brings every node of c back: unpaused, connected, running.
func HealAll(ctx context.Context, d Containers, c *Cluster) error {
	var errs []error
	for _, v := range c.Nodes {
		st, err := d.Inspect(ctx, v.Container)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Paused {
			errs = append(errs, d.Unpause(ctx, v.Container))
		}
		if _, ok := st.Networks[c.Network]; !ok {
			errs = append(errs, d.Connect(ctx, c.Network, v.Container, v.IP, v.Aliases))
		}
		if !st.Running {
			errs = append(errs, d.Start(ctx, v.Container))
		}
	}
	return errors.Join(errs...)
}

// Faults returns the faults injected so far.
func (n *Nemesis) Faults() []Fault {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Fault(nil), n.faults...)
}

// hold sleeps base plus up to jitter more (scaled by TimeScale), or until
// ctx ends.
func (n *Nemesis) hold(ctx context.Context, base, jitter time.Duration) {
	d := base + n.jitter(jitter)
	if n.TimeScale > 0 {
		d = time.Duration(float64(d) * n.TimeScale)
	}
	sleepCtx(ctx, d)
}

func (n *Nemesis) jitter(max time.Duration) time.Duration {
	return time.Duration(n.rng.Int64N(int64(max) + 1))
}

func (n *Nemesis) logf(format string, args ...any) {
	if n.Logf != nil {
		n.Logf("[%7.1fs] "+format, append([]any{time.Since(n.begin).Seconds()}, args...)...)
	}
}

func indexOf(nodes []*Node, v *Node) int {
	for i, x := range nodes {
		if x == v {
			return i
		}
	}
	return -1
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
