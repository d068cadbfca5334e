package fsm

import (
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

var (
	_ raft.BatchingFSM = (*FSM)(nil)
)

// buckets are the open buckets of one write transaction.
type buckets struct {
	data, meta, ttl, fence, dedup, dedupTime, locks *bbolt.Bucket
	intents, records, tombstones, txnGC             *bbolt.Bucket // fsm/txn2pc.go
}

func txBuckets(tx *bbolt.Tx) buckets {
	b := buckets{
		data:       tx.Bucket(bucketData),
		meta:       tx.Bucket(bucketMeta),
		ttl:        tx.Bucket(bucketTTL),
		fence:      tx.Bucket(bucketFence),
		dedup:      tx.Bucket(bucketDedup),
		dedupTime:  tx.Bucket(bucketDedupTime),
		locks:      tx.Bucket(bucketLocks),
		intents:    tx.Bucket(bucketIntents),
		records:    tx.Bucket(bucketRecords),
		tombstones: tx.Bucket(bucketTombstones),
		txnGC:      tx.Bucket(bucketTxnGC),
	}
	// Both dedup buckets grow at their right edge (dedupTime by proposer
	// time, dedup by request ids that cairn's client prefixes with the time)
	// and shrink at their left: pages split at the default 50% would stay
	// half empty for good.
	b.dedup.FillPercent = appendFillPercent
	b.dedupTime.FillPercent = appendFillPercent
	// So do the transaction buckets keyed by id (txn.IDForRequest and the
	// coordinator's own ids start with the time) and the clean-up queue,
	// keyed by proposer time.
	b.records.FillPercent = appendFillPercent
	b.tombstones.FillPercent = appendFillPercent
	b.txnGC.FillPercent = appendFillPercent
	return b
}

// appendFillPercent is how full bbolt packs pages of append-ordered buckets.
const appendFillPercent = 0.9

// applyCtx is the state of one ApplyBatch transaction.
type applyCtx struct {
	b          buckets
	rng        Range
	rngChanged bool  // a split or membership change rewrote rng in this batch
	window     int64 // dedup window, nanoseconds
	ttls       []TTLEntry
	base       uint64      // lock token base of the group
	baseRaised bool        // an OpRaiseBase in this batch raised base
	lockEvents []LockEvent // applied OpLock entries, for Config.OnLock
	entries    int         // entries in the batch (sizes lockEvents)
	children   []Range     // ranges split off in this batch
	onSplit    func(child Range, servers []Server, export func(w io.Writer) error) error
	decided    *decidedCache // answers of committing decides (decided.go); nil: none kept
}

// Apply applies one entry. It is ApplyBatch of one, so both paths produce
// identical state and results.
func (f *FSM) Apply(l *raft.Log) interface{} {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed entries into the bbolt write transaction it
// leaves open across batches (opentx.go). The applied index is written in
// that same transaction (invariant I4): after a crash either the batches
// and their index are on disk or neither is, and raft replays what is
// missing. Entries at or below
// the applied index are replays and are skipped (result nil).
//
// Each result is a *Result for a LogCommand entry, nil for anything else.
// A failure to commit panics: the replica cannot advance deterministically,
// and restarting replays the batch from the log.
func (f *FSM) ApplyBatch(logs []*raft.Log) []interface{} {
	out := make([]interface{}, len(logs))
	start := f.applied.Load()
	if len(logs) == 0 || logs[len(logs)-1].Index <= start {
		return out
	}
	ctx := &applyCtx{rng: f.Range(), window: int64(f.cfg.DedupWindow), onSplit: f.cfg.OnSplit, base: f.base.Load(),
		entries: len(logs), decided: &f.decided}
	applied := start
	f.dbMu.RLock()
	if f.db == nil {
		f.dbMu.RUnlock()
		panic("fsm: apply after Close")
	}
	f.wmu.Lock()
	if err := f.brokenErr(); err != nil {
		f.wmu.Unlock()
		f.dbMu.RUnlock()
		panic(err.Error())
	}
	tx, err := f.writeTxLocked()
	if err == nil {
		err = func() error {
			ctx.b = txBuckets(tx)
			for i, l := range logs {
				if l.Index <= applied {
					continue
				}
				f.wtxBytes += len(l.Data)
				switch l.Type {
				case raft.LogCommand:
					r, err := ctx.applyCommand(l)
					if err != nil {
						return fmt.Errorf("index %d: %w", l.Index, err)
					}
					out[i] = r
				case raft.LogConfiguration:
					if err := ctx.applyConfiguration(l); err != nil {
						return fmt.Errorf("index %d: %w", l.Index, err)
					}
				}
				// Configuration, noop, barrier and future types only advance
				// the index: they carry no state of ours.
				applied = l.Index
			}
			return ctx.b.meta.Put(metaApplied, u64(applied))
		}()
	}
	if err == nil {
		f.wtxBatches++
		// A new range (a split's, whose child starts from state this
		// commit makes durable, or a membership change's) or token base
		// is published below: those batches commit at once, as do full
		// transactions.
		if ctx.rngChanged || ctx.baseRaised || f.commitNowLocked() {
			err = f.commitLocked()
		} else {
			// Before setApplied publishes the batch: a reader that
			// waited for it finds dirty set and commits first.
			f.dirty.Store(true)
		}
	}
	if err != nil {
		// Batches already published may be lost with the transaction:
		// until the panic below ends the process, reads must fail rather
		// than serve the file (set before rollback clears dirty).
		err = fmt.Errorf("fsm: cannot commit entries %d..%d, state cannot advance: %w",
			logs[0].Index, logs[len(logs)-1].Index, err)
		f.broken.CompareAndSwap(nil, &err)
		f.rollbackLocked()
	}
	f.wmu.Unlock()
	f.dbMu.RUnlock()
	if err != nil {
		panic(err.Error())
	}
	if ctx.rngChanged {
		if f.cfg.BeforeRangePublish != nil {
			f.cfg.BeforeRangePublish()
		}
		f.rngMu.Lock()
		f.rng = ctx.rng
		f.rngMu.Unlock()
		f.sizeMu.Lock()
		f.sizeAt = time.Time{} // a split moved data out: measure again
		f.sizeMu.Unlock()
	}
	if ctx.baseRaised {
		f.base.Store(ctx.base)
	}
	f.setApplied(applied)
	if f.cfg.AfterSplit != nil {
		for _, child := range ctx.children {
			f.cfg.AfterSplit(child)
		}
	}
	if f.cfg.OnTTL != nil {
		for _, e := range ctx.ttls {
			f.cfg.OnTTL(e)
		}
	}
	if f.cfg.OnLock != nil {
		for _, e := range ctx.lockEvents {
			f.cfg.OnLock(e)
		}
	}
	return out
}

// applyCommand applies one command entry. A returned error is a storage
// failure (fatal); command outcomes, including invalid bytes, go in Result.
func (c *applyCtx) applyCommand(l *raft.Log) (*Result, error) {
	cmd, err := decodeCommand(l.Data)
	if err != nil {
		return &Result{Index: l.Index, Err: err}, nil
	}
	if cmd.Op == OpTxnBatch {
		return c.txnBatch(cmd, l.Index)
	}
	return c.applyDecoded(cmd, l.Index)
}

// applyDecoded applies a decoded command at index: an entry's, or one of
// an OpTxnBatch's.
func (c *applyCtx) applyDecoded(cmd *Command, index uint64) (*Result, error) {
	var err error
	if cmd.Op == OpNoop {
		// Only advances the applied index: a new leader's ReadIndex barrier.
		// It has no key to route and nothing worth deduplicating.
		return &Result{Index: index}, nil
	}
	if cmd.Op == OpSplit {
		return c.split(cmd, index)
	}
	if cmd.Op == OpRaiseBase {
		return c.raiseBase(cmd, index)
	}
	if cmd.Time > 0 {
		if err := c.pruneDedup(cmd.Time - c.window); err != nil {
			return nil, err
		}
	}
	// Lock commands and fenced gets are idempotent by themselves (lock.Apply
	// by waiter id, token and seq; a fenced get registers the same token
	// again): they skip the dedup window, whose stored results carry
	// neither a lock outcome nor a value.
	dedup := cmd.RequestID != "" && cmd.Op != OpLock && cmd.Op != OpFencedGet
	if dedup {
		if r, err := c.lookupDedup(cmd.RequestID); r != nil || err != nil {
			return r, err
		}
	}
	if !c.rng.Contains(cmd.Key) {
		return &Result{Index: index, Err: &WrongShardError{Key: cloneBytes(cmd.Key), Range: cloneRange(c.rng)}}, nil
	}
	if r, err := c.blockedByIntent(cmd, index); r != nil || err != nil {
		return r, err
	}
	var r *Result
	switch cmd.Op {
	case OpPut:
		r, err = c.put(cmd, index)
	case OpDelete:
		r, err = c.del(cmd, index)
	case OpExpire:
		r, err = c.expire(cmd, index)
	case OpLock:
		r, err = c.lock(cmd, index)
	case OpFencedGet:
		r, err = c.fencedGet(cmd, index)
	case OpTxn:
		r, err = c.txn(cmd, index)
	case OpTxnPrepare:
		r, err = c.txnPrepare(cmd, index)
	case OpTxnRecord:
		r, err = c.txnRecord(cmd, index)
	case OpTxnResolve:
		r, err = c.txnResolve(cmd, index)
	default:
		r = &Result{Index: index, Err: fmt.Errorf("%w: op %v", ErrInvalidCommand, cmd.Op)}
	}
	if err != nil {
		return nil, err
	}
	if dedup && dedupable(r) {
		if err := c.storeDedup(cmd, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// setApplied publishes a new applied index and wakes WaitApplied callers.
func (f *FSM) setApplied(index uint64) {
	f.applied.Store(index)
	if f.afterPublish != nil {
		f.afterPublish(index)
	}
	f.waitMu.Lock()
	close(f.waitCh)
	f.waitCh = make(chan struct{})
	f.waitMu.Unlock()
}
