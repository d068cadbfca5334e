package fsm

import (
	"bytes"
	"encoding/binary"
)

// put executes an OpPut whose key is inside the range.
func (c *applyCtx) put(cmd *Command, index uint64) (*Result, error) {
	cur, err := c.load(cmd.Key)
	if err != nil {
		return nil, err
	}
	return c.putOver(cmd, index, cur)
}

// putOver is put over cur, the key's current state (nil: absent), which the
// caller loaded in this same bbolt transaction and nothing wrote since (a
// one-shard transaction's compares read it already: fsm/txn.go).
func (c *applyCtx) putOver(cmd *Command, index uint64, cur *KV) (*Result, error) {
	fk, stale, err := c.checkFence(cmd)
	if err != nil {
		return nil, err
	}
	if stale != nil {
		return &Result{Index: index, Err: stale}, nil
	}
	if !condHolds(cmd.Cond, cur) {
		return &Result{Index: index, Err: &ConditionError{Key: cloneBytes(cmd.Key), Current: cur}}, nil
	}
	kv := &KV{Key: cmd.Key, Value: cmd.Value, CreateIndex: index, ModIndex: index, Version: 1, TTL: cmd.TTL}
	if cur != nil {
		kv.CreateIndex = cur.CreateIndex
		kv.Version = cur.Version + 1
	}
	if err := c.b.data.Put(cmd.Key, encodeStored(kv)); err != nil {
		return nil, err
	}
	if cmd.TTL > 0 {
		err = c.b.ttl.Put(cmd.Key, encodeTTL(cmd.TTL, index))
		c.ttls = append(c.ttls, TTLEntry{Key: cmd.Key, ModIndex: index, TTL: cmd.TTL})
	} else {
		err = c.b.ttl.Delete(cmd.Key)
	}
	if err != nil {
		return nil, err
	}
	if err := c.acceptFence(fk, cmd); err != nil {
		return nil, err
	}
	meta := *kv
	meta.Value = nil
	return &Result{Index: index, KV: &meta, Prev: prevIf(cmd, cur)}, nil
}

// del executes an OpDelete whose key is inside the range.
func (c *applyCtx) del(cmd *Command, index uint64) (*Result, error) {
	cur, err := c.load(cmd.Key)
	if err != nil {
		return nil, err
	}
	fk, stale, err := c.checkFence(cmd)
	if err != nil {
		return nil, err
	}
	if stale != nil {
		return &Result{Index: index, Err: stale}, nil
	}
	if !condHolds(cmd.Cond, cur) {
		return &Result{Index: index, Err: &ConditionError{Key: cloneBytes(cmd.Key), Current: cur}}, nil
	}
	if err := c.acceptFence(fk, cmd); err != nil {
		return nil, err
	}
	r := &Result{Index: index, Prev: prevIf(cmd, cur)}
	if cur == nil {
		return r, nil
	}
	r.Deleted = 1
	return r, c.remove(cmd.Key)
}

// expire executes a leader-proposed expiry. The mod_index check makes it a
// no-op for a key rewritten after the leader scheduled the expiry.
func (c *applyCtx) expire(cmd *Command, index uint64) (*Result, error) {
	cur, err := c.load(cmd.Key)
	if err != nil {
		return nil, err
	}
	r := &Result{Index: index}
	if cur == nil || cur.TTL <= 0 || cur.ModIndex != cmd.ModIndex {
		return r, nil
	}
	r.Deleted = 1
	r.Prev = prevIf(cmd, cur)
	return r, c.remove(cmd.Key)
}

func (c *applyCtx) remove(key []byte) error {
	if err := c.b.data.Delete(key); err != nil {
		return err
	}
	return c.b.ttl.Delete(key)
}

// load returns the stored kv with its value, or nil when absent.
func (c *applyCtx) load(key []byte) (*KV, error) {
	v := c.b.data.Get(key)
	if v == nil {
		return nil, nil
	}
	return decodeStored(key, v, true)
}

func prevIf(cmd *Command, cur *KV) *KV {
	if !cmd.Prev {
		return nil
	}
	return cur
}

func condHolds(cond *Condition, cur *KV) bool {
	if cond == nil {
		return true
	}
	switch cond.Kind {
	case CondModIndex:
		if cond.ModIndex == 0 {
			return cur == nil
		}
		return cur != nil && cur.ModIndex == cond.ModIndex
	case CondAbsent:
		return cur == nil
	case CondValue:
		return cur != nil && bytes.Equal(cur.Value, cond.Value)
	}
	return true // CondNone
}

// checkFence implements invariant I11 for a fenced write: it returns the
// fence bucket key and a *StaleTokenError when a higher token for the same
// lock was already accepted on the key. Equal tokens pass: a lock holder may
// write many times with its token.
func (c *applyCtx) checkFence(cmd *Command) ([]byte, *StaleTokenError, error) {
	if cmd.Fence == nil {
		return nil, nil, nil
	}
	fk := make([]byte, 0, len(cmd.Fence.Lock)+1+len(cmd.Key))
	fk = append(append(append(fk, cmd.Fence.Lock...), 0), cmd.Key...)
	v := c.b.fence.Get(fk)
	if v == nil {
		return fk, nil, nil
	}
	if len(v) != 8 {
		return nil, nil, errCorrupt
	}
	if accepted := binary.BigEndian.Uint64(v); accepted > cmd.Fence.Token {
		return nil, &StaleTokenError{
			Key: cloneBytes(cmd.Key), Lock: cmd.Fence.Lock, Token: cmd.Fence.Token, Accepted: accepted,
		}, nil
	}
	return fk, nil, nil
}

// acceptFence records the command's token as the highest accepted for its
// (lock, key). Called only once the write is going ahead.
func (c *applyCtx) acceptFence(fk []byte, cmd *Command) error {
	if fk == nil {
		return nil
	}
	if v := c.b.fence.Get(fk); len(v) == 8 && binary.BigEndian.Uint64(v) >= cmd.Fence.Token {
		return nil
	}
	return c.b.fence.Put(fk, u64(cmd.Fence.Token))
}
