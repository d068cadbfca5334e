package main

import (
	"context"
	"time"

	"github.com/cairndb/cairn/client"
)

// watchMinRound is the least time between two blocking queries that return
// no change, so a server that answers at once cannot make watch spin.
const watchMinRound = 200 * time.Millisecond

// watch emits the lock's state, then each new state whose holders differ
// from the last one's, until ctx ends or a call fails.
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
		changed := !sameHolders(li, next)
		li = next // a free lock's index moves with its shard: follow it
		if changed {
			if err := emit(next); err != nil {
				return err
			}
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

// sameHolders reports whether a and b have the same holders (by token).
func sameHolders(a, b *client.LockInfo) bool {
	if a.Held != b.Held || a.Token != b.Token || len(a.Holders) != len(b.Holders) {
		return false
	}
	for i := range a.Holders {
		if a.Holders[i].Token != b.Holders[i].Token {
			return false
		}
	}
	return true
}
