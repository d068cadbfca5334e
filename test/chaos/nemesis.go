package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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
)

// deck is one round of faults: every kind at least once, leader kills more
// often because each one is a failover measurement. It is shuffled with the
// seed, so the order is random and replayable.
var deck = []FaultKind{
	FaultKillLeader, FaultKillLeader, FaultKillLeader, FaultKill,
	FaultPause, FaultPauseLeader, FaultPartition, FaultPartitionLeader,
	FaultCombo, FaultCombo, FaultRollingRestart,
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
	D          Docker
	Seed       uint64
	ProbeShard uint64 // the shard whose leader the -leader faults strike
	// OnLeaderFault is called right after a -leader fault struck node at t.
	OnLeaderFault func(kind FaultKind, node string, t time.Time)
	// RecoverTimeout bounds the wait for a healthy cluster after healing.
	RecoverTimeout time.Duration
	Logf           func(format string, args ...any)

	begin  time.Time
	rng    *rand.Rand
	mu     sync.Mutex
	faults []Fault
}

// Run injects faults until ctx ends or no fault fits before until, then heals
// every node. Failures to inject or to recover are recorded in the faults.
func (n *Nemesis) Run(ctx context.Context, until time.Time) {
	n.begin = time.Now()
	n.rng = rand.New(rand.NewPCG(n.Seed, 0x6e656d65736973))
	if n.RecoverTimeout == 0 {
		n.RecoverTimeout = 60 * time.Second
	}
	var cards []FaultKind
	for ctx.Err() == nil {
		if len(cards) == 0 {
			cards = append([]FaultKind(nil), deck...)
			n.rng.Shuffle(len(cards), func(i, j int) { cards[i], cards[j] = cards[j], cards[i] })
		}
		kind := cards[0]
		cards = cards[1:]
		need := 20 * time.Second
		if kind == FaultRollingRestart {
			need = time.Duration(len(n.C.Nodes)) * 20 * time.Second
		}
		if time.Until(until) < need {
			if time.Until(until) < 20*time.Second {
				break
			}
			continue // too long for the time left: draw the next card
		}
		n.one(ctx, kind)
		sleepCtx(ctx, 2*time.Second+n.jitter(2*time.Second))
	}
	n.HealAll(context.WithoutCancel(ctx))
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

func (n *Nemesis) struck(kind FaultKind, node *Node) {
	t := time.Now()
	if n.OnLeaderFault != nil && strings.HasSuffix(string(kind), "-leader") {
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
	sleepCtx(ctx, 3*time.Second+n.jitter(5*time.Second))
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
	sleepCtx(ctx, 3*time.Second+n.jitter(4*time.Second))
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
	sleepCtx(ctx, 4*time.Second+n.jitter(6*time.Second))
	err = n.D.Connect(heal, n.C.Network, v.Container, v.IP, v.Aliases)
	f.Held = time.Since(start).Round(time.Millisecond)
	return err
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
		sleepCtx(ctx, 2*time.Second+n.jitter(3*time.Second))
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
// reconnect with the fixed address and aliases, start.
func (n *Nemesis) HealAll(ctx context.Context) error {
	return HealAll(ctx, n.D, n.C)
}

// HealAll brings every node of c back: unpaused, connected, running.
func HealAll(ctx context.Context, d Docker, c *Cluster) error {
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
