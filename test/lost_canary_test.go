package test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
)

// canaryWriter writes a fresh key every Every, one write at a time per
// client, and remembers which writes were acknowledged (Scenario S1).
type canaryWriter struct {
	prefix string
	mu     sync.Mutex
	acked  map[string]canaryAck
	failed int
	issued int
}

// canaryAck is what the writer knows of an acknowledged canary write.
type canaryAck struct {
	index uint64 // the write's raft index
	at    time.Time
	via   int // the client, whose first endpoint is node via mod n
}

// run writes until ctx ends or max keys were issued, with each client in
// turn on its own goroutine; it returns when they have all stopped.
func (w *canaryWriter) run(ctx context.Context, clients []*client.Client, every time.Duration, maxKeys int) {
	var wg sync.WaitGroup
	for ci, cl := range clients {
		wg.Go(func() {
			for seq := 0; ctx.Err() == nil; seq++ {
				w.mu.Lock()
				if w.issued >= maxKeys {
					w.mu.Unlock()
					return
				}
				w.issued++
				w.mu.Unlock()
				key := fmt.Sprintf("%sc%d-%05d", w.prefix, ci, seq)
				actx, cancel := context.WithTimeout(ctx, 3*time.Second)
				res, err := cl.Put(actx, key, key)
				cancel()
				w.mu.Lock()
				if err == nil {
					w.acked[key] = canaryAck{index: res.Index, at: time.Now(), via: ci}
				} else {
					w.failed++
				}
				w.mu.Unlock()
				sleepCtx(ctx, every)
			}
		})
	}
	wg.Wait()
}

// Scenarios S1, S24, S25; Invariants I1 (no acknowledged write is lost), I2
// (linearizable reads) and I3 (replicas converge): the three nemeses added
// for the canary writes the chaos suite once lost while leadership moved to
// and from a node docker was pausing. On a four-node cluster (a spare node
// for replica moves) with raft traffic that can be held (Cluster.Pause), the
// nemesis injects each of transfer-pause (leadership handed to a node that
// is then paused, and sometimes straight back after it thaws), kill-all
// (every node closed at once and restarted under load) and restart-mid-move
// (a node restarted while a replica move is at a random step) twice, in a
// seeded random order, while a canary writer and a register/CAS workload
// run. Afterwards every acknowledged canary write must be read back, the
// register history must be linearizable, no move may be left half done and
// every shard's replicas must agree.
func TestLostCanaryNemeses(t *testing.T) {
	seed := testSeed(t)
	prefix := "lc/"
	c := StartCluster(t, ClusterConfig{Nodes: 4, Delayable: true, InitialSplits: []string{prefix + "k4"}})
	shards := []uint64{shardOf(c, prefix+"k0"), shardOf(c, prefix+"k4")}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	nem := &Nemesis{C: c, Seed: seed, Shards: shards, Interval: 1200 * time.Millisecond, Max: 6,
		Faults: []Fault{FaultTransferPause, FaultKillAll, FaultRestartMidMove}}
	if os.Getenv("CAIRN_CHAOS") != "" {
		nem.Max = 45 // each fault 15 times, a few minutes
	}
	// The workloads run until the nemesis has healed everything and a
	// little after; the nemesis stops after Max faults.
	wctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var wg sync.WaitGroup
	wg.Go(func() {
		defer stopLoad()
		nem.Run(ctx)
		sleepCtx(ctx, time.Second)
	})
	canary := &canaryWriter{prefix: prefix + "c/", acked: map[string]canaryAck{}}
	canaryClients := NewClients(t, c, 2)
	wg.Go(func() { canary.run(wctx, canaryClients, 10*time.Millisecond, 20000) })

	cfg := clusterWorkload(seed, NewClients(t, c, 4), prefix, 9*time.Minute)
	rec := RunRegisterWorkload(wctx, t, cfg)
	wg.Wait()
	t.Logf("faults (seed %d): %s", seed, nem.Summary())
	t.Logf("fault counts: %v", nem.Counts())
	canary.mu.Lock()
	t.Logf("canary: %d writes, %d acknowledged, %d failed or unknown", canary.issued, len(canary.acked), canary.failed)
	canary.mu.Unlock()
	for _, k := range []Fault{FaultTransferPause, FaultKillAll, FaultRestartMidMove} {
		if nem.Counts()[k] == 0 {
			t.Errorf("nemesis injected no %s", k)
		}
	}

	c.WaitReady(60 * time.Second)
	assertCanaryDurable(t, c, canary, seed)
	if st := rec.Stats(); st.OK < 50 {
		t.Errorf("only %d register operations succeeded: the cluster was unavailable for most of the run", st.OK)
	}
	rec.Check(t, 60*time.Second)
	assertConfigsMatchMap(t, c)
	for _, h := range c.Nodes() {
		if h.Node == nil {
			continue
		}
		for _, r := range h.Node.Ranges() {
			assertReplicasConvergeOn(t, c, r.ID, r.Replicas)
		}
		break
	}
}

// assertCanaryDurable reads the canary keys back with a linearizable scan:
// every acknowledged write must be there (Invariant I1). A missing key is
// looked up on every replica, so the report tells a write lost everywhere
// from one a scan skipped.
func assertCanaryDurable(t *testing.T, c *Cluster, w *canaryWriter, seed uint64) {
	t.Helper()
	reader := NewClients(t, c, 1)[0]
	present := map[string]bool{}
	err := reader.ScanAll(Context(t, 30*time.Second), client.ScanOptions{Prefix: w.prefix, KeysOnly: true},
		func(kv client.KV) error {
			present[kv.Key] = true
			return nil
		})
	if err != nil {
		t.Fatalf("reading the canary back: %v", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var lost []string
	for k := range w.acked {
		if !present[k] {
			lost = append(lost, k)
		}
	}
	sort.Strings(lost)
	t.Logf("canary: %d acknowledged writes, %d keys read back", len(w.acked), len(present))
	for i, k := range lost {
		if i == 10 {
			t.Errorf("... and %d more", len(lost)-10)
			break
		}
		a := w.acked[k]
		_, err := reader.Get(Context(t, 10*time.Second), k)
		t.Errorf("Invariant I1 (seed %d): acknowledged canary write %s (raft index %d, acked %s UTC via client %d) lost; "+
			"linearizable get: %v; %s", seed, k, a.index, a.at.UTC().Format("15:04:05.000"), a.via, err, replicaReads(t, c, k))
	}
}

// replicaReads says what each node's own replica holds for key, read stale
// (locally).
func replicaReads(t *testing.T, c *Cluster, key string) string {
	var parts []string
	for _, h := range c.Nodes() {
		if h.Node == nil {
			parts = append(parts, h.ID+" down")
			continue
		}
		res, err := Do(Context(t, 5*time.Second), "GET", h.HTTPAddr,
			"/v1/kv/"+url.PathEscape(key)+"?consistency=stale&max_staleness=1h", nil)
		switch {
		case err != nil:
			parts = append(parts, fmt.Sprintf("%s: %v", h.ID, err))
		case res.Status == 200:
			parts = append(parts, h.ID+" has it")
		default:
			parts = append(parts, fmt.Sprintf("%s: %d %s", h.ID, res.Status, res.Code()))
		}
	}
	return "replicas: " + strings.Join(parts, ", ")
}

// Cluster.Pause holds a node's raft traffic both ways until the pause ends,
// and no other link's.
func TestNetworkPauseHoldsTraffic(t *testing.T) {
	n := &Network{blocked: map[[2]string]bool{}, pausedUntil: map[string]time.Time{"p": time.Now().Add(time.Hour)}}
	for _, link := range [][2]string{{"p", "q"}, {"q", "p"}} {
		if d := n.Delay(link[0], link[1]); d < 59*time.Minute {
			t.Errorf("%s -> %s delayed %v during the pause, want the rest of the pause", link[0], link[1], d)
		}
	}
	if d := n.Delay("q", "r"); d != 0 {
		t.Errorf("q -> r delayed %v: only the paused node's links are held", d)
	}
	n.pausedUntil["p"] = time.Now().Add(-time.Second)
	if d := n.Delay("p", "q"); d != 0 {
		t.Errorf("p -> q delayed %v after the pause ended", d)
	}
}
