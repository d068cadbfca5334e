package shard

// The raft log stores. A node keeps every group's raft log and stable store
// (term, vote) in one of two stores, chosen for the whole data dir
// (LogStoreKind, the server flag --log-store):
//
//   - "wal" (the default): the node write-ahead log (wal.go), one log for
//     every group of the node with group commit, in <data-dir>/raft-wal/.
//   - "boltdb": hashicorp/raft-boltdb (v2), the store most hashicorp/raft
//     users run, one bbolt file per group: raft.db in the group's directory
//     (boltlog.go). It is there to compare the WAL against.
//
// Both fail the same way (issue 10's rule, invariant I1): a failed write or
// sync fails the node's log as a whole (Err wraps ErrLogFailed, Failed is
// closed), every later call refuses, and the node's groups stop until it
// restarts and reads what is on disk.
//
// A data dir written with one store does not open with the other
// (ErrLogStoreMismatch): neither reads the other's files, and starting on
// an empty log would forget terms and votes the node already gave (I1).
// A data dir with raft-log.db, the bbolt node log store that preceded the
// WAL (removed), is refused the same way.
//
// A log entry's encoding in the WAL (encodeLogEntry):
//
//	version 1 byte (1) | index uvarint | term uvarint | type 1 byte
//	| data length uvarint | data | extensions length uvarint | extensions
//	| appended-at unix nanoseconds varint

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairndb/cairn/internal/wire"
)

const (
	logEntryVersion = 1
	// logCommitMax bounds the writes one group commit takes, so one commit
	// cannot grow without bound under a flood.
	logCommitMax = 4096
)

var (
	// ErrLogStoreClosed is returned by writes after NodeLog.Close.
	ErrLogStoreClosed = errors.New("shard: log store closed")
	// ErrLogStoreMismatch is returned by OpenNodeLog for a data dir written
	// with another log store than the one asked for.
	ErrLogStoreMismatch = errors.New("shard: data dir was written with another raft log store")
	errLogEntry         = errors.New("shard: corrupt log entry")
	// errStableNotFound must read exactly "not found": hashicorp/raft
	// compares the message (docs/architecture.md, "Known hazards").
	errStableNotFound = errors.New("not found")
)

// LogStoreKind names a raft log store; the zero value is the WAL.
type LogStoreKind string

const (
	LogStoreWAL    LogStoreKind = "wal"
	LogStoreBoltDB LogStoreKind = "boltdb"
)

// LogStoreKinds lists the stores, the default first.
var LogStoreKinds = []LogStoreKind{LogStoreWAL, LogStoreBoltDB}

// Validate reports a kind that names no store.
func (k LogStoreKind) Validate() error {
	switch k {
	case "", LogStoreWAL, LogStoreBoltDB:
		return nil
	}
	return fmt.Errorf("log store %q: want %q or %q", string(k), LogStoreWAL, LogStoreBoltDB)
}

// NodeLog is where a node's groups keep their raft logs and stable stores.
type NodeLog interface {
	// OpenGroup returns group id's raft.LogStore and raft.StableStore; dir
	// is the group's own directory (the boltdb store keeps raft.db there).
	OpenGroup(id uint64, dir string) (GroupLog, error)
	// DropGroup deletes everything group id stored outside its directory
	// (the caller removes the directory).
	DropGroup(id uint64) error
	Stats() LogStoreStats
	RegisterMetrics(reg prometheus.Registerer) error
	// Err returns why the log failed (it wraps ErrLogFailed), or nil. A
	// failed log refuses every later call; the node must restart.
	Err() error
	// Failed returns a channel closed when the log fails.
	Failed() <-chan struct{}
	// Close closes the store; the groups using it must be shut down first.
	Close() error
}

// GroupLog is one group's log and stable store. Close releases it (the
// group is shut down); it does not delete anything.
type GroupLog interface {
	raft.LogStore
	raft.StableStore
	Close() error
}

// LogKnobs are test hooks on the node's log store; nil in production.
type LogKnobs struct {
	WAL  *WALKnobs  // the write-ahead log's file I/O
	Bolt *BoltKnobs // the boltdb store's files
}

// OpenNodeLog opens the node's log store of kind in dataDir, after checking
// that the data dir holds no other store's files (ErrLogStoreMismatch).
func OpenNodeLog(dataDir string, kind LogStoreKind, knobs *LogKnobs) (NodeLog, error) {
	if err := kind.Validate(); err != nil {
		return nil, err
	}
	if kind == "" {
		kind = LogStoreWAL
	}
	if err := checkLogStore(dataDir, kind); err != nil {
		return nil, err
	}
	if knobs == nil {
		knobs = &LogKnobs{}
	}
	if kind == LogStoreBoltDB {
		return OpenBoltLogs(BoltConfig{Knobs: knobs.Bolt}), nil
	}
	w, err := OpenWALConfig(WALConfig{Dir: filepath.Join(dataDir, walDirName), Knobs: knobs.WAL})
	if err != nil {
		// Not a NodeLog holding a nil *WAL: the caller's nil check
		// must see nil (a node closing after a failed start).
		return nil, err
	}
	return w, nil
}

const walDirName = "raft-wal"

// checkLogStore refuses a data dir that holds another store's files: WAL
// segments in raft-wal/, a raft.db in a group's directory (meta/raft.db,
// shards/<id>/raft.db), or the removed bbolt node store's raft-log.db.
func checkLogStore(dataDir string, kind LogStoreKind) error {
	mismatch := func(found string, other LogStoreKind) error {
		return fmt.Errorf("%w: %s holds %s, written with --log-store %s; start with --log-store %s (or an empty data dir)",
			ErrLogStoreMismatch, dataDir, found, other, other)
	}
	legacy := filepath.Join(dataDir, "raft-log.db")
	if _, err := os.Stat(legacy); err == nil {
		return fmt.Errorf("%w: %s holds raft-log.db, the bbolt node log store that cairn no longer reads",
			ErrLogStoreMismatch, dataDir)
	}
	switch kind {
	case LogStoreWAL:
		for _, pattern := range []string{"*/raft.db", "*/*/raft.db"} {
			found, err := filepath.Glob(filepath.Join(dataDir, pattern))
			if err != nil {
				return err
			}
			if len(found) > 0 {
				rel, _ := filepath.Rel(dataDir, found[0])
				return mismatch(rel, LogStoreBoltDB)
			}
		}
	case LogStoreBoltDB:
		found, err := filepath.Glob(filepath.Join(dataDir, walDirName, "*.wal"))
		if err != nil {
			return err
		}
		if len(found) > 0 {
			rel, _ := filepath.Rel(dataDir, found[0])
			return mismatch(rel, LogStoreWAL)
		}
	}
	return nil
}

// OpenGroup returns group id's log in the WAL; dir is not used.
func (w *WAL) OpenGroup(id uint64, _ string) (GroupLog, error) {
	if err := w.Err(); err != nil {
		return nil, err
	}
	return w.Group(id), nil
}

// Close releases nothing: the group's records stay in the WAL.
func (g *walGroup) Close() error { return nil }

// LogStoreStats counts writes and the commits (fsyncs) that carried them.
type LogStoreStats struct{ Writes, Commits uint64 }

// stableUint64 reads an integer stored by SetUint64 (8 bytes, big-endian).
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
