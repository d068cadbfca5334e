package fsm

import (
	"fmt"
	"time"

	"go.etcd.io/bbolt"
)

// One write transaction across apply batches (fsm/DESIGN.md "One write
// transaction across batches"). ApplyBatch applies into a bbolt write
// transaction that it leaves open for the next batch, and commits it when
// it has CommitBatches batches or CommitBytes bytes of entries, CommitEvery
// after its first batch, after a batch that split the range, changed the
// membership or raised the token base, and before anything reads the file:
// a read (view), a snapshot, a restore and Close. A page that several
// batches touch — a B+tree branch, the right edge of the dedup and
// transaction buckets, a hot key's leaf — is then written once per commit
// instead of once per batch.
//
// Nothing acknowledged depends on the commit: raft's log holds every entry
// applied, and after a crash raft replays the log past the applied index in
// the file, exactly as it does after a crash between an apply and its
// commit today. Readers never see less than was applied before they
// started, because view commits first.

// Defaults of the open write transaction's bounds.
const (
	DefaultCommitBatches = 256
	DefaultCommitBytes   = 4 << 20
	DefaultCommitEvery   = 50 * time.Millisecond
)

// writeTxLocked returns the open write transaction, beginning one if none
// is open. f.wmu and f.dbMu (shared) are held.
func (f *FSM) writeTxLocked() (*bbolt.Tx, error) {
	if f.wtx != nil {
		return f.wtx, nil
	}
	tx, err := f.db.Begin(true)
	if err != nil {
		return nil, err
	}
	f.wtx = tx
	f.wtxBatches, f.wtxBytes = 0, 0
	if f.cfg.CommitEvery > 0 {
		f.wtxGen++
		gen := f.wtxGen
		f.wtxTimer = time.AfterFunc(f.cfg.CommitEvery, func() { f.commitOpen(gen) })
	}
	return tx, nil
}

// commitLocked commits the open write transaction, if any. f.wmu and f.dbMu
// are held. A failed commit has lost entries the applied index already
// counts (bbolt rolled them back): dirty stays set, and the caller makes
// the failure permanent (ApplyBatch panics, others call failed).
func (f *FSM) commitLocked() error {
	if f.wtx == nil {
		return nil
	}
	tx := f.wtx
	f.wtx = nil
	if f.wtxTimer != nil {
		f.wtxTimer.Stop()
		f.wtxTimer = nil
	}
	var err error
	if f.failCommit != nil {
		_ = tx.Rollback() // as bbolt does when a commit's write fails
		err = f.failCommit()
	} else {
		err = tx.Commit()
	}
	if err != nil {
		return err
	}
	// Only now: a reader that finds dirty false begins its read
	// transaction without waiting for wmu, and must see this commit.
	f.dirty.Store(false)
	return nil
}

// rollbackLocked drops the open write transaction (a batch failed to
// apply: the caller panics; or a test's simulated crash).
func (f *FSM) rollbackLocked() {
	if f.wtx == nil {
		return
	}
	_ = f.wtx.Rollback()
	f.wtx = nil
	f.dirty.Store(false)
	if f.wtxTimer != nil {
		f.wtxTimer.Stop()
		f.wtxTimer = nil
	}
}

// mustCommitLocked is commitLocked for callers that cannot report the
// failure to the entries' proposers (they were answered): a failure is
// permanent (failed).
func (f *FSM) mustCommitLocked(why string) {
	if err := f.commitLocked(); err != nil {
		f.failed(why, err)
	}
}

// failed makes a commit failure outside ApplyBatch permanent: entries the
// applied index counts are not in the file, so from now on every read
// returns the error instead of an older state, ApplyBatch panics, and the
// process is stopped as a failed ApplyBatch stops it (restarting replays
// the entries from raft's log). The stop is a panic on a goroutine of its
// own: the caller's may be an HTTP handler, whose panics net/http recovers.
// f.wmu is held: stop must neither block nor call into the FSM.
func (f *FSM) failed(why string, err error) {
	err = fmt.Errorf("fsm: cannot commit applied entries up to %d (%s), state cannot advance: %w",
		f.applied.Load(), why, err)
	if !f.broken.CompareAndSwap(nil, &err) {
		return
	}
	f.log.Error("state machine failed", "err", err)
	stop := f.stop
	if stop == nil {
		stop = func(err error) { go panic(err) }
	}
	stop(err)
}

// brokenErr returns the permanent failure, if any.
func (f *FSM) brokenErr() error {
	if p := f.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// commitNowLocked says whether ApplyBatch commits the batch it just
// applied rather than leaving the transaction open: a bound is reached, or
// the file was read since the last batch. Readers that come back for more
// would otherwise wait for the next batch's apply and commit it themselves,
// one after another; committing each batch while they read keeps them off
// the mutex (a batch in progress is not yet published, and a read that
// finds dirty clear reads the last commit without waiting).
func (f *FSM) commitNowLocked() bool {
	reads := f.reads.Load()
	read := reads != f.readsSeen
	f.readsSeen = reads
	return read || f.wtxBatches >= f.cfg.CommitBatches || f.wtxBytes >= f.cfg.CommitBytes
}

// flush commits the open write transaction so that a read transaction
// begun next sees every applied entry. f.dbMu is held (shared or not).
func (f *FSM) flush(why string) {
	if !f.dirty.Load() {
		return
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.mustCommitLocked(why)
}

// commitOpen is the CommitEvery timer: it commits the transaction it was
// set for, if that one is still open.
func (f *FSM) commitOpen(gen uint64) {
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	if f.db == nil {
		return
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if f.wtx != nil && f.wtxGen == gen {
		f.mustCommitLocked("timer")
	}
}
