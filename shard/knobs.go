package shard

import (
	"io"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
)

// ReplicaKnobs are test hooks for every replica of a host, nil by default
// (CockroachDB-style testing knobs). A nil *ReplicaKnobs, or a nil field,
// costs nothing: the replica runs exactly as in production.
type ReplicaKnobs struct {
	// BeforeLeadershipLook runs in a replica's leadership watcher before
	// each look at raft's state. Blocking it starves the watcher, as a
	// scheduler or a SIGSTOP/SIGCONT can: leadership can then flip several
	// times between two looks (Leader(T) → follower → Leader(T+2)), which
	// is how the tests make leadership change faster than the watcher sees.
	BeforeLeadershipLook func(shard uint64)

	// BeforeFSM runs before raft hands the replica's state machine a batch
	// of committed entries or a snapshot to restore. Blocking it holds the
	// replica's applied index behind its commit index (a lagging replica),
	// or keeps a replica that waits for its first snapshot empty.
	BeforeFSM func(shard uint64)

	// LockTakeoverCredit breaks invariant I10 on purpose (the negative
	// control of the lease tests): a new leader starts the countdowns of
	// the leases it finds as if this much of each had already run, as a
	// leader trusting the old leader's timing would. Never set outside
	// tests.
	LockTakeoverCredit func(shard uint64) time.Duration
}

func (k *ReplicaKnobs) lockTakeoverCredit(shard uint64) time.Duration {
	if k == nil || k.LockTakeoverCredit == nil {
		return 0
	}
	return k.LockTakeoverCredit(shard)
}

func (k *ReplicaKnobs) beforeLeadershipLook(shard uint64) {
	if k != nil && k.BeforeLeadershipLook != nil {
		k.BeforeLeadershipLook(shard)
	}
}

// raftFSM returns what raft should drive: f itself unless BeforeFSM is set.
func (k *ReplicaKnobs) raftFSM(shard uint64, f *fsm.FSM) raft.FSM {
	if k == nil || k.BeforeFSM == nil {
		return f
	}
	return hookedFSM{FSM: f, before: func() { k.BeforeFSM(shard) }}
}

// hookedFSM calls before ahead of every apply and restore.
type hookedFSM struct {
	*fsm.FSM
	before func()
}

var _ raft.BatchingFSM = hookedFSM{}

func (h hookedFSM) Apply(l *raft.Log) any {
	h.before()
	return h.FSM.Apply(l)
}

func (h hookedFSM) ApplyBatch(logs []*raft.Log) []any {
	h.before()
	return h.FSM.ApplyBatch(logs)
}

func (h hookedFSM) Restore(rc io.ReadCloser) error {
	h.before()
	return h.FSM.Restore(rc)
}
