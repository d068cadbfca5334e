package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
)

// ErrClosed is returned by reads and WaitApplied after Close.
var ErrClosed = errors.New("fsm: closed")

// Bucket names. Part of the on-disk format.
var (
	bucketData      = []byte("data")       // key -> stored KV (encodeStored)
	bucketMeta      = []byte("meta")       // metaApplied, metaRange, metaFormat
	bucketTTL       = []byte("ttl")        // key -> encodeTTL
	bucketFence     = []byte("fence")      // lock 0x00 key -> 8-byte highest accepted token
	bucketDedup     = []byte("dedup")      // request id -> 8-byte time, encodeResult
	bucketDedupTime = []byte("dedup-time") // 8-byte time, request id -> empty (pruning order)
	bucketLocks     = []byte("locks")      // lock name -> lock.EncodeRecord (lock/DESIGN.md)
)

// allBuckets fixes the order used by Hash and the snapshot bucket ids
// (id = position + 1). Never reorder: snapshots on disk depend on it.
// A data dir or snapshot from before a bucket existed opens without it
// (initDB and loadBatch create missing buckets empty).
var allBuckets = [][]byte{bucketMeta, bucketData, bucketTTL, bucketFence, bucketDedup, bucketDedupTime, bucketLocks,
	bucketIntents, bucketRecords, bucketTombstones, bucketTxnGC}

var (
	metaApplied = []byte("applied")
	metaRange   = []byte("range")
	metaFormat  = []byte("format")
	// metaTokenBase is the group's lock token base (8 bytes big-endian):
	// absent means 0 (genesis ranges, and every store from before locks);
	// a split's child gets parent base + split index (lock/DESIGN.md).
	metaTokenBase = []byte("token-base")
)

// storeFormat is the layout version of the bbolt file, checked at Open.
const storeFormat = 1

// FSM is the replicated state machine of one shard, stored in bbolt.
//
// Concurrency: Apply, ApplyBatch, Snapshot and Restore are called by raft
// from one goroutine. FSMSnapshot.Persist runs concurrently with Apply.
// Get, Scan, TTLKeys, Hash, SizeBytes, Range, Applied and WaitApplied may
// be called from any goroutine at any time; they see committed state only.
type FSM struct {
	cfg Config
	log *slog.Logger

	// dbMu guards the db pointer, which Restore replaces and Close clears.
	// Readers hold it shared for the length of their read transaction.
	dbMu sync.RWMutex
	db   *bbolt.DB

	// wmu guards the write transaction ApplyBatch leaves open across
	// batches (opentx.go). dirty says published batches may be missing
	// from the file: set before the applied index moves past a batch left
	// open, cleared after a successful commit (after a failed one it stays
	// set, and broken is set), so that readers skip wmu when it is clear;
	// reads counts the reads, so that ApplyBatch commits each batch while
	// there are any.
	wmu        sync.Mutex
	wtx        *bbolt.Tx
	wtxBatches int
	wtxBytes   int
	wtxGen     uint64
	wtxTimer   *time.Timer
	readsSeen  int64
	dirty      atomic.Bool
	reads      atomic.Int64
	// broken is a failed commit or apply (opentx.go failed, ApplyBatch):
	// permanent. stop (test knob; nil: panic on a new goroutine) ends the
	// process; it runs with wmu held and must neither block nor call into
	// the FSM. failCommit (test knob) fails commits (rolling them back), and
	// afterPublish (test knob) runs as setApplied publishes an index.
	broken       atomic.Pointer[error]
	stop         func(error)
	failCommit   func() error
	afterPublish func(applied uint64)

	applied atomic.Uint64
	decided decidedCache  // answers of committing decides, in memory (decided.go)
	base    atomic.Uint64 // lock token base (metaTokenBase); only an OpRaiseBase changes it, upwards

	rngMu sync.RWMutex
	// rngCache is the range descriptor last decoded inside a read
	// transaction (txRange).
	rngCache atomic.Pointer[rangeCache]

	sizeMu sync.Mutex // SizeBytes cache: bytes in use by the data bucket
	size   int64
	sizeAt time.Time
	rng    Range

	// waitCh is closed and replaced after every commit that advances the
	// applied index, waking WaitApplied callers without polling.
	waitMu sync.Mutex
	waitCh chan struct{}

	closed    chan struct{}
	closeOnce sync.Once

	deferred bool // commits skip fsync (durability.go)
	rebuilt  bool // Open deleted a file a machine crash may have torn
}

// Open opens (or creates) the FSM state at cfg.Path.
func Open(cfg Config) (*FSM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o755); err != nil {
		return nil, fmt.Errorf("fsm: create directory: %w", err)
	}
	// A leftover from a Restore that crashed before its rename: the real file
	// is intact, the partial one is garbage.
	if err := os.Remove(restorePath(cfg.Path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("fsm: remove stale restore file: %w", err)
	}
	f := &FSM{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "fsm", "path", cfg.Path),
		waitCh: make(chan struct{}),
		closed: make(chan struct{}),
	}
	boot, bootErr := cfg.BootID()
	if bootErr != nil && cfg.DeferSync {
		f.log.Warn("no boot id: committing with fsync", "err", bootErr)
	}
	op, err := prepare(cfg, boot, bootErr)
	if err != nil {
		return nil, err
	}
	f.deferred, f.rebuilt = op.deferred, op.rebuilt
	if f.cfg.CommitBatches == 0 {
		f.cfg.CommitBatches = 1
		if f.deferred {
			f.cfg.CommitBatches = DefaultCommitBatches
		}
	}
	if f.rebuilt {
		f.log.Warn("the machine restarted while this file had unsynced commits; " +
			"starting again from the raft snapshot and log")
	}
	if cfg.DeferSync && bootErr == nil && !f.deferred {
		f.log.Warn("the range this group started from is not recorded: committing with fsync, " +
			"so a machine crash never needs a rebuild from it")
	}
	db, err := openDB(cfg.Path, cfg.MmapSize)
	if err != nil {
		return nil, err
	}
	db.NoSync = f.deferred
	if err := initDB(db, op.initial); err != nil {
		_ = db.Close()
		return nil, err
	}
	if op.syncClean {
		// An earlier run of this boot deferred its commits: make them
		// durable before the sidecar stops saying so.
		err := db.Sync()
		if err == nil {
			err = markClean(cfg.Path)
		}
		if err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("fsm: sync file left by deferred commits: %w", err)
		}
	}
	if err := f.load(db); err != nil {
		_ = db.Close()
		return nil, err
	}
	f.db = db
	f.log.Debug("opened", "applied", f.Applied())
	return f, nil
}

func openDB(path string, mmapSize int) (*bbolt.DB, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: time.Second,
		// Without these bbolt rewrites its whole freelist on every commit.
		NoFreelistSync:  true,
		FreelistType:    bbolt.FreelistMapType,
		InitialMmapSize: mmapSize,
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: open %s: %w", path, err)
	}
	return db, nil
}

// initDB creates missing buckets and, for a new file, the meta records.
func initDB(db *bbolt.DB, initial Range) error {
	err := db.Update(func(tx *bbolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if meta.Get(metaFormat) != nil {
			return nil
		}
		if err := meta.Put(metaFormat, []byte{storeFormat}); err != nil {
			return err
		}
		if err := meta.Put(metaApplied, u64(0)); err != nil {
			return err
		}
		return meta.Put(metaRange, encodeRange(initial))
	})
	if err != nil {
		return fmt.Errorf("fsm: initialise store: %w", err)
	}
	return nil
}

// load reads the applied index and range from db into memory.
func (f *FSM) load(db *bbolt.DB) error {
	var applied, base uint64
	var rng Range
	err := db.View(func(tx *bbolt.Tx) error {
		var err error
		if applied, rng, err = readMeta(tx); err != nil {
			return err
		}
		base, err = readTokenBase(tx)
		return err
	})
	if err != nil {
		return fmt.Errorf("fsm: load meta: %w", err)
	}
	f.applied.Store(applied)
	f.base.Store(base)
	f.rngMu.Lock()
	f.rng = rng
	f.rngMu.Unlock()
	return nil
}

// readMeta checks the format and returns the applied index and range.
func readMeta(tx *bbolt.Tx) (uint64, Range, error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return 0, Range{}, fmt.Errorf("%w: no meta bucket", errCorrupt)
	}
	if v := meta.Get(metaFormat); len(v) != 1 || v[0] != storeFormat {
		return 0, Range{}, fmt.Errorf("%w: unsupported store format %v", errCorrupt, v)
	}
	av := meta.Get(metaApplied)
	if len(av) != 8 {
		return 0, Range{}, fmt.Errorf("%w: applied index", errCorrupt)
	}
	rng, err := decodeRange(meta.Get(metaRange))
	if err != nil {
		return 0, Range{}, err
	}
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil {
			return 0, Range{}, fmt.Errorf("%w: missing bucket %s", errCorrupt, name)
		}
	}
	return binary.BigEndian.Uint64(av), rng, nil
}

// readTokenBase returns the stored lock token base, 0 when absent.
func readTokenBase(tx *bbolt.Tx) (uint64, error) {
	v := tx.Bucket(bucketMeta).Get(metaTokenBase)
	if v == nil {
		return 0, nil
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("%w: token base", errCorrupt)
	}
	return binary.BigEndian.Uint64(v), nil
}

// TokenBase returns the group's lock token base: a lock entry at raft index
// i has sequence number TokenBase()+i (lock/DESIGN.md "Sequence numbers").
func (f *FSM) TokenBase() uint64 { return f.base.Load() }

// Close closes the store. Pending WaitApplied calls return ErrClosed.
func (f *FSM) Close() error {
	var err error
	f.closeOnce.Do(func() {
		close(f.closed)
		defer f.decided.clear() // after dbMu: no apply can put any more
		f.dbMu.Lock()
		defer f.dbMu.Unlock()
		if f.db != nil {
			f.wmu.Lock()
			cerr := f.commitLocked()
			f.wmu.Unlock()
			if cerr != nil {
				f.log.Error("committing applied entries at close (raft replays them)", "err", cerr)
			}
			// The file is consistent at its own applied index; the
			// failure is still the close's to report.
			prior := errors.Join(cerr, f.brokenErr())
			if f.deferred {
				// Synced and marked clean, so no later boot distrusts it.
				if err = f.db.Sync(); err == nil {
					if err = f.db.Close(); err == nil {
						err = markClean(f.cfg.Path)
					}
				} else {
					err = errors.Join(err, f.db.Close())
				}
			} else {
				err = f.db.Close()
			}
			err = errors.Join(prior, err)
			f.db = nil
		}
	})
	if err != nil {
		return fmt.Errorf("fsm: close: %w", err)
	}
	return nil
}

// Rebuilt reports whether Open found the file untrustworthy (left open with
// unsynced commits by an earlier boot of the machine) and started over from
// the genesis range. The caller must then restore the newest raft snapshot,
// and raft replays the log after it.
func (f *FSM) Rebuilt() bool { return f.rebuilt }

// view runs fn in a read transaction, excluding Close and Restore's swap.
func (f *FSM) view(fn func(tx *bbolt.Tx) error) error {
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	if f.db == nil {
		return ErrClosed
	}
	f.reads.Add(1)
	f.flush("read")
	if err := f.brokenErr(); err != nil {
		return err
	}
	return f.db.View(fn)
}

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}
