package shard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"go.uber.org/goleak"

	"github.com/cairndb/cairn/internal/syncbuf"
)

// Tests in this file verify goroutine leaks per test, ignoring goroutines that
// existed when the test started, so they do not depend on (or fight over) a
// package-wide TestMain.

func mustMux(t *testing.T, knobs *TransportKnobs, hs time.Duration) *Mux {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMux(MuxConfig{Listener: ln, HandshakeTimeout: hs, Knobs: knobs})
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func mustMuxLayer(t *testing.T, m *Mux, group uint64) raft.StreamLayer {
	t.Helper()
	l, err := m.Layer(group)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// muxWaitFor polls cond until it holds or the deadline passes.
func muxWaitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type muxAcceptResult struct {
	conn net.Conn
	err  error
}

// acceptAsync runs one Accept in the background.
func acceptAsync(l net.Listener) <-chan muxAcceptResult {
	ch := make(chan muxAcceptResult, 1)
	go func() {
		c, err := l.Accept()
		ch <- muxAcceptResult{c, err}
	}()
	return ch
}

func recvConn(t *testing.T, ch <-chan muxAcceptResult, d time.Duration) net.Conn {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("accept: %v", r.err)
		}
		return r.conn
	case <-time.After(d):
		t.Fatalf("no connection accepted within %v", d)
		return nil
	}
}

// dialPair dials server's mux from client and returns both ends: the
// dialed conn and the one server's layer accepted. The caller closes them.
func dialPair(t *testing.T, serverMux *Mux, server, client raft.StreamLayer) (c, s net.Conn) {
	t.Helper()
	ch := acceptAsync(server)
	c, err := client.Dial(raft.ServerAddress(serverMux.Addr()), time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c, recvConn(t, ch, 2*time.Second)
}

// expectClosedByPeer asserts the server closes c (EOF or reset), not that it
// merely stays silent.
func expectClosedByPeer(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open after %v", within)
	}
}

// expectMuxServes proves m still routes group's connections end to end.
func expectMuxServes(t *testing.T, m *Mux, server raft.StreamLayer, client raft.StreamLayer) {
	t.Helper()
	c, s := dialPair(t, m, server, client)
	defer c.Close()
	defer s.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	_ = s.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("read %q, %v", buf, err)
	}
}

func TestMuxRoutesByGroup(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := mustMux(t, nil, 0), mustMux(t, nil, 0)
	a1, a2 := mustMuxLayer(t, a, 1), mustMuxLayer(t, a, 2)
	b1, b2 := mustMuxLayer(t, b, 1), mustMuxLayer(t, b, 2)

	if got := b1.Addr().String(); got != b.Addr() {
		t.Fatalf("layer Addr %q, want advertise addr %q", got, b.Addr())
	}
	for _, tc := range []struct {
		name           string
		from, to, idle raft.StreamLayer
		msg            string
	}{
		{"group1", a1, b1, b2, "for group one"},
		{"group2", a2, b2, b1, "for group two"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := acceptAsync(tc.to)
			c, err := tc.from.Dial(raft.ServerAddress(b.Addr()), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte(tc.msg)); err != nil {
				t.Fatal(err)
			}
			s := recvConn(t, ch, 2*time.Second)
			defer s.Close()
			buf := make([]byte, len(tc.msg))
			if _, err := io.ReadFull(s, buf); err != nil || string(buf) != tc.msg {
				t.Fatalf("read %q, %v", buf, err)
			}
			// Reply path works too.
			if _, err := s.Write([]byte("ok")); err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf[:2]); err != nil || string(buf[:2]) != "ok" {
				t.Fatalf("reply %q, %v", buf[:2], err)
			}
			// The other group's layer saw nothing.
			if n := len(tc.idle.(*muxLayer).queue); n != 0 {
				t.Fatalf("other group has %d queued conns", n)
			}
		})
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestMuxLayerLifecycle(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := mustMux(t, nil, 0), mustMux(t, nil, 0)
	a1 := mustMuxLayer(t, a, 1)
	b1 := mustMuxLayer(t, b, 1)

	if _, err := b.Layer(1); !errors.Is(err, ErrMuxGroupRegistered) {
		t.Fatalf("second Layer(1): %v, want ErrMuxGroupRegistered", err)
	}

	// Unregister: a pending Accept returns, new conns for the group are refused.
	ch := acceptAsync(b1)
	b.Unregister(1)
	select {
	case r := <-ch:
		if !errors.Is(r.err, ErrMuxGroupClosed) || !errors.Is(r.err, net.ErrClosed) {
			t.Fatalf("Accept after Unregister: %v", r.err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Accept did not return after Unregister")
	}
	c, err := a1.Dial(raft.ServerAddress(b.Addr()), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	expectClosedByPeer(t, c, 2*time.Second)
	_ = c.Close()
	if _, err := b1.Dial(raft.ServerAddress(a.Addr()), time.Second); !errors.Is(err, ErrMuxGroupClosed) {
		t.Fatalf("Dial on closed layer: %v", err)
	}
	b.Unregister(1) // no-op
	b.Unregister(42)

	// The group can be registered again, and serves.
	b1 = mustMuxLayer(t, b, 1)
	expectMuxServes(t, b, b1, a1)

	// Layer.Close is the same as Unregister.
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	b1 = mustMuxLayer(t, b, 1)

	// Close is idempotent; afterwards nothing can be registered.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Layer(3); !errors.Is(err, ErrMuxClosed) {
		t.Fatalf("Layer after Close: %v", err)
	}
	if _, err := b.Transport(3, 1, time.Second, nil); !errors.Is(err, ErrMuxClosed) {
		t.Fatalf("Transport after Close: %v", err)
	}
	if _, err := b1.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after mux Close: %v", err)
	}
	_ = a.Close()
}

func TestMuxConfigValidate(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, tc := range []struct {
		name string
		cfg  MuxConfig
	}{
		{"no listener", MuxConfig{}},
		{"negative timeout", MuxConfig{Listener: ln, HandshakeTimeout: -time.Second}},
		{"address too long", MuxConfig{Listener: ln, AdvertiseAddr: string(bytes.Repeat([]byte("a"), 256))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewMux(tc.cfg); err == nil {
				t.Fatal("NewMux accepted a bad config")
			}
		})
	}
}

// rawHeader builds a header with arbitrary fields, for hostile clients.
func rawHeader(magic string, version byte, group uint64, addrLen uint16, addr string) []byte {
	b := append([]byte(magic), version)
	b = binary.BigEndian.AppendUint64(b, group)
	b = binary.BigEndian.AppendUint16(b, addrLen)
	return append(b, addr...)
}

func TestMuxRefusesBadHeaders(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const hs = 300 * time.Millisecond
	srv := mustMux(t, nil, hs)
	cli := mustMux(t, nil, 0)
	srv1 := mustMuxLayer(t, srv, 1)
	cli1 := mustMuxLayer(t, cli, 1)
	cli7 := mustMuxLayer(t, cli, 7)

	// A slowloris opened first must not delay anyone else.
	slow, err := net.Dial("tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := slow.Write([]byte("CR")); err != nil {
		t.Fatal(err)
	}
	slowStart := time.Now()

	t.Run("good conn during slowloris", func(t *testing.T) {
		start := time.Now()
		expectMuxServes(t, srv, srv1, cli1)
		if d := time.Since(start); d >= hs {
			t.Fatalf("good conn took %v, stalled behind slowloris", d)
		}
	})

	t.Run("slowloris closed after handshake timeout", func(t *testing.T) {
		expectClosedByPeer(t, slow, 5*time.Second)
		if d := time.Since(slowStart); d < hs-50*time.Millisecond || d > hs+2*time.Second {
			t.Fatalf("slowloris closed after %v, handshake timeout %v", d, hs)
		}
	})

	t.Run("unknown group", func(t *testing.T) {
		c, err := cli7.Dial(raft.ServerAddress(srv.Addr()), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		expectClosedByPeer(t, c, 2*time.Second)
	})

	for _, tc := range []struct {
		name string
		send []byte
	}{
		{"bad magic", rawHeader("HTTP", 1, 1, 9, "1.2.3.4:5")},
		{"bad version", rawHeader(muxMagic, 2, 1, 9, "1.2.3.4:5")},
		{"huge length", rawHeader(muxMagic, 1, 1, 0xffff, "1.2.3.4:5")},
		{"length over max", rawHeader(muxMagic, 1, 1, 256, string(bytes.Repeat([]byte("x"), 256)))},
		{"zero length", rawHeader(muxMagic, 1, 1, 0, "")},
		{"truncated address", rawHeader(muxMagic, 1, 1, 20, "short")},
		{"http request", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"nothing", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			expectClosedByPeer(t, c, hs+2*time.Second)
			expectMuxServes(t, srv, srv1, cli1)
		})
	}
	if n := len(srv1.(*muxLayer).queue); n != 0 {
		t.Fatalf("%d bad conns reached the group's queue", n)
	}
	_ = srv.Close()
	_ = cli.Close()
}

func TestMuxFullAcceptQueueRefuses(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv, cli := mustMux(t, nil, 0), mustMux(t, nil, 0)
	mustMuxLayer(t, srv, 1) // never accepted from
	cli1 := mustMuxLayer(t, cli, 1)

	const extra = 4
	conns := make([]net.Conn, 0, muxAcceptBacklog+extra)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	for range muxAcceptBacklog + extra {
		c, err := cli1.Dial(raft.ServerAddress(srv.Addr()), time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	var closed atomic.Int32
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				closed.Add(1)
			}
		}()
	}
	wg.Wait()
	if got := closed.Load(); got != extra {
		t.Fatalf("%d conns refused, want %d (queue %d)", got, extra, muxAcceptBacklog)
	}
	_ = srv.Close() // closes the queued conns too
	_ = cli.Close()
}

// muxPartition is a TransportKnobs.Blocked that isolates one address.
type muxPartition struct{ isolated atomic.Pointer[string] }

func (p *muxPartition) isolate(addr string) { p.isolated.Store(&addr) }
func (p *muxPartition) heal()               { p.isolated.Store(nil) }
func (p *muxPartition) blocked(from, to string) bool {
	a := p.isolated.Load()
	return a != nil && (from == *a || to == *a)
}

func TestMuxKnobsCutOpenConnections(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var part muxPartition
	knobs := &TransportKnobs{Blocked: part.blocked}
	a, b := mustMux(t, knobs, 0), mustMux(t, knobs, 0)
	a1, b1 := mustMuxLayer(t, a, 1), mustMuxLayer(t, b, 1)

	c, s := dialPair(t, b, b1, a1)
	defer c.Close()
	defer s.Close()

	// The server sits in Read; isolating a makes the client's Write fail and
	// close the conn, which ends the server's Read.
	readErr := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 1))
		readErr <- err
	}()
	part.isolate(a.Addr())
	if _, err := c.Write([]byte("x")); !errors.Is(err, ErrMuxConnBlocked) {
		t.Fatalf("Write across partition: %v", err)
	}
	select {
	case err := <-readErr:
		if err == nil {
			t.Fatal("server read data across partition")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("server Read not cut by partition")
	}
	start := time.Now()
	if _, err := b1.Dial(raft.ServerAddress(a.Addr()), 5*time.Second); !errors.Is(err, ErrMuxConnBlocked) {
		t.Fatalf("Dial across partition: %v", err)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Fatalf("blocked Dial took %v", d)
	}

	part.heal()
	expectMuxServes(t, b, b1, a1)
	_ = a.Close()
	_ = b.Close()
}

func TestMuxNoKnobsReturnsRawConn(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := mustMux(t, nil, 0), mustMux(t, &TransportKnobs{}, 0)
	a1, b1 := mustMuxLayer(t, a, 1), mustMuxLayer(t, b, 1)
	c, s := dialPair(t, b, b1, a1)
	defer c.Close()
	defer s.Close()
	if _, ok := c.(*net.TCPConn); !ok {
		t.Fatalf("dialed conn is %T, want *net.TCPConn", c)
	}
	// Accepted conns are tracked for the layer's close, nothing more.
	ic, ok := s.(*inboundConn)
	if !ok {
		t.Fatalf("accepted conn is %T, want *shard.inboundConn", s)
	}
	if _, ok := ic.Conn.(*net.TCPConn); !ok {
		t.Fatalf("accepted conn wraps %T, want *net.TCPConn (knobs without Blocked)", ic.Conn)
	}
	_ = a.Close()
	_ = b.Close()
}

// A Delay knob holds each write back for the delay and keeps the order,
// without serializing writes behind one another (a long link, not a slow
// one); closing either end stops the delay line's goroutine.
func TestMuxKnobsDelay(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	const delay = 150 * time.Millisecond
	knobs := &TransportKnobs{Delay: func(from, to string) time.Duration { return delay }}
	a, b := mustMux(t, knobs, 0), mustMux(t, knobs, 0)
	a1, b1 := mustMuxLayer(t, a, 1), mustMuxLayer(t, b, 1)
	c, s := dialPair(t, b, b1, a1)

	const n = 20
	start := time.Now()
	for i := 0; i < n; i++ {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > delay/2 {
		t.Fatalf("%d delayed writes took %v to return: they should queue", n, d)
	}
	got := make([]byte, 0, n)
	buf := make([]byte, n)
	for len(got) < n {
		k, err := s.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			if d := time.Since(start); d < delay {
				t.Fatalf("first byte after %v, want at least %v", d, delay)
			}
		}
		got = append(got, buf[:k]...)
	}
	if d := time.Since(start); d > 3*delay {
		t.Fatalf("%d writes arrived after %v: the delays added up instead of overlapping", n, d)
	}
	for i, v := range got {
		if v != byte(i) {
			t.Fatalf("byte %d is %d: order lost", i, v)
		}
	}
	_ = c.Close()
	_ = s.Close()
	_ = a.Close()
	_ = b.Close()
}

// muxTestFSM counts applied entries and remembers the last index.
type muxTestFSM struct {
	mu   sync.Mutex
	last uint64
}

func (f *muxTestFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = l.Index
	return nil
}

func (f *muxTestFSM) lastIndex() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

func (f *muxTestFSM) Snapshot() (raft.FSMSnapshot, error) { return muxTestSnapshot{}, nil }
func (f *muxTestFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type muxTestSnapshot struct{}

func (muxTestSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (muxTestSnapshot) Release()                             {}

type muxTestNode struct {
	raft *raft.Raft
	fsm  *muxTestFSM
	addr string
}

// startMuxGroup starts one Raft group with a replica on every mux.
func startMuxGroup(t *testing.T, muxes []*Mux, group uint64) []*muxTestNode {
	t.Helper()
	var servers []raft.Server
	for _, m := range muxes {
		servers = append(servers, raft.Server{ID: raft.ServerID(m.Addr()), Address: raft.ServerAddress(m.Addr())})
	}
	nodes := make([]*muxTestNode, 0, len(muxes))
	for _, m := range muxes {
		logger := hclog.New(&hclog.LoggerOptions{Name: fmt.Sprintf("g%d-%s", group, m.Addr()), Level: hclog.Error, Output: io.Discard})
		trans, err := m.Transport(group, 3, 2*time.Second, logger)
		if err != nil {
			t.Fatal(err)
		}
		conf := raft.DefaultConfig()
		conf.LocalID = raft.ServerID(m.Addr())
		conf.HeartbeatTimeout = 200 * time.Millisecond
		conf.ElectionTimeout = 200 * time.Millisecond
		conf.LeaderLeaseTimeout = 100 * time.Millisecond
		conf.CommitTimeout = 5 * time.Millisecond
		conf.Logger = logger
		fsm := &muxTestFSM{}
		store := raft.NewInmemStore()
		r, err := raft.NewRaft(conf, fsm, store, store, raft.NewInmemSnapshotStore(), trans)
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, &muxTestNode{raft: r, fsm: fsm, addr: m.Addr()})
		if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
			t.Fatal(err)
		}
	}
	return nodes
}

// muxLeader returns the node that is leader, if exactly one among nodes is.
func muxLeader(nodes []*muxTestNode) *muxTestNode {
	var leader *muxTestNode
	for _, n := range nodes {
		if n.raft.State() == raft.Leader {
			if leader != nil {
				return nil
			}
			leader = n
		}
	}
	return leader
}

// applyOnLeader retries until some leader among nodes commits an entry, and
// returns its index.
func applyOnLeader(t *testing.T, nodes []*muxTestNode, d time.Duration) (*muxTestNode, uint64) {
	t.Helper()
	var (
		leader *muxTestNode
		index  uint64
	)
	muxWaitFor(t, d, "a leader to commit", func() bool {
		leader = muxLeader(nodes)
		if leader == nil {
			return false
		}
		f := leader.raft.Apply([]byte("x"), time.Second)
		if f.Error() != nil {
			return false
		}
		index = f.Index()
		return true
	})
	return leader, index
}

func TestMuxTransportRaftPartition(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	var part muxPartition
	knobs := &TransportKnobs{Blocked: part.blocked}
	muxes := []*Mux{mustMux(t, knobs, 0), mustMux(t, knobs, 0), mustMux(t, knobs, 0)}
	groups := map[uint64][]*muxTestNode{1: startMuxGroup(t, muxes, 1), 2: startMuxGroup(t, muxes, 2)}
	defer func() {
		// Shut everything down even on failure, so goleak reports real leaks.
		var wg sync.WaitGroup
		for _, nodes := range groups {
			for _, n := range nodes {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_ = n.raft.Shutdown().Error()
				}()
			}
		}
		wg.Wait()
		for _, m := range muxes {
			_ = m.Close()
		}
	}()

	for g, nodes := range groups {
		applyOnLeader(t, nodes, 5*time.Second)
		t.Logf("group %d: leader %s", g, muxLeader(nodes).addr)
	}

	// Isolate group 1's leader (and so its node, for every group).
	old := muxLeader(groups[1])
	if old == nil {
		t.Fatal("group 1 lost its leader")
	}
	part.isolate(old.addr)
	t.Logf("isolated %s", old.addr)

	// A write on the isolated leader never commits: it times out, or the
	// leader notices it lost its quorum and fails the write.
	oldApply := make(chan error, 1)
	go func() { oldApply <- old.raft.Apply([]byte("lost"), time.Second).Error() }()

	var rest []*muxTestNode
	for _, n := range groups[1] {
		if n != old {
			rest = append(rest, n)
		}
	}
	newLeader, _ := applyOnLeader(t, rest, 5*time.Second)
	t.Logf("group 1: new leader %s", newLeader.addr)

	switch err := <-oldApply; {
	case err == nil:
		t.Fatal("isolated old leader committed a write")
	case errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		t.Logf("isolated leader's write failed as expected: %v", err)
	default:
		t.Fatalf("isolated leader's write: unexpected error %v", err)
	}

	// Heal: every group converges on one leader and every replica applies
	// a write made after the heal.
	part.heal()
	for g, nodes := range groups {
		_, idx := applyOnLeader(t, nodes, 5*time.Second)
		muxWaitFor(t, 5*time.Second, fmt.Sprintf("group %d to converge at index %d", g, idx), func() bool {
			leader := muxLeader(nodes)
			if leader == nil {
				return false
			}
			for _, n := range nodes {
				if n.fsm.lastIndex() < idx {
					return false
				}
				if addr, _ := n.raft.LeaderWithID(); string(addr) != leader.addr {
					return false
				}
			}
			return true
		})
	}
}

func TestMuxTransportUnregisterClosesPooledConns(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := mustMux(t, nil, 0), mustMux(t, nil, 0)
	ta, err := a.Transport(1, 2, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := b.Transport(1, 2, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(ta.LocalAddr()); got != a.Addr() {
		t.Fatalf("transport LocalAddr %q, want %q", got, a.Addr())
	}
	// Serve one heartbeat so a's pool holds a conn to b.
	done := make(chan struct{})
	go func() {
		defer close(done)
		rpc := <-tb.Consumer()
		rpc.Respond(&raft.AppendEntriesResponse{Success: true}, nil)
	}()
	var resp raft.AppendEntriesResponse
	if err := ta.AppendEntries("b", raft.ServerAddress(b.Addr()), &raft.AppendEntriesRequest{}, &resp); err != nil {
		t.Fatal(err)
	}
	<-done
	// Closing both transports must leave no handleConn goroutine behind
	// (checked by goleak), which needs the pooled conn closed.
	if err := ta.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	ta, err = a.Transport(1, 2, time.Second, nil)
	if err != nil {
		t.Fatalf("re-register after transport Close: %v", err)
	}
	// A transport's listen loop lives until the transport is closed, even if
	// its layer was closed by Unregister or Mux.Close.
	_ = ta.Close()
	_ = a.Close()
	_ = b.Close()
}

// A peer that keeps its connection open (a pooled conn, or an RPC in flight
// when it stopped) must not keep a closed transport's handler goroutine
// waiting for its next command: NetworkTransport.Close leaves accepted
// connections to their peers, so the layer closes them. Found by the chaos
// suite's goleak check (a handleConn blocked in Read after every node of an
// in-process cluster had closed).
func TestMuxTransportCloseEndsInboundHandlers(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, tc := range []struct {
		name  string
		close func(b *Mux, tb *GroupTransport)
	}{
		{"transport", func(_ *Mux, tb *GroupTransport) { _ = tb.Close() }},
		{"unregister", func(b *Mux, tb *GroupTransport) { b.Unregister(1); _ = tb.Close() }},
		{"mux", func(b *Mux, tb *GroupTransport) { _ = b.Close(); _ = tb.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := mustMux(t, nil, 0), mustMux(t, nil, 0)
			la := mustMuxLayer(t, a, 1)
			var logs syncbuf.Buffer
			tb, err := b.Transport(1, 2, time.Second,
				hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: &logs}))
			if err != nil {
				t.Fatal(err)
			}
			// Raw conns, as a peer's pool holds them: one idle, one
			// mid-command (a partial header of an RPC); and a third
			// node's RPC that waits for an answer that never comes.
			idle, err := la.Dial(raft.ServerAddress(b.Addr()), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer idle.Close()
			busy, err := la.Dial(raft.ServerAddress(b.Addr()), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer busy.Close()
			if _, err := busy.Write([]byte{0}); err != nil {
				t.Fatal(err)
			}
			c := mustMux(t, nil, 0)
			t3, err := c.Transport(1, 2, 5*time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer t3.Close()
			rpcDone := make(chan error, 1)
			go func() {
				var resp raft.AppendEntriesResponse
				rpcDone <- t3.AppendEntries("b", raft.ServerAddress(b.Addr()), &raft.AppendEntriesRequest{Term: 1}, &resp)
			}()
			select {
			case <-tb.Consumer(): // taken, never answered
			case <-time.After(2 * time.Second):
				t.Fatal("the RPC did not reach the transport")
			}
			// Both reached b's transport (its handler reads them).
			muxWaitFor(t, 2*time.Second, "b to accept both conns", func() bool {
				b.mu.Lock()
				defer b.mu.Unlock()
				return len(b.handshakes) == 0
			})
			time.Sleep(50 * time.Millisecond)
			tc.close(b, tb)
			expectClosedByPeer(t, idle, 2*time.Second)
			expectClosedByPeer(t, busy, 2*time.Second)
			select {
			case err := <-rpcDone:
				if err == nil {
					t.Fatal("an RPC nobody answered succeeded")
				}
			case <-time.After(2 * time.Second):
				t.Fatal("an RPC in flight still waits after its transport closed")
			}
			_ = la.Close()
			// Closing them is the end of their streams, not an error
			// (raft logs any read error but EOF at error level).
			time.Sleep(50 * time.Millisecond)
			if out := logs.String(); out != "" {
				t.Fatalf("closing the transport logged errors:\n%s", out)
			}
		})
	}
}

// A connection the layer closed after raft's listen loop accepted it and
// before its handler started (the handler then holds the fresh stream
// context CloseStreams made, not the cancelled one) still ends without an
// error log: the connection says its layer closed it.
func TestMuxConnClosedByLayerEndsQuietly(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := mustMux(t, nil, 0), mustMux(t, nil, 0)
	la, lb := mustMuxLayer(t, a, 1), mustMuxLayer(t, b, 1)
	c, s := dialPair(t, b, lb, la)
	defer c.Close()
	_ = lb.Close() // the group closes: s is closed under the handler-to-be
	var logs syncbuf.Buffer
	one := &oneConnLayer{c: s, addr: b.Addr(), done: make(chan struct{})}
	tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: one, MaxPool: 1,
		Timeout: time.Second, Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: &logs})})
	expectClosedByPeer(t, c, 2*time.Second)
	time.Sleep(50 * time.Millisecond) // the handler has read its error
	_ = tr.Close()
	if out := logs.String(); out != "" {
		t.Fatalf("a connection its layer closed logged errors:\n%s", out)
	}
	_ = a.Close()
	_ = b.Close()
}

// oneConnLayer is a raft.StreamLayer that accepts one given connection.
type oneConnLayer struct {
	c    net.Conn
	addr string
	once sync.Once
	done chan struct{}
}

func (l *oneConnLayer) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.c })
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnLayer) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}

func (l *oneConnLayer) Addr() net.Addr { return muxAddr(l.addr) }

func (l *oneConnLayer) Dial(raft.ServerAddress, time.Duration) (net.Conn, error) {
	return nil, errors.New("oneConnLayer does not dial")
}

func TestMuxHeaderRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		group uint64
		addr  string
	}{
		{0, "a"},
		{1, "127.0.0.1:7071"},
		{^uint64(0), string(bytes.Repeat([]byte("h"), muxMaxAddrLen))},
	} {
		b := appendMuxHeader(nil, tc.group, tc.addr)
		b = append(b, "raft bytes"...)
		r := bytes.NewReader(b)
		h, err := readMuxHeader(r)
		if err != nil {
			t.Fatalf("%d/%q: %v", tc.group, tc.addr, err)
		}
		if h.group != tc.group || h.addr != tc.addr {
			t.Fatalf("got %d/%q, want %d/%q", h.group, h.addr, tc.group, tc.addr)
		}
		if rest, _ := io.ReadAll(r); string(rest) != "raft bytes" {
			t.Fatalf("header read consumed payload, rest %q", rest)
		}
	}
}

func FuzzReadHeader(f *testing.F) {
	f.Add(appendMuxHeader(nil, 1, "127.0.0.1:7071"))
	f.Add(appendMuxHeader(nil, ^uint64(0), string(bytes.Repeat([]byte("h"), muxMaxAddrLen))))
	f.Add(rawHeader(muxMagic, 1, 1, 0xffff, "x"))
	f.Add(rawHeader(muxMagic, 1, 1, 0, ""))
	f.Add(rawHeader("CRFX", 1, 1, 1, "x"))
	f.Add([]byte("CR"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := readMuxHeader(r)
		if err != nil {
			if !errors.Is(err, errMuxHeader) {
				t.Fatalf("error does not wrap errMuxHeader: %v", err)
			}
			return
		}
		// A header accepted is exactly the bytes consumed.
		consumed := in[:len(in)-r.Len()]
		if re := appendMuxHeader(nil, h.group, h.addr); !bytes.Equal(re, consumed) {
			t.Fatalf("re-encoded %x, consumed %x", re, consumed)
		}
	})
}

// Layer registers group and returns its stream layer. It fails with
// ErrMuxGroupRegistered if the group already has an open layer, and with
// ErrMuxClosed after Close. Closing the layer unregisters the group, so the
// same group may be registered again afterwards (a replica re-created).
func (m *Mux) Layer(group uint64) (raft.StreamLayer, error) {
	l, err := m.register(group)
	if err != nil {
		return nil, err
	}
	return l, nil
}
