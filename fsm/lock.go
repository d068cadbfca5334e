package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"go.etcd.io/bbolt"

	"github.com/cairndb/cairn/lock"
)

// Locks (lock/DESIGN.md): a lock named N is a record in bucket `locks` of
// the shard whose range holds the key N. An OpLock entry carries one
// lock.Command; apply runs lock.Apply on the stored record inside the batch's
// transaction, with the entry's index, the group's token base and the
// proposer's time, and stores what it returns. The request-id dedup window is
// not used: lock.Apply makes a retried acquire idempotent by its WaiterID,
// and renew, release and the leader's commands are idempotent by token and
// sequence numbers.

// LockEvent is one applied OpLock entry, reported through Config.OnLock after
// its batch committed: the shard's lease tracker observes Next, and the
// requests waiting for a grant or a change on this replica are woken.
type LockEvent struct {
	Name   string
	Index  uint64       // raft index of the entry
	Seq    uint64       // base+index
	Prev   *lock.Record // the record before the entry (nil: none)
	Next   *lock.Record // the record after it (nil: dropped, the lock is free)
	Result lock.Result
}

// lock applies an OpLock whose key is inside the range.
func (c *applyCtx) lock(cmd *Command, index uint64) (*Result, error) {
	lc, err := lock.DecodeCommand(cmd.Value)
	if err != nil {
		return &Result{Index: index, Err: fmt.Errorf("%w: %v", ErrInvalidCommand, err)}, nil
	}
	if lc.LockName() != string(cmd.Key) {
		return &Result{Index: index, Err: fmt.Errorf("%w: lock command for %q carried under key %q",
			ErrInvalidCommand, lc.LockName(), cmd.Key)}, nil
	}
	var prev *lock.Record
	if v := c.b.locks.Get(cmd.Key); v != nil {
		if prev, err = lock.DecodeRecord(v); err != nil {
			return nil, fmt.Errorf("%w: lock record %q: %v", errCorrupt, cmd.Key, err)
		}
	}
	next, res := lock.Apply(prev, lc, index, c.base, cmd.Time)
	if res.Err == nil {
		if next == nil {
			err = c.b.locks.Delete(cmd.Key)
		} else {
			err = c.b.locks.Put(cmd.Key, lock.EncodeRecord(next))
		}
		if err != nil {
			return nil, err
		}
	}
	seq := c.base + index
	if c.lockEvents == nil {
		// Lock entries tend to come in runs: one slice for the batch's
		// events instead of growing it entry by entry.
		c.lockEvents = make([]LockEvent, 0, min(c.entries, 64))
	}
	c.lockEvents = append(c.lockEvents, LockEvent{Name: string(cmd.Key), Index: index, Seq: seq,
		Prev: prev, Next: next, Result: res})
	return &Result{Index: index, Lock: &LockResult{Result: res, Record: next, Seq: seq}}, nil
}

// fencedGet executes an OpFencedGet whose key is inside the range: the fence
// check and registration of a write (I11), then the key's current value.
func (c *applyCtx) fencedGet(cmd *Command, index uint64) (*Result, error) {
	fk, stale, err := c.checkFence(cmd)
	if err != nil {
		return nil, err
	}
	if stale != nil {
		return &Result{Index: index, Err: stale}, nil
	}
	if err := c.acceptFence(fk, cmd); err != nil {
		return nil, err
	}
	cur, err := c.load(cmd.Key)
	if err != nil {
		return nil, err
	}
	return &Result{Index: index, KV: cur}, nil
}

// LockRecord returns the record of lock name (nil when the lock is free) and
// the applied index it reflects, read in one transaction. A name outside the
// range stored with the records returns a *WrongShardError, as Get does.
func (f *FSM) LockRecord(name []byte) (*lock.Record, uint64, error) {
	var rec *lock.Record
	var applied uint64
	var wrong *WrongShardError
	err := f.view(func(tx *bbolt.Tx) error {
		rng, err := f.txRange(tx)
		if err != nil {
			return err
		}
		applied = binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(metaApplied))
		if !rng.Contains(name) {
			wrong = &WrongShardError{Key: cloneBytes(name), Range: cloneRange(rng)}
			return nil
		}
		if v := tx.Bucket(bucketLocks).Get(name); v != nil {
			rec, err = lock.DecodeRecord(v)
		}
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("fsm: lock record: %w", err)
	}
	if wrong != nil {
		return nil, applied, wrong
	}
	return rec, applied, nil
}

// ScanLocks returns the records of locks named in [start, end) clipped to
// the shard's range, in name order, at most limit (DefaultScanLimit if
// limit <= 0); more reports that records remain (page from the last name +
// 0x00). ScanLocksRange also returns the range the answer was read under.
func (f *FSM) ScanLocks(start, end []byte, limit int) ([]*lock.Record, bool, error) {
	recs, more, _, _, err := f.ScanLocksRange(start, end, limit)
	return recs, more, err
}

// ScanLocksRange is ScanLocks that also returns, from the same read
// transaction, the range the records belong to and the applied index they
// reflect (see ScanRange).
func (f *FSM) ScanLocksRange(start, end []byte, limit int) (recs []*lock.Record, more bool, rng Range, applied uint64, err error) {
	if limit <= 0 {
		limit = DefaultScanLimit
	}
	err = f.view(func(tx *bbolt.Tx) error {
		var err error
		if rng, err = f.txRange(tx); err != nil {
			return err
		}
		rng = cloneRange(rng)
		applied = binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(metaApplied))
		start, end = rng.clip(start, end)
		cur := tx.Bucket(bucketLocks).Cursor()
		for k, v := cur.Seek(start); k != nil; k, v = cur.Next() {
			if len(end) > 0 && bytes.Compare(k, end) >= 0 {
				return nil
			}
			if len(recs) == limit {
				more = true
				return nil
			}
			rec, err := lock.DecodeRecord(v)
			if err != nil {
				return fmt.Errorf("%w: lock record %q: %v", errCorrupt, k, err)
			}
			recs = append(recs, rec)
		}
		return nil
	})
	if err != nil {
		return nil, false, Range{}, 0, fmt.Errorf("fsm: scan locks: %w", err)
	}
	return recs, more, rng, applied, nil
}

// LockRecords returns every lock record of the shard (the leader's tracker
// loads them when it takes over), with the applied index they reflect.
func (f *FSM) LockRecords() ([]*lock.Record, uint64, error) {
	var out []*lock.Record
	var applied uint64
	err := f.view(func(tx *bbolt.Tx) error {
		applied = binary.BigEndian.Uint64(tx.Bucket(bucketMeta).Get(metaApplied))
		return tx.Bucket(bucketLocks).ForEach(func(k, v []byte) error {
			rec, err := lock.DecodeRecord(v)
			if err != nil {
				return fmt.Errorf("%w: lock record %q: %v", errCorrupt, k, err)
			}
			out = append(out, rec)
			return nil
		})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("fsm: lock records: %w", err)
	}
	return out, applied, nil
}

// raiseBase applies an OpRaiseBase: the token base becomes the floor in the
// command if that is higher. Commands after it in the batch use the new
// base; FSM.base follows once the batch commits.
func (c *applyCtx) raiseBase(cmd *Command, index uint64) (*Result, error) {
	floor := binary.BigEndian.Uint64(cmd.Value)
	if floor > c.base {
		if err := c.b.meta.Put(metaTokenBase, u64(floor)); err != nil {
			return nil, err
		}
		c.base, c.baseRaised = floor, true
	}
	return &Result{Index: index}, nil
}
