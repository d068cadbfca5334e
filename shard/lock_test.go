package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/clock"
	"github.com/cairndb/cairn/lock"
)

// An in-process cluster for the lock tests: real raft groups over loopback
// muxes, one host per node with its own clock (offsets for S18) and metrics.
type lockCluster struct {
	t     *testing.T
	nodes []*readNode
	regs  []*prometheus.Registry
	reps  []*Replica
}

func startLockCluster(t *testing.T, offsets []time.Duration, knobs *ReplicaKnobs) *lockCluster {
	t.Helper()
	c := &lockCluster{t: t}
	for i, off := range offsets {
		m := mustMux(t, nil, 0)
		off := off
		reg := prometheus.NewRegistry()
		h, err := NewHost(HostConfig{
			NodeID: fmt.Sprintf("n%d", i+1), DataDir: t.TempDir(), Mux: m, Tuning: FastRaftTuning(),
			Logs: OpenBoltLogs(BoltConfig{}), Logger: slog.New(slog.DiscardHandler), Metrics: reg, Knobs: knobs,
			Clock: clock.Func(func() time.Time { return time.Now().Add(off) }),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		c.nodes = append(c.nodes, &readNode{id: fmt.Sprintf("n%d", i+1), addr: m.Addr(), mux: m, host: h})
		c.regs = append(c.regs, reg)
	}
	var servers []raft.Server
	for _, n := range c.nodes {
		servers = append(servers, raft.Server{ID: raft.ServerID(n.id), Address: raft.ServerAddress(n.addr), Suffrage: raft.Voter})
	}
	for _, n := range c.nodes {
		r, err := n.host.OpenReplica(fsm.Range{ID: 1, Epoch: 1}, servers)
		if err != nil {
			t.Fatal(err)
		}
		c.reps = append(c.reps, r)
	}
	c.leader()
	return c
}

// leader waits for a leader that is ready (its tracker running) and returns its index.
func (c *lockCluster) leader() int {
	c.t.Helper()
	l := -1
	readWaitFor(c.t, 10*time.Second, "a ready leader", func() error {
		if l = leaderIndex(c.reps); l < 0 {
			return errors.New("no leader")
		}
		if _, err := linearizable(c.reps[l], time.Second); err != nil {
			return err
		}
		c.reps[l].locks.mu.Lock()
		defer c.reps[l].locks.mu.Unlock()
		if !c.reps[l].locks.active {
			return errors.New("tracker not running")
		}
		return nil
	})
	return l
}

// lock proposes cmd on the current leader, retrying while leadership moves.
func (c *lockCluster) lock(cmd lock.Command) *fsm.LockResult {
	c.t.Helper()
	lr, _ := c.lockAt(cmd)
	return lr
}

// lockAt is lock that also returns the entry's index.
func (c *lockCluster) lockAt(cmd lock.Command) (*fsm.LockResult, uint64) {
	c.t.Helper()
	var lr *fsm.LockResult
	var index uint64
	readWaitFor(c.t, 10*time.Second, fmt.Sprintf("%s %s to apply", cmd.Kind(), cmd.LockName()), func() error {
		l := leaderIndex(c.reps)
		if l < 0 {
			return errors.New("no leader")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		lr, index, err = c.reps[l].Lock(ctx, cmd, 1)
		return err
	})
	return lr, index
}

func (c *lockCluster) record(i int, name string) *lock.Record {
	c.t.Helper()
	rec, _, err := c.reps[i].FSM().LockRecord([]byte(name))
	if err != nil {
		c.t.Fatal(err)
	}
	return rec
}

// freedAt waits (at most d) on replica i for lock name to have no holder
// and returns when that was seen.
func (c *lockCluster) freedAt(i int, name string, d time.Duration) (time.Time, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for {
		rec := c.record(i, name)
		if !rec.Held() {
			return time.Now(), nil
		}
		if err := c.reps[i].WaitLockChange(ctx, name, rec.ChangeSeq); err != nil {
			return time.Time{}, err
		}
	}
}

func (c *lockCluster) trackerProposals() []uint64 {
	var out []uint64
	for _, r := range c.reps {
		out = append(out, r.locks.proposed.Load())
	}
	return out
}

// I10, S18: a lease that is not renewed is expired by the leader once its
// TTL ran on the leader's clock, never earlier, and only the leader
// proposes the expiry. The nodes' clocks are offset by tens of seconds
// from each other (S18): no lease decision reads a wall clock, so it does
// not matter which of them leads.
func TestLockLeaseExpiresOnlyOnLeaderAfterTTL(t *testing.T) {
	c := startLockCluster(t, []time.Duration{40 * time.Second, -40 * time.Second, 0}, nil)
	const ttl = time.Second
	start := time.Now()
	a := c.lock(lock.Acquire{Name: "job", Owner: "a", TTL: ttl, Limit: 1, WaiterID: "a"})
	if a.Result.Status != lock.StatusGranted {
		t.Fatalf("acquire: %+v", a.Result)
	}
	l := leaderIndex(c.reps)
	freed, err := c.freedAt(l, "job", 5*time.Second)
	if err != nil {
		t.Fatalf("lease not expired within 5s: %v", err)
	}
	if held := freed.Sub(start); held < ttl {
		t.Fatalf("lease expired after %v, before its TTL %v (I10)", held, ttl)
	}
	for i := range c.reps { // every replica applied the expiry
		if _, err := c.freedAt(i, "job", 5*time.Second); err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	props := c.trackerProposals()
	for i, n := range props {
		if i != l && n != 0 {
			t.Fatalf("follower %d proposed %d lock commands (%v); only the leader expires (I10)", i, n, props)
		}
	}
	if props[l] == 0 {
		t.Fatalf("the leader proposed nothing (%v)", props)
	}
	if got := counterValue(t, c.nodes[l].host.lockMetrics.expiries.WithLabelValues("1")); got != 1 {
		t.Fatalf("leader's cairn_lock_expiries_total = %v, want 1", got)
	}
	if got := counterValue(t, c.nodes[l].host.lockMetrics.grants.WithLabelValues("1")); got != 1 {
		t.Fatalf("leader's cairn_lock_grants_total = %v, want 1", got)
	}
}

// I10: renewing within the TTL keeps the lease, past several TTLs; once the
// holder stops renewing it expires.
func TestLockRenewKeepsLease(t *testing.T) {
	c := startLockCluster(t, []time.Duration{0, 0, 0}, nil)
	const ttl = time.Second
	a := c.lock(lock.Acquire{Name: "job", Owner: "a", TTL: ttl, Limit: 1, WaiterID: "a"})
	tok := a.Result.Token
	for end := time.Now().Add(3 * ttl); time.Now().Before(end); time.Sleep(ttl / 4) {
		r := c.lock(lock.Renew{Name: "job", Token: tok})
		if r.Result.Err != nil {
			t.Fatalf("renew at %v: %v (the lease expired while renewed)", time.Until(end), r.Result.Err)
		}
	}
	if h := c.record(leaderIndex(c.reps), "job").Holder(tok); h == nil {
		t.Fatal("renewed lease lost")
	}
	stopped := time.Now()
	freed, err := c.freedAt(leaderIndex(c.reps), "job", 5*time.Second)
	if err != nil {
		t.Fatalf("lease not expired after renewing stopped: %v", err)
	}
	if d := freed.Sub(stopped); d < ttl/2 {
		t.Fatalf("expired %v after the last renew's answer", d)
	}
}

// leaseAcrossTransfer acquires a lease, moves leadership after most of the
// TTL ran, and reports an error if the lease expired sooner than a full TTL
// after the transfer (I10: a new leader restarts every countdown).
func leaseAcrossTransfer(t *testing.T, knobs *ReplicaKnobs) error {
	c := startLockCluster(t, []time.Duration{0, 0, 0}, knobs)
	rc := &readCluster{t: t, nodes: c.nodes}
	const ttl = 2 * time.Second
	c.lock(lock.Acquire{Name: "job", Owner: "a", TTL: ttl, Limit: 1, WaiterID: "a"})
	time.Sleep(ttl * 3 / 4)
	from := leaderIndex(c.reps)
	rc.transferLeader(c.reps, (from+1)%len(c.reps))
	moved := time.Now()
	freed, err := c.freedAt((from+1)%len(c.reps), "job", 3*ttl)
	if err != nil {
		return fmt.Errorf("lease never expired after the transfer: %w", err)
	}
	if d := freed.Sub(moved); d < ttl*9/10 {
		return fmt.Errorf("lease expired %v after the leader changed, less than its TTL %v", d, ttl)
	}
	return nil
}

// I10: a leader transfer restarts every countdown, so a lease that had run
// 3/4 of its TTL under the old leader still gets a full TTL from the new one.
// The negative control credits the new leader with the time already run (the
// knob), and the same check then sees the early expiry.
func TestLockLeaderTransferRestartsCountdown(t *testing.T) {
	t.Run("restart", func(t *testing.T) {
		if err := leaseAcrossTransfer(t, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("negative control", func(t *testing.T) {
		credit := &ReplicaKnobs{LockTakeoverCredit: func(uint64) time.Duration { return 1500 * time.Millisecond }}
		if err := leaseAcrossTransfer(t, credit); err == nil {
			t.Fatal("with the takeover credit knob the check saw no early expiry: it cannot fail")
		} else {
			t.Logf("control failed as it must: %v", err)
		}
	})
}

// Waiters are granted in arrival order on release, and WaitLockGrant wakes
// them on any replica (here each waits on a different one, followers
// included), from the replica's own apply stream; tokens increase (I9).
// A wait whose context ends leaves with ctx.Err(), and its CancelWait
// removes it from the queue.
func TestLockWaitersGrantedFIFO(t *testing.T) {
	c := startLockCluster(t, []time.Duration{0, 0, 0}, nil)
	acq := func(id string) lock.Acquire {
		return lock.Acquire{Name: "q", Owner: id, TTL: 30 * time.Second, Wait: 30 * time.Second, Limit: 1, WaiterID: id}
	}
	first := c.lock(acq("w0"))
	if first.Result.Status != lock.StatusGranted {
		t.Fatalf("first acquire: %+v", first.Result)
	}
	ids := []string{"w1", "w2", "w3", "w4"}
	var queuedAt uint64
	for _, id := range ids {
		r, index := c.lockAt(acq(id))
		if r.Result.Status != lock.StatusQueued {
			t.Fatalf("%s: %+v", id, r.Result)
		}
		queuedAt = index
	}
	// w-gone waits with a short context on a follower, then leaves.
	r, goneAt := c.lockAt(acq("w-gone"))
	if r.Result.Status != lock.StatusQueued {
		t.Fatalf("w-gone: %+v", r.Result)
	}
	fol := (leaderIndex(c.reps) + 1) % len(c.reps)
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, _, err := c.reps[fol].WaitLockGrantAt(short, "q", "w-gone", goneAt)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait with an ended context: %v", err)
	}
	cw, cancelAt := c.lockAt(lock.CancelWait{Name: "q", WaiterID: "w-gone"})
	if cw.Result.Status != lock.StatusCancelled {
		t.Fatalf("cancel wait: %+v", cw.Result)
	}
	// A wait for a waiter that is not queued ends at once.
	if _, _, err := c.reps[fol].WaitLockGrantAt(context.Background(), "q", "w-gone", cancelAt); !errors.Is(err, ErrWaiterGone) {
		t.Fatalf("wait for a cancelled waiter: %v", err)
	}

	type grant struct {
		id    string
		token uint64
	}
	var mu sync.Mutex
	var order []grant
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i, id := range ids {
		wg.Add(1)
		go func(rep *Replica, id string) {
			defer wg.Done()
			h, _, err := rep.WaitLockGrantAt(ctx, "q", id, queuedAt)
			if err != nil {
				t.Errorf("%s: %v", id, err)
				return
			}
			mu.Lock()
			order = append(order, grant{id, h.Token})
			mu.Unlock()
		}(c.reps[i%len(c.reps)], id)
	}
	tok := first.Result.Token
	for i, id := range ids {
		rel := c.lock(lock.Release{Name: "q", Token: tok})
		if rel.Result.Err != nil || len(rel.Result.Granted) != 1 || rel.Result.Granted[0].WaiterID != id {
			t.Fatalf("release %d granted %+v (err %v), want %s", i, rel.Result.Granted, rel.Result.Err, id)
		}
		next := rel.Result.Granted[0].Token
		if next <= tok {
			t.Fatalf("token went from %d to %d (I9)", tok, next)
		}
		tok = next
		readWaitFor(t, 5*time.Second, id+"'s WaitLockGrant", func() error {
			mu.Lock()
			defer mu.Unlock()
			if len(order) != i+1 || order[i].id != id || order[i].token != tok {
				return fmt.Errorf("grants seen %v", order)
			}
			return nil
		})
	}
	wg.Wait()
	l := leaderIndex(c.reps)
	if n := counterValue(t, c.nodes[l].host.lockMetrics.releases.WithLabelValues("1")); n < float64(len(ids)) {
		t.Fatalf("cairn_lock_releases_total = %v", n)
	}
	var hm dto.Metric
	if err := c.nodes[l].host.lockMetrics.handoff.Write(&hm); err != nil || hm.GetHistogram().GetSampleCount() < uint64(len(ids)) {
		t.Fatalf("cairn_lock_handoff_seconds: %v samples, err %v", hm.GetHistogram().GetSampleCount(), err)
	}
	if !strings.Contains(fmt.Sprint(gatherNames(t, c.regs[l])), "cairn_lock_waiters") {
		t.Fatal("cairn_lock_waiters not registered")
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func gatherNames(t *testing.T, reg *prometheus.Registry) []string {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	return names
}

// A leader change strands no waiter: a request waiting on the replica that
// proposed its acquire keeps waiting there after that replica stops leading,
// and is woken by the grant the new leader commits (the queue is in the
// replicated record, the wake-up comes from the local apply stream).
func TestLockWaiterSurvivesLeaderChange(t *testing.T) {
	c := startLockCluster(t, []time.Duration{0, 0, 0}, nil)
	rc := &readCluster{t: t, nodes: c.nodes}
	acq := func(id string) lock.Acquire {
		return lock.Acquire{Name: "e", Owner: id, TTL: 30 * time.Second, Wait: 30 * time.Second, Limit: 1, WaiterID: id}
	}
	held := c.lock(acq("a"))
	old := leaderIndex(c.reps)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	queued, _, err := c.reps[old].Lock(ctx, acq("b"), 1)
	if err != nil || queued.Result.Status != lock.StatusQueued {
		t.Fatalf("queue b on the leader: %+v %v", queued, err)
	}
	type got struct {
		h   lock.Holder
		err error
	}
	done := make(chan got, 1)
	go func() {
		h, _, err := c.reps[old].WaitLockGrant(ctx, "e", "b")
		done <- got{h, err}
	}()
	to := (old + 1) % len(c.reps)
	rc.transferLeader(c.reps, to)
	if c.reps[old].IsLeader() {
		t.Fatal("the old leader still leads")
	}
	rel := c.lock(lock.Release{Name: "e", Token: held.Result.Token})
	if len(rel.Result.Granted) != 1 || rel.Result.Granted[0].WaiterID != "b" {
		t.Fatalf("release under the new leader granted %+v", rel.Result.Granted)
	}
	select {
	case g := <-done:
		if g.err != nil || g.h.Token != rel.Result.Granted[0].Token {
			t.Fatalf("wait on the old leader: %+v %v, want token %d", g.h, g.err, rel.Result.Granted[0].Token)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter on the old leader was stranded")
	}
}

// The blocking status query: WaitLockChange with the index of a status
// answer returns at the next change of holders (grant, release), not on
// unrelated writes, and at once for an index older than the last change.
func TestLockWaitChange(t *testing.T) {
	c := startLockCluster(t, []time.Duration{0, 0, 0}, nil)
	l := leaderIndex(c.reps)
	r := c.reps[l]
	_, freeIdx, err := r.LockStatus("w")
	if err != nil {
		t.Fatal(err)
	}
	changed := func(after uint64, d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		return r.WaitLockChange(ctx, "w", after)
	}
	put(t, r, "unrelated", "x")
	if err := changed(freeIdx, 200*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("free lock, unrelated write: %v, want a timeout", err)
	}
	done := make(chan error, 1)
	go func() { done <- changed(freeIdx, 10*time.Second) }()
	time.Sleep(50 * time.Millisecond)
	a := c.lock(lock.Acquire{Name: "w", Owner: "a", TTL: 30 * time.Second, Limit: 1, WaiterID: "a"})
	if err := <-done; err != nil {
		t.Fatalf("wait across the grant: %v", err)
	}
	rec, heldIdx, err := r.LockStatus("w")
	if err != nil || !rec.Held() || heldIdx <= freeIdx {
		t.Fatalf("status after grant: %+v %d %v", rec, heldIdx, err)
	}
	c.lock(lock.Renew{Name: "w", Token: a.Result.Token}) // a renew changes no holder
	if err := changed(heldIdx, 200*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("renew woke the wait: %v", err)
	}
	c.lock(lock.Release{Name: "w", Token: a.Result.Token})
	if err := changed(heldIdx, time.Second); err != nil {
		t.Fatalf("wait after the release (record dropped): %v", err)
	}
	if err := changed(freeIdx, time.Second); err != nil {
		t.Fatalf("wait with an index older than the last change: %v", err)
	}
}

// I9, I10 across a split on real groups: a lease held on a name that moves
// to the child is counted down by the child's leader (it expires there, not
// early), the parent's replicas answer the name with WrongShardError, and
// the next grant in the child has a higher token though the child's raft
// indices restarted.
func TestLockMovesWithSplit(t *testing.T) {
	c := startLockCluster(t, []time.Duration{0, 0, 0}, nil)
	for i := 0; i < 20; i++ { // the parent's indices run ahead of the child's
		put(t, c.reps[leaderIndex(c.reps)], fmt.Sprintf("k%02d", i), "v")
	}
	const ttl = 2 * time.Second
	held := c.lock(lock.Acquire{Name: "p-lock", Owner: "a", TTL: ttl, Limit: 1, WaiterID: "a"})
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if res, err := c.reps[leaderIndex(c.reps)].Split(ctx, []byte("m"), 2, 0); err != nil || res.Err != nil {
		t.Fatalf("split: %v %v", err, res)
	}
	var child []*Replica
	readWaitFor(t, 10*time.Second, "the child on every node", func() error {
		child = child[:0]
		for _, n := range c.nodes {
			r, ok := n.host.Replica(2)
			if !ok {
				return fmt.Errorf("%s has no child yet", n.id)
			}
			child = append(child, r)
		}
		if leaderIndex(child) < 0 {
			return errors.New("child has no leader")
		}
		return nil
	})
	for i, r := range c.reps {
		if _, _, err := r.LockStatus("p-lock"); !errors.As(err, new(*fsm.WrongShardError)) {
			t.Fatalf("parent replica %d still answers the moved lock: %v", i, err)
		}
	}
	cc := &lockCluster{t: t, nodes: c.nodes, reps: child}
	if rec := cc.record(leaderIndex(child), "p-lock"); rec.Holder(held.Result.Token) == nil {
		t.Fatalf("child lacks the holder: %+v", rec)
	}
	freed, err := cc.freedAt(leaderIndex(child), "p-lock", 4*ttl)
	if err != nil {
		t.Fatalf("the child's leader never expired the moved lease: %v", err)
	}
	if d := freed.Sub(start); d < ttl {
		t.Fatalf("moved lease expired after %v, before its TTL %v", d, ttl)
	}
	again := cc.lock(lock.Acquire{Name: "p-lock", Owner: "b", TTL: ttl, Limit: 1, WaiterID: "b"})
	if again.Result.Token <= held.Result.Token || again.Seq <= held.Seq {
		t.Fatalf("token in the child %d (seq %d) after %d (seq %d) in the parent (I9)",
			again.Result.Token, again.Seq, held.Result.Token, held.Seq)
	}
}
