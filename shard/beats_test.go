package shard

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.uber.org/goleak"
)

func heartbeatReq(term uint64, from string) *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{
		RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("a"), Addr: []byte(from)},
		Term:      term,
	}
}

// Heartbeats of many groups to one peer share one connection and go out in
// far fewer frames than calls; each answer reaches its own caller; a group
// the peer does not host answers an error.
func TestBeatsCoalesceAndAnswer(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := mustMux(t, nil, 0), mustMux(t, nil, 0)
	const groups = 40
	var senders []*GroupTransport
	for g := uint64(1); g <= groups; g++ {
		ta, err := a.Transport(g, 2, 2*time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		tb, err := b.Transport(g, 2, 2*time.Second, nil)
		if err != nil {
			t.Fatal(err)
		}
		// The receiving group's "raft": answers with its group id as LastLog.
		tb.SetHeartbeatHandler(func(rpc raft.RPC) {
			req := rpc.Command.(*raft.AppendEntriesRequest)
			rpc.Respond(&raft.AppendEntriesResponse{
				RPCHeader: raft.RPCHeader{ID: []byte("b"), Addr: []byte(b.Addr())},
				Term:      req.Term, LastLog: g, Success: string(req.RPCHeader.Addr) == a.Addr(),
			}, nil)
		})
		senders = append(senders, ta)
		defer tb.Close()
		defer ta.Close()
	}
	var wg sync.WaitGroup
	errs := make(chan error, groups*5)
	for round := range 5 {
		for i, ta := range senders {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var resp raft.AppendEntriesResponse
				err := ta.AppendEntries("b", raft.ServerAddress(b.Addr()), heartbeatReq(uint64(round+1), a.Addr()), &resp)
				switch {
				case err != nil:
					errs <- err
				case resp.LastLog != uint64(i+1) || resp.Term != uint64(round+1) || !resp.Success || string(resp.ID) != "b":
					errs <- fmt.Errorf("group %d round %d: answer %+v", i+1, round, resp)
				}
			}()
		}
		wg.Wait()
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st := a.Beats()
	if st.Calls != groups*5 || st.Frames == 0 || st.Frames*4 > st.Calls {
		t.Errorf("beats %+v: want %d calls in at most a quarter as many frames", st, groups*5)
	}

	// A group b does not host.
	lone, err := a.Transport(999, 2, 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lone.Close()
	var resp raft.AppendEntriesResponse
	err = lone.AppendEntries("b", raft.ServerAddress(b.Addr()), heartbeatReq(1, a.Addr()), &resp)
	if err == nil || !strings.Contains(err.Error(), "group 999 is not hosted") {
		t.Errorf("heartbeat to an unknown group: %v", err)
	}
	_ = a.Close()
	_ = b.Close()
}

// Non-heartbeat appends keep using the group's own connections: they must
// reach the group's consumer, not the heartbeat handler.
func TestBeatsOnlyTakeHeartbeats(t *testing.T) {
	a, b := mustMux(t, nil, 0), mustMux(t, nil, 0)
	defer a.Close()
	defer b.Close()
	ta, _ := a.Transport(1, 2, time.Second, nil)
	tb, _ := b.Transport(1, 2, time.Second, nil)
	defer ta.Close()
	defer tb.Close()
	tb.SetHeartbeatHandler(func(rpc raft.RPC) { rpc.Respond(nil, fmt.Errorf("heartbeat handler called")) })
	go func() {
		rpc := <-tb.Consumer()
		rpc.Respond(&raft.AppendEntriesResponse{Success: true, LastLog: 7}, nil)
	}()
	req := heartbeatReq(1, a.Addr())
	req.LeaderCommitIndex = 5 // a commit-index ping, not a heartbeat
	var resp raft.AppendEntriesResponse
	if err := ta.AppendEntries("b", raft.ServerAddress(b.Addr()), req, &resp); err != nil || resp.LastLog != 7 {
		t.Fatalf("append: %v, %+v", err, resp)
	}
	if st := a.Beats(); st.Calls != 0 {
		t.Errorf("a non-heartbeat went through the heartbeat path: %+v", st)
	}
}

// A partition (test knob) fails heartbeats quickly; healing restores them on
// a new connection.
func TestBeatsPartition(t *testing.T) {
	p := &muxPartition{}
	knobs := &TransportKnobs{Blocked: p.blocked}
	a, b := mustMux(t, knobs, 0), mustMux(t, knobs, 0)
	defer a.Close()
	defer b.Close()
	ta, _ := a.Transport(1, 2, 2*time.Second, nil)
	tb, _ := b.Transport(1, 2, 2*time.Second, nil)
	defer ta.Close()
	defer tb.Close()
	tb.SetHeartbeatHandler(func(rpc raft.RPC) { rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil) })
	beat := func() error {
		var resp raft.AppendEntriesResponse
		return ta.AppendEntries("b", raft.ServerAddress(b.Addr()), heartbeatReq(1, a.Addr()), &resp)
	}
	if err := beat(); err != nil {
		t.Fatal(err)
	}
	p.isolate(b.Addr())
	start := time.Now()
	if err := beat(); err == nil {
		t.Fatal("heartbeat crossed a partition")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("heartbeat across a partition took %v to fail", d)
	}
	p.heal()
	muxWaitFor(t, 5*time.Second, "heartbeats after heal", func() bool { return beat() == nil })
}

func TestBeatFrameRoundTrip(t *testing.T) {
	m := mustMux(t, nil, 0)
	defer m.Close()
	calls := []*beatCall{
		{id: 1, group: 5, req: heartbeatReq(3, "x:1")},
		{id: 2, group: 1 << 60, req: &raft.AppendEntriesRequest{Term: 1, RPCHeader: raft.RPCHeader{Addr: []byte("y")}}},
	}
	frame := encodeBeatRequests(calls)
	body, err := readBeatFrame(bytes.NewReader(frame))
	if err != nil {
		t.Fatal(err)
	}
	// Neither group is hosted: two error answers, one per call, in order.
	out, err := m.answerBeats(body)
	if err != nil {
		t.Fatal(err)
	}
	conn := &beatConn{m: m}
	for _, c := range calls {
		c.done = make(chan beatResult, 1)
	}
	conn.pending = calls
	rbody, err := readBeatFrame(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.deliver(rbody); err != nil {
		t.Fatal(err)
	}
	for _, c := range calls {
		r := <-c.done
		if r.err == nil || !strings.Contains(r.err.Error(), "is not hosted") {
			t.Errorf("call %d: %+v", c.id, r)
		}
	}
}

// FuzzBeatFrame: no input makes the frame decoders panic or allocate beyond
// their bounds; what the server accepts, it answers with a frame the client
// can read.
func FuzzBeatFrame(f *testing.F) {
	f.Add(encodeBeatRequests([]*beatCall{{id: 1, group: 2, req: heartbeatReq(3, "x:1")}})[4:])
	f.Add([]byte{0})
	f.Add([]byte{5, 1, 2})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	m, err := NewMux(MuxConfig{Listener: ln})
	if err != nil {
		f.Fatal(err)
	}
	defer m.Close()
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := m.answerBeats(body)
		if err != nil {
			return
		}
		if _, err := readBeatFrame(bytes.NewReader(out)); err != nil && len(out) > 4 {
			t.Fatalf("answer frame unreadable: %v", err)
		}
		conn := &beatConn{m: m}
		_ = conn.deliver(body) // a request body read as answers: must not panic
	})
}

// Beats returns how many heartbeats went through the shared heartbeat
// connections and in how many frames.
func (m *Mux) Beats() BeatStats {
	return BeatStats{Calls: m.beats.calls.Load(), Frames: m.beats.frames.Load()}
}

// BeatStats counts heartbeats sent through the shared connections and the
// frames that carried them.
type BeatStats struct{ Calls, Frames uint64 }

// A heartbeat raft is handling on the mux's goroutine must be over before
// the group's layer is closed: the group closes its log store right after
// (Group.closeStores), and raft's heartbeat path writes the term to it. A
// late heartbeat then found the store closed, and raft panicked: "failed to
// save current term: shard: log store closed" (make test, shard package).
func TestLayerCloseWaitsForHeartbeatInFlight(t *testing.T) {
	m := mustMux(t, nil, 0)
	l := mustMuxLayer(t, m, 7).(*muxLayer)
	entered, release := make(chan struct{}), make(chan struct{})
	var storeClosed atomic.Bool
	cb := func(rpc raft.RPC) {
		close(entered)
		<-release
		if storeClosed.Load() {
			t.Error("the heartbeat ran on after the layer closed, into a closed store")
		}
		rpc.RespChan <- raft.RPCResponse{Response: &raft.AppendEntriesResponse{Success: true}}
	}
	l.heartbeat.Store(&cb)
	done := make(chan error, 1)
	go func() {
		_, err := m.heartbeat(7, &raft.AppendEntriesRequest{})
		done <- err
	}()
	<-entered
	closed := make(chan struct{})
	go func() {
		l.close()
		storeClosed.Store(true) // what Group.closeStores does next
		close(closed)
	}()
	select {
	case <-closed:
		t.Error("the layer closed while a heartbeat was still in raft")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("the heartbeat in flight failed: %v", err)
	}
	<-closed
	if _, err := m.heartbeat(7, &raft.AppendEntriesRequest{}); err == nil {
		t.Fatal("a heartbeat after close reached raft")
	}
}
