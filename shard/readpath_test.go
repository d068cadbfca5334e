package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
)

// An in-process shard cluster for the read-path tests: one mux and one host
// per node, replicas bootstrapped on every node, test knobs wired to gates.

type readNode struct {
	id, addr string
	mux      *Mux
	host     *Host
}

type readCluster struct {
	t     *testing.T
	nodes []*readNode
	gates *gates
}

// gates block knob hooks: a hook for (kind, node, shard) waits while that
// gate is held.
type gates struct {
	mu     sync.Mutex
	held   map[gateKey]chan struct{}
	parked map[gateKey]chan struct{} // closed once a hook waits on the held gate
	done   chan struct{}             // closed at cleanup: releases every hook
}

type gateKey struct {
	kind  string
	node  int
	shard uint64
}

func (g *gates) hold(kind string, node int, shard uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := gateKey{kind, node, shard}
	if g.held[k] == nil {
		g.held[k] = make(chan struct{})
		g.parked[k] = make(chan struct{})
	}
}

func (g *gates) release(kind string, node int, shard uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	k := gateKey{kind, node, shard}
	if ch := g.held[k]; ch != nil {
		close(ch)
		delete(g.held, k)
		delete(g.parked, k)
	}
}

func (g *gates) wait(kind string, node int, shard uint64) {
	k := gateKey{kind, node, shard}
	g.mu.Lock()
	ch, parked := g.held[k], g.parked[k]
	if parked != nil {
		select {
		case <-parked:
		default:
			close(parked)
		}
	}
	g.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case <-ch:
	case <-g.done:
	}
}

// waitParked returns once a hook is blocked on the held gate.
func (g *gates) waitParked(t *testing.T, kind string, node int, shard uint64, d time.Duration) {
	t.Helper()
	g.mu.Lock()
	parked := g.parked[gateKey{kind, node, shard}]
	g.mu.Unlock()
	if parked == nil {
		t.Fatalf("gate %s/%d/%d is not held", kind, node, shard)
	}
	select {
	case <-parked:
	case <-time.After(d):
		t.Fatalf("no %s hook of node %d shard %d parked within %v", kind, node, shard, d)
	}
}

// startReadCluster starts n nodes; tuning (nil = FastRaftTuning) may differ
// per node.
func startReadCluster(t *testing.T, n int, tuning func(i int) RaftTuning, tk *TransportKnobs) *readCluster {
	t.Helper()
	return startReadClusterLogs(t, n, tuning, tk, nil)
}

// startReadClusterLogs is startReadCluster with node i's raft log from
// logs(i) (boltdb when logs is nil).
func startReadClusterLogs(t *testing.T, n int, tuning func(i int) RaftTuning, tk *TransportKnobs, logs func(i int) NodeLog) *readCluster {
	t.Helper()
	c := &readCluster{t: t, gates: &gates{
		held: map[gateKey]chan struct{}{}, parked: map[gateKey]chan struct{}{}, done: make(chan struct{}),
	}}
	for i := 0; i < n; i++ {
		m := mustMux(t, tk, 0)
		tu := FastRaftTuning()
		if tuning != nil {
			tu = tuning(i)
		}
		i := i
		var nl NodeLog = OpenBoltLogs(BoltConfig{})
		if logs != nil {
			nl = logs(i)
		}
		h, err := NewHost(HostConfig{
			NodeID: fmt.Sprintf("n%d", i+1), DataDir: t.TempDir(), Mux: m, Tuning: tu, Logs: nl,
			Logger: slog.New(slog.DiscardHandler),
			Knobs: &ReplicaKnobs{
				BeforeLeadershipLook: func(shard uint64) { c.gates.wait("look", i, shard) },
				BeforeFSM:            func(shard uint64) { c.gates.wait("fsm", i, shard) },
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() }) // before the mux closes (cleanups run last-in first-out)
		c.nodes = append(c.nodes, &readNode{id: fmt.Sprintf("n%d", i+1), addr: m.Addr(), mux: m, host: h})
	}
	t.Cleanup(func() { close(c.gates.done) }) // first: a held hook must not block shutdown
	return c
}

func (c *readCluster) servers() []raft.Server {
	var out []raft.Server
	for _, n := range c.nodes {
		out = append(out, raft.Server{ID: raft.ServerID(n.id), Address: raft.ServerAddress(n.addr), Suffrage: raft.Voter})
	}
	return out
}

// open bootstraps shard id over the whole keyspace on every node.
func (c *readCluster) open(id uint64) []*Replica {
	c.t.Helper()
	var reps []*Replica
	for _, n := range c.nodes {
		r, err := n.host.OpenReplica(fsm.Range{ID: id, Epoch: 1}, c.servers())
		if err != nil {
			c.t.Fatal(err)
		}
		reps = append(reps, r)
	}
	return reps
}

func readWaitFor(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", d, what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func leaderIndex(reps []*Replica) int {
	for i, r := range reps {
		if r != nil && r.IsLeader() {
			return i
		}
	}
	return -1
}

// transferLeader moves the leadership of reps' shard to node to.
func (c *readCluster) transferLeader(reps []*Replica, to int) {
	c.t.Helper()
	readWaitFor(c.t, 15*time.Second, fmt.Sprintf("node %d to lead", to), func() error {
		l := leaderIndex(reps)
		if l == to {
			return nil
		}
		if l < 0 {
			return errors.New("no leader")
		}
		n := c.nodes[to]
		err := reps[l].Raft().LeadershipTransferToServer(raft.ServerID(n.id), raft.ServerAddress(n.addr)).Error()
		if err != nil {
			return err
		}
		if !reps[to].IsLeader() {
			return errors.New("transfer done, not leader yet")
		}
		return nil
	})
}

func put(t *testing.T, r *Replica, key, value string) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := r.Propose(ctx, &fsm.Command{Op: fsm.OpPut, Key: []byte(key), Value: []byte(value)})
	if err != nil {
		t.Fatalf("put %s=%s: %v", key, value, err)
	}
	if res.Err != nil {
		t.Fatalf("put %s=%s: %v", key, value, res.Err)
	}
	return res.Index
}

func value(t *testing.T, r *Replica, key string) string {
	t.Helper()
	kv, err := r.FSM().Get([]byte(key))
	if err != nil {
		t.Fatal(err)
	}
	if kv == nil {
		return "<absent>"
	}
	return string(kv.Value)
}

func linearizable(r *Replica, d time.Duration) (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return r.LinearizableRead(ctx)
}

// Invariant I2, precondition (a): readiness belongs to the term whose no-op
// this replica committed. Leader(T) → follower → Leader(T+2) while the
// leadership watcher does not look (starved, as after SIGCONT) must not leave
// the replica ready: a fresh leader's commit index may not yet cover writes
// acknowledged in T+1. Here A has the write of T+1 in its log but has not
// learned that it committed (B's commit pings are far apart), and the answers
// that would let A commit an entry of T+2 are slowed down: a read in that
// window must wait, not answer from the old commit index.
func TestLinearizableReadNeedsNoopOfItsTerm(t *testing.T) {
	delays := &linkDelays{d: map[[2]string]time.Duration{}}
	c := startReadCluster(t, 3, func(i int) RaftTuning {
		tu := FastRaftTuning()
		switch i {
		case 0:
			// A's election must outlast the slowed answers to its votes;
			// its commit pings keep B and C following while it leads.
			// Its lease outlasts them too.
			tu.HeartbeatTimeout, tu.ElectionTimeout, tu.LeaderLeaseTimeout = 4*time.Second, 4*time.Second, 4*time.Second
			tu.CommitTimeout = 50 * time.Millisecond
		case 1:
			tu.CommitTimeout = 10 * time.Second // B, leading T+1, tells A of commits only on appends
		}
		if i > 0 {
			// B and C keep following A while A waits for their slowed
			// answers (A's heartbeats come every 0.4-0.8 s).
			tu.HeartbeatTimeout, tu.ElectionTimeout = 1500*time.Millisecond, 1500*time.Millisecond
		}
		return tu
	}, &TransportKnobs{Delay: delays.delay})
	reps := c.open(1)
	c.transferLeader(reps, 0)
	readWaitFor(t, 10*time.Second, "A ready", func() error { _, err := linearizable(reps[0], time.Second); return err })
	put(t, reps[0], "k", "v0")
	term := reps[0].Raft().CurrentTerm()

	c.gates.hold("look", 0, 1) // A's watcher stops looking
	c.gates.waitParked(t, "look", 0, 1, 5*time.Second)
	c.transferLeader(reps, 1)
	readWaitFor(t, 10*time.Second, "B ready", func() error { _, err := linearizable(reps[1], time.Second); return err })
	idx := put(t, reps[1], "k", "v1") // acknowledged in T+1
	readWaitFor(t, 10*time.Second, "A to hold v1 in its log and apply what it knows committed", func() error {
		if last := reps[0].Raft().LastIndex(); last < idx {
			return fmt.Errorf("A's last index %d < %d", last, idx)
		}
		if ci, a := reps[0].Raft().CommitIndex(), reps[0].FSM().Applied(); a < ci {
			return fmt.Errorf("A applied %d < its commit index %d", a, ci)
		}
		return nil
	})
	if ci := reps[0].Raft().CommitIndex(); ci >= idx {
		t.Skipf("A learned that v1 committed (commit index %d >= %d): no window to test", ci, idx)
	}
	c.gates.hold("fsm", 0, 1) // and applies nothing more
	const slow = time.Second  // B's and C's answers to A
	delays.set(c.nodes[1].addr, c.nodes[0].addr, slow)
	delays.set(c.nodes[2].addr, c.nodes[0].addr, slow)
	n := c.nodes[0]
	// B and C start no election of their own until the property is
	// checked. B and C grant A their votes at once but A hears so a second
	// later, and under load a follower's timeout could run out before A's
	// first heartbeat: one won the next term, A led its own term only
	// briefly, and a wait that looked in between never saw it lead (CI,
	// 2026-12-03: "timed out after 40s waiting for A to lead again").
	restore := holdOffElections(t, reps[1], reps[2])
	// B's transfer future times out (its TimeoutNow reaches A late), but A
	// starts its election when it arrives.
	_ = reps[1].Raft().LeadershipTransferToServer(raft.ServerID(n.id), raft.ServerAddress(n.addr)).Error()
	// A setup step, not the property: its election's vote answers are
	// slowed by a second each, and under make test's parallel, -race load
	// it took over 5 s once, and over 15 s on 2026-12-02 ("timed out after
	// 15s waiting for A to lead again": an election A lost waits out its 4 s
	// election timeout, randomized up to twice that, before the next). A
	// later start only narrows the window, which skips the test rather than
	// passing it.
	readWaitFor(t, 40*time.Second, "A to lead again", func() error {
		if !reps[0].IsLeader() {
			return fmt.Errorf("not yet: %s", raftStates(reps))
		}
		return nil
	})
	if now := reps[0].Raft().CurrentTerm(); now < term+2 {
		t.Fatalf("term went from %d to %d, want two elections", term, now)
	}
	if ci := reps[0].Raft().CommitIndex(); ci >= idx {
		t.Skipf("A's commit index %d already covers v1 (%d): no window to test", ci, idx)
	}

	got, err := linearizable(reps[0], 3*slow)
	if err == nil {
		t.Fatalf("LinearizableRead in term %d answered k=%s at applied index %d on readiness from term %d; "+
			"v1 (index %d) was acknowledged in between", reps[0].Raft().CurrentTerm(), value(t, reps[0], "k"), got, term, idx)
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("LinearizableRead before readiness: %v, want ErrUnavailable", err)
	}

	restore()
	delays.set(c.nodes[1].addr, c.nodes[0].addr, 0)
	delays.set(c.nodes[2].addr, c.nodes[0].addr, 0)
	c.gates.release("fsm", 0, 1)
	c.gates.release("look", 0, 1)
	readWaitFor(t, 10*time.Second, "a linearizable read that sees v1 once A's watcher caught up", func() error {
		l := leaderIndex(reps)
		if l < 0 {
			return errors.New("no leader")
		}
		if _, err := linearizable(reps[l], time.Second); err != nil {
			return err
		}
		if v := value(t, reps[l], "k"); v != "v1" {
			t.Fatalf("linearizable read on node %d sees k=%s, want v1", l, v)
		}
		return nil
	})
}

// holdOffElections raises reps' heartbeat and election timeouts to a
// minute, so that none of them starts an election (a follower checks the
// new timeout when its timer next fires), and returns what puts them back.
func holdOffElections(t *testing.T, reps ...*Replica) (restore func()) {
	t.Helper()
	var olds []raft.ReloadableConfig
	for _, r := range reps {
		old := r.Raft().ReloadableConfig()
		held := old
		held.HeartbeatTimeout, held.ElectionTimeout = time.Minute, time.Minute
		if err := r.Raft().ReloadConfig(held); err != nil {
			t.Fatal(err)
		}
		olds = append(olds, old)
	}
	return func() {
		for i, r := range reps {
			if err := r.Raft().ReloadConfig(olds[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// raftStates says each replica's raft state, term and known leader, for a
// wait's failure message.
func raftStates(reps []*Replica) string {
	var b strings.Builder
	for i, r := range reps {
		addr, id := r.Raft().LeaderWithID()
		fmt.Fprintf(&b, "[%d: %s term %d leader %s/%s last %d commit %d] ", i, r.Raft().State(), r.Raft().CurrentTerm(), id, addr, r.Raft().LastIndex(), r.Raft().CommitIndex())
	}
	return b.String()
}

// clearDelaysAtCleanup removes every delay of c's links when the test ends,
// before its hosts close (cleanups run last-in first-out): no delayed link
// holds their shutdown.
func clearDelaysAtCleanup(t *testing.T, c *readCluster, delays *linkDelays) {
	t.Cleanup(func() {
		for _, from := range c.nodes {
			for _, to := range c.nodes {
				delays.set(from.addr, to.addr, 0)
			}
		}
	})
}

// linkDelays is a TransportKnobs.Delay table, changed while the test runs.
type linkDelays struct {
	mu sync.Mutex
	d  map[[2]string]time.Duration
}

func (l *linkDelays) set(from, to string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.d[[2]string{from, to}] = d
}

func (l *linkDelays) delay(from, to string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.d[[2]string{from, to}]
}

// Invariant I2, precondition (b): the quorum round of a linearizable read
// counts only answers to messages sent after the read index was taken.
// hashicorp/raft's VerifyLeader counts any successful answer that arrives
// after it registered, including answers to heartbeats and appends sent
// before it (replication.go: heartbeat and pipelineDecode call notifyAll on
// every answer). This test delays the followers' answers to the leader A,
// as a SIGSTOP of A past the election timeout queues them: A's followers
// elect a new leader and acknowledge a write while answers they gave A in
// the old term are still on their way, and A must not count those.
func TestVerifyIgnoresAnswersSentBeforeIt(t *testing.T) {
	c, delays, reps := startPausableLeaderCluster(t)
	put(t, reps[0], "k", "v0")
	term := reps[0].Raft().CurrentTerm()

	const answerDelay = 3 * time.Second
	a, b, cc := c.nodes[0].addr, c.nodes[1].addr, c.nodes[2].addr
	delays.set(b, a, answerDelay) // what B and C say to A from now on arrives late
	delays.set(cc, a, answerDelay)
	time.Sleep(300 * time.Millisecond) // B and C answer A's pings meanwhile: those answers are on their way
	cut := time.Now()
	// A's messages stop reaching B and C until after the stale answers
	// reached A (and A then learns of the new term and steps down).
	delays.set(a, b, answerDelay+500*time.Millisecond)
	delays.set(a, cc, answerDelay+500*time.Millisecond)

	// B or C leads a later term; an election slower than half the delay
	// (a loaded machine) leaves no time to read before the stale answers
	// arrive, and the setup cannot hold: skipped like the write below.
	newLeader := -1
	for newLeader < 0 {
		for _, i := range []int{1, 2} {
			if reps[i].IsLeader() && reps[i].Raft().CurrentTerm() > term {
				newLeader = i
			}
		}
		if newLeader < 0 && time.Since(cut) > answerDelay/2 {
			t.Skipf("no new leader %v after the cut: too slow to read before the stale answers arrive (%v)",
				time.Since(cut).Round(time.Millisecond), answerDelay)
		}
		time.Sleep(10 * time.Millisecond)
	}
	put(t, reps[newLeader], "k", "v1")
	if since := time.Since(cut); since > answerDelay-800*time.Millisecond {
		t.Skipf("the new term took %v: too slow to read before the stale answers arrive (%v)", since, answerDelay)
	}
	if !reps[0].IsLeader() || reps[0].Raft().CurrentTerm() != term {
		t.Fatalf("A left term %d before the read: the setup did not hold", term)
	}

	idx, err := linearizable(reps[0], 2*answerDelay)
	if err == nil {
		if v := value(t, reps[0], "k"); v != "v1" {
			t.Fatalf("stale linearizable read on the deposed leader: k=%s at applied index %d after v1 was "+
				"acknowledged in term %d; its leadership check counted answers given in term %d before the read began",
				v, idx, reps[newLeader].Raft().CurrentTerm(), term)
		}
	}
	t.Logf("read on the deposed leader after %v: %v", time.Since(cut).Round(time.Millisecond), err)
	// Closing A waits for its pipelined appends (at most two in flight),
	// whose answers take answerDelay plus the cut to come back.
}

// Scenario: the range map lists a split's child before this node's replica of
// the parent applied the split, so the node opens the child empty; the child's
// leader already talks to it (a fresh LastContact) while its first snapshot is
// on its way. Until it has that state, the empty replica must refuse session
// and stale reads rather than answer from nothing.
func TestEmptyChildReplicaRefusesReads(t *testing.T) {
	c := startReadCluster(t, 3, nil, nil)
	reps := c.open(1)
	c.transferLeader(reps, 0)
	put(t, reps[0], "a", "1")
	put(t, reps[0], "x", "2") // in the child's half

	c.gates.hold("fsm", 2, 1) // node 2's parent has not applied the split
	c.gates.hold("fsm", 2, 2) // node 2's empty child waits for its snapshot
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := reps[0].Split(ctx, []byte("m"), 2, 0)
	if err != nil || res.Err != nil {
		t.Fatalf("split: %v %v", err, res)
	}
	var child fsm.Range
	readWaitFor(t, 10*time.Second, "the child to have a leader on node 0 or 1", func() error {
		for _, n := range c.nodes[:2] {
			if r, ok := n.host.Replica(2); ok && r.IsLeader() {
				child = r.Range()
				return nil
			}
		}
		return errors.New("no child leader")
	})
	empty, err := c.nodes[2].host.OpenReplica(child, nil)
	if err != nil {
		t.Fatal(err)
	}
	readWaitFor(t, 10*time.Second, "the empty child to hear from its leader", func() error {
		if last := empty.Raft().LastContact(); last.IsZero() || time.Since(last) > time.Second {
			return fmt.Errorf("last contact %v", last)
		}
		return nil
	})
	if a := empty.FSM().Applied(); a != 0 {
		t.Fatalf("the child on node 2 has applied index %d: the setup did not keep it empty", a)
	}

	if idx, err := empty.SessionRead(ctx, 0, 200*time.Millisecond); err == nil {
		t.Errorf("session read on the empty child served applied index %d (x=%s)", idx, value(t, empty, "x"))
	} else if !errors.Is(err, ErrUnavailable) {
		t.Errorf("session read on the empty child: %v, want ErrUnavailable", err)
	}
	if idx, err := empty.StaleRead(5 * time.Second); err == nil {
		t.Errorf("stale read on the empty child served applied index %d (x=%s)", idx, value(t, empty, "x"))
	} else if !errors.Is(err, ErrUnavailable) {
		t.Errorf("stale read on the empty child: %v, want ErrUnavailable", err)
	}

	c.gates.release("fsm", 2, 2)
	c.gates.release("fsm", 2, 1)
	readWaitFor(t, 10*time.Second, "the child on node 2 to serve its state", func() error {
		if _, err := empty.SessionRead(ctx, 0, 200*time.Millisecond); err != nil {
			return err
		}
		if v := value(t, empty, "x"); v != "2" {
			return fmt.Errorf("x=%s", v)
		}
		return nil
	})
}

// docs/api.md, consistency=stale: "data at most max_staleness old". A follower
// that hears its leader but has not applied what the leader committed serves
// data older than its leader contact suggests: the stale bound must cover how
// far the replica has applied, not only when it last heard a leader.
func TestStaleReadBoundsAppliedLag(t *testing.T) {
	c := startReadCluster(t, 3, nil, nil)
	reps := c.open(1)
	c.transferLeader(reps, 0)
	idx0 := put(t, reps[0], "k", "v0")
	readWaitFor(t, 10*time.Second, "node 2 to apply v0", func() error {
		if a := reps[2].FSM().Applied(); a < idx0 {
			return fmt.Errorf("applied %d < %d", a, idx0)
		}
		return nil
	})

	c.gates.hold("fsm", 2, 1) // node 2 stops applying
	idx1 := put(t, reps[0], "k", "v1")
	acked := time.Now()
	readWaitFor(t, 10*time.Second, "node 2 to learn that v1 committed", func() error {
		if ci := reps[2].Raft().CommitIndex(); ci < idx1 {
			return fmt.Errorf("commit index %d < %d", ci, idx1)
		}
		return nil
	})
	const maxStaleness = 500 * time.Millisecond
	time.Sleep(time.Until(acked.Add(maxStaleness + 100*time.Millisecond))) // v1 is now older than the bound

	if last := reps[2].Raft().LastContact(); time.Since(last) > maxStaleness {
		t.Fatalf("node 2 last heard its leader %v ago: the setup needs a fresh contact", time.Since(last))
	}
	idx, err := reps[2].StaleRead(maxStaleness)
	if err == nil && idx < idx1 {
		t.Fatalf("stale read with max_staleness %v served applied index %d (k=%s) although index %d was "+
			"acknowledged %v ago", maxStaleness, idx, value(t, reps[2], "k"), idx1, time.Since(acked).Round(time.Millisecond))
	}
	if err != nil && !errors.Is(err, ErrUnavailable) {
		t.Fatalf("stale read on a lagging replica: %v, want ErrUnavailable", err)
	}

	c.gates.release("fsm", 2, 1)
	readWaitFor(t, 10*time.Second, "node 2 to serve a stale read that covers v1", func() error {
		idx, err := reps[2].StaleRead(maxStaleness)
		if err != nil {
			return err
		}
		if idx < idx1 {
			return fmt.Errorf("applied %d < %d", idx, idx1)
		}
		return nil
	})
	if v := value(t, reps[2], "k"); v != "v1" {
		t.Fatalf("k=%s, want v1", v)
	}
}

// docs/api.md, consistency=stale, on a leader: a leader cut off from its
// followers whose main goroutine is stuck (its own log write stalled) never
// runs its lease check, so it keeps saying it leads while the others elect a
// leader and commit writes. Its stale reads must still be bounded: it may
// answer only while a quorum answered it within max_staleness
// (raft.QuorumContact). Before, the leader branch trusted its state and
// served its old data without bound.
func TestStaleReadOnStalledCutOffLeader(t *testing.T) {
	var cut atomic.Value // the raft address cut off from the others
	cut.Store("")
	tk := &TransportKnobs{Blocked: func(from, to string) bool {
		c := cut.Load().(string)
		return c != "" && (from == c || to == c)
	}}
	var stall atomic.Bool
	release := make(chan struct{})
	c := startReadClusterLogs(t, 3, nil, tk, func(i int) NodeLog {
		if i != 0 {
			return OpenBoltLogs(BoltConfig{})
		}
		w, err := OpenWALConfig(WALConfig{Dir: t.TempDir(), Knobs: &WALKnobs{Sync: func(_ WALWriter, f *os.File) error {
			if stall.Load() {
				<-release
			}
			return f.Sync()
		}}})
		if err != nil {
			t.Fatal(err)
		}
		return w
	})
	t.Cleanup(func() { close(release) }) // before the hosts close (cleanups run last-in first-out)
	reps := c.open(1)
	c.transferLeader(reps, 0)
	idx0 := put(t, reps[0], "k", "v0")
	readWaitFor(t, 10*time.Second, "every node to apply v0", func() error {
		for i, r := range reps {
			if a := r.FSM().Applied(); a < idx0 {
				return fmt.Errorf("node %d applied %d < %d", i, a, idx0)
			}
		}
		return nil
	})
	const maxStaleness = 300 * time.Millisecond
	if _, err := reps[0].StaleRead(maxStaleness); err != nil {
		t.Fatalf("stale read on a healthy leader: %v", err)
	}

	// Node 0's disk stalls and its links are cut; a put on it now holds
	// its main goroutine in the leader's own log write.
	stall.Store(true)
	cut.Store(c.nodes[0].addr)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, _ = reps[0].Propose(ctx, &fsm.Command{Op: fsm.OpPut, Key: []byte("other"), Value: []byte("x")})
	}()
	var leader int
	readWaitFor(t, 15*time.Second, "a leader among nodes 1 and 2", func() error {
		for _, i := range []int{1, 2} {
			if reps[i].IsLeader() {
				leader = i
				return nil
			}
		}
		return errors.New("none yet")
	})
	idx1 := put(t, reps[leader], "k", "v1")
	acked := time.Now()
	time.Sleep(maxStaleness + 100*time.Millisecond) // v1 is now older than the bound
	if reps[0].Raft().State() != raft.Leader {
		t.Fatalf("node 0 is %v: the setup needs its main goroutine stuck as leader", reps[0].Raft().State())
	}
	idx, err := reps[0].StaleRead(maxStaleness)
	if err == nil {
		t.Fatalf("BUG: the cut-off leader served a stale read with max_staleness %v at applied index %d (k=%s) "+
			"although index %d (k=v1) was acknowledged by the new leader %v ago", maxStaleness, idx,
			value(t, reps[0], "k"), idx1, time.Since(acked).Round(time.Millisecond))
	}
	if !errors.Is(err, ErrTooStale) {
		t.Fatalf("stale read on the cut-off leader: %v, want ErrTooStale", err)
	}
}

// startPausableLeaderCluster starts three nodes whose links delays can slow,
// with shard 1 led by node 0, ready for linearizable reads. Node 0's lease
// outlasts the answers' delays the tests set, so it does not step down on
// its own before stale answers arrive (a paused process does not run its
// lease check either); its commit pings keep the others following it until
// a test cuts it off. Every delay is lifted before the hosts close.
func startPausableLeaderCluster(t *testing.T) (*readCluster, *linkDelays, []*Replica) {
	t.Helper()
	delays := &linkDelays{d: map[[2]string]time.Duration{}}
	c := startReadCluster(t, 3, func(i int) RaftTuning {
		tu := FastRaftTuning()
		if i == 0 {
			tu.HeartbeatTimeout, tu.ElectionTimeout, tu.LeaderLeaseTimeout = 4*time.Second, 4*time.Second, 4*time.Second
			tu.CommitTimeout = 100 * time.Millisecond
		} else {
			tu.HeartbeatTimeout, tu.ElectionTimeout, tu.LeaderLeaseTimeout = 600*time.Millisecond, 600*time.Millisecond, 300*time.Millisecond
		}
		return tu
	}, &TransportKnobs{Delay: delays.delay})
	clearDelaysAtCleanup(t, c, delays)
	reps := c.open(1)
	c.transferLeader(reps, 0)
	readWaitFor(t, 10*time.Second, "node 0 ready", func() error { _, err := linearizable(reps[0], time.Second); return err })
	return c, delays, reps
}
