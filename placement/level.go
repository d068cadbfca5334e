package placement

import "fmt"

// The cluster's command level (fsm.CommandLevel, fsm/DESIGN.md "Command
// levels") is the etcd cluster version / CockroachDB cluster version idea for
// the shard command set: a command that a replica of an older binary would
// skip, or apply differently, is proposed only once no replica can run such
// a binary. Every node advertises its binary's level (gossip, then
// register_node). Raising the level takes two steps, as CockroachDB persists
// a cluster version on every store before it is active:
//
//  1. prepare_level L (State.Pending), once every node that counts
//     advertises at least L (ReadyLevel);
//  2. every node records L in its data dir (node.json), after which a binary
//     below L refuses to start there, and advertises that (Recorded);
//  3. raise_level L (State.Level) once every node that counts recorded L
//     (RecordedLevel). The level never goes down.
//
// So once the level is L no node that counts can come back on a binary below
// L: not even one that was down when the level rose, or restarted between
// the raise and learning of it, since it recorded L before the raise. From
// then on, too, a node whose registered level is below it is treated as
// draining (no replica, no leadership, what it holds moves off) and is not
// added to the meta group.
//
// A binary from before levels advertises none and counts as level 0, so it
// holds the cluster's level at 0 while it counts. Such a binary ignores
// node.json's level, but node.json becomes version 2 once it holds one,
// which binaries since its "v" field refuse (internal/node/identity.go;
// cf3dc0d's, older still, would not: downgrading that far is unsupported).

// counted calls fn with every node that counts for the level: nodes
// registered and not removed, every node a range lists as a replica (removed
// or not: it may still apply that range's log), and the targets of
// operations in progress (a move's learner applies the log before the range
// lists it). A node that never registered is passed as a zero NodeInfo
// (level 0). The meta group's own members count too, but the state does not
// hold them: planMeta adds them.
func (s *State) counted(fn func(NodeInfo)) {
	for _, n := range s.Nodes {
		if !n.Removed {
			fn(n)
		}
	}
	for _, r := range s.Ranges {
		for _, id := range r.Replicas {
			fn(s.Nodes[id])
		}
	}
	for _, op := range s.Ops {
		if op.To != "" {
			fn(s.Nodes[op.To])
		}
	}
}

// ReadyLevel is the lowest level that the nodes that count advertise; 0 when
// none counts.
func (s *State) ReadyLevel() int {
	return s.lowest(func(n NodeInfo) int { return n.Level })
}

// RecordedLevel is the lowest level that the nodes that count have recorded
// in their data dirs; 0 when none counts.
func (s *State) RecordedLevel() int {
	return s.lowest(func(n NodeInfo) int { return n.Recorded })
}

func (s *State) lowest(of func(NodeInfo) int) int {
	level, any := 0, false
	s.counted(func(n NodeInfo) {
		if l := of(n); !any || l < level {
			level, any = l, true
		}
	})
	return level
}

// BehindLevel reports whether node id's binary is below the cluster's level,
// so that it must hold no replica.
func (s *State) BehindLevel(id string) bool {
	return s.Nodes[id].Level < s.Level
}

// prepareLevel applies prepare_level: Pending becomes level if every node
// that counts advertises it. Pending is a promise, not a level in force, so
// it may go down (a node went back to an older binary before recording it),
// to Level itself to cancel; a level below Level is a no-op.
func (s *State) prepareLevel(level int) error {
	switch {
	case level < s.Level:
		return nil
	case level == s.Level: // cancels a pending raise
		s.Pending = level
		return nil
	}
	if ready := s.ReadyLevel(); level > ready {
		return fmt.Errorf("meta: prepare_level %d: the nodes are ready for level %d only", level, ready)
	}
	s.Pending = level
	return nil
}

// raiseLevel applies raise_level: Level becomes level if it is the pending
// level and every node that counts recorded it; a level at or below the
// current one is a no-op, so a retried entry changes nothing.
func (s *State) raiseLevel(level int) error {
	if level <= s.Level {
		return nil
	}
	if level > s.Pending {
		return fmt.Errorf("meta: raise_level %d: level %d is pending", level, s.Pending)
	}
	if rec := s.RecordedLevel(); level > rec {
		return fmt.Errorf("meta: raise_level %d: the nodes recorded level %d only", level, rec)
	}
	s.Level = level
	return nil
}
