package fsm

import "fmt"

// Dedup (invariant I7): the result of every command with a request id is kept
// for DedupWindow of proposer time, so a client retry within the window gets
// the original result instead of a second application.

// maxPrunePerCommand bounds the work one command does for pruning, so a long
// idle gap does not turn one apply into an unbounded delete; the backlog is
// worked off by the following commands.
const maxPrunePerCommand = 64

// timeKey encodes t so that byte order is signed numeric order.
func timeKey(t int64) []byte {
	return u64(uint64(t) ^ 1<<63)
}

func (c *applyCtx) lookupDedup(id string) (*Result, error) {
	v := c.b.dedup.Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	if len(v) < 8 {
		return nil, fmt.Errorf("%w: dedup record %q", errCorrupt, id)
	}
	return decodeResult(v[8:])
}

func (c *applyCtx) storeDedup(cmd *Command, r *Result) error {
	tk := timeKey(cmd.Time)
	val := append(append([]byte(nil), tk...), encodeResult(r)...)
	if err := c.b.dedup.Put([]byte(cmd.RequestID), val); err != nil {
		return err
	}
	return c.b.dedupTime.Put(append(tk, cmd.RequestID...), []byte{})
}

// pruneDedup deletes up to maxPrunePerCommand entries older than cutoff,
// oldest first. cutoff comes from the command's own Time, never the local
// clock (invariant I3).
func (c *applyCtx) pruneDedup(cutoff int64) error {
	limit := timeKey(cutoff)
	var victims [][]byte
	cur := c.b.dedupTime.Cursor()
	// Collect first, delete after: deleting under a bbolt cursor can make
	// Next skip an entry.
	for k, _ := cur.First(); k != nil && len(victims) < maxPrunePerCommand; k, _ = cur.Next() {
		if len(k) < 8 || string(k[:8]) >= string(limit) {
			break
		}
		victims = append(victims, append([]byte(nil), k...))
	}
	for _, k := range victims {
		if err := c.b.dedup.Delete(k[8:]); err != nil {
			return err
		}
		if err := c.b.dedupTime.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
