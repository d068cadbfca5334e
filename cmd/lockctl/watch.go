package main

import (
	"context"
	"time"

	"github.com/cairndb/cairn/client"
)

// watchMinRound is the least time between two blocking queries that return
// no change, so a server that answers at once cannot make watch spin.
const watchMinRound = 200 * time.Millisecond

// watch emits the lock's state, then each new state whose index differs
// from the last emitted, until ctx ends or a call fails.
func watch(ctx context.Context, c *client.Client, name string, emit func(*client.LockInfo) error) error {
	li, err := c.LockStatus(ctx, name)
	if err != nil {
		return err
	}
	if err := emit(li); err != nil {
		return err
	}
	for ctx.Err() == nil {
		start := time.Now()
		next, err := c.WatchLock(ctx, name, li.Index, watchWait)
		if err != nil {
			return err
		}
		if next.Index != li.Index {
			if err := emit(next); err != nil {
				return err
			}
			li = next
			continue
		}
		if d := watchMinRound - time.Since(start); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
	}
	return ctx.Err()
}
