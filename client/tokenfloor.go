package client

import (
	"context"
	"fmt"
	"slices"
	"strconv"
)

// The token floor keeps fencing tokens increasing across a restore into a
// new cluster (invariant I9, lock/DESIGN.md): a backup records a floor above
// every token the old cluster handed out, and a restore raises every shard's
// token base to it before it writes a key. A restore into the cluster the
// backup came from raises nothing (its bases are above the floor already).

// maxShardRounds bounds the passes over the shard list: a split while a
// pass runs adds a shard the next pass covers.
const maxShardRounds = 5

// TokenFloor returns a number above every fencing token the cluster has
// handed out so far: the highest of the shards' token ceilings, each read on
// the shard's leader after a linearizable read.
func (c *Client) TokenFloor(ctx context.Context) (uint64, error) {
	var floor uint64
	err := c.eachShard(ctx, func(id uint64) error {
		var out struct {
			Ceiling uint64 `json:"token_ceiling"`
		}
		path := "/v1/cluster/shards/" + strconv.FormatUint(id, 10) + "/token-ceiling"
		if _, err := c.Do(ctx, Request{Method: "GET", Path: path}, &out); err != nil {
			return fmt.Errorf("token ceiling of shard %d: %w", id, err)
		}
		floor = max(floor, out.Ceiling)
		return nil
	})
	return floor, err
}

// RaiseTokenFloor raises every shard's token base to at least floor: every
// token the cluster hands out afterwards is above it. Raising again, or to a
// lower floor, changes nothing.
func (c *Client) RaiseTokenFloor(ctx context.Context, floor uint64) error {
	return c.eachShard(ctx, func(id uint64) error {
		path := "/v1/cluster/shards/" + strconv.FormatUint(id, 10) + "/token-floor"
		// Idempotent: a base is only ever raised, so sending it twice is safe.
		if _, err := c.Do(ctx, Request{Method: "POST", Path: path, Body: map[string]uint64{"floor": floor}, Idempotent: true}, nil); err != nil {
			return fmt.Errorf("raise the token base of shard %d: %w", id, err)
		}
		return nil
	})
}

// eachShard calls fn once for every shard of the cluster, listing the shards
// again until a pass finds none it has not seen (a split meanwhile).
func (c *Client) eachShard(ctx context.Context, fn func(id uint64) error) error {
	var done []uint64
	for range maxShardRounds {
		st, err := c.Cluster(ctx)
		if err != nil {
			return err
		}
		fresh := 0
		for _, s := range st.Shards {
			if slices.Contains(done, s.ID) {
				continue
			}
			fresh++
			if err := fn(s.ID); err != nil {
				return err
			}
			done = append(done, s.ID)
		}
		if fresh == 0 {
			return nil
		}
	}
	return fmt.Errorf("%w: the shard list kept changing over %d passes", ErrUnavailable, maxShardRounds)
}
