package node

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

// TestGossipReportsSuspect: a member that stops answering without leaving
// is reported suspect by the others (suspect() and state()) while gossip
// still lists it, that is before it is declared dead; once it is back and
// answers, it is alive and no longer suspect.
func TestGossipReportsSuspect(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ids := []string{"n1", "n2", "n3"}
	cfgs := make([]Config, len(ids))
	gs := make([]*gossip, len(ids))
	start := func(i int) {
		t.Helper()
		g, err := startGossip(cfgs[i], 0, nil, logger)
		if err != nil {
			t.Fatal(err)
		}
		gs[i] = g
	}
	for i, id := range ids {
		cfgs[i] = Config{ID: id, GossipAddr: freeUDPAndTCP(t), HTTPAddr: "127.0.0.1:1", RaftAddr: "127.0.0.1:2"}
		if i > 0 {
			cfgs[i].Join = []string{cfgs[0].GossipAddr}
		}
		start(i)
	}
	t.Cleanup(func() {
		for _, g := range gs {
			_ = g.ml.Shutdown()
		}
	})
	survivors := []int{0, 2}
	waitAll := func(what string, within time.Duration, ok func(g *gossip) bool) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			all := true
			for _, i := range survivors {
				all = all && ok(gs[i])
			}
			if all {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %v: %s", within, what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitAll("n1 and n3 do not see all three members", 15*time.Second, func(g *gossip) bool { return len(g.alive()) == 3 })
	if s := gs[0].suspect(); len(s) != 0 {
		t.Fatalf("suspect() = %v with every member answering", s)
	}

	// n2 stops answering without a word (a crash, a cut cable).
	cut := time.Now()
	_ = gs[1].ml.Shutdown()
	seen := map[int]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(seen) < len(survivors) {
		for _, i := range survivors {
			g := gs[i]
			listed := g.alive()["n2"]
			if listed && g.suspect()["n2"] && g.state("n2") == "suspect" {
				if !seen[i] {
					t.Logf("%s reports n2 suspect %v after the cut", ids[i], time.Since(cut).Round(time.Millisecond))
				}
				seen[i] = true
			}
			if !listed && !seen[i] {
				t.Fatalf("%s declared n2 dead %v after the cut without reporting it suspect first (suspect() %v, state %q)",
					ids[i], time.Since(cut).Round(time.Millisecond), g.suspect(), g.state("n2"))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("n2 neither suspect nor dead 30s after the cut")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// n2 comes back on the same address (a restart) while the others may
	// still suspect it: it refutes, answers probes, and is alive again.
	cfgs[1].Join = []string{cfgs[0].GossipAddr}
	back := time.Now()
	start(1)
	waitAll("n2 back but still not alive and unsuspected on n1 and n3", 30*time.Second, func(g *gossip) bool {
		return g.alive()["n2"] && !g.suspect()["n2"] && g.state("n2") == "alive"
	})
	t.Logf("n2 alive and unsuspected again %v after its restart", time.Since(back).Round(time.Millisecond))
}

// TestMemberlistWriterProbeOutcomes: the probe outcomes memberlist logs, as
// its logger writes them, mark and clear a member; other lines do neither.
func TestMemberlistWriterProbeOutcomes(t *testing.T) {
	d := &gossipDelegate{}
	w := log.New(memberlistWriter{slog.New(slog.NewTextHandler(io.Discard, nil)), d}, "", 0)
	w.Printf("[INFO] memberlist: Suspect %s has failed, no acks received", "n2")
	w.Printf("[INFO] memberlist: Suspect %s has failed, no acks received", "node 3")
	w.Printf("[INFO] memberlist: Marking %s as failed, suspect timeout reached (%d peer confirmations)", "n4", 1)
	w.Printf("[DEBUG] memberlist: Failed UDP ping: %s (timeout reached)", "n5")
	if !d.isUnanswered("n2") || !d.isUnanswered("node 3") || d.isUnanswered("n4") || d.isUnanswered("n5") {
		t.Fatalf("unanswered %v, want n2 and node 3", d.unanswered)
	}
	w.Printf("[WARN] memberlist: Was able to connect to %s over TCP but UDP probes failed, network may be misconfigured", "n2")
	d.NotifyPingComplete(&memberlist.Node{Name: "node 3"}, time.Millisecond, nil)
	if len(d.unanswered) != 0 {
		t.Fatalf("unanswered %v after both answered", d.unanswered)
	}
}

// TestGossipMetaUpdateReachesEveryPeer: a change of a member's levels
// (setLevels) reaches every other member without waiting for memberlist's
// push-pull (15s on loopback). With the loopback config's retransmit
// multiplier (2), a broadcast went to two of the three peers, and the third
// learned it only when a peer that had changed state passed it on, so now
// and then not for 15s: test.TestRemovedNodeLeavesMetaGroup timed out (the
// meta leader still had n4 at recorded level 0, below the cluster's, and
// would not add it to the meta group).
func TestGossipMetaUpdateReachesEveryPeer(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	ids := []string{"n1", "n2", "n3", "n4"}
	gs := make([]*gossip, len(ids))
	var join []string
	for i, id := range ids {
		cfg := Config{ID: id, GossipAddr: freeUDPAndTCP(t), HTTPAddr: "127.0.0.1:1", RaftAddr: "127.0.0.1:2", Join: join}
		g, err := startGossip(cfg, 0, nil, logger)
		if err != nil {
			t.Fatal(err)
		}
		gs[i] = g
		if i == 0 {
			join = []string{cfg.GossipAddr}
		}
	}
	t.Cleanup(func() {
		for _, g := range gs {
			_ = g.ml.Shutdown()
		}
	})
	waitPeers := func(what string, ok func(g *gossip) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			all := true
			for _, g := range gs[:3] {
				all = all && ok(g)
			}
			if all {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after 5s: %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitPeers("n1-n3 see all four members", func(g *gossip) bool { return len(g.alive()) == 4 })
	for round := 1; round <= 30; round++ {
		gs[3].setLevels(round, round)
		waitPeers(fmt.Sprintf("round %d: n1-n3 see n4's recorded level %d", round, round), func(g *gossip) bool {
			gm, ok := g.delegate.peer("n4")
			return ok && gm.Recorded == round
		})
	}
}

// TestGossipRefusesAnotherCluster: a join between members of two clusters
// that both know their cluster ids is refused both ways, and neither
// side's membership takes in the other's (a --join typo, or a rejoin of an
// address a node of another cluster took over, would otherwise merge the
// clusters and the meta leader would register the other's nodes). A node
// that knows no cluster yet still joins. Without the merge and alive
// delegates it fails: "a2 (cluster-a) joined b1 (cluster-b)".
func TestGossipRefusesAnotherCluster(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func(id string, join ...string) (*gossip, string) {
		t.Helper()
		addr := freeUDPAndTCP(t)
		g, err := startGossip(Config{ID: id, GossipAddr: addr, HTTPAddr: "127.0.0.1:1", RaftAddr: "127.0.0.1:2", Join: join}, 0, nil, logger)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.ml.Shutdown() })
		return g, addr
	}
	names := func(g *gossip) []string {
		var out []string
		for id := range g.alive() {
			out = append(out, id)
		}
		slices.Sort(out)
		return out
	}
	waitNames := func(g *gossip, want ...string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !slices.Equal(names(g), want) {
			if time.Now().After(deadline) {
				t.Fatalf("lists %v, want %v", names(g), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	a1, a1Addr := start("a1")
	a2, _ := start("a2", a1Addr)
	b1, b1Addr := start("b1")
	b2, _ := start("b2", b1Addr)
	waitNames(a1, "a1", "a2")
	waitNames(b1, "b1", "b2")
	for _, g := range []*gossip{a1, a2} {
		g.setClusterID("cluster-a")
	}
	for _, g := range []*gossip{b1, b2} {
		g.setClusterID("cluster-b")
	}
	if _, err := a2.ml.Join([]string{b1Addr}); err == nil {
		t.Fatalf("a2 (cluster-a) joined b1 (cluster-b)")
	} else {
		t.Logf("a2 joining b1: %v", err)
	}
	time.Sleep(2 * time.Second) // gossip rounds in which a merge would show
	for _, g := range []*gossip{a1, a2} {
		if got := names(g); !slices.Equal(got, []string{"a1", "a2"}) {
			t.Fatalf("%s lists %v after a join to another cluster", g.ml.LocalNode().Name, got)
		}
	}
	for _, g := range []*gossip{b1, b2} {
		if got := names(g); !slices.Equal(got, []string{"b1", "b2"}) {
			t.Fatalf("%s lists %v after a join from another cluster", g.ml.LocalNode().Name, got)
		}
	}
	// A node of no cluster yet (new, or its data dir wiped) joins.
	start("c1", a1Addr)
	waitNames(a1, "a1", "a2", "c1")
}
