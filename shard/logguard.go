package shard

import (
	"errors"
	"runtime"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// logGuard is raft's view of a group's log and stable store on the node
// log: the log's own methods, except that once the log has failed
// (ErrLogFailed) it stops the group instead of letting raft panic.
//
// hashicorp/raft (v1.7) handles most store errors: a failed append makes a
// leader step down, a failed vote write refuses the vote, a failed read
// fails the RPC or the replication round. Two sites panic instead:
// setCurrentTerm when the term cannot be saved (every election and every
// higher term seen), and processLogs when an entry to apply cannot be read.
// They run on raft's own goroutine, where no caller can recover, and an
// unrecovered panic ends the process: every group of the node, for one
// failed disk write. At those two sites the guard ends raft's goroutine with
// runtime.Goexit: its deferred cleanups run (a leader's futures answered
// ErrLeadershipLost, replication stopped), nothing after the failed call
// acts on it, and raft.Shutdown finds the goroutine gone. Inside
// raft.NewRaft, which runs on the caller's goroutine, newRaft recovers the
// panic instead.
type logGuard struct {
	GroupLog
	onFail  func()      // called at every ErrLogFailed seen: stops the group
	started atomic.Bool // raft.NewRaft has returned
}

var (
	_ raft.LogStore    = (*logGuard)(nil)
	_ raft.StableStore = (*logGuard)(nil)
)

// check notes a failed log; on raft's goroutine at a site where raft would
// panic on err, it ends that goroutine instead.
func (l *logGuard) check(err error) error {
	if err == nil || !errors.Is(err, ErrLogFailed) {
		return err
	}
	l.onFail()
	if raftWouldPanic() {
		runtime.Goexit()
	}
	return err
}

// raftWouldPanic reports whether the store call in progress comes from
// raft's setCurrentTerm or processLogs outside raft.NewRaft: one of raft's
// own goroutines, about to panic on a store error.
func raftWouldPanic() bool {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	site := false
	for {
		f, more := frames.Next()
		switch {
		case strings.HasSuffix(f.Function, "hashicorp/raft.NewRaft"):
			return false
		case strings.HasSuffix(f.Function, "hashicorp/raft.(*Raft).setCurrentTerm"),
			strings.HasSuffix(f.Function, "hashicorp/raft.(*Raft).processLogs"):
			site = true
		}
		if !more {
			return site
		}
	}
}

func (l *logGuard) FirstIndex() (uint64, error) {
	i, err := l.GroupLog.FirstIndex()
	return i, l.check(err)
}

func (l *logGuard) LastIndex() (uint64, error) {
	i, err := l.GroupLog.LastIndex()
	return i, l.check(err)
}

func (l *logGuard) GetLog(index uint64, out *raft.Log) error {
	return l.check(l.GroupLog.GetLog(index, out))
}

func (l *logGuard) StoreLog(log *raft.Log) error { return l.check(l.GroupLog.StoreLog(log)) }

func (l *logGuard) StoreLogs(logs []*raft.Log) error { return l.check(l.GroupLog.StoreLogs(logs)) }

func (l *logGuard) DeleteRange(min, max uint64) error {
	return l.check(l.GroupLog.DeleteRange(min, max))
}

func (l *logGuard) Set(key, val []byte) error { return l.check(l.GroupLog.Set(key, val)) }

func (l *logGuard) Get(key []byte) ([]byte, error) {
	v, err := l.GroupLog.Get(key)
	return v, l.check(err)
}

func (l *logGuard) SetUint64(key []byte, val uint64) error {
	return l.check(l.GroupLog.SetUint64(key, val))
}

func (l *logGuard) GetUint64(key []byte) (uint64, error) {
	v, err := l.GroupLog.GetUint64(key)
	return v, l.check(err)
}
