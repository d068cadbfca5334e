package shard

import (
	"errors"
	"net"
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
}

func (k *TransportKnobs) blocked(from, to string) bool {
	return k != nil && k.Blocked != nil && k.Blocked(from, to)
}

// wrap returns c itself when there is no Blocked hook, so production pays
// nothing; otherwise a conn that checks the hook on every Read and Write.
func (k *TransportKnobs) wrap(c net.Conn, local, remote string) net.Conn {
	if k == nil || k.Blocked == nil {
		return c
	}
	return &knobConn{Conn: c, local: local, remote: remote, blocked: k.Blocked}
}

// knobConn drops traffic that TransportKnobs.Blocked forbids by closing
// itself, which the peer then sees as a broken connection, as it would under
// a real partition that outlives TCP timeouts.
type knobConn struct {
	net.Conn
	local, remote string
	blocked       func(from, to string) bool
}

func (c *knobConn) Read(p []byte) (int, error) {
	if c.blocked(c.remote, c.local) {
		_ = c.Conn.Close()
		return 0, ErrMuxConnBlocked
	}
	n, err := c.Conn.Read(p)
	// A partition set while this Read was waiting drops what arrived.
	if n > 0 && c.blocked(c.remote, c.local) {
		_ = c.Conn.Close()
		return 0, ErrMuxConnBlocked
	}
	return n, err
}

func (c *knobConn) Write(p []byte) (int, error) {
	if c.blocked(c.local, c.remote) {
		_ = c.Conn.Close()
		return 0, ErrMuxConnBlocked
	}
	return c.Conn.Write(p)
}
