package test

import "time"

// pauseLeft returns how long the pause of the node at raft address a has
// still to run, or 0. The caller holds n.mu.
func (n *Network) pauseLeft(a string) time.Duration {
	until, ok := n.pausedUntil[a]
	if !ok {
		return 0
	}
	return max(0, time.Until(until))
}

// Pause freezes node i's raft traffic for d, the in-process stand-in for
// docker pause (SIGSTOP): its connections stay open, and every byte it
// sends, or that is sent to it, on any group's raft connection (the meta
// group's included) is held and arrives when the pause ends, in order, as
// a thawed process drains its sockets. Peers see a node that accepts
// connections and never answers; their RPCs to it time out. Unlike a real
// pause, the node's own timers keep running (a paused leader steps down
// when its lease runs out rather than after it thaws), and its API and
// gossip still answer.
//
// Pause returns at once; the pause ends by itself after d, or at Unpause.
// It needs a Delayable cluster; without one it isolates the node instead
// (until Unpause: call it after d) and reports false.
func (c *Cluster) Pause(i int, d time.Duration) bool {
	h := c.Node(i)
	if !c.cfg.Delayable {
		c.Isolate(i)
		return false
	}
	c.Net.mu.Lock()
	defer c.Net.mu.Unlock()
	if c.Net.pausedUntil == nil {
		c.Net.pausedUntil = map[string]time.Time{}
	}
	c.Net.pausedUntil[h.RaftAddr] = time.Now().Add(d)
	return true
}

// Unpause ends node i's pause now. What was held during the pause still
// arrives when the pause was due to end (each write's delivery time is
// fixed when it is written).
func (c *Cluster) Unpause(i int) {
	h := c.Node(i)
	if !c.cfg.Delayable {
		c.unisolate(i)
		return
	}
	c.Net.mu.Lock()
	defer c.Net.mu.Unlock()
	delete(c.Net.pausedUntil, h.RaftAddr)
}

// unisolate lifts the blocks Isolate(i) set.
func (c *Cluster) unisolate(i int) {
	nodes := c.Nodes()
	for j := range nodes {
		if j != i {
			c.Net.set(nodes[i].RaftAddr, nodes[j].RaftAddr, false)
			c.Net.set(nodes[j].RaftAddr, nodes[i].RaftAddr, false)
		}
	}
}
