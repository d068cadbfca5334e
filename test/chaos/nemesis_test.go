package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeDocker records what the nemesis does to the containers and keeps
// their state, as docker would.
type fakeDocker struct {
	mu      sync.Mutex
	calls   []string
	stopped map[string]bool
	paused  map[string]bool
	cut     map[string]bool
}

func newFakeDocker() *fakeDocker {
	return &fakeDocker{stopped: map[string]bool{}, paused: map[string]bool{}, cut: map[string]bool{}}
}

func (d *fakeDocker) do(call, container string, f func()) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.calls = append(d.calls, call+" "+container)
	f()
	return nil
}

func (d *fakeDocker) Kill(_ context.Context, c string) error {
	return d.do("kill", c, func() { d.stopped[c] = true })
}
func (d *fakeDocker) Start(_ context.Context, c string) error {
	return d.do("start", c, func() { d.stopped[c] = false })
}
func (d *fakeDocker) Restart(_ context.Context, c string, _ time.Duration) error {
	return d.do("restart", c, func() { d.stopped[c] = false })
}
func (d *fakeDocker) Pause(_ context.Context, c string) error {
	return d.do("pause", c, func() { d.paused[c] = true })
}
func (d *fakeDocker) Unpause(_ context.Context, c string) error {
	return d.do("unpause", c, func() { d.paused[c] = false })
}
func (d *fakeDocker) Disconnect(_ context.Context, _, c string) error {
	return d.do("disconnect", c, func() { d.cut[c] = true })
}
func (d *fakeDocker) Connect(_ context.Context, _, c, _ string, _ []string) error {
	return d.do("connect", c, func() { d.cut[c] = false })
}
func (d *fakeDocker) Inspect(_ context.Context, c string) (*ContainerState, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := &ContainerState{Running: !d.stopped[c], Paused: d.paused[c], Networks: map[string]EndpointSettings{}}
	if !d.cut[c] {
		st.Networks["cairn-net"] = EndpointSettings{}
	}
	return st, nil
}

func (d *fakeDocker) down(c string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stopped[c] || d.paused[c] || d.cut[c]
}

func (d *fakeDocker) log() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

// fakeShard is one shard of the fake cluster: its range map entry and its
// raft configuration, which a move or re-add changes one step per status
// request, as the placement driver would over time.
type fakeShard struct {
	replicas []string // range map
	leader   string
	members  []Member
	// move in progress: from -> to (to == from: re-add after a removal).
	from, to string
}

// fakeNodes answers the HTTP calls the nemesis makes, for every node, from
// one shared state.
type fakeNodes struct {
	t        *testing.T
	d        *fakeDocker
	mu       sync.Mutex
	ids      []string
	shards   map[uint64]*fakeShard
	meta     string   // placement leader
	drained  []string // drain requests
	undrains []string // undrain requests, as "node@placement-leader"
	removed  []string // membership removals
}

func (f *fakeNodes) handler(id string) http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, v any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	shardID := func(r *http.Request) uint64 {
		v, _ := strconv.ParseUint(r.PathValue("id"), 10, 64)
		return v
	}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { reply(w, map[string]bool{"ready": true}) })
	mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		v := map[string]any{"placement_leader": f.meta}
		var shards []ShardView
		for _, sid := range f.shardIDs() {
			s := f.shards[sid]
			sv := ShardView{ID: sid, Start: fmt.Sprintf("s%d", sid), End: fmt.Sprintf("s%d", sid+1), Replicas: s.replicas}
			if slices.Contains(s.replicas, id) {
				sv.Leader = s.leader
			}
			shards = append(shards, sv)
		}
		v["shards"] = shards
		reply(w, v)
	})
	mux.HandleFunc("GET /internal/v1/shards/{id}/status", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		s, ok := f.shards[shardID(r)]
		if !ok {
			http.Error(w, "no shard", http.StatusNotFound)
			return
		}
		f.advance(s)
		reply(w, ShardStatus{Shard: shardID(r), Leader: s.leader, Members: slices.Clone(s.members)})
	})
	mux.HandleFunc("POST /v1/cluster/shards/{id}/transfer-leader", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ To string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		defer f.mu.Unlock()
		s := f.shards[shardID(r)]
		if s == nil || !slices.Contains(s.replicas, req.To) {
			http.Error(w, "not a voter", http.StatusConflict)
			return
		}
		s.leader = req.To
		reply(w, map[string]any{"leader": req.To})
	})
	mux.HandleFunc("POST /v1/cluster/nodes/{id}/drain", func(w http.ResponseWriter, r *http.Request) {
		node := r.PathValue("id")
		f.mu.Lock()
		defer f.mu.Unlock()
		f.drained = append(f.drained, node)
		for _, s := range f.shards {
			if !slices.Contains(s.replicas, node) {
				continue
			}
			for _, x := range f.ids {
				if !slices.Contains(s.replicas, x) && x != node {
					s.from, s.to = node, x
					break
				}
			}
		}
		reply(w, map[string]any{"node": node, "draining": true})
	})
	mux.HandleFunc("POST /internal/v1/meta/node-state", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Node     string
			Draining bool
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		defer f.mu.Unlock()
		if req.Draining {
			http.Error(w, "the nemesis only undrains here", http.StatusBadRequest)
			return
		}
		f.undrains = append(f.undrains, req.Node+"@"+id)
		reply(w, map[string]bool{"ok": true})
	})
	mux.HandleFunc("POST /internal/v1/shards/{id}/membership", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Action, Node string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		defer f.mu.Unlock()
		s := f.shards[shardID(r)]
		if s == nil || req.Action != "remove" || req.Node == s.leader {
			http.Error(w, "bad membership request", http.StatusBadRequest)
			return
		}
		f.removed = append(f.removed, req.Node)
		s.members = slices.DeleteFunc(s.members, func(m Member) bool { return m.ID == req.Node })
		s.replicas = slices.DeleteFunc(slices.Clone(s.replicas), func(x string) bool { return x == req.Node })
		s.from, s.to = req.Node, req.Node
		reply(w, map[string]bool{"ok": true})
	})
	// A node that is killed, paused or cut off answers nothing useful.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.d.down("cairn-" + id) {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (f *fakeNodes) shardIDs() []uint64 {
	var ids []uint64
	for id := range f.shards {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// advance takes a move or re-add in progress one step further. The caller
// holds f.mu.
func (f *fakeNodes) advance(s *fakeShard) {
	if s.to == "" {
		return
	}
	i := slices.IndexFunc(s.members, func(m Member) bool { return m.ID == s.to })
	switch {
	case i < 0:
		s.members = append(s.members, Member{ID: s.to})
	case !s.members[i].Voter:
		s.members[i].Voter = true
		if s.from == s.to { // re-add done
			s.replicas = append(slices.Clone(s.replicas), s.to)
			s.from, s.to = "", ""
		}
	default: // move: the old voter goes
		if s.leader == s.from {
			s.leader = s.to
		}
		s.members = slices.DeleteFunc(s.members, func(m Member) bool { return m.ID == s.from })
		s.replicas = append(slices.DeleteFunc(slices.Clone(s.replicas), func(x string) bool { return x == s.from }), s.to)
		s.from, s.to = "", ""
	}
}

// newFakeCluster returns a Cluster of n fake nodes with two shards
// replicated on the first three, shard 1 led by n1 and shard 2 by n2.
func newFakeCluster(t *testing.T, n int) (*Cluster, *fakeDocker, *fakeNodes) {
	d := newFakeDocker()
	f := &fakeNodes{t: t, d: d, shards: map[uint64]*fakeShard{}, meta: "n1"}
	c := &Cluster{Network: "cairn-net", http: &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{}}}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		f.ids = append(f.ids, id)
		srv := httptest.NewServer(f.handler(id))
		t.Cleanup(srv.Close)
		c.Nodes = append(c.Nodes, &Node{ID: id, Container: "cairn-" + id, Endpoint: strings.TrimPrefix(srv.URL, "http://")})
	}
	t.Cleanup(c.Close)
	for sid, leader := range map[uint64]string{1: "n1", 2: "n2"} {
		s := &fakeShard{replicas: []string{"n1", "n2", "n3"}, leader: leader}
		for _, r := range s.replicas {
			s.members = append(s.members, Member{ID: r, Voter: true})
		}
		f.shards[sid] = s
	}
	return c, d, f
}

func newFakeNemesis(c *Cluster, d *fakeDocker, seed uint64) *Nemesis {
	n := &Nemesis{C: c, D: d, Seed: seed, ProbeShard: 1, RecoverTimeout: 5 * time.Second, TimeScale: 0.001}
	n.init()
	return n
}

// transfer-pause hands the probe shard's leadership to a follower, pauses
// exactly that node once it leads, unpauses it, and reports it as a leader
// fault so the canary measures the failover.
func TestNemesisTransferPause(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		c, d, f := newFakeCluster(t, 3)
		n := newFakeNemesis(c, d, seed)
		var marked []string
		n.OnLeaderFault = func(kind FaultKind, node string, _ time.Time) { marked = append(marked, string(kind)+" "+node) }
		n.one(context.Background(), FaultTransferPause)
		fs := n.Faults()
		if len(fs) != 1 || fs[0].Err != "" || fs[0].Kind != FaultTransferPause {
			t.Fatalf("seed %d: faults %+v", seed, fs)
		}
		calls := d.log()
		if len(calls) < 2 || !strings.HasPrefix(calls[0], "pause ") || calls[1] != "un"+calls[0] {
			t.Fatalf("seed %d: docker calls %v, want a pause and its unpause", seed, calls)
		}
		target := strings.TrimPrefix(calls[0], "pause cairn-")
		if target == "n1" || !strings.Contains(fs[0].What, "n1->"+target) {
			t.Fatalf("seed %d: paused %s, fault %q: want the transfer target, not the old leader n1", seed, target, fs[0].What)
		}
		if len(marked) != 1 || marked[0] != "transfer-pause "+target {
			t.Fatalf("seed %d: leader faults marked %v", seed, marked)
		}
		f.mu.Lock()
		leader := f.shards[1].leader
		f.mu.Unlock()
		if leader != target {
			t.Fatalf("seed %d: shard 1 led by %s after the fault, want %s (paused, then handed back)", seed, leader, target)
		}
		t.Logf("seed %d: %s", seed, fs[0].What)
	}
}

// kill-all kills every container, then starts every one.
func TestNemesisKillAll(t *testing.T) {
	c, d, _ := newFakeCluster(t, 3)
	n := newFakeNemesis(c, d, 7)
	n.one(context.Background(), FaultKillAll)
	if fs := n.Faults(); len(fs) != 1 || fs[0].Err != "" || fs[0].What != "kill n1,n2,n3" {
		t.Fatalf("faults %+v", fs)
	}
	calls := d.log()
	if len(calls) != 6 {
		t.Fatalf("docker calls %v, want 3 kills then 3 starts", calls)
	}
	for i, call := range calls {
		want := "kill "
		if i >= 3 {
			want = "start "
		}
		if !strings.HasPrefix(call, want) {
			t.Fatalf("docker calls %v, want 3 kills then 3 starts", calls)
		}
	}
}

// restart-mid-move on three nodes: a follower's replica is removed (the
// placement driver adds it back), and a node involved is killed and started
// during that.
func TestNemesisRestartMidMoveThreeNodes(t *testing.T) {
	for seed := uint64(1); seed <= 6; seed++ {
		c, d, f := newFakeCluster(t, 3)
		n := newFakeNemesis(c, d, seed)
		n.one(context.Background(), FaultRestartMidMove)
		fs := n.Faults()
		if len(fs) != 1 || fs[0].Err != "" || !strings.HasPrefix(fs[0].What, "remove ") {
			t.Fatalf("seed %d: faults %+v", seed, fs)
		}
		f.mu.Lock()
		removed := slices.Clone(f.removed)
		f.mu.Unlock()
		if len(removed) != 1 || !strings.HasPrefix(fs[0].What, "remove "+removed[0]) {
			t.Fatalf("seed %d: removed %v, fault %q", seed, removed, fs[0].What)
		}
		calls := d.log()
		victim := fs[0].What[strings.LastIndex(fs[0].What, "kill ")+5:]
		if len(calls) != 2 || calls[0] != "kill cairn-"+victim || calls[1] != "start cairn-"+victim {
			t.Fatalf("seed %d: docker calls %v for %q, want the victim killed and started", seed, calls, fs[0].What)
		}
		t.Logf("seed %d: %s", seed, fs[0].What)
	}
}

// restart-mid-move with a spare node: one replica holder is drained, a
// node the move involves is killed and started at a step of it, and the
// drained node is undrained on the placement leader afterwards.
func TestNemesisRestartMidMoveSpareNode(t *testing.T) {
	steps := map[string]bool{}
	for seed := uint64(1); seed <= 12; seed++ {
		c, d, f := newFakeCluster(t, 4)
		n := newFakeNemesis(c, d, seed)
		n.one(context.Background(), FaultRestartMidMove)
		fs := n.Faults()
		if len(fs) != 1 || fs[0].Err != "" || !strings.HasPrefix(fs[0].What, "drain ") {
			t.Fatalf("seed %d: faults %+v", seed, fs)
		}
		f.mu.Lock()
		drained, undrains := slices.Clone(f.drained), slices.Clone(f.undrains)
		f.mu.Unlock()
		if len(drained) != 1 || len(undrains) != 1 || undrains[0] != drained[0]+"@n1" {
			t.Fatalf("seed %d: drained %v, undrained %v: want one drain, undone on the placement leader n1", seed, drained, undrains)
		}
		if len(n.drained) != 0 {
			t.Fatalf("seed %d: nemesis still counts %v as drained", seed, n.drained)
		}
		calls := d.log()
		if len(calls) != 2 || !strings.HasPrefix(calls[0], "kill ") || calls[1] != "start"+strings.TrimPrefix(calls[0], "kill") {
			t.Fatalf("seed %d: docker calls %v, want the victim killed and started", seed, calls)
		}
		if at := fs[0].What[strings.Index(fs[0].What, "at ")+3 : strings.Index(fs[0].What, " (wanted")]; at != "" {
			steps[at] = true
		}
		t.Logf("seed %d: %s", seed, fs[0].What)
	}
	if len(steps) < 3 {
		t.Errorf("restarts happened only at steps %v over 12 seeds", steps)
	}
}

// The new faults are in every round of the deck.
func TestDeckHasNewFaults(t *testing.T) {
	for _, k := range []FaultKind{FaultTransferPause, FaultKillAll, FaultRestartMidMove} {
		if !slices.Contains(deck, k) {
			t.Errorf("deck lacks %s", k)
		}
	}
	if !LeaderFault(FaultTransferPause) || LeaderFault(FaultKillAll) {
		t.Error("transfer-pause strikes the probe shard's leader; kill-all is not a leader fault")
	}
}
