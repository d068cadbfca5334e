package fsm

import (
	"errors"
	"io"
	"log/slog"
	"time"
)

// Defaults applied by Open to zero Config fields.
const (
	DefaultDedupWindow = 10 * time.Minute
	DefaultMmapSize    = 64 << 20
)

// Config configures an FSM.
//
// DedupWindow decides when dedup entries are pruned, which changes replicated
// state: it must be the same on every replica of a group (invariant I3 bans
// local configuration from apply; this is a cluster-wide constant, not a
// per-node knob).
type Config struct {
	Path        string        // bbolt file; created if missing
	Initial     Range         // descriptor stored when the file is new (every replica gets the same one)
	Logger      *slog.Logger  // nil = slog.Default()
	DedupWindow time.Duration // request-id dedup window, default 10*time.Minute
	MmapSize    int           // bbolt InitialMmapSize, default 64 MiB
	// The write transaction ApplyBatch leaves open across batches
	// (opentx.go) is committed after CommitBatches batches (default 256
	// when commits are deferred, else 1: a synced file holds every batch,
	// as --fsm-sync promises), CommitBytes bytes of entries (default 4 MiB)
	// or CommitEvery after its first batch (default 50ms; negative: no
	// timer), whichever comes first, and before any read.
	CommitBatches int
	CommitBytes   int
	CommitEvery   time.Duration
	// OnTTL is called after a batch is applied (its transaction may still
	// be open, opentx.go), once per applied OpPut with
	// TTL>0, on the apply goroutine; it must not block.
	OnTTL func(TTLEntry)
	// OnLock is called after a batch is applied, once per applied OpLock entry
	// that did not fail to decode or route, in log order, on the apply
	// goroutine; it must not block. The event's records are not shared
	// with the store and must not be modified.
	OnLock func(LockEvent)
	// AfterRestore is called after Restore installed a snapshot (every lock
	// record may have changed without an OnLock), on raft's goroutine; it
	// must not block.
	AfterRestore func()
	// OnSplit is called while an OpSplit is applied, inside the batch's
	// transaction, before the parent drops the child's half. export writes
	// the child's initial state in the snapshot stream format (applied index
	// 1, the child's range). It must make the child durable before
	// returning; an error is a storage failure and stops the replica. It
	// runs with the write transaction's lock held and must not read the
	// FSM (a read would wait for that lock).
	OnSplit func(child Range, servers []Server, export func(w io.Writer) error) error
	// AfterSplit is called after the batch holding an OpSplit commits, on the
	// apply goroutine; it must not block (start the child group elsewhere).
	AfterSplit func(child Range)
	// DeferSync commits batches without fsync, trusting raft's log for
	// durability; see durability.go for how a machine crash is detected and
	// recovered from. BootID identifies the machine's boot (default
	// ReadBootID); without one, commits are synced.
	DeferSync bool
	BootID    func() (string, error)
	// HasSnapshot tells Open that a raft snapshot of the group exists, which
	// the caller restores after a rebuild (shard.Host does): a rebuild then
	// does not depend on the recorded genesis range (durability.go).
	HasSnapshot bool
	// BeforeRangePublish (test knob) runs after a batch that changed the
	// range has committed and before Range() returns the new range: tests
	// widen the moment in which committed data and the in-memory range
	// disagree, which reads must not depend on (read.go txRange).
	BeforeRangePublish func()
}

// withDefaults returns a copy of c with zero fields defaulted.
func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.DedupWindow == 0 {
		c.DedupWindow = DefaultDedupWindow
	}
	if c.MmapSize == 0 {
		c.MmapSize = DefaultMmapSize
	}
	if c.BootID == nil {
		c.BootID = ReadBootID
	}
	if c.CommitBytes == 0 {
		c.CommitBytes = DefaultCommitBytes
	}
	if c.CommitEvery == 0 {
		c.CommitEvery = DefaultCommitEvery
	}
	return c
}

// Validate reports a configuration Open cannot use.
func (c Config) Validate() error {
	if c.Path == "" {
		return errors.New("fsm: Config.Path is required")
	}
	if c.DedupWindow < 0 {
		return errors.New("fsm: Config.DedupWindow must not be negative")
	}
	if c.MmapSize < 0 {
		return errors.New("fsm: Config.MmapSize must not be negative")
	}
	if c.CommitBatches < 0 || c.CommitBytes < 0 {
		return errors.New("fsm: Config.CommitBatches and CommitBytes must not be negative")
	}
	if len(c.Initial.End) > 0 && string(c.Initial.Start) >= string(c.Initial.End) {
		return errors.New("fsm: Config.Initial range is empty (Start >= End)")
	}
	return nil
}
