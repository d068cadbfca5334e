package shard

// The boltdb log store: hashicorp/raft-boltdb (v2), one bbolt file per group,
// raft.db in the group's directory. Every write is its own bbolt transaction
// (two fdatasyncs); there is no group commit across groups.
//
// Failure (issue 10's rule, as the WAL): a write (StoreLog(s), DeleteRange,
// Set, SetUint64) that returns an error fails the store for the whole node,
// not only the group: bbolt serves reads from its mmap, i.e. the page
// cache, so after a failed write or fdatasync it could serve pages that never
// reached the disk, and a later fdatasync may report success for them
// (Linux reports a writeback error once). From then on every call of every
// group refuses with the error (wrapping ErrLogFailed), Failed is closed, and
// the node stops its groups until it restarts. raft-boltdb's only write
// errors are bbolt's (a failed write, fdatasync or mmap growth; the database
// closed); a write to a closed file reports ErrLogStoreClosed instead.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// boltFileName is a group's raft-boltdb file, in the group's directory.
const boltFileName = "raft.db"

// BoltConfig configures the boltdb log store.
type BoltConfig struct {
	Knobs *BoltKnobs // nil in production
}

// BoltKnobs are test hooks on the boltdb store's files; nil in production.
type BoltKnobs struct {
	// OpenFile, when set, opens a group's raft.db in place of os.OpenFile
	// (bbolt.Options.OpenFile). Tests keep the file to inject I/O errors
	// under bbolt.
	OpenFile func(name string, flag int, perm os.FileMode) (*os.File, error)
}

// BoltLogs is the boltdb NodeLog: a raft-boltdb store per group.
type BoltLogs struct {
	knobs *BoltKnobs

	closed   atomic.Bool
	failOnce sync.Once
	failed   atomic.Pointer[error]
	failedCh chan struct{}
	writes   atomic.Uint64
	metrics  atomic.Pointer[logStoreMetrics]
}

var _ NodeLog = (*BoltLogs)(nil)

// OpenBoltLogs returns the store; each group opens its file in OpenGroup.
func OpenBoltLogs(cfg BoltConfig) *BoltLogs {
	return &BoltLogs{knobs: cfg.Knobs, failedCh: make(chan struct{})}
}

// OpenGroup opens (or creates) dir/raft.db.
func (s *BoltLogs) OpenGroup(id uint64, dir string) (GroupLog, error) {
	if err := s.Err(); err != nil {
		return nil, err
	}
	if s.closed.Load() {
		return nil, ErrLogStoreClosed
	}
	opts := &bbolt.Options{
		Timeout:        time.Second,
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	}
	if s.knobs != nil && s.knobs.OpenFile != nil {
		opts.OpenFile = s.knobs.OpenFile
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("group %d: %w", id, err)
	}
	db, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, boltFileName), BoltOptions: opts})
	if err != nil {
		return nil, fmt.Errorf("group %d: open %s: %w", id, boltFileName, err)
	}
	return &boltGroup{s: s, db: db}, nil
}

// DropGroup does nothing: a group's raft.db is in its directory, which the
// caller removes.
func (s *BoltLogs) DropGroup(uint64) error { return s.Err() }

// Stats counts writes; each is one bbolt commit.
func (s *BoltLogs) Stats() LogStoreStats {
	n := s.writes.Load()
	return LogStoreStats{Writes: n, Commits: n}
}

// RegisterMetrics exposes commit latency (one bbolt transaction, two
// fdatasyncs) and writes per commit (always 1) under the WAL's names.
func (s *BoltLogs) RegisterMetrics(reg prometheus.Registerer) error {
	m, err := newLogStoreMetrics(reg)
	if err != nil {
		return err
	}
	s.metrics.Store(m)
	return nil
}

// Err returns why the store failed (wrapping ErrLogFailed), or nil.
func (s *BoltLogs) Err() error {
	if e := s.failed.Load(); e != nil {
		return *e
	}
	return nil
}

// Failed returns a channel closed when the store fails.
func (s *BoltLogs) Failed() <-chan struct{} { return s.failedCh }

// Close refuses later writes; every group's file is closed by its group.
func (s *BoltLogs) Close() error {
	s.closed.Store(true)
	return nil
}

// fail records that a write failed: the store is never used again.
func (s *BoltLogs) fail(err error) error {
	s.failOnce.Do(func() {
		e := fmt.Errorf("%w: boltdb: %w", ErrLogFailed, err)
		s.failed.Store(&e)
		close(s.failedCh)
	})
	return s.Err()
}

// boltGroup is one group's raft-boltdb store behind the node-wide failure
// rule.
type boltGroup struct {
	s  *BoltLogs
	db *raftboltdb.BoltStore
}

// check returns the store's failure, or ErrLogStoreClosed, before a call.
func (g *boltGroup) check() error {
	if err := g.s.Err(); err != nil {
		return err
	}
	if g.s.closed.Load() {
		return ErrLogStoreClosed
	}
	return nil
}

// read runs a read unless the store failed.
func (g *boltGroup) read(fn func() error) error {
	if err := g.s.Err(); err != nil {
		return err
	}
	return fn()
}

// write runs a write; any error it returns fails the store, except that a
// write to a closed file is refused as ErrLogStoreClosed.
func (g *boltGroup) write(fn func() error) error {
	if err := g.check(); err != nil {
		return err
	}
	start := time.Now()
	err := fn()
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrLogStoreClosed
	}
	if err != nil {
		return g.s.fail(err)
	}
	g.s.writes.Add(1)
	if m := g.s.metrics.Load(); m != nil {
		m.commit.Observe(time.Since(start).Seconds())
		m.batch.Observe(1)
	}
	return nil
}

func (g *boltGroup) FirstIndex() (i uint64, err error) {
	err = g.read(func() error { i, err = g.db.FirstIndex(); return err })
	return i, err
}

func (g *boltGroup) LastIndex() (i uint64, err error) {
	err = g.read(func() error { i, err = g.db.LastIndex(); return err })
	return i, err
}

func (g *boltGroup) GetLog(index uint64, out *raft.Log) error {
	return g.read(func() error { return g.db.GetLog(index, out) })
}

func (g *boltGroup) StoreLog(l *raft.Log) error {
	return g.write(func() error { return g.db.StoreLog(l) })
}

func (g *boltGroup) StoreLogs(logs []*raft.Log) error {
	return g.write(func() error { return g.db.StoreLogs(logs) })
}

func (g *boltGroup) DeleteRange(min, max uint64) error {
	return g.write(func() error { return g.db.DeleteRange(min, max) })
}

func (g *boltGroup) Set(key, val []byte) error {
	return g.write(func() error { return g.db.Set(key, val) })
}

// Get returns a value, or raft-boltdb's error reading exactly "not found".
func (g *boltGroup) Get(key []byte) (v []byte, err error) {
	err = g.read(func() error { v, err = g.db.Get(key); return err })
	return v, err
}

func (g *boltGroup) SetUint64(key []byte, val uint64) error {
	return g.write(func() error { return g.db.SetUint64(key, val) })
}

func (g *boltGroup) GetUint64(key []byte) (v uint64, err error) {
	err = g.read(func() error { v, err = g.db.GetUint64(key); return err })
	return v, err
}

// Close closes the group's file.
func (g *boltGroup) Close() error { return g.db.Close() }
