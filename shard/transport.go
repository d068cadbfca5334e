package shard

// The multiplexed Raft transport: every Raft group hosted on a node shares the
// node's single Raft listener. hashicorp/raft's NetworkTransport only needs a
// raft.StreamLayer (a net.Listener plus Dial), so the Mux hands out one
// StreamLayer per group id and routes each inbound connection by a small header
// that the dialer writes before any Raft bytes:
//
//	offset size  field
//	0      4     magic "CRFT"
//	4      1     version (1)
//	5      8     group id, big-endian
//	13     2     length n of the dialer's advertise address, big-endian, 1..255
//	15     n     the dialer's advertise address
//
// After the header the connection belongs to the group's NetworkTransport.
//
// Flow of an inbound connection:
//
//	listener.Accept (one goroutine, never blocks on a peer)
//	  └─ handshake goroutine: read header under HandshakeTimeout, validate
//	       └─ group's layer: bounded queue ──► layer.Accept ──► NetworkTransport
//
// Anything wrong (bad header, slow header, unknown group, full queue) closes the
// connection and is logged at debug: a replica that has not created a group yet
// (a split it has not applied) legitimately receives traffic for it.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

const (
	muxMagic          = "CRFT"
	muxVersion        = 1
	muxFixedHeaderLen = 4 + 1 + 8 + 2
	// muxMaxAddrLen bounds the address in the header; the parser never
	// allocates more than this, whatever the length field says.
	muxMaxAddrLen = 255

	// DefaultMuxHandshakeTimeout is the deadline for reading or writing the
	// connection header when MuxConfig.HandshakeTimeout is zero.
	DefaultMuxHandshakeTimeout = 5 * time.Second

	// muxAcceptBacklog is the per-group queue of connections that passed the
	// handshake but were not yet taken by the group's Accept. NetworkTransport
	// accepts in a tight loop, so the queue only fills if a group is wedged;
	// then new connections for that group are closed rather than blocking
	// other groups.
	muxAcceptBacklog = 64

	// muxMaxHandshakes caps concurrent header reads, so a flood of idle
	// connections costs a bounded number of goroutines.
	muxMaxHandshakes = 1024
)

var (
	// ErrMuxClosed is returned by Layer, Transport and Dial after Mux.Close.
	ErrMuxClosed = fmt.Errorf("shard: raft mux closed: %w", net.ErrClosed)
	// ErrMuxGroupRegistered is returned by Layer when the group already has a
	// live layer on this mux.
	ErrMuxGroupRegistered = errors.New("shard: raft group already registered on mux")
	// ErrMuxGroupClosed is returned by a group layer's Accept and Dial after
	// the layer was closed (by Unregister, by its transport's Close or by
	// Mux.Close). It matches net.ErrClosed.
	ErrMuxGroupClosed = fmt.Errorf("shard: raft group layer closed: %w", net.ErrClosed)

	errMuxHeader = errors.New("shard: bad raft connection header")
)

// MuxConfig configures the node's single Raft listener.
type MuxConfig struct {
	// Listener is required and already bound (the caller binds so tests can
	// use port 0). The Mux owns it from NewMux on and closes it in Close.
	Listener net.Listener
	// AdvertiseAddr is this node's Raft address as peers know it, for example
	// "127.0.0.1:7071". It is sent in the header of every dialed connection
	// and is what each group's transport reports as its local address.
	// Default: Listener.Addr().String(). At most 255 bytes.
	AdvertiseAddr string
	// HandshakeTimeout bounds reading and writing the connection header.
	// Default DefaultMuxHandshakeTimeout.
	HandshakeTimeout time.Duration
	// Logger receives refused connections at debug and listener errors at
	// warn. Default: discard.
	Logger *slog.Logger
	// Knobs are test hooks; nil in production.
	Knobs *TransportKnobs
}

// Validate reports whether the configuration can be used, after defaults.
func (c MuxConfig) Validate() error {
	if c.Listener == nil {
		return errors.New("shard: MuxConfig.Listener is required")
	}
	if c.HandshakeTimeout < 0 {
		return fmt.Errorf("shard: MuxConfig.HandshakeTimeout %v is negative", c.HandshakeTimeout)
	}
	addr := c.AdvertiseAddr
	if addr == "" {
		addr = c.Listener.Addr().String()
	}
	if len(addr) == 0 || len(addr) > muxMaxAddrLen {
		return fmt.Errorf("shard: MuxConfig.AdvertiseAddr must be 1..%d bytes, got %d", muxMaxAddrLen, len(addr))
	}
	return nil
}

// Mux owns one listener and hands out a raft.StreamLayer per Raft group.
// All methods are safe for concurrent use.
type Mux struct {
	ln        net.Listener
	addr      string
	hsTimeout time.Duration
	log       *slog.Logger
	knobs     *TransportKnobs

	ctx    context.Context // cancelled by Close; aborts dials in progress
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loop and handshake goroutines

	mu         sync.Mutex
	closed     bool
	groups     map[uint64]*muxLayer
	handshakes map[net.Conn]struct{} // conns whose header is being read
	tracked    map[net.Conn]struct{} // heartbeat conns, closed by Close

	beats *beatClient
}

// NewMux validates cfg and starts serving cfg.Listener. On error the listener
// is left open (it still belongs to the caller).
func NewMux(cfg MuxConfig) (*Mux, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.AdvertiseAddr == "" {
		cfg.AdvertiseAddr = cfg.Listener.Addr().String()
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultMuxHandshakeTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Mux{
		ln:         cfg.Listener,
		addr:       cfg.AdvertiseAddr,
		hsTimeout:  cfg.HandshakeTimeout,
		log:        cfg.Logger.With("component", "raft-mux", "addr", cfg.AdvertiseAddr),
		knobs:      cfg.Knobs,
		ctx:        ctx,
		cancel:     cancel,
		groups:     make(map[uint64]*muxLayer),
		handshakes: make(map[net.Conn]struct{}),
		tracked:    make(map[net.Conn]struct{}),
	}
	m.beats = &beatClient{m: m, peers: make(map[string]*beatPeer)}
	m.wg.Add(1)
	go m.acceptLoop()
	return m, nil
}

// Addr returns this node's advertised Raft address.
func (m *Mux) Addr() string { return m.addr }

func (m *Mux) register(group uint64) (*muxLayer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrMuxClosed
	}
	if _, ok := m.groups[group]; ok {
		return nil, fmt.Errorf("%w: group %d", ErrMuxGroupRegistered, group)
	}
	l := &muxLayer{
		mux:     m,
		group:   group,
		queue:   make(chan net.Conn, muxAcceptBacklog),
		doneCh:  make(chan struct{}),
		inbound: make(map[*inboundConn]struct{}),
	}
	m.groups[group] = l
	return l, nil
}

// Transport registers group and builds a raft.NetworkTransport over its
// layer. A nil logger discards the transport's logs.
//
// Unlike a plain NetworkTransport, closing this transport (or Unregister, or
// Mux.Close) also closes the connections pooled for outbound RPCs, which
// NetworkTransport.Close leaves open: otherwise every removed group would
// keep a few sockets here and a goroutine per socket on each peer.
//
// Heartbeats do not use the group's connections: see beats.go.
func (m *Mux) Transport(group uint64, maxPool int, timeout time.Duration, logger hclog.Logger) (*GroupTransport, error) {
	l, err := m.register(group)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	t := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  l,
		MaxPool: maxPool,
		Timeout: timeout,
		Logger:  logger,
		// 1 turns raft's pipelined replication off. In raft v1.7.3 a
		// follower's Success=false can leave the pipeline's sender parked
		// on an unbuffered channel nobody reads: the leader never sends
		// that follower another entry, and Shutdown never returns
		// (pipeline_test.go; hashicorp/raft#612).
		MaxRPCsInFlight: 1,
	})
	// CloseStreams runs from inside NetworkTransport.Close (which calls
	// stream.Close while holding its shutdownLock). In raft v1.7.3
	// CloseStreams takes only connPoolLock and streamCtxLock, and no path
	// takes shutdownLock while holding those, so this cannot deadlock.
	if !l.setOnClose(t.CloseStreams) {
		// Closed between register and here (Unregister or Mux.Close).
		t.CloseStreams()
	}
	return &GroupTransport{NetworkTransport: t, layer: l, timeout: timeout}, nil
}

// goTracked runs f on a goroutine that Close waits for; false (f not run)
// after Close.
func (m *Mux) goTracked(f func()) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		f()
	}()
	return true
}

// track records a long-lived connection for Close to close; false after
// Close.
func (m *Mux) track(c net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.tracked[c] = struct{}{}
	return true
}

func (m *Mux) untrack(c net.Conn) {
	m.mu.Lock()
	delete(m.tracked, c)
	m.mu.Unlock()
}

// Unregister closes group's layer: its Accept returns ErrMuxGroupClosed, its
// Dial fails, the connections it accepted are closed and later inbound
// connections for the group are refused. It is a no-op for a group that is
// not registered.
func (m *Mux) Unregister(group uint64) {
	m.mu.Lock()
	l := m.groups[group]
	m.mu.Unlock()
	if l != nil {
		l.close()
	}
}

// Close closes the listener, every group layer (and with it every connection
// the layer accepted) and every connection still in its handshake, and waits
// for the mux's goroutines to exit. Connections returned by Dial belong to
// their caller (for transports built by Transport, see there). Close is
// idempotent.
func (m *Mux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	layers := make([]*muxLayer, 0, len(m.groups))
	for _, l := range m.groups {
		layers = append(layers, l)
	}
	pending := make([]net.Conn, 0, len(m.handshakes)+len(m.tracked))
	for c := range m.handshakes {
		pending = append(pending, c)
	}
	for c := range m.tracked {
		pending = append(pending, c)
	}
	m.mu.Unlock()

	m.cancel()
	err := m.ln.Close()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	for _, l := range layers {
		l.close()
	}
	for _, c := range pending {
		_ = c.Close()
	}
	m.wg.Wait()
	return err
}

func (m *Mux) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// acceptLoop only accepts: header reads run on their own goroutines so a slow
// or malicious client never stalls the others.
func (m *Mux) acceptLoop() {
	defer m.wg.Done()
	const minDelay, maxDelay = 5 * time.Millisecond, time.Second
	var delay time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			if m.isClosed() {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				m.log.Warn("raft listener closed outside Mux.Close; no longer accepting", "error", err)
				return
			}
			// Typically EMFILE: back off instead of spinning.
			delay = min(max(2*delay, minDelay), maxDelay)
			m.log.Warn("raft listener accept failed", "error", err, "retry_in", delay)
			select {
			case <-m.ctx.Done():
				return
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		m.startHandshake(c)
	}
}

func (m *Mux) startHandshake(c net.Conn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.closed:
		_ = c.Close()
		return
	case len(m.handshakes) >= muxMaxHandshakes:
		_ = c.Close()
		m.log.Debug("raft connection refused: too many handshakes in progress", "remote", c.RemoteAddr().String())
		return
	}
	m.handshakes[c] = struct{}{}
	m.wg.Add(1) // under mu and !closed: ordered before Close's Wait
	go m.handshake(c)
}

func (m *Mux) handshake(c net.Conn) {
	defer m.wg.Done()
	hdr, err := m.readHeader(c)

	m.mu.Lock()
	delete(m.handshakes, c)
	l := m.groups[hdr.group]
	closed := m.closed
	m.mu.Unlock()

	remote := c.RemoteAddr().String()
	switch {
	case err != nil:
		_ = c.Close()
		m.log.Debug("raft connection refused: header", "remote", remote, "error", err)
	case closed:
		_ = c.Close()
	case hdr.group == beatGroup:
		if m.knobs.blocked(hdr.addr, m.addr) {
			_ = c.Close()
			return
		}
		wc := m.knobs.wrap(c, m.addr, hdr.addr)
		if !m.track(c) {
			_ = c.Close()
			return
		}
		// This goroutine is already counted in wg: serve here.
		m.serveBeats(wc, hdr.addr)
		m.untrack(c)
	case l == nil:
		// Expected while a replica has not created the group yet.
		_ = c.Close()
		m.log.Debug("raft connection refused: unknown group", "remote", remote, "group", hdr.group, "peer", hdr.addr)
	case m.knobs.blocked(hdr.addr, m.addr):
		_ = c.Close()
		m.log.Debug("raft connection dropped by test knob", "group", hdr.group, "peer", hdr.addr)
	default:
		l.enqueue(m.knobs.wrap(c, m.addr, hdr.addr))
	}
}

func (m *Mux) readHeader(c net.Conn) (muxHeader, error) {
	if err := c.SetReadDeadline(time.Now().Add(m.hsTimeout)); err != nil {
		return muxHeader{}, err
	}
	hdr, err := readMuxHeader(c)
	if err != nil {
		return muxHeader{}, err
	}
	// The rest of the connection is Raft's; it sets its own deadlines.
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		return muxHeader{}, err
	}
	return hdr, nil
}

// muxLayer is one group's raft.StreamLayer.
type muxLayer struct {
	mux   *Mux
	group uint64
	queue chan net.Conn
	// heartbeat is raft's heartbeat handler, for heartbeats arriving on the
	// shared connections (beats.go).
	heartbeat atomic.Pointer[func(raft.RPC)]
	// beats is held for reading while raft handles a heartbeat on the
	// mux's goroutine, and for writing by close: a heartbeat in flight ends
	// before close returns, so before the group closes its log store. (Stock
	// raft's heartbeat path wrote the term there, and a late one panicked
	// raft on the closed store; cairn's copy no longer writes anything on
	// that path, third_party/raft/CAIRN.md, but the order costs nothing.)
	// beatsOff is set under it by close.
	beats    sync.RWMutex
	beatsOff bool

	mu      sync.Mutex // orders enqueue against close
	closed  bool
	doneCh  chan struct{}
	onClose func()
	// inbound holds the connections handed to Accept and not yet closed.
	// close closes them: NetworkTransport.Close leaves an accepted
	// connection open until its peer closes it, and its handler goroutine
	// waits on it for the next command meanwhile.
	inbound map[*inboundConn]struct{}
}

// inboundConn is an accepted connection that leaves its layer's inbound set
// when closed.
type inboundConn struct {
	net.Conn
	layer *muxLayer
	once  sync.Once
	// byLayer is set before the layer's close closes the connection.
	byLayer atomic.Bool
}

// ClosedByLayer reports whether the layer closed the connection (its group
// closed): raft's handler then ends without logging the failed read or
// write as an error (third_party/raft/CAIRN.md).
func (c *inboundConn) ClosedByLayer() bool { return c.byLayer.Load() }

func (c *inboundConn) Close() error {
	c.once.Do(func() {
		c.layer.mu.Lock()
		delete(c.layer.inbound, c)
		c.layer.mu.Unlock()
	})
	return c.Conn.Close()
}

var _ raft.StreamLayer = (*muxLayer)(nil)

// Accept waits for the next connection dispatched to this group. After the
// layer is closed it returns ErrMuxGroupClosed.
func (l *muxLayer) Accept() (net.Conn, error) {
	select {
	case <-l.doneCh:
		return nil, fmt.Errorf("%w: group %d", ErrMuxGroupClosed, l.group)
	default:
	}
	select {
	case c := <-l.queue:
		return c, nil
	case <-l.doneCh:
		return nil, fmt.Errorf("%w: group %d", ErrMuxGroupClosed, l.group)
	}
}

// Close unregisters the group; see Mux.Unregister. It always returns nil.
func (l *muxLayer) Close() error {
	l.close()
	return nil
}

// Addr is the node's advertise address: NetworkTransport reports it as its
// LocalAddr, which peers must be able to dial.
func (l *muxLayer) Addr() net.Addr { return muxAddr(l.mux.addr) }

// Dial connects to address and writes the header for this group. It fails
// at once if the layer or mux is closed, or if a test knob blocks the peer.
func (l *muxLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	if l.isClosed() {
		return nil, fmt.Errorf("%w: group %d", ErrMuxGroupClosed, l.group)
	}
	return l.mux.dial(l.group, string(address), timeout)
}

// dial connects to target and writes the header for group.
func (m *Mux) dial(group uint64, target string, timeout time.Duration) (net.Conn, error) {
	if m.knobs.blocked(m.addr, target) {
		return nil, fmt.Errorf("dial %s: %w", target, ErrMuxConnBlocked)
	}
	if m.knobs.hangDial(m.addr, target) {
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-t.C:
			return nil, fmt.Errorf("dial %s: lookup timed out after %v (test knob)", target, timeout)
		case <-m.ctx.Done():
			return nil, ErrMuxClosed
		}
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(m.ctx, "tcp", target)
	if err != nil {
		if m.ctx.Err() != nil {
			return nil, ErrMuxClosed
		}
		return nil, err
	}
	hdr := appendMuxHeader(make([]byte, 0, muxFixedHeaderLen+len(m.addr)), group, m.addr)
	if err := writeWithDeadline(c, hdr, m.hsTimeout); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("shard: write raft header to %s: %w", target, err)
	}
	return m.knobs.wrap(c, m.addr, target), nil
}

func writeWithDeadline(c net.Conn, b []byte, timeout time.Duration) error {
	if err := c.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := c.Write(b); err != nil {
		return err
	}
	return c.SetWriteDeadline(time.Time{})
}

func (l *muxLayer) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// setOnClose installs f to run when the layer closes. It returns false if the
// layer is already closed (f is then not installed).
func (l *muxLayer) setOnClose(f func()) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.onClose = f
	return true
}

// enqueue hands c to Accept, or closes it if the layer is closed or its queue
// is full; it never blocks.
func (l *muxLayer) enqueue(c net.Conn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = c.Close()
		return
	}
	ic := &inboundConn{Conn: c, layer: l}
	select {
	case l.queue <- ic:
		l.inbound[ic] = struct{}{}
	default:
		_ = c.Close()
		l.mux.log.Debug("raft connection refused: group accept queue full", "group", l.group, "remote", c.RemoteAddr().String())
	}
}

func (l *muxLayer) close() {
	l.beats.Lock()
	l.beatsOff = true
	l.heartbeat.Store(nil)
	l.beats.Unlock()
	m := l.mux
	m.mu.Lock()
	if m.groups[l.group] == l {
		delete(m.groups, l.group)
	}
	m.mu.Unlock()

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	close(l.doneCh)
	onClose := l.onClose
	inbound := make([]*inboundConn, 0, len(l.inbound))
	for c := range l.inbound { // includes those still queued
		inbound = append(inbound, c)
	}
	l.mu.Unlock()

	// onClose (the transport's CloseStreams) first: it cancels the
	// handlers' context, so a handler whose connection closes next ends
	// quietly instead of logging a failed read or flush.
	if onClose != nil {
		onClose()
	}
	for _, c := range inbound {
		c.byLayer.Store(true)
		_ = c.Close()
	}
}

// muxAddr is a net.Addr holding an advertise address.
type muxAddr string

func (a muxAddr) Network() string { return "tcp" }
func (a muxAddr) String() string  { return string(a) }

// muxHeader is the decoded connection header.
type muxHeader struct {
	group uint64
	addr  string // the dialer's advertise address
}

// appendMuxHeader appends the header for group and addr to b. addr must be
// 1..muxMaxAddrLen bytes (MuxConfig.Validate checks it).
func appendMuxHeader(b []byte, group uint64, addr string) []byte {
	b = append(b, muxMagic...)
	b = append(b, muxVersion)
	b = binary.BigEndian.AppendUint64(b, group)
	b = binary.BigEndian.AppendUint16(b, uint16(len(addr)))
	return append(b, addr...)
}

// readMuxHeader reads exactly one header from r. It never reads past the
// header, never allocates more than muxMaxAddrLen bytes for the address and
// returns an error wrapping errMuxHeader for malformed input.
func readMuxHeader(r io.Reader) (muxHeader, error) {
	var fixed [muxFixedHeaderLen]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return muxHeader{}, fmt.Errorf("%w: %w", errMuxHeader, err)
	}
	if string(fixed[0:4]) != muxMagic {
		return muxHeader{}, fmt.Errorf("%w: magic %q", errMuxHeader, fixed[0:4])
	}
	if fixed[4] != muxVersion {
		return muxHeader{}, fmt.Errorf("%w: version %d", errMuxHeader, fixed[4])
	}
	group := binary.BigEndian.Uint64(fixed[5:13])
	n := int(binary.BigEndian.Uint16(fixed[13:15]))
	if n == 0 || n > muxMaxAddrLen {
		return muxHeader{}, fmt.Errorf("%w: address length %d", errMuxHeader, n)
	}
	var addr [muxMaxAddrLen]byte
	if _, err := io.ReadFull(r, addr[:n]); err != nil {
		return muxHeader{}, fmt.Errorf("%w: address: %w", errMuxHeader, err)
	}
	return muxHeader{group: group, addr: string(addr[:n])}, nil
}
