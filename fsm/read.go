package fsm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"time"

	"go.etcd.io/bbolt"
)

// DefaultScanLimit caps a Scan called with limit <= 0, so a read transaction
// (which pins bbolt pages) never walks an unbounded range.
const DefaultScanLimit = 1000

// Applied returns the index of the last entry applied (commands,
// configuration and all other entry types).
func (f *FSM) Applied() uint64 { return f.applied.Load() }

// WaitApplied returns nil once Applied() >= index, ctx.Err() if ctx ends
// first, or ErrClosed if the FSM is closed first.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		// Take the channel before reading the index: a commit in between
		// closes this channel, so the wake-up cannot be missed.
		f.waitMu.Lock()
		ch := f.waitCh
		f.waitMu.Unlock()
		if f.applied.Load() >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-f.closed:
			return ErrClosed
		}
	}
}

// Range returns a copy of the shard's current range descriptor, as of the
// last committed batch. It can lag a commit by a moment: a read must check
// keys against the range stored with the data it reads (Get, ScanRange do).
func (f *FSM) Range() Range {
	f.rngMu.RLock()
	defer f.rngMu.RUnlock()
	return cloneRange(f.rng)
}

// rangeCache is the last range descriptor decoded by a read: the encoded
// bytes it came from and the decoded value, which is shared and never
// modified.
type rangeCache struct {
	enc []byte
	rng Range
}

// txRange returns the range descriptor stored in tx, the one the data read in
// the same tx belongs to (a split writes the parent's new range in the
// transaction that drops the child's half). Reads check keys against it,
// never against the in-memory copy, which is published only after the commit
// (invariants I2, I5). The descriptor changes rarely, so the decoded value is
// cached under its encoded bytes: a read costs a lookup in the meta bucket
// and a compare of a few dozen bytes. The result is shared: clone it before
// handing it out.
func (f *FSM) txRange(tx *bbolt.Tx) (Range, error) {
	enc := tx.Bucket(bucketMeta).Get(metaRange)
	if c := f.rngCache.Load(); c != nil && bytes.Equal(c.enc, enc) {
		return c.rng, nil
	}
	rng, err := decodeRange(enc)
	if err != nil {
		return Range{}, err
	}
	// enc lives only as long as tx: keep a copy.
	f.rngCache.Store(&rangeCache{enc: cloneBytes(enc), rng: rng})
	return rng, nil
}

// Get returns the key with its value, or nil, nil when absent. A key outside
// the range stored with the data returns a *WrongShardError: this replica's
// data for it, if any, is not authoritative, and a caller that looked the
// key up in an older range (a split just committed) must route again.
func (f *FSM) Get(key []byte) (*KV, error) {
	var kv *KV
	var wrong *WrongShardError
	var met *IntentError
	err := f.view(func(tx *bbolt.Tx) error {
		rng, err := f.txRange(tx)
		if err != nil {
			return err
		}
		if !rng.Contains(key) {
			wrong = &WrongShardError{Key: cloneBytes(key), Range: cloneRange(rng)}
			return nil
		}
		if ie, err := readIntentCheck(tx, key); ie != nil || err != nil {
			met = ie
			return err
		}
		v := tx.Bucket(bucketData).Get(key)
		if v == nil {
			return nil
		}
		kv, err = decodeStored(key, v, true)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: get: %w", err)
	}
	if wrong != nil {
		return nil, wrong
	}
	if met != nil {
		return nil, met // a write intent: the caller meets it (fsm/txn2pc.go)
	}
	return kv, nil
}

// Scan returns keys in [start, end) clipped to the shard's range, in byte
// order; an empty end means the range's end. At most limit keys are returned
// (DefaultScanLimit if limit <= 0); more reports that keys remain, and the
// caller pages by scanning again from the last key + 0x00. A caller that
// needs to know which window the answer covers uses ScanRange.
func (f *FSM) Scan(start, end []byte, limit int, keysOnly bool) (kvs []*KV, more bool, err error) {
	kvs, more, _, err = f.ScanRange(start, end, limit, keysOnly)
	return kvs, more, err
}

// ScanRange is Scan that also returns the range the answer was read under,
// from the same read transaction as the keys: the keys returned are every
// key of [start, end) ∩ rng up to limit, whatever split commits meanwhile.
// A caller that planned the scan with an older range (api/scan.go moves its
// cursor to the range's end) checks that rng still covers its window.
func (f *FSM) ScanRange(start, end []byte, limit int, keysOnly bool) (kvs []*KV, more bool, rng Range, err error) {
	var met *IntentError
	if limit <= 0 {
		limit = DefaultScanLimit
	}
	err = f.view(func(tx *bbolt.Tx) error {
		var err error
		if rng, err = f.txRange(tx); err != nil {
			return err
		}
		rng = cloneRange(rng)
		start, end = rng.clip(start, end)
		c := tx.Bucket(bucketData).Cursor()
		for k, v := c.Seek(start); k != nil; k, v = c.Next() {
			if len(end) > 0 && bytes.Compare(k, end) >= 0 {
				break
			}
			if len(kvs) == limit {
				more = true
				break
			}
			kv, err := decodeStored(k, v, !keysOnly)
			if err != nil {
				return err
			}
			kvs = append(kvs, kv)
		}
		// A write intent on a key of the window the answer covers: the
		// scan meets it like a get (fsm/txn2pc.go).
		if more {
			end = append(cloneBytes(kvs[len(kvs)-1].Key), 0)
		}
		met, err = scanIntentCheck(tx, start, end)
		return err
	})
	if err != nil {
		return nil, false, Range{}, fmt.Errorf("fsm: scan: %w", err)
	}
	if met != nil {
		return nil, false, rng, met
	}
	return kvs, more, rng, nil
}

// TTLKeys returns every key that currently has a TTL, with the mod_index an
// OpExpire for it must carry. The leader calls it when it takes over to
// restart every countdown (invariant I10).
func (f *FSM) TTLKeys() ([]TTLEntry, error) {
	var out []TTLEntry
	err := f.view(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketTTL).ForEach(func(k, v []byte) error {
			e, err := decodeTTL(k, v)
			if err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: ttl keys: %w", err)
	}
	return out, nil
}

// Hash returns the applied index and a sha256 over the whole replicated
// state (every bucket, including meta with the range and applied index),
// read in one transaction so the two agree. Replicas at the same applied
// index must return the same sum.
func (f *FSM) Hash() (applied uint64, sum []byte, err error) {
	err = f.view(func(tx *bbolt.Tx) error {
		var err error
		if applied, _, err = readMeta(tx); err != nil {
			return err
		}
		h := sha256.New()
		for _, name := range allBuckets {
			writeLenPrefixed(h, name)
			err := tx.Bucket(name).ForEach(func(k, v []byte) error {
				writeLenPrefixed(h, k)
				writeLenPrefixed(h, v)
				return nil
			})
			if err != nil {
				return err
			}
		}
		sum = h.Sum(nil)
		return nil
	})
	if err != nil {
		return 0, nil, fmt.Errorf("fsm: hash: %w", err)
	}
	return applied, sum, nil
}

// writeLenPrefixed keeps ("ab","c") and ("a","bc") from hashing the same.
func writeLenPrefixed(h hash.Hash, p []byte) {
	h.Write(binary.AppendUvarint(nil, uint64(len(p))))
	h.Write(p)
}

// SizeBytes is the bytes of user data in use (the data bucket's pages, or
// its bytes inline in the root page while it is small),
// refreshed at most every sizeCacheFor: the file size would never shrink
// after a split moved half the data out.
func (f *FSM) SizeBytes() int64 {
	f.sizeMu.Lock()
	defer f.sizeMu.Unlock()
	if !f.sizeAt.IsZero() && time.Since(f.sizeAt) < sizeCacheFor {
		return f.size
	}
	var n int64
	_ = f.view(func(tx *bbolt.Tx) error {
		st := tx.Bucket(bucketData).Stats()
		// A small bucket lives inline in its parent's page and has no
		// pages of its own: its bytes are InlineBucketInuse, which counts
		// the inline page's header too (an empty shard is 0 B, not 16).
		n = int64(st.LeafInuse + st.BranchInuse + st.InlineBucketInuse - st.InlineBucketN*inlinePageHeader)
		return nil
	})
	f.size, f.sizeAt = n, time.Now()
	return n
}

// inlinePageHeader is the page header bbolt counts in InlineBucketInuse for
// each inline bucket (its pageHeaderSize).
const inlinePageHeader = 16

// sizeCacheFor bounds how often SizeBytes walks the data bucket's pages.
const sizeCacheFor = 5 * time.Second

// clip narrows the window [start, end) (an empty end: no bound) to the
// range, for a scan of any bucket keyed like data (keys, lock names).
func (r Range) clip(start, end []byte) ([]byte, []byte) {
	if bytes.Compare(start, r.Start) < 0 {
		start = r.Start
	}
	if len(end) == 0 || (len(r.End) > 0 && bytes.Compare(end, r.End) > 0) {
		end = r.End
	}
	return start, end
}
