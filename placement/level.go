package placement

import "fmt"

// The cluster's command level (fsm.CommandLevel, fsm/DESIGN.md "Command
// levels") is the etcd cluster version / CockroachDB cluster setting idea for
// the shard command set: a command that a replica of an older binary would
// skip, or apply differently, is proposed only once no replica can run such
// a binary. Every node advertises its binary's level (gossip, then
// register_node); the meta leader raises State.Level to ReadyLevel when that
// is higher; the level never goes down. From then on:
//
//   - a node whose registered level is below it is treated as draining: it is
//     given no replica and no leadership, and what it holds moves off;
//   - a node's data dir remembers the highest level it saw (node.json), and a
//     binary below it refuses to start there (a downgrade);
//   - a node that learns of a level above its binary's opens no replica and
//     reports itself unhealthy.
//
// A binary from before levels advertises none and counts as level 0, so it
// holds the cluster's level at 0 while it is registered and not removed.

// ReadyLevel is the level every node that counts advertises: the lowest
// registered level among nodes not removed, and among every node a range
// lists as a replica (removed or not: it may still apply that range's log).
// A replica on a node that never registered counts as level 0. No node at
// all: 0.
func (s *State) ReadyLevel() int {
	level, any := 0, false
	note := func(l int) {
		if !any || l < level {
			level, any = l, true
		}
	}
	for _, n := range s.Nodes {
		if !n.Removed {
			note(n.Level)
		}
	}
	for _, r := range s.Ranges {
		for _, id := range r.Replicas {
			note(s.Nodes[id].Level) // a missing node reads as level 0
		}
	}
	return level
}

// BehindLevel reports whether node id's binary is below the cluster's level,
// so that it must hold no replica.
func (s *State) BehindLevel(id string) bool {
	return s.Nodes[id].Level < s.Level
}

// raiseLevel applies raise_level: the level moves up to level if every node
// that counts is ready for it; a level at or below the current one is a
// no-op, so a retried entry changes nothing.
func (s *State) raiseLevel(level int) error {
	if level <= s.Level {
		return nil
	}
	if ready := s.ReadyLevel(); level > ready {
		return fmt.Errorf("meta: raise_level %d: the nodes are ready for level %d only", level, ready)
	}
	s.Level = level
	return nil
}
