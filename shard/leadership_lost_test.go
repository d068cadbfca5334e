package shard

import (
	"bytes"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
)

func reviewPut(t *testing.T, key string) []byte {
	b, err := fsm.EncodeCommand(&fsm.Command{Op: fsm.OpPut, Key: []byte(key), Value: []byte("v"), Epoch: 1,
		Time: time.Now().UnixNano()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakePeer answers A's RPCs: grants votes, acknowledges heartbeats, refuses
// every AppendEntries carrying entries (so A's entries never commit).
func fakePeer(rpcs <-chan raft.RPC, stop <-chan struct{}) { fakePeerX(rpcs, stop, false) }

func fakePeerX(rpcs <-chan raft.RPC, stop <-chan struct{}, accept bool) {
	for {
		select {
		case <-stop:
			return
		case rpc := <-rpcs:
			switch req := rpc.Command.(type) {
			case *raft.RequestVoteRequest:
				rpc.Respond(&raft.RequestVoteResponse{Term: req.Term, Granted: true}, nil)
			case *raft.RequestPreVoteRequest:
				rpc.Respond(&raft.RequestPreVoteResponse{Term: req.Term, Granted: true}, nil)
			case *raft.AppendEntriesRequest:
				ok := accept || (len(req.Entries) == 0 && req.PrevLogEntry == 0)
				last := req.PrevLogEntry
				if n := len(req.Entries); n > 0 {
					last = req.Entries[n-1].Index
				}
				rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, Success: ok, LastLog: last}, nil)
			default:
				rpc.Respond(nil, io.EOF)
			}
		}
	}
}

// TestLeadershipLostNamedBeforeSnapshotRestore: a leader that steps down
// because of an InstallSnapshot from a later term names its in-flight
// entries before it restores the snapshot, and a claim registered after its
// index was passed answers "unknown". A review found that the hook ran only
// afterwards (the leader loop's cleanup), and the next batch answered the
// claim on an entry the snapshot holds (committed) "not ours": settle
// answered NotLeaderError and the write was sent again ("BUG: the put at 3
// (term 2) is in the installed snapshot (committed), but its claim answered
// 'not ours'"). Real raft over TCP, a fake new leader.
func TestLeadershipLostNamedBeforeSnapshotRestore(t *testing.T) {
	f := openTestFSM(t, "A", "B", "C")
	c := newClaimFSM(f, f)
	var mu sync.Mutex
	var hookApplied []uint64
	conf := leaderAConfig(100 * time.Millisecond)
	conf.LeadershipLost = func(index, term uint64) {
		mu.Lock()
		hookApplied = append(hookApplied, f.Applied())
		mu.Unlock()
		c.expect(index, term)
	}
	addrA, tA := raft.NewInmemTransport("A")
	addrB, tB := raft.NewInmemTransport("B")
	addrC, tC := raft.NewInmemTransport("C")
	for _, p := range []*raft.InmemTransport{tA, tB, tC} {
		p.Connect(addrA, tA)
		p.Connect(addrB, tB)
		p.Connect(addrC, tC)
	}
	stop := make(chan struct{})
	defer close(stop)
	go fakePeer(tB.Consumer(), stop)
	go fakePeer(tC.Consumer(), stop)
	r := startLeaderA(t, conf, c, tA, addrA, addrB, addrC)
	defer func() { _ = r.Shutdown().Error() }()
	put := reviewPut(t, "k")
	fut := r.Apply(put, 0)
	for r.LastIndex() < 3 {
		time.Sleep(time.Millisecond)
	}
	term := r.CurrentTerm()
	idx := r.LastIndex() // the put's index (config 1, noop 2, put 3)

	// The new leader B (term+1) committed the put and sends a snapshot
	// that contains it: an fsm state with the put applied at idx.
	g := openTestFSM(t, "A", "B", "C")
	g.ApplyBatch([]*raft.Log{{Index: idx, Term: term, Type: raft.LogCommand, Data: put}})
	var buf bytes.Buffer
	gs, err := g.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if err := gs.Persist(&bufSink{Buffer: &buf}); err != nil {
		t.Fatal(err)
	}
	gs.Release()
	req := &raft.InstallSnapshotRequest{
		RPCHeader:          raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("B"), Addr: []byte(addrB)},
		SnapshotVersion:    1,
		Term:               term + 1,
		LastLogIndex:       idx,
		LastLogTerm:        term,
		Configuration:      raft.EncodeConfiguration(r.GetConfiguration().Configuration()),
		ConfigurationIndex: 1,
		Size:               int64(buf.Len()),
	}
	var resp raft.InstallSnapshotResponse
	if err := tB.InstallSnapshot("A", addrA, req, &resp, bytes.NewReader(buf.Bytes())); err != nil || !resp.Success {
		t.Fatalf("install snapshot: %v %+v", err, resp)
	}
	if err := fut.Error(); err != raft.ErrLeadershipLost {
		t.Fatalf("put future: %v, want ErrLeadershipLost", err)
	}
	mu.Lock()
	t.Logf("LeadershipLost hook ran with fsm applied index = %v (put at %d)", hookApplied, idx)
	mu.Unlock()
	// The put is committed: it is in A's state now.
	if kv, _ := f.Get([]byte("k")); kv == nil {
		t.Log("note: key not visible via Get")
	}
	// The proposer (Replica.settle) picks up its claim.
	ch, ok := c.claim(idx, term)
	if !ok {
		t.Fatalf("claim refused")
	}
	// B's next entry reaches A and commits.
	ae := &raft.AppendEntriesRequest{
		RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("B"), Addr: []byte(addrB)},
		Term:              term + 1,
		PrevLogEntry:      idx,
		PrevLogTerm:       term,
		Entries:           []*raft.Log{{Index: idx + 1, Term: term + 1, Type: raft.LogCommand, Data: reviewPut(t, "other")}},
		LeaderCommitIndex: idx + 1,
	}
	var aer raft.AppendEntriesResponse
	if err := tB.AppendEntries("A", addrA, ae, &aer); err != nil || !aer.Success {
		t.Fatalf("append: %v %+v", err, aer)
	}
	select {
	case a := <-ch:
		if a.known && !a.ours {
			t.Fatalf("BUG: the put at %d (term %d) is in the installed snapshot (committed), "+
				"but its claim answered 'not ours' => settle returns NotLeaderError and the write is retried", idx, term)
		}
		t.Logf("answer %+v", a)
	case <-time.After(2 * time.Second):
		t.Log("no answer")
	}
}

// TestLeadershipLostHookOnMainGoroutine: heartbeats of a newer term reach a
// leader while it appends; the LeadershipLost hook must run on raft's main
// goroutine only. Before processHeartbeat handed such heartbeats to it, the
// hook walked leaderState.inflight from the transport's goroutine while the
// leader loop changed it (-race: DATA RACE between list.PushBack in
// dispatchLogs and list.Front in notifyLeadershipLost via processHeartbeat).
// Run with -race (make test does).
func TestLeadershipLostHookOnMainGoroutine(t *testing.T) {
	var calls sync.Map
	conf := leaderAConfig(100 * time.Millisecond)
	conf.LeadershipLost = func(index, term uint64) { calls.Store(index, term); time.Sleep(50 * time.Microsecond) }
	tA, addrA := tcpTestTransport(t)
	tB, addrB, addrC := acceptingPeersBC(t)
	f := openTestFSM(t, "A")
	r := startLeaderA(t, conf, f, tA, addrA, addrB, addrC)
	defer func() { _ = r.Shutdown().Error() }()
	stop, done := make(chan struct{}), make(chan struct{})
	defer func() { close(stop); <-done }()
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if r.State() == raft.Leader {
				r.Apply(reviewPut(t, "k"), 0)
			} else {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	for round := 0; round < 4; round++ {
		deadline := time.Now().Add(5 * time.Second)
		for r.State() != raft.Leader {
			if time.Now().After(deadline) {
				t.Fatal("A never led again")
			}
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(round%7) * 3 * time.Millisecond)
		hb := &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("B"), Addr: []byte(addrB)},
			Term:      r.CurrentTerm() + 1,
		}
		var resp raft.AppendEntriesResponse
		_ = tB.AppendEntries("A", addrA, hb, &resp)
	}
	n := 0
	calls.Range(func(any, any) bool { n++; return true })
	t.Logf("hook calls: %d", n)
}

// startLeaderA bootstraps a three-voter configuration (A, B, C) on in-memory
// stores, starts A's raft over tA and waits until A leads (B and C are fake
// peers of the caller's). The caller shuts it down before closing fsm.
func startLeaderA(t *testing.T, conf *raft.Config, fsm raft.FSM, tA raft.Transport, addrA, addrB, addrC raft.ServerAddress) *raft.Raft {
	t.Helper()
	store := raft.NewInmemStore()
	snaps := raft.NewInmemSnapshotStore()
	cfg := raft.Configuration{Servers: []raft.Server{
		{ID: "A", Address: addrA, Suffrage: raft.Voter},
		{ID: "B", Address: addrB, Suffrage: raft.Voter},
		{ID: "C", Address: addrC, Suffrage: raft.Voter},
	}}
	if err := raft.BootstrapCluster(conf, store, store, snaps, tA, cfg); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(conf, fsm, store, store, snaps, tA)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.State() != raft.Leader {
		if time.Now().After(deadline) {
			_ = r.Shutdown().Error()
			t.Fatal("A never led")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

// tcpTestTransport is a raft NetworkTransport on a free loopback port.
func tcpTestTransport(t *testing.T) (*raft.NetworkTransport, raft.ServerAddress) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	tr, err := raft.NewTCPTransport(ln.Addr().String(), nil, 3, time.Second, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return tr, tr.LocalAddr()
}

// TestNewerTermHeartbeatNeverStampsAnUnledTerm: a heartbeat of a newer term
// that reaches an idle leader must not change its term under the leader loop
// (hashicorp/raft issue 695). Stock raft ran it on the transport's goroutine,
// which set the term and the Follower state while the leader loop idled; the
// loop then stamped the next proposal with the new term, one it never led,
// and kept that entry over the new leader's entry at the same index and term:
// the old leader applied a put the cluster never committed (a diverged
// replica). Real raft over TCP; B is a fake new leader of term T+1.
func TestNewerTermHeartbeatNeverStampsAnUnledTerm(t *testing.T) {
	f := openTestFSM(t, "A", "B", "C")
	conf := leaderAConfig(time.Second)
	tA, addrA := tcpTestTransport(t)
	tB, addrB, addrC := acceptingPeersBC(t)
	r := startLeaderA(t, conf, newClaimFSM(f, f), tA, addrA, addrB, addrC)
	defer func() { _ = r.Shutdown().Error() }()
	if err := r.Apply(reviewPut(t, "warm"), 0).Error(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the leader loop idles in its select
	T, L := r.CurrentTerm(), r.LastIndex()

	// B, elected in T+1 with C's vote, sends its first heartbeat.
	hdr := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("B"), Addr: []byte(addrB)}
	var resp raft.AppendEntriesResponse
	if err := tB.AppendEntries("A", addrA, &raft.AppendEntriesRequest{RPCHeader: hdr, Term: T + 1}, &resp); err != nil {
		t.Fatal(err)
	}
	if !resp.Success || resp.Term != T+1 {
		t.Fatalf("A answered B's heartbeat of term %d with %+v", T+1, resp)
	}
	// A put proposed on A once it says it no longer leads.
	deadline := time.Now().Add(5 * time.Second)
	for r.State() == raft.Leader && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	fut := r.Apply(reviewPut(t, "X"), 0)
	ferr := fut.Error()
	if ferr == nil || fut.Index() != 0 {
		term := fut.(interface{ Term() uint64 }).Term()
		if term != T {
			t.Errorf("BUG: A, leader of term %d only, appended the put at %d in term %d (%v)", T, fut.Index(), term, ferr)
		}
	}
	// B's first AppendEntries: its no-op of term T+1 at L+1, then a put of
	// its own at L+2, both committed.
	for _, e := range []*raft.Log{
		{Index: L + 1, Term: T + 1, Type: raft.LogNoop},
		{Index: L + 2, Term: T + 1, Type: raft.LogCommand, Data: reviewPut(t, "Y")},
	} {
		prevTerm := T
		if e.Index > L+1 {
			prevTerm = T + 1
		}
		ae := &raft.AppendEntriesRequest{RPCHeader: hdr, Term: T + 1, PrevLogEntry: e.Index - 1,
			PrevLogTerm: prevTerm, Entries: []*raft.Log{e}, LeaderCommitIndex: e.Index}
		if err := tB.AppendEntries("A", addrA, ae, &resp); err != nil || !resp.Success {
			t.Fatalf("B's append of %d: %v %+v", e.Index, err, resp)
		}
	}
	// Y applied on A's state machine (raft's AppliedIndex moves before the
	// FSM has run the batch).
	deadline = time.Now().Add(5 * time.Second)
	for {
		kv, err := f.Get([]byte("Y"))
		if err != nil {
			t.Fatal(err)
		}
		if kv != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's put Y (entry %d) not applied on A in 5s", L+2)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if kv, err := f.Get([]byte("X")); err != nil || kv != nil {
		t.Fatalf("BUG: A applied the put X (%+v, %v), which the cluster never committed: a diverged replica", kv, err)
	}
}

// openTestFSM opens a state machine of range 1 with the given replicas in a
// temporary directory, closed when the test ends (after its deferred calls,
// so after a raft the test shut down).
func openTestFSM(t *testing.T, replicas ...string) *fsm.FSM {
	t.Helper()
	f, err := fsm.Open(fsm.Config{Path: filepath.Join(t.TempDir(), "a.db"),
		Initial: fsm.Range{ID: 1, Epoch: 1, Replicas: replicas}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// leaderAConfig is the raft configuration of server A in these tests, with
// heartbeat, election and lease timeouts of d.
func leaderAConfig(d time.Duration) *raft.Config {
	conf := raft.DefaultConfig()
	conf.LocalID = "A"
	conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = d, d, d
	conf.CommitTimeout = 5 * time.Millisecond
	return conf
}

// acceptingPeersBC starts B and C as fake peers over TCP that grant votes
// and accept every AppendEntries (fakePeerX), until the test ends; B's
// transport is returned for a test that sends as B.
func acceptingPeersBC(t *testing.T) (tB *raft.NetworkTransport, addrB, addrC raft.ServerAddress) {
	t.Helper()
	tB, addrB = tcpTestTransport(t)
	tC, addrC := tcpTestTransport(t)
	stop := make(chan struct{})
	go fakePeerX(tB.Consumer(), stop, true)
	go fakePeerX(tC.Consumer(), stop, true)
	t.Cleanup(func() {
		close(stop)
		_ = tB.Close()
		_ = tC.Close()
	})
	return tB, addrB, addrC
}
