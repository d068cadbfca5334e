package shard

import (
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// gatedStore blocks StoreLogs while gate is held (a stalled fdatasync).
type gatedStore struct {
	*raft.InmemStore
	mu      sync.Mutex
	blocked chan struct{}
	entered chan struct{}
}

func (s *gatedStore) StoreLogs(logs []*raft.Log) error {
	s.mu.Lock()
	b, e := s.blocked, s.entered
	s.mu.Unlock()
	if b != nil {
		close(e)
		<-b
	}
	return s.InmemStore.StoreLogs(logs)
}
func (s *gatedStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// startBeatFollower runs a real raft "B" for group 1 on mux b, a follower
// of a fake "A" on mux a; returns A's transport for group 1.
func startBeatFollower(t *testing.T, a, b *Mux, store *gatedStore) (*raft.Raft, *GroupTransport) {
	ta, err := a.Transport(1, 2, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ta.Close() })
	tb, err := b.Transport(1, 2, 10*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	conf := raft.DefaultConfig()
	conf.LocalID = "B"
	conf.HeartbeatTimeout = 20 * time.Second
	conf.ElectionTimeout = 20 * time.Second
	conf.LeaderLeaseTimeout = 10 * time.Second
	snaps := raft.NewInmemSnapshotStore()
	cfg := raft.Configuration{Servers: []raft.Server{
		{ID: "A", Address: raft.ServerAddress(a.Addr()), Suffrage: raft.Voter},
		{ID: "B", Address: raft.ServerAddress(b.Addr()), Suffrage: raft.Voter},
	}}
	if err := raft.BootstrapCluster(conf, store, store, snaps, tb, cfg); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(conf, &muxTestFSM{}, store, store, snaps, tb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Shutdown().Error(); tb.Close() })
	return r, ta
}

// A heartbeat of a newer term that reaches a real raft over cairn's
// coalesced heartbeat path must be answered (success, new term), not
// failed. A version of processHeartbeat that handed such heartbeats to
// raft's main goroutine returned before the answer, and Mux.heartbeat,
// which reads the answer without waiting, failed them (review:
// "B's term now 2 (was 1); answer err=... did not answer (shutting down)").
func TestBeatOfNewerTermIsAnswered(t *testing.T) {
	a, b := mustMux(t, nil, 0), mustMux(t, nil, 0)
	store := &gatedStore{InmemStore: raft.NewInmemStore()}
	r, ta := startBeatFollower(t, a, b, store)
	term := r.CurrentTerm()
	var resp raft.AppendEntriesResponse
	err := ta.AppendEntries("B", raft.ServerAddress(b.Addr()), heartbeatReq(term+1, a.Addr()), &resp)
	time.Sleep(100 * time.Millisecond)
	t.Logf("B's term now %d (was %d); answer err=%v resp=%+v", r.CurrentTerm(), term, err, resp)
	if err != nil {
		t.Fatalf("BUG: B took the heartbeat of term %d (its term is now %d) but the leader got an error: %v",
			term+1, r.CurrentTerm(), err)
	}
	if !resp.Success || resp.Term != term+1 {
		t.Fatalf("answer %+v", resp)
	}
}

// One group's raft busy on its main goroutine (a stalled log write) must not
// hold up other groups' heartbeats on the shared heartbeat connection (the
// same version made the transport wait for the main goroutine: "group 2's
// heartbeat was held 2.001s").
func TestBusyGroupDoesNotHoldOtherGroupsBeats(t *testing.T) {
	otherGroupAnsweredWhileBusy(t, 2)
}

// otherGroupAnsweredWhileBusy stalls group 1's log write on B (a replicated
// entry of term+1), sends B group 1's heartbeats of term+n for each n in
// newer (each handed to B's busy main goroutine), then checks that group 2's
// heartbeat on the same connection is answered within 2 s.
func otherGroupAnsweredWhileBusy(t *testing.T, newer ...uint64) {
	t.Helper()
	a, b := mustMux(t, nil, 0), mustMux(t, nil, 0)
	store := &gatedStore{InmemStore: raft.NewInmemStore()}
	r, ta := startBeatFollower(t, a, b, store)
	// Group 2 on b: a trivial, always-responsive "raft".
	ta2, _ := a.Transport(2, 2, 10*time.Second, nil)
	tb2, _ := b.Transport(2, 2, 10*time.Second, nil)
	defer ta2.Close()
	defer tb2.Close()
	tb2.SetHeartbeatHandler(func(rpc raft.RPC) {
		req := rpc.Command.(*raft.AppendEntriesRequest)
		rpc.Respond(&raft.AppendEntriesResponse{Term: req.Term, Success: true}, nil)
	})

	term := r.CurrentTerm()
	// A (term+1) replicates an entry; B's write of it stalls (disk stall).
	blocked, entered := make(chan struct{}), make(chan struct{})
	store.mu.Lock()
	store.blocked, store.entered = blocked, entered
	store.mu.Unlock()
	go func() {
		ae := heartbeatReq(term+1, a.Addr())
		ae.PrevLogEntry, ae.PrevLogTerm = 1, 1
		ae.Entries = []*raft.Log{{Index: 2, Term: term + 1, Type: raft.LogNoop}}
		var resp raft.AppendEntriesResponse
		_ = ta.AppendEntries("B", raft.ServerAddress(b.Addr()), ae, &resp)
	}()
	<-entered
	// Later elections in group 1 (A again), heartbeating B; sent together,
	// they share a frame.
	for _, n := range newer {
		go func() {
			var resp raft.AppendEntriesResponse
			_ = ta.AppendEntries("B", raft.ServerAddress(b.Addr()), heartbeatReq(term+n, a.Addr()), &resp)
		}()
	}
	time.Sleep(50 * time.Millisecond)
	// Group 2's heartbeat (a different group, its raft idle).
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		var resp raft.AppendEntriesResponse
		done <- ta2.AppendEntries("B", raft.ServerAddress(b.Addr()), heartbeatReq(7, a.Addr()), &resp)
	}()
	select {
	case err := <-done:
		t.Logf("group 2 heartbeat answered in %v: %v", time.Since(start), err)
	case <-time.After(2 * time.Second):
		close(blocked)
		err := <-done
		t.Fatalf("BUG: group 2's heartbeat was held %v (answered only after group 1's log write returned: %v): "+
			"group 1's newer-term heartbeats (%d of them) block the shared heartbeat connection",
			time.Since(start), err, len(newer))
	}
	close(blocked)
}

// Two handed-over heartbeats in one frame while the group's main goroutine
// is busy wait beatHandOff between them, not each its own. A first version
// shared one timer, which fires once: the second waited on the drained
// channel until raft answered, holding the connection and every other
// group's beats (review: "group 2's heartbeat was held 2.002s").
func TestTwoHandedOverBeatsInOneFrameWaitOnce(t *testing.T) {
	otherGroupAnsweredWhileBusy(t, 2, 3)
}

// A raft that is shutting down (Shutdown called, its transport not yet
// closed: Group.stopRaft's window until shutdownFuture.Error closes it) drops
// heartbeats unanswered. Two of them in one frame: the second waits on the
// drained timer forever, so serveBeats never returns and Mux.Close hangs in
// wg.Wait (node shutdown hangs; review: "Mux.Close still blocked after 3s").
func TestStoppingRaftDoesNotHangBeatConnection(t *testing.T) {
	a, b := mustMux(t, nil, 0), mustMux(t, nil, 0)
	store := &gatedStore{InmemStore: raft.NewInmemStore()}
	r, ta := startBeatFollower(t, a, b, store)
	term := r.CurrentTerm()
	r.Shutdown() // raft stopping; the group's transport still open
	for range 2 {
		go func() {
			var resp raft.AppendEntriesResponse
			_ = ta.AppendEntries("B", raft.ServerAddress(b.Addr()), heartbeatReq(term, a.Addr()), &resp)
		}()
	}
	time.Sleep(100 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Fatalf("BUG: Mux.Close still blocked after 3s: serveBeats is stuck in answerBeats on an unanswered heartbeat")
	}
}
