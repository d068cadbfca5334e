package shard

// Coalesced heartbeats. hashicorp/raft runs a heartbeat loop per follower per
// group: with hundreds of groups a node sends thousands of tiny RPCs a second,
// each a msgpack encode and a write syscall on each side, and that was most of
// an idle node's CPU (shard/DESIGN.md, "Scale"). Every group's transport
// therefore sends heartbeats through one connection per peer node, owned by
// the Mux: calls queue per peer and go out as one frame every beatLinger,
// answered by one frame. Everything else (appends, votes, snapshots,
// TimeoutNow) stays on the group's own NetworkTransport connections.
//
// A heartbeat is exactly what NetworkTransport itself treats as one (the same
// predicate, isHeartbeat), and the receiving side hands it to the same raft
// heartbeat handler NetworkTransport would have called, so raft sees no
// difference but latency. Latency matters for one caller only: the quorum
// round of a linearizable read (verify.go) sends heartbeats of its own on
// these connections, urgent, and an urgent call is sent at once instead of
// lingering. Each answer is matched to its own request, so that round counts
// only answers to the heartbeats it sent.
//
// Heartbeat connections are mux connections with the reserved group id
// beatGroup. After the mux header, both directions carry frames:
//
//	frame    = length uint32 BE (of body, at most beatMaxFrame) | body
//	request  = count uvarint | count × (id, group uvarint | header | term uvarint | leader bytes)
//	response = count uvarint | count × (id uvarint | 0 header term lastlog uvarint success noretry byte
//	                                              | 1 message bytes)
//	header   = protocol version uvarint | server id bytes | server addr bytes
//	bytes    = length uvarint | data
//
// A response frame answers one request frame, in order, with one item per
// request item. Anything malformed closes the connection; callers then see an
// error and raft backs off as after any failed heartbeat.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/internal/wire"
)

const (
	// beatGroup is the mux group id reserved for heartbeat connections.
	beatGroup = math.MaxUint64
	// beatLinger is how long a non-urgent heartbeat may wait for others to
	// the same peer. Raft sends a group's heartbeats every HeartbeatTimeout/10
	// (150ms by default, 30ms in the fast test tuning).
	beatLinger = 3 * time.Millisecond
	// beatHandOff is how long a frame's answer waits for the heartbeats raft
	// handed to its main goroutine (a newer term; a candidate or a leader
	// receiving one): under raft's heartbeat interval, so a group whose
	// main goroutine is busy delays the other groups' answers little.
	beatHandOff = 20 * time.Millisecond
	// beatUrgentFor is how long after Urgent a group's heartbeats skip the
	// linger: long enough to cover the heartbeat VerifyLeader triggers.
	beatUrgentFor = 500 * time.Millisecond
	// beatMaxFrame bounds a frame body; the decoder never allocates more.
	beatMaxFrame = 4 << 20
	// beatMaxBytes bounds one bytes field (ids and addresses).
	beatMaxBytes = 1024
)

var errWire = errors.New("shard: malformed heartbeat frame")

// closedTimeCh is a closed channel: a deadline that has passed.
var closedTimeCh = func() <-chan time.Time {
	c := make(chan time.Time)
	close(c)
	return c
}()

// isHeartbeat is NetworkTransport's own test for its heartbeat fast path
// (raft v1.7.3 net_transport.go, handleCommand).
func isHeartbeat(req *raft.AppendEntriesRequest) bool {
	leaderAddr := req.RPCHeader.Addr
	if len(leaderAddr) == 0 {
		//lint:ignore SA1019 raft's own test still falls back to it
		leaderAddr = req.Leader
	}
	return req.Term != 0 && leaderAddr != nil &&
		req.PrevLogEntry == 0 && req.PrevLogTerm == 0 &&
		len(req.Entries) == 0 && req.LeaderCommitIndex == 0
}

// GroupTransport is one group's raft transport: the group's NetworkTransport,
// except that heartbeats go through the mux's shared heartbeat connections.
type GroupTransport struct {
	*raft.NetworkTransport
	layer   *muxLayer
	timeout time.Duration
	urgent  atomic.Int64 // unix nanos until which heartbeats are sent at once
	lastLog sync.Map     // follower address -> *atomic.Uint64: its last log index, from heartbeat answers
}

var _ raft.Transport = (*GroupTransport)(nil)

// AppendEntries sends heartbeats through the shared connection to target and
// everything else through the group's own connections.
func (t *GroupTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if !isHeartbeat(args) {
		return t.NetworkTransport.AppendEntries(id, target, args, resp)
	}
	urgent := time.Now().UnixNano() < t.urgent.Load()
	out, err := t.layer.mux.beats.call(string(target), t.layer.group, args, urgent, t.timeout)
	if err != nil {
		return err
	}
	*resp = *out
	v, ok := t.lastLog.Load(string(target))
	if !ok {
		v, _ = t.lastLog.LoadOrStore(string(target), new(atomic.Uint64))
	}
	v.(*atomic.Uint64).Store(out.LastLog)
	return nil
}

// FollowerLastLog returns the last log index the follower at addr reported
// in its latest heartbeat answer to this group; false before any.
func (t *GroupTransport) FollowerLastLog(addr string) (uint64, bool) {
	v, ok := t.lastLog.Load(addr)
	if !ok {
		return 0, false
	}
	return v.(*atomic.Uint64).Load(), true
}

// SetHeartbeatHandler installs raft's heartbeat handler for both paths.
func (t *GroupTransport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	t.NetworkTransport.SetHeartbeatHandler(cb)
	t.layer.heartbeat.Store(&cb)
}

// Urgent makes raft's own heartbeats of the group skip the linger for a
// while. (Linearizable reads no longer need it: their quorum round sends its
// own urgent heartbeats.)
func (t *GroupTransport) Urgent() {
	t.urgent.Store(time.Now().Add(beatUrgentFor).UnixNano())
}

// beatClient holds this node's outbound heartbeat connections, one per peer.
type beatClient struct {
	m      *Mux
	calls  atomic.Uint64
	frames atomic.Uint64

	mu    sync.Mutex
	peers map[string]*beatPeer
}

type beatPeer struct {
	c      *beatClient
	target string
	kick   chan struct{} // cap 1: the writer has something to send

	mu     sync.Mutex
	queue  []*beatCall
	urgent bool
	conn   *beatConn
	nextID uint64
}

type beatCall struct {
	id, group uint64
	req       *raft.AppendEntriesRequest
	done      chan beatResult // cap 1
	conn      *beatConn       // set when written
}

type beatResult struct {
	resp *raft.AppendEntriesResponse
	err  error
}

// beatConn is one outbound heartbeat connection and the calls awaiting their
// answer on it.
type beatConn struct {
	c net.Conn
	m *Mux

	mu      sync.Mutex
	pending []*beatCall // in send order; answers come in the same order
	failed  error
}

// call sends one heartbeat of group to target and waits for its answer.
func (b *beatClient) call(target string, group uint64, req *raft.AppendEntriesRequest, urgent bool, timeout time.Duration) (*raft.AppendEntriesResponse, error) {
	p, err := b.peer(target)
	if err != nil {
		return nil, err
	}
	c := &beatCall{group: group, req: req, done: make(chan beatResult, 1)}
	p.mu.Lock()
	p.queue = append(p.queue, c)
	first := len(p.queue) == 1
	p.urgent = p.urgent || urgent
	p.mu.Unlock()
	if first || urgent {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
	b.calls.Add(1)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case r := <-c.done:
		return r.resp, r.err
	case <-t.C:
		// No answer in time: the connection is suspect (a paused or
		// partitioned peer). Drop it, failing whatever else waits on it, as
		// NetworkTransport drops a connection whose deadline passed.
		p.mu.Lock()
		conn := c.conn
		p.mu.Unlock()
		if conn != nil {
			conn.fail(fmt.Errorf("heartbeat to %s timed out after %v", target, timeout))
		}
		return nil, fmt.Errorf("heartbeat to %s: timed out after %v", target, timeout)
	case <-b.m.ctx.Done():
		return nil, ErrMuxClosed
	}
}

// peer returns target's peer, starting its writer on first use.
func (b *beatClient) peer(target string) (*beatPeer, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p, ok := b.peers[target]; ok {
		return p, nil
	}
	p := &beatPeer{c: b, target: target, kick: make(chan struct{}, 1)}
	if !b.m.goTracked(p.writeLoop) {
		return nil, ErrMuxClosed
	}
	b.peers[target] = p
	return p, nil
}

// writeLoop sends queued calls to the peer, one frame per round.
func (p *beatPeer) writeLoop() {
	m := p.c.m
	linger := time.NewTimer(time.Hour)
	linger.Stop()
	for {
		select {
		case <-p.kick:
		case <-m.ctx.Done():
			p.failQueued(ErrMuxClosed)
			return
		}
		// Wait for more calls unless one is urgent.
		linger.Reset(beatLinger)
	wait:
		for {
			p.mu.Lock()
			urgent := p.urgent
			p.mu.Unlock()
			if urgent {
				break
			}
			select {
			case <-p.kick:
			case <-linger.C:
				break wait
			case <-m.ctx.Done():
				p.failQueued(ErrMuxClosed)
				return
			}
		}
		linger.Stop()
		p.mu.Lock()
		batch := p.queue
		p.queue, p.urgent = nil, false
		p.mu.Unlock()
		if len(batch) > 0 {
			p.send(batch)
		}
	}
}

func (p *beatPeer) failQueued(err error) {
	p.mu.Lock()
	batch := p.queue
	p.queue = nil
	p.mu.Unlock()
	for _, c := range batch {
		c.done <- beatResult{err: err}
	}
}

// send writes batch as one frame on the peer's connection, dialing one if
// there is none.
func (p *beatPeer) send(batch []*beatCall) {
	conn, err := p.connection()
	if err != nil {
		for _, c := range batch {
			c.done <- beatResult{err: err}
		}
		return
	}
	p.mu.Lock()
	for _, c := range batch {
		p.nextID++
		c.id, c.conn = p.nextID, conn
	}
	p.mu.Unlock()
	if !conn.add(batch) {
		return // conn.add failed them: the connection died meanwhile
	}
	frame := encodeBeatRequests(batch)
	if err := writeWithDeadline(conn.c, frame, p.c.m.hsTimeout); err != nil {
		conn.fail(fmt.Errorf("heartbeat to %s: %w", p.target, err))
		return
	}
	p.c.frames.Add(1)
}

// connection returns the live connection to the peer, dialing if needed.
func (p *beatPeer) connection() (*beatConn, error) {
	p.mu.Lock()
	conn := p.conn
	p.mu.Unlock()
	if conn != nil && !conn.dead() {
		return conn, nil
	}
	c, err := p.c.m.dial(beatGroup, p.target, p.c.m.hsTimeout)
	if err != nil {
		return nil, fmt.Errorf("heartbeat to %s: %w", p.target, err)
	}
	conn = &beatConn{c: c, m: p.c.m}
	if !p.c.m.track(c) || !p.c.m.goTracked(func() { conn.readLoop(p.target) }) {
		_ = c.Close()
		return nil, ErrMuxClosed
	}
	p.mu.Lock()
	p.conn = conn
	p.mu.Unlock()
	return conn, nil
}

func (bc *beatConn) dead() bool {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	return bc.failed != nil
}

// add registers calls awaiting an answer; false (and the calls failed) if
// the connection already died.
func (bc *beatConn) add(calls []*beatCall) bool {
	bc.mu.Lock()
	err := bc.failed
	if err == nil {
		bc.pending = append(bc.pending, calls...)
	}
	bc.mu.Unlock()
	if err != nil {
		for _, c := range calls {
			c.done <- beatResult{err: err}
		}
		return false
	}
	return true
}

// fail closes the connection and fails every call waiting on it. Only the
// first failure counts.
func (bc *beatConn) fail(err error) {
	bc.mu.Lock()
	if bc.failed != nil {
		bc.mu.Unlock()
		return
	}
	bc.failed = err
	pending := bc.pending
	bc.pending = nil
	bc.mu.Unlock()
	_ = bc.c.Close()
	bc.m.untrack(bc.c)
	for _, c := range pending {
		c.done <- beatResult{err: err}
	}
}

// readLoop delivers answers to waiting calls until the connection fails.
func (bc *beatConn) readLoop(target string) {
	r := bufio.NewReader(bc.c)
	for {
		body, err := readBeatFrame(r)
		if err != nil {
			bc.fail(fmt.Errorf("heartbeat to %s: %w", target, err))
			return
		}
		if err := bc.deliver(body); err != nil {
			bc.fail(fmt.Errorf("heartbeat to %s: %w", target, err))
			return
		}
	}
}

// deliver decodes one response frame and answers the oldest pending calls.
func (bc *beatConn) deliver(body []byte) error {
	d := wire.NewReader(body)
	n := d.Count()
	for range n {
		id := d.Uvarint()
		var res beatResult
		switch d.Byte() {
		case 0:
			resp := &raft.AppendEntriesResponse{}
			resp.RPCHeader = readBeatHeader(d)
			resp.Term = d.Uvarint()
			resp.LastLog = d.Uvarint()
			resp.Success = d.Byte() == 1
			resp.NoRetryBackoff = d.Byte() == 1
			res.resp = resp
		case 1:
			res.err = errors.New(string(d.Bytes(beatMaxBytes)))
		default:
			return fmt.Errorf("%w: response kind", errWire)
		}
		if err := d.Err(); err != nil {
			return fmt.Errorf("%w: %w", errWire, err)
		}
		bc.mu.Lock()
		if len(bc.pending) == 0 || bc.pending[0].id != id {
			bc.mu.Unlock()
			return fmt.Errorf("%w: answer %d matches no call", errWire, id)
		}
		c := bc.pending[0]
		bc.pending = bc.pending[1:]
		bc.mu.Unlock()
		c.done <- res
	}
	if err := d.Finish(); err != nil {
		return fmt.Errorf("%w: %w", errWire, err)
	}
	return nil
}

// serveBeats answers heartbeat frames from peer on c until c fails.
func (m *Mux) serveBeats(c net.Conn, peer string) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		body, err := readBeatFrame(r)
		if err != nil {
			if !errors.Is(err, io.EOF) && !m.isClosed() {
				m.log.Debug("heartbeat connection closed", "peer", peer, "error", err)
			}
			return
		}
		out, err := m.answerBeats(body)
		if err != nil {
			m.log.Debug("heartbeat connection refused: bad frame", "peer", peer, "error", err)
			return
		}
		if err := writeWithDeadline(c, out, m.hsTimeout); err != nil {
			return
		}
	}
}

// answerBeats runs every heartbeat of a request frame through its group's
// raft heartbeat handler and returns the response frame. Raft answers most
// heartbeats at once; one that would change the term or the state waits for
// raft's main goroutine (third_party/raft/CAIRN.md), so the frame's answers
// are collected after every heartbeat was handed over, and each waits at most
// until beatHandOff after that: a group whose main goroutine is busy (a
// stalled log write) delays the frame that long, then answers an error.
func (m *Mux) answerBeats(body []byte) ([]byte, error) {
	d := wire.NewReader(body)
	n := d.Count()
	type pending struct {
		id    uint64
		group uint64
		ch    chan raft.RPCResponse
		err   error
	}
	beats := make([]pending, 0, n)
	for range n {
		id, group := d.Uvarint(), d.Uvarint()
		req := &raft.AppendEntriesRequest{}
		req.RPCHeader = readBeatHeader(d)
		req.Term = d.Uvarint()
		//lint:ignore SA1019 raft still sends and reads it; carried unchanged
		req.Leader = d.Bytes(beatMaxBytes)
		if err := d.Err(); err != nil {
			return nil, fmt.Errorf("%w: %w", errWire, err)
		}
		ch, err := m.heartbeat(group, req)
		beats = append(beats, pending{id: id, group: group, ch: ch, err: err})
	}
	if err := d.Finish(); err != nil {
		return nil, fmt.Errorf("%w: %w", errWire, err)
	}
	out := make([]byte, 4, 16+n*48)
	out = binary.AppendUvarint(out, uint64(n))
	var deadline <-chan time.Time
	for _, b := range beats {
		out = binary.AppendUvarint(out, b.id)
		var resp *raft.AppendEntriesResponse
		err := b.err
		if err == nil {
			var r raft.RPCResponse
			select {
			case r = <-b.ch:
			default:
				if deadline == nil {
					t := time.NewTimer(beatHandOff)
					defer t.Stop()
					deadline = t.C
				}
				select {
				case r = <-b.ch:
				case <-deadline:
					// The timer fires once: the frame's other late
					// answers get no further wait.
					deadline = closedTimeCh
					r.Error = fmt.Errorf("group %d on %s did not answer within %v (busy or shutting down)", b.group, m.addr, beatHandOff)
				}
			}
			resp, err = beatResponse(b.group, r)
		}
		if err != nil {
			out = append(out, 1)
			out = wire.AppendLenBytes(out, []byte(err.Error()))
			continue
		}
		out = append(out, 0)
		out = appendBeatHeader(out, resp.RPCHeader)
		out = binary.AppendUvarint(out, resp.Term)
		out = binary.AppendUvarint(out, resp.LastLog)
		out = append(out, boolByte(resp.Success), boolByte(resp.NoRetryBackoff))
	}
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out, nil
}

// handleBeat runs raft's heartbeat handler on rpc unless the layer is
// closed, holding off close until it returns (muxLayer.beats). The unlock is
// deferred: logGuard may end this goroutine inside raft (runtime.Goexit).
func (l *muxLayer) handleBeat(rpc raft.RPC) bool {
	l.beats.RLock()
	defer l.beats.RUnlock()
	fn := l.heartbeat.Load()
	if fn == nil || l.beatsOff {
		return false
	}
	(*fn)(rpc)
	return true
}

// heartbeat hands one heartbeat to group's raft, as NetworkTransport's fast
// path does, and returns the channel raft answers on.
func (m *Mux) heartbeat(group uint64, req *raft.AppendEntriesRequest) (chan raft.RPCResponse, error) {
	m.mu.Lock()
	l := m.groups[group]
	m.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("group %d is not hosted on %s", group, m.addr)
	}
	ch := make(chan raft.RPCResponse, 1)
	if !l.handleBeat(raft.RPC{Command: req, RespChan: ch}) {
		return nil, fmt.Errorf("group %d on %s is not running", group, m.addr)
	}
	return ch, nil
}

func beatResponse(group uint64, r raft.RPCResponse) (*raft.AppendEntriesResponse, error) {
	if r.Error != nil {
		return nil, r.Error
	}
	resp, ok := r.Response.(*raft.AppendEntriesResponse)
	if !ok {
		return nil, fmt.Errorf("group %d answered a heartbeat with %T", group, r.Response)
	}
	return resp, nil
}

func encodeBeatRequests(calls []*beatCall) []byte {
	out := make([]byte, 4, 16+len(calls)*64)
	out = binary.AppendUvarint(out, uint64(len(calls)))
	for _, c := range calls {
		out = binary.AppendUvarint(out, c.id)
		out = binary.AppendUvarint(out, c.group)
		out = appendBeatHeader(out, c.req.RPCHeader)
		out = binary.AppendUvarint(out, c.req.Term)
		//lint:ignore SA1019 raft still sends and reads it; carried unchanged
		out = wire.AppendLenBytes(out, c.req.Leader)
	}
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out
}

func appendBeatHeader(b []byte, h raft.RPCHeader) []byte {
	b = binary.AppendUvarint(b, uint64(h.ProtocolVersion))
	b = wire.AppendLenBytes(b, h.ID)
	return wire.AppendLenBytes(b, h.Addr)
}

// readBeatHeader reads what appendBeatHeader wrote.
func readBeatHeader(d *wire.Reader) raft.RPCHeader {
	var h raft.RPCHeader
	h.ProtocolVersion = raft.ProtocolVersion(d.Uvarint())
	h.ID = d.Bytes(beatMaxBytes)
	h.Addr = d.Bytes(beatMaxBytes)
	return h
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// readBeatFrame reads one frame body; it never allocates more than
// beatMaxFrame.
func readBeatFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > beatMaxFrame {
		return nil, fmt.Errorf("%w: length %d", errWire, n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("%w: %w", errWire, err)
	}
	return body, nil
}
