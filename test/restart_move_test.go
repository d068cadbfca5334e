package test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/placement"
	"github.com/cairndb/cairn/shard"
)

// moveReplica records a move of range id's replica from one node to another
// in the meta group (the placement driver carries it out even with
// automatic placement off) and waits until the range map shows it done.
func moveReplica(t *testing.T, c *Cluster, id uint64, from, to string) {
	t.Helper()
	WaitFor(t, 30*time.Second, fmt.Sprintf("move of range %d recorded (%s to %s)", id, from, to), func() error {
		for _, h := range c.Nodes() {
			if h.Node == nil || !h.Node.MetaGroup().IsLeader() {
				continue
			}
			st, _ := h.Node.MetaGroup().State()
			r, _ := st.Range(id)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return h.Node.MetaGroup().StartOp(ctx, placement.Operation{Kind: placement.OpMoveReplica, RangeID: id,
				Epoch: r.Epoch, From: from, To: to, Reason: "test"})
		}
		return fmt.Errorf("no meta leader")
	})
	WaitFor(t, 60*time.Second, fmt.Sprintf("range %d moved from %s to %s", id, from, to), func() error {
		for _, h := range c.Nodes() {
			if h.Node == nil || !h.Node.MetaGroup().IsLeader() {
				continue
			}
			st, _ := h.Node.MetaGroup().State()
			r, _ := st.Range(id)
			if _, busy := st.Ops[id]; busy || slices.Contains(r.Replicas, from) || !slices.Contains(r.Replicas, to) {
				return fmt.Errorf("range %d replicas %v epoch %d, operation in progress %v", id, r.Replicas, r.Epoch, busy)
			}
			return nil
		}
		return fmt.Errorf("no meta leader")
	})
}

// simulateMachineCrash makes node h's replica of shard id look as if the
// machine died under it (fsm/durability.go): its state machine sidecar says
// "open" under another boot, so the next start rebuilds the state machine
// from the range's genesis descriptor and the raft log.
func simulateMachineCrash(t *testing.T, h *NodeHandle, id uint64) {
	t.Helper()
	path := filepath.Join(h.DataDir, "shards", strconv.FormatUint(id, 10), "fsm.db.state")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read sidecar: %v", err)
	}
	var sc map[string]any
	if err := json.Unmarshal(b, &sc); err != nil {
		t.Fatalf("sidecar %s: %v", b, err)
	}
	sc["state"], sc["boot"] = "open", "a-boot-before-the-crash"
	if b, err = json.Marshal(sc); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Issue 10 item 3, invariants I1 and I12: a node restarted after replica
// moves, with an old meta snapshot and a state machine rebuilt after a
// machine crash, never deletes a replica its shard's raft configuration
// still counts as a voter, and no acknowledged write is lost.
//
// Range 1 starts on n1..n3. Its replica moves n1 -> n4 (learner added,
// promoted, n1 removed: the map says n2,n3,n4 at epoch 3); n1 takes a meta
// snapshot then; the replica moves back n4 -> n1 (n1 a voter again, epoch 5).
// With n3 cut off, a write W is acknowledged by n1 and n2. n1's machine
// crashes and n1 restarts still cut off: its meta copy is the old snapshot
// (range 1 without n1, epoch 3) and its rebuilt state machine is at the
// genesis epoch 1. Removing the replica there would wipe a voter's log and
// vote: with n2 then gone, n3 and the wiped n1 elect a leader without W.
func TestRestartMidMoveKeepsVoter(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	four := c.AddNode()
	WaitFor(t, 30*time.Second, "n4 registered and ready", func() error {
		if !c.Node(four).Node.Ready() {
			return fmt.Errorf("n4 not ready")
		}
		return nil
	})
	for i := 0; i < 10; i++ {
		mustPut(t, c.Node(i%3).HTTPAddr, fmt.Sprintf("k%02d", i), "v")
	}
	const id = 1
	moveReplica(t, c, id, "n1", "n4")
	WaitFor(t, 30*time.Second, "n1 has the map without it and no replica", func() error {
		st, _ := c.Node(0).Node.MetaGroup().State()
		r, _ := st.Range(id)
		if slices.Contains(r.Replicas, "n1") {
			return fmt.Errorf("n1's map still lists n1: %v", r.Replicas)
		}
		if _, ok := c.Node(0).Node.Host().Replica(id); ok {
			return fmt.Errorf("n1 still has a replica of range %d", id)
		}
		return nil
	})
	if err := c.Node(0).Node.MetaGroup().Raft().Snapshot().Error(); err != nil {
		t.Fatalf("meta snapshot on n1: %v", err)
	}
	moveReplica(t, c, id, "n4", "n1")
	rep, ok := c.Node(0).Node.Host().Replica(id)
	if !ok {
		t.Fatal("n1 has no replica of range 1 after the move back")
	}
	t.Logf("n1's replica of range %d: epoch %d replicas %v", id, rep.Range().Epoch, rep.Range().Replicas)

	// W, acknowledged by n1 and n2 while n3 is cut off.
	c.Isolate(2)
	WaitFor(t, 30*time.Second, "write W acknowledged without n3", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := Do(ctx, "PUT", c.Node(0).HTTPAddr, KVPath("W"), map[string]any{"value": "acked"})
		if err != nil || res.Status != 200 {
			return fmt.Errorf("put W: %v %v", res, err)
		}
		return nil
	})

	// n1's machine crashes; n1 restarts cut off, with its old meta snapshot.
	c.Kill(0)
	simulateMachineCrash(t, c.Node(0), id)
	c.Heal()
	c.Isolate(2)
	c.Isolate(0)
	c.Restart(0)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		rep, ok := c.Node(0).Node.Host().Replica(id)
		if !ok {
			t.Errorf("Invariant I1: n1 deleted its replica of range %d at restart while its raft configuration "+
				"lists it as a voter", id)
			break
		}
		if last, err := lastLogIndex(c.Node(0), rep); err == nil && last == 0 {
			t.Errorf("Invariant I1: n1's replica of range %d lost its raft log (epoch %d)", id, rep.Range().Epoch)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}

	// n2 goes for good; n1 and n3 meet again. W must survive.
	c.Kill(1)
	c.Heal()
	WaitFor(t, 60*time.Second, "W read back from n1 and n3 (Invariant I1)", func() error {
		for _, i := range []int{0, 2} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			got, res, err := getValue(ctx, c.Node(i).HTTPAddr, "W")
			cancel()
			if err != nil {
				return err
			}
			if res.Status == 404 {
				t.Fatalf("Invariant I1: acknowledged write W lost: GET via %s answered %v", c.Node(i).ID, res)
			}
			if res.Status != 200 || got != "acked" {
				return fmt.Errorf("GET W via %s: %v", c.Node(i).ID, res)
			}
		}
		return nil
	})
}

// moveProgress is where a move of a range from one node to another stands in
// the shard's own configuration (read from its leader).
func moveProgress(c *Cluster, id uint64, from, to string) string {
	l, err := c.Leader(id)
	if err != nil {
		return "no leader"
	}
	rep, ok := c.Node(l).Node.Host().Replica(id)
	if !ok {
		return "no leader"
	}
	ms, err := rep.Members()
	if err != nil {
		return "no leader"
	}
	var hasFrom, toVoter, toLearner bool
	for _, m := range ms {
		switch {
		case m.ID == from:
			hasFrom = true
		case m.ID == to && m.Voter:
			toVoter = true
		case m.ID == to:
			toLearner = true
		}
	}
	switch {
	case toLearner:
		return "learner added"
	case toVoter && hasFrom:
		return "promoted"
	case toVoter:
		return "old voter removed"
	}
	return "not started"
}

// Issue 10 items 3 and 8, invariants I1 and I12: nodes restarted in the
// middle of replica moves (learner added, promoted, old voter removed), each
// with a meta snapshot taken before the move began and, every other time,
// after a simulated machine crash, while a writer goes on. Afterwards every
// acknowledged write reads back, the replicas agree and every shard's
// configuration matches the map.
func TestRestartsDuringMoves(t *testing.T) {
	seed := testSeed(t)
	rnd := rand.New(rand.NewPCG(seed, seed))
	c := StartCluster(t, ClusterConfig{})
	four := c.AddNode()
	WaitFor(t, 30*time.Second, "n4 ready", func() error {
		if !c.Node(four).Node.Ready() {
			return fmt.Errorf("n4 not ready")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	w := startWriter(ctx, c, &wg)
	const id = 1
	phases := []string{"learner added", "promoted", "old voter removed"}
	moves := [][2]string{{"n1", "n4"}, {"n4", "n1"}, {"n2", "n4"}}
	for round, mv := range moves {
		from, to := mv[0], mv[1]
		phase := phases[rnd.IntN(len(phases))]
		victim := []string{from, to, "n3"}[rnd.IntN(3)]
		vi := int(victim[1] - '1')
		crash := round%2 == 0
		if n := c.Node(vi).Node; n != nil {
			_ = n.MetaGroup().Raft().Snapshot().Error() // an old meta snapshot for the restart
		}
		WaitFor(t, 30*time.Second, fmt.Sprintf("round %d: move %s -> %s recorded", round, from, to), func() error {
			for _, h := range c.Nodes() {
				if h.Node == nil || !h.Node.MetaGroup().IsLeader() {
					continue
				}
				st, _ := h.Node.MetaGroup().State()
				r, _ := st.Range(id)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return h.Node.MetaGroup().StartOp(ctx, placement.Operation{Kind: placement.OpMoveReplica, RangeID: id,
					Epoch: r.Epoch, From: from, To: to, Reason: "test"})
			}
			return fmt.Errorf("no meta leader")
		})
		deadline := time.Now().Add(20 * time.Second)
		got := ""
		for time.Now().Before(deadline) {
			if got = moveProgress(c, id, from, to); got == phase {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("round %d: move %s -> %s at %q (wanted %q): restarting %s, machine crash %v",
			round, from, to, got, phase, victim, crash)
		c.Kill(vi)
		if crash {
			ents, _ := os.ReadDir(filepath.Join(c.Node(vi).DataDir, "shards"))
			for _, e := range ents {
				if sid, err := strconv.ParseUint(e.Name(), 10, 64); err == nil {
					if _, err := os.Stat(filepath.Join(c.Node(vi).DataDir, "shards", e.Name(), "fsm.db.state")); err == nil {
						simulateMachineCrash(t, c.Node(vi), sid)
					}
				}
			}
		}
		c.Restart(vi)
		WaitFor(t, 60*time.Second, fmt.Sprintf("round %d: move %s -> %s done", round, from, to), func() error {
			for _, h := range c.Nodes() {
				if h.Node == nil || !h.Node.MetaGroup().IsLeader() {
					continue
				}
				st, _ := h.Node.MetaGroup().State()
				r, _ := st.Range(id)
				if _, busy := st.Ops[id]; busy || slices.Contains(r.Replicas, from) || !slices.Contains(r.Replicas, to) {
					return fmt.Errorf("range %d replicas %v, operation in progress %v", id, r.Replicas, busy)
				}
				return nil
			}
			return fmt.Errorf("no meta leader")
		})
	}
	cancel()
	wg.Wait()
	if w.n.Load() == 0 {
		t.Fatal("no write was acknowledged")
	}
	assertConfigsMatchMap(t, c)
	r, _ := c.Node(0).Node.MetaGroup().State()
	rng, _ := r.Range(id)
	assertReplicasConvergeOn(t, c, id, rng.Replicas)
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, v := range w.acked {
		got, res, err := getValue(Context(t, 10*time.Second), c.Node(int(rng.Replicas[0][1]-'1')).HTTPAddr, k)
		if err != nil || res.Status != 200 || got != v {
			t.Fatalf("Invariant I1: acknowledged %s lost: %q %v %v", k, got, res, err)
		}
	}
	t.Logf("%d acknowledged writes read back", len(w.acked))
}

// lastLogIndex is the last index in h's raft log of rep's group: read from
// the WAL directly, or with the boltdb store (whose raft.db the running
// group holds open) as raft read it from the store.
func lastLogIndex(h *NodeHandle, rep *shard.Replica) (uint64, error) {
	if w, ok := h.Node.RaftLog().(*shard.WAL); ok {
		return w.Group(rep.ID()).LastIndex()
	}
	return strconv.ParseUint(rep.Raft().Stats()["last_log_index"], 10, 64)
}
