package shard

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// ErrMuxConnBlocked is returned by Dial, Read and Write when
// TransportKnobs.Blocked drops the traffic.
var ErrMuxConnBlocked = errors.New("shard: raft traffic blocked by test knob")

// TransportKnobs are test hooks, nil by default (CockroachDB-style testing
// knobs). A nil *TransportKnobs costs nothing: connections are returned raw.
type TransportKnobs struct {
	// Blocked reports whether traffic from raft address from to raft address
	// to must be dropped. It is consulted on every Dial (local → target),
	// every Write (local → peer) and every Read (peer → local) of every
	// connection the mux hands out, and on the header of every accepted
	// connection, so a partition set while connections are open cuts them:
	// the connection closes itself and returns ErrMuxConnBlocked. It must be
	// safe for concurrent use and fast; it runs on every Read and Write.
	Blocked func(from, to string) bool

	// Delay, when set, returns how long bytes written from raft address
	// from to raft address to take to arrive (scenario S20). Writes return
	// at once and a goroutine per connection sends each one when it is due,
	// in order: the delay adds latency without limiting throughput, as a
	// long link does. Consulted on every Write.
	Delay func(from, to string) time.Duration

	// HangDial, when it returns true, makes a dial from raft address from to
	// raft address to hang for its whole timeout (or until the mux closes),
	// as resolving a dead container's name does under docker's DNS.
	HangDial func(from, to string) bool
}

func (k *TransportKnobs) blocked(from, to string) bool {
	return k != nil && k.Blocked != nil && k.Blocked(from, to)
}

func (k *TransportKnobs) hangDial(from, to string) bool {
	return k != nil && k.HangDial != nil && k.HangDial(from, to)
}

// WrapConn is wrap for connections other than raft's that a partition must
// cut as well (node-to-node HTTP, dialled through internal/node's dialPeer):
// local and remote are the two nodes' raft addresses, which Blocked names.
func (k *TransportKnobs) WrapConn(c net.Conn, local, remote string) net.Conn {
	return k.wrap(c, local, remote)
}

// wrap returns c itself when there are no hooks, so production pays
// nothing; otherwise a conn that consults them on every Read and Write.
func (k *TransportKnobs) wrap(c net.Conn, local, remote string) net.Conn {
	if k == nil || (k.Blocked == nil && k.Delay == nil) {
		return c
	}
	blocked := k.Blocked
	if blocked == nil {
		blocked = func(string, string) bool { return false }
	}
	kc := &knobConn{Conn: c, local: local, remote: remote, blocked: blocked}
	if k.Delay != nil {
		kc.delay = k.Delay
		kc.line = make(chan delayedWrite, 1024)
		kc.done = make(chan struct{})
		go kc.send()
	}
	return kc
}

// knobConn drops traffic that TransportKnobs.Blocked forbids by closing
// itself, which the peer then sees as a broken connection, as it would under
// a real partition that outlives TCP timeouts.
type knobConn struct {
	net.Conn
	local, remote string
	blocked       func(from, to string) bool

	// With a Delay hook: writes queue on line until due.
	delay     func(from, to string) time.Duration
	line      chan delayedWrite
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	mu        sync.Mutex
	err       error // the first failed delayed write
}

type delayedWrite struct {
	due time.Time
	b   []byte
}

func (c *knobConn) Read(p []byte) (int, error) {
	if c.blocked(c.remote, c.local) {
		_ = c.Close()
		return 0, ErrMuxConnBlocked
	}
	n, err := c.Conn.Read(p)
	// A partition set while this Read was waiting drops what arrived.
	if n > 0 && c.blocked(c.remote, c.local) {
		_ = c.Close()
		return 0, ErrMuxConnBlocked
	}
	if c.done != nil && (errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF)) {
		// Closed underneath (the mux closing its connections): stop
		// the sender too.
		c.closeOnce.Do(func() { close(c.done) })
	}
	return n, err
}

func (c *knobConn) Write(p []byte) (int, error) {
	if c.blocked(c.local, c.remote) {
		_ = c.Close()
		return 0, ErrMuxConnBlocked
	}
	if c.delay == nil {
		return c.Conn.Write(p)
	}
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	w := delayedWrite{due: time.Now().Add(c.delay(c.local, c.remote)), b: append([]byte(nil), p...)}
	select {
	case c.line <- w:
		return len(p), nil
	case <-c.done:
		return 0, net.ErrClosed
	}
}

// send writes queued bytes when they are due, until Close or a failed write.
func (c *knobConn) send() {
	for {
		select {
		case <-c.done:
			return
		case w := <-c.line:
			if d := time.Until(w.due); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-c.done:
					t.Stop()
					return
				}
			}
			if _, err := c.Conn.Write(w.b); err != nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
				_ = c.Close()
				return
			}
		}
	}
}

func (c *knobConn) Close() error {
	if c.done != nil {
		c.closeOnce.Do(func() { close(c.done) })
	}
	return c.Conn.Close()
}
