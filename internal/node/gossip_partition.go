package node

import (
	"errors"
	"net"
	"time"

	"github.com/hashicorp/memberlist"
)

// partitionedTransport is memberlist's UDP and TCP transport under test
// partitions (Knobs.Blocked): a packet to a member that Blocked cuts off
// from this node is dropped and a stream to it refused, so gossip sees the
// partition raft and node-to-node HTTP see (test.Cluster.Isolate,
// Partition): its members suspect and then declare dead a node cut off, as
// they would on a real network. Blocked names nodes by raft address;
// memberlist addresses a member by its gossip address, which the member's
// metadata maps to its raft address (gossipDelegate.raftOf). An address no
// member has announced yet (a join address) is never cut. The cut is made
// on the sender's side: a partition that cuts both ways (Isolate,
// Partition) drops everything between the two sides, a one-way cut one
// way only.
type partitionedTransport struct {
	*memberlist.NetTransport
	selfRaft string
	blocked  func(from, to string) bool
	raftOf   func(gossipAddr string) (string, bool)
}

var _ memberlist.NodeAwareTransport = (*partitionedTransport)(nil)

// errGossipCut is a dial to a member a test partition cuts off.
var errGossipCut = errors.New("gossip: peer cut off by a test partition")

func (t *partitionedTransport) cut(addr string) bool {
	r, ok := t.raftOf(addr)
	return ok && t.blocked(t.selfRaft, r)
}

func (t *partitionedTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.cut(addr) {
		return time.Now(), nil // lost on the way, as a datagram may be
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *partitionedTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.cut(a.Addr) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteToAddress(b, a)
}

func (t *partitionedTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	if t.cut(addr) {
		return nil, errGossipCut
	}
	return t.NetTransport.DialTimeout(addr, timeout)
}

func (t *partitionedTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if t.cut(a.Addr) {
		return nil, errGossipCut
	}
	return t.NetTransport.DialAddressTimeout(a, timeout)
}
