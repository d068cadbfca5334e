package shard

// The node log store: one bbolt file per node holding the raft log and the
// raft stable store (term, vote) of every group the node hosts, with group
// commit. Writes from all groups queue to one committer, which applies
// everything queued in one bbolt transaction: one commit (two fdatasyncs)
// covers every group that wrote meanwhile. With a file per group, a node with
// N busy groups paid N commits for the same work; after a full restart every
// group's election persisted its term and vote on its own (shard/DESIGN.md,
// "Scale").
//
// Layout: per group id g, a bucket "l"+g (8 bytes big-endian) of log entries
// keyed by index (8 bytes big-endian) and a bucket "s"+g of stable-store keys.
// A log entry's value:
//
//	version 1 byte (1) | index uvarint | term uvarint | type 1 byte
//	| data length uvarint | data | extensions length uvarint | extensions
//	| appended-at unix nanoseconds varint
//
// Groups whose directory already holds a raft.db (created before this store
// existed) keep using it; see StartGroup.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/cairndb/cairn/internal/wire"
)

const (
	logEntryVersion = 1
	// logCommitMax bounds the writes one transaction takes, so one commit
	// cannot grow without bound under a flood.
	logCommitMax = 4096
)

var (
	// ErrLogStoreClosed is returned by writes after NodeLogStore.Close.
	ErrLogStoreClosed = errors.New("shard: log store closed")
	errLogEntry       = errors.New("shard: corrupt log entry")
	// errStableNotFound must read exactly "not found": hashicorp/raft
	// compares the message (docs/architecture.md, "Known hazards").
	errStableNotFound = errors.New("not found")
)

// NodeLogStore is the node's shared raft log and stable store.
type NodeLogStore struct {
	db *bbolt.DB
	gc *groupCommit[func(tx *bbolt.Tx) error]

	failOnce sync.Once
	failed   atomic.Pointer[error] // a commit failed: the store is unusable
	failedCh chan struct{}
}

// OpenNodeLogStore opens (or creates) the store at path.
func OpenNodeLogStore(path string) (*NodeLogStore, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout:        time.Second,
		NoFreelistSync: true,
		FreelistType:   bbolt.FreelistMapType,
	})
	if err != nil {
		return nil, fmt.Errorf("shard: open log store %s: %w", path, err)
	}
	s := &NodeLogStore{db: db, failedCh: make(chan struct{})}
	s.gc = startGroupCommit(s.commit)
	return s, nil
}

// Close stops the committer after the writes already queued and closes the
// file. Groups using the store must be shut down first.
func (s *NodeLogStore) Close() error {
	s.gc.close()
	return s.db.Close()
}

// update runs fn in a transaction shared with whatever else is queued, and
// returns once that transaction is durable.
func (s *NodeLogStore) update(fn func(tx *bbolt.Tx) error) error {
	return s.gc.submit(fn)
}

// commit runs a batch of writes in one transaction.
func (s *NodeLogStore) commit(batch []func(tx *bbolt.Tx) error) []error {
	errs := make([]error, len(batch))
	err := s.Err()
	if err == nil {
		err = s.updateAll(batch)
	}
	if err == nil || len(batch) == 1 || s.Err() != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	// One write failed and took the batch down with it: run each alone so
	// the others are not failed for it (bbolt has no savepoints).
	for i := range batch {
		if errs[i] = s.Err(); errs[i] == nil {
			errs[i] = s.updateAll(batch[i : i+1])
		}
	}
	return errs
}

// updateAll runs fns in one transaction. A failure of the commit itself
// (a write or fdatasync of the file), not of a write's own checks, fails the
// store for good: bbolt reads its newest meta page from the page cache, so
// after a failed sync it could serve what never reached the disk.
func (s *NodeLogStore) updateAll(fns []func(tx *bbolt.Tx) error) error {
	fnFailed := false
	err := s.db.Update(func(tx *bbolt.Tx) error {
		for _, fn := range fns {
			if err := fn(tx); err != nil {
				fnFailed = true
				return err
			}
		}
		return nil
	})
	if err != nil && !fnFailed {
		s.failOnce.Do(func() {
			e := fmt.Errorf("%w: bolt commit: %w", ErrLogFailed, err)
			s.failed.Store(&e)
			close(s.failedCh)
		})
		return s.Err()
	}
	return err
}

// Err returns why the store failed (wrapping ErrLogFailed), or nil.
func (s *NodeLogStore) Err() error {
	if e := s.failed.Load(); e != nil {
		return *e
	}
	return nil
}

// Failed returns a channel closed when the store fails.
func (s *NodeLogStore) Failed() <-chan struct{} { return s.failedCh }

// LogStoreStats counts writes and the commits (fsyncs) that carried them.
type LogStoreStats struct{ Writes, Commits uint64 }

// Stats returns how many writes committed in how many transactions.
func (s *NodeLogStore) Stats() LogStoreStats { return s.gc.stats() }

// Group returns group id's log and stable store.
func (s *NodeLogStore) Group(id uint64) GroupLog {
	return &GroupLogStore{s: s, logs: groupBucket('l', id), stable: groupBucket('s', id)}
}

// DropGroup deletes everything group id stored. A replica removed from this
// node must not leave a log behind for a later replica of the same shard.
func (s *NodeLogStore) DropGroup(id uint64) error {
	return s.update(func(tx *bbolt.Tx) error {
		for _, name := range [][]byte{groupBucket('l', id), groupBucket('s', id)} {
			if err := tx.DeleteBucket(name); err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
				return err
			}
		}
		return nil
	})
}

// HasGroup reports whether group id stored anything.
func (s *NodeLogStore) HasGroup(id uint64) (bool, error) {
	has := false
	err := s.db.View(func(tx *bbolt.Tx) error {
		has = tx.Bucket(groupBucket('l', id)) != nil || tx.Bucket(groupBucket('s', id)) != nil
		return nil
	})
	return has, err
}

func groupBucket(kind byte, id uint64) []byte {
	b := make([]byte, 9)
	b[0] = kind
	binary.BigEndian.PutUint64(b[1:], id)
	return b
}

// GroupLogStore is one group's view of the node log store: a raft.LogStore
// and raft.StableStore.
type GroupLogStore struct {
	s            *NodeLogStore
	logs, stable []byte // bucket names
}

var (
	_ raft.LogStore    = (*GroupLogStore)(nil)
	_ raft.StableStore = (*GroupLogStore)(nil)
)

// FirstIndex returns the first index written, 0 for an empty log.
func (g *GroupLogStore) FirstIndex() (uint64, error) {
	if err := g.s.Err(); err != nil {
		return 0, err
	}
	var idx uint64
	err := g.s.db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(g.logs); b != nil {
			if k, _ := b.Cursor().First(); k != nil {
				idx = binary.BigEndian.Uint64(k)
			}
		}
		return nil
	})
	return idx, err
}

// LastIndex returns the last index written, 0 for an empty log.
func (g *GroupLogStore) LastIndex() (uint64, error) {
	if err := g.s.Err(); err != nil {
		return 0, err
	}
	var idx uint64
	err := g.s.db.View(func(tx *bbolt.Tx) error {
		if b := tx.Bucket(g.logs); b != nil {
			if k, _ := b.Cursor().Last(); k != nil {
				idx = binary.BigEndian.Uint64(k)
			}
		}
		return nil
	})
	return idx, err
}

// GetLog reads the entry at index into out.
func (g *GroupLogStore) GetLog(index uint64, out *raft.Log) error {
	if err := g.s.Err(); err != nil {
		return err
	}
	return g.s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(g.logs)
		if b == nil {
			return raft.ErrLogNotFound
		}
		v := b.Get(u64key(index))
		if v == nil {
			return raft.ErrLogNotFound
		}
		return decodeLogEntry(v, out)
	})
}

// StoreLog stores one entry.
func (g *GroupLogStore) StoreLog(l *raft.Log) error {
	return g.StoreLogs([]*raft.Log{l})
}

// StoreLogs stores entries; they are durable when it returns.
func (g *GroupLogStore) StoreLogs(logs []*raft.Log) error {
	keys := make([][]byte, len(logs))
	vals := make([][]byte, len(logs))
	for i, l := range logs {
		keys[i] = u64key(l.Index)
		vals[i] = encodeLogEntry(l)
	}
	return g.s.update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(g.logs)
		if err != nil {
			return err
		}
		b.FillPercent = 0.9 // entries arrive in index order
		for i := range keys {
			if err := b.Put(keys[i], vals[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// DeleteRange deletes the entries min..max inclusive (compaction from the
// front, or a conflicting suffix).
func (g *GroupLogStore) DeleteRange(min, max uint64) error {
	return g.s.update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(g.logs)
		if b == nil {
			return nil
		}
		// Collect, then delete: deleting under a cursor can skip entries.
		var keys [][]byte
		c := b.Cursor()
		for k, _ := c.Seek(u64key(min)); k != nil && binary.BigEndian.Uint64(k) <= max; k, _ = c.Next() {
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// Set stores a stable-store value durably.
func (g *GroupLogStore) Set(key, val []byte) error {
	k, v := append([]byte(nil), key...), append([]byte(nil), val...)
	return g.s.update(func(tx *bbolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(g.stable)
		if err != nil {
			return err
		}
		return b.Put(k, v)
	})
}

// Get returns a stable-store value, or an error reading "not found".
func (g *GroupLogStore) Get(key []byte) ([]byte, error) {
	if err := g.s.Err(); err != nil {
		return nil, err
	}
	var out []byte
	err := g.s.db.View(func(tx *bbolt.Tx) error {
		b := tx.Bucket(g.stable)
		if b == nil {
			return errStableNotFound
		}
		v := b.Get(key)
		if v == nil {
			return errStableNotFound
		}
		out = append([]byte(nil), v...)
		return nil
	})
	return out, err
}

// SetUint64 stores a stable-store integer.
func (g *GroupLogStore) SetUint64(key []byte, val uint64) error {
	return g.Set(key, u64key(val))
}

// GetUint64 returns a stable-store integer; 0 and "not found" when missing.
func (g *GroupLogStore) GetUint64(key []byte) (uint64, error) { return stableUint64(g, key) }

// stableUint64 reads an integer stored by SetUint64 (8 bytes, big-endian)
// from either node log store.
func stableUint64(s raft.StableStore, key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("shard: stable value %q is %d bytes, want 8", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}

func u64key(v uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), v)
}

func encodeLogEntry(l *raft.Log) []byte {
	return appendLogEntry(make([]byte, 0, logEntrySize(l)), l)
}

// logEntrySize bounds the encoded size of l.
func logEntrySize(l *raft.Log) int {
	return 1 + 3*binary.MaxVarintLen64 + 1 + len(l.Data) + len(l.Extensions) + 2*binary.MaxVarintLen64
}

// appendLogEntry appends l's encoding to b.
func appendLogEntry(b []byte, l *raft.Log) []byte {
	b = append(b, logEntryVersion)
	b = binary.AppendUvarint(b, l.Index)
	b = binary.AppendUvarint(b, l.Term)
	b = append(b, byte(l.Type))
	b = binary.AppendUvarint(b, uint64(len(l.Data)))
	b = append(b, l.Data...)
	b = binary.AppendUvarint(b, uint64(len(l.Extensions)))
	b = append(b, l.Extensions...)
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	return binary.AppendVarint(b, at)
}

// decodeLogEntry decodes v into out. It copies what it keeps: v is only
// valid inside the bbolt transaction.
func decodeLogEntry(v []byte, out *raft.Log) error {
	if len(v) < 1 || v[0] != logEntryVersion {
		return fmt.Errorf("%w: version", errLogEntry)
	}
	d := wire.NewReader(v[1:])
	out.Index = d.Uvarint()
	out.Term = d.Uvarint()
	out.Type = raft.LogType(d.Byte())
	out.Data = d.Blob()
	out.Extensions = d.Blob()
	at := d.Varint()
	if err := d.Finish(); err != nil {
		return fmt.Errorf("%w: %w", errLogEntry, err)
	}
	out.AppendedAt = time.Time{}
	if at != 0 {
		out.AppendedAt = time.Unix(0, at)
	}
	return nil
}
