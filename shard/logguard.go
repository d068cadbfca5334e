package shard

import (
	"errors"
	"runtime"
	"strings"
	"sync"
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
//
// It also lets a leader write its log while it replicates
// (raft.AsyncLogStore, in cairn's copy of hashicorp/raft: see
// third_party/raft/CAIRN.md): StoreLogsAsync queues the leader's entries on
// the WAL and keeps them readable here until the commit returns, since the
// replicators read them meanwhile and raft's log cache may be smaller than
// the batch.
type logGuard struct {
	GroupLog
	onFail  func()      // called at every ErrLogFailed seen: stops the group
	started atomic.Bool // raft.NewRaft has returned

	pmu     sync.RWMutex
	pending [][]*raft.Log // batches queued by StoreLogsAsync, not yet committed
}

var (
	_ raft.LogStore      = (*logGuard)(nil)
	_ raft.StableStore   = (*logGuard)(nil)
	_ raft.AsyncLogStore = (*logGuard)(nil)
)

// asyncGroupLog is a group log that can queue a write and wait for it
// later (the WAL's groups).
type asyncGroupLog interface {
	storeLogsAsync(logs []*raft.Log) (wait func() error)
}

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
	if l.pendingLog(index, out) {
		return nil
	}
	return l.check(l.GroupLog.GetLog(index, out))
}

// pendingLog copies entry index of a write in flight into out.
func (l *logGuard) pendingLog(index uint64, out *raft.Log) bool {
	l.pmu.RLock()
	defer l.pmu.RUnlock()
	for _, b := range l.pending {
		if first := b[0].Index; index >= first && index-first < uint64(len(b)) {
			*out = *b[index-first]
			return true
		}
	}
	return false
}

// StoreLogsAsync queues logs on a log that can (the WAL) and answers a wait
// for their commit; the entries are readable through GetLog until then.
// Elsewhere (boltdb) it writes them before it returns. A failure is the
// log's, node-wide and permanent (ErrLogFailed), as raft.AsyncLogStore
// requires.
func (l *logGuard) StoreLogsAsync(logs []*raft.Log) (func() error, error) {
	al, ok := l.GroupLog.(asyncGroupLog)
	if !ok || len(logs) == 0 {
		if err := l.StoreLogs(logs); err != nil {
			return nil, err
		}
		return func() error { return nil }, nil
	}
	l.pmu.Lock()
	l.pending = append(l.pending, logs)
	l.pmu.Unlock()
	wait := al.storeLogsAsync(logs)
	return func() error {
		err := wait()
		l.pmu.Lock()
		for i, b := range l.pending {
			if &b[0] == &logs[0] {
				l.pending = append(l.pending[:i], l.pending[i+1:]...)
				break
			}
		}
		l.pmu.Unlock()
		return l.check(err)
	}, nil
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
