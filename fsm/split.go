package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// ChildAppliedIndex is the applied index of a range created by a split: its
// raft group starts from a snapshot at index 1 holding the parent's half.
const ChildAppliedIndex = 1

// split applies an OpSplit (invariants I5, I6). The command was decided at
// an epoch; if the range moved on since, nothing happens. Otherwise the
// child's half is exported through OnSplit while this transaction still
// holds it, then dropped here, and both halves take epoch+1.
func (c *applyCtx) split(cmd *Command, index uint64) (*Result, error) {
	if cmd.Epoch != c.rng.Epoch {
		return &Result{Index: index, Err: &StaleEpochError{Epoch: cmd.Epoch, Range: cloneRange(c.rng)}}, nil
	}
	if !c.rng.Contains(cmd.Key) || bytes.Equal(cmd.Key, c.rng.Start) || cmd.ChildID == c.rng.ID {
		return &Result{Index: index, Err: fmt.Errorf("%w: split key %q is not strictly inside range %d [%q, %q)",
			ErrInvalidCommand, cmd.Key, c.rng.ID, c.rng.Start, c.rng.End)}, nil
	}
	parent := cloneRange(c.rng)
	parent.End = cloneBytes(cmd.Key)
	parent.Epoch++
	child := Range{ID: cmd.ChildID, Start: cloneBytes(cmd.Key), End: cloneBytes(c.rng.End),
		Epoch: parent.Epoch, Replicas: voters(cmd.Servers)}
	if c.onSplit != nil {
		export := func(w io.Writer) error { return c.exportChild(w, child, c.base+index) }
		if err := c.onSplit(child, cmd.Servers, export); err != nil {
			return nil, fmt.Errorf("prepare child range %d: %w", child.ID, err)
		}
	}
	if err := c.dropFrom(cmd.Key); err != nil {
		return nil, err
	}
	if err := c.setRange(parent); err != nil {
		return nil, err
	}
	c.children = append(c.children, child)
	return &Result{Index: index}, nil
}

// applyConfiguration follows raft membership: the range's replicas are the
// configuration's voters, and a change to them bumps the epoch (I6). An
// entry that does not decode (raft never writes one) is skipped, the same
// way on every replica.
func (c *applyCtx) applyConfiguration(l *raft.Log) error {
	conf, ok := decodeConfiguration(l.Data)
	if !ok {
		return nil
	}
	var ids []string
	for _, s := range conf.Servers {
		if s.Suffrage == raft.Voter {
			ids = append(ids, string(s.ID))
		}
	}
	sort.Strings(ids)
	cur := append([]string(nil), c.rng.Replicas...)
	sort.Strings(cur)
	if slices.Equal(ids, cur) {
		return nil
	}
	next := cloneRange(c.rng)
	next.Replicas = ids
	next.Epoch++
	return c.setRange(next)
}

func decodeConfiguration(b []byte) (conf raft.Configuration, ok bool) {
	defer func() {
		if recover() != nil { // raft.DecodeConfiguration panics on garbage
			ok = false
		}
	}()
	return raft.DecodeConfiguration(b), true
}

func (c *applyCtx) setRange(r Range) error {
	if err := c.b.meta.Put(metaRange, encodeRange(r)); err != nil {
		return err
	}
	c.rng, c.rngChanged = r, true
	return nil
}

// dropFrom deletes every key at or after from (the child's half) from the
// data, ttl, locks and fence buckets.
func (c *applyCtx) dropFrom(from []byte) error {
	for _, b := range []*bbolt.Bucket{c.b.data, c.b.ttl, c.b.locks, c.b.intents} {
		var keys [][]byte
		cur := b.Cursor()
		for k, _ := cur.Seek(from); k != nil; k, _ = cur.Next() {
			keys = append(keys, cloneBytes(k))
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
	}
	var fences [][]byte
	err := c.b.fence.ForEach(func(k, _ []byte) error {
		if fenceKeyOf(k) != nil && bytes.Compare(fenceKeyOf(k), from) >= 0 {
			fences = append(fences, cloneBytes(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range fences {
		if err := c.b.fence.Delete(k); err != nil {
			return err
		}
	}
	return c.dropTxnRecordsFrom(from)
}

// fenceKeyOf returns the key part of a fence bucket key (lock 0x00 key).
func fenceKeyOf(k []byte) []byte {
	i := bytes.IndexByte(k, 0)
	if i < 0 {
		return nil
	}
	return k[i+1:]
}

// exportChild writes the child's initial state in the snapshot stream
// format: its keys, TTLs, lock records and fences, every dedup entry (a
// retried request must still be recognised after the split, I7), its range,
// applied index ChildAppliedIndex and lock token base (the parent's base +
// the split's index, so the child's sequence numbers start above every one
// the parent reached: I9, lock/DESIGN.md).
func (c *applyCtx) exportChild(w io.Writer, child Range, base uint64) error {
	sw := newSnapWriter(w)
	for i, name := range allBuckets {
		if err := c.exportBucket(name, i, child, base, sw.record); err != nil {
			return err
		}
	}
	return sw.finish()
}

func (c *applyCtx) exportBucket(name []byte, idx int, child Range, base uint64, emit func(int, []byte, []byte) error) error {
	switch {
	case bytes.Equal(name, bucketMeta):
		for _, kv := range [][2][]byte{
			{metaApplied, u64(ChildAppliedIndex)},
			{metaFormat, []byte{storeFormat}},
			{metaRange, encodeRange(child)},
			{metaTokenBase, u64(base)},
		} {
			if err := emit(idx, kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	case bytes.Equal(name, bucketRecords), bytes.Equal(name, bucketTombstones), bytes.Equal(name, bucketTxnGC):
		return c.exportTxnBucket(name, idx, child, emit)
	case bytes.Equal(name, bucketData), bytes.Equal(name, bucketTTL), bytes.Equal(name, bucketLocks),
		bytes.Equal(name, bucketIntents):
		b := c.b.data
		if bytes.Equal(name, bucketTTL) {
			b = c.b.ttl
		} else if bytes.Equal(name, bucketLocks) {
			b = c.b.locks
		} else if bytes.Equal(name, bucketIntents) {
			b = c.b.intents
		}
		cur := b.Cursor()
		for k, v := cur.Seek(child.Start); k != nil && child.Contains(k); k, v = cur.Next() {
			if err := emit(idx, k, v); err != nil {
				return err
			}
		}
		return nil
	case bytes.Equal(name, bucketFence):
		return c.b.fence.ForEach(func(k, v []byte) error {
			if key := fenceKeyOf(k); key != nil && child.Contains(key) {
				return emit(idx, k, v)
			}
			return nil
		})
	}
	b := c.b.dedup
	if bytes.Equal(name, bucketDedupTime) {
		b = c.b.dedupTime
	}
	return b.ForEach(func(k, v []byte) error { return emit(idx, k, v) })
}

func voters(servers []Server) []string {
	var ids []string
	for _, s := range servers {
		if s.Voter {
			ids = append(ids, s.ID)
		}
	}
	sort.Strings(ids)
	return ids
}

// ErrNoSplitKey means the range holds too little data to split.
var ErrNoSplitKey = errors.New("fsm: range has no key to split at")

// SplitKey returns the key at which the range's data divides roughly in half
// by size. It never returns the range's start key.
func (f *FSM) SplitKey() ([]byte, error) {
	var rng Range
	var key []byte
	err := f.view(func(tx *bbolt.Tx) error {
		var err error
		if rng, err = f.txRange(tx); err != nil {
			return err
		}
		b := tx.Bucket(bucketData)
		var total int64
		_ = b.ForEach(func(k, v []byte) error { total += int64(len(k) + len(v)); return nil })
		var sum int64
		return b.ForEach(func(k, v []byte) error {
			sum += int64(len(k) + len(v))
			if key == nil && sum*2 >= total && !bytes.Equal(k, rng.Start) {
				key = cloneBytes(k)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if key == nil || !rng.Contains(key) {
		return nil, ErrNoSplitKey
	}
	return key, nil
}
