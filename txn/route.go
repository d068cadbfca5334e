package txn

import (
	"bytes"
	"fmt"
	"slices"
)

// Lookup maps a key to the shard that owns it and that range's epoch
// (invariant I5: every participant command carries the epoch it was routed
// with). It is the router's range cache; an error stops the routing.
type Lookup func(key []byte) (shard, epoch uint64, err error)

// KeyIntent is one key a participant locks, and how.
type KeyIntent struct {
	Key    []byte
	Access Access
}

// Participant is one shard's part of a transaction: the keys it locks
// (sorted, distinct) and the compares and ops that fall on it (indices into
// the request's Compare, Success and Failure).
type Participant struct {
	Shard   uint64
	Epoch   uint64
	Keys    []KeyIntent
	Compare []int
	Success []int
	Failure []int
}

// Routing is a transaction split by shard.
type Routing struct {
	Participants []Participant // sorted by shard id
	// Anchor is the key whose shard holds the transaction record: the first
	// write key of the success branch, else of the failure branch, else the
	// request's first key. The record lives beside the transaction's own
	// keys, so it moves and splits with them, and a one-shard transaction
	// needs no other shard.
	Anchor      []byte
	AnchorShard uint64
}

// SingleShard reports whether the transaction runs as one raft entry on one
// shard (no intents, no record).
func (rt *Routing) SingleShard() bool { return len(rt.Participants) == 1 }

// Shards returns the participant shard ids, sorted.
func (rt *Routing) Shards() []uint64 {
	out := make([]uint64, len(rt.Participants))
	for i, p := range rt.Participants {
		out[i] = p.Shard
	}
	return out
}

// Participant returns the part of shard id, or nil.
func (rt *Routing) Participant(id uint64) *Participant {
	i, ok := slices.BinarySearchFunc(rt.Participants, id, func(p Participant, id uint64) int {
		return cmpU64(p.Shard, id)
	})
	if !ok {
		return nil
	}
	return &rt.Participants[i]
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Route splits a validated request by shard. Two keys that the lookup puts
// on one shard with different epochs are refused (the range cache changed
// under the routing; route again).
func Route(r *Request, lookup Lookup) (Routing, error) {
	type part struct {
		Participant
		keys map[string]Access
	}
	parts := map[uint64]*part{}
	get := func(key []byte) (*part, error) {
		id, epoch, err := lookup(key)
		if err != nil {
			return nil, fmt.Errorf("txn: route %q: %w", key, err)
		}
		p := parts[id]
		if p == nil {
			p = &part{Participant: Participant{Shard: id, Epoch: epoch}, keys: map[string]Access{}}
			parts[id] = p
		} else if p.Epoch != epoch {
			return nil, fmt.Errorf("txn: route %q: shard %d seen at epochs %d and %d", key, id, p.Epoch, epoch)
		}
		return p, nil
	}
	access := r.KeyAccess()
	for i, c := range r.Compare {
		p, err := get(c.Key)
		if err != nil {
			return Routing{}, err
		}
		p.Compare = append(p.Compare, i)
		p.keys[string(c.Key)] = access[string(c.Key)]
	}
	for _, br := range []struct {
		ops []Op
		idx func(p *part) *[]int
	}{
		{r.Success, func(p *part) *[]int { return &p.Success }},
		{r.Failure, func(p *part) *[]int { return &p.Failure }},
	} {
		for i, o := range br.ops {
			p, err := get(o.Key)
			if err != nil {
				return Routing{}, err
			}
			*br.idx(p) = append(*br.idx(p), i)
			p.keys[string(o.Key)] = access[string(o.Key)]
		}
	}
	var rt Routing
	for _, p := range parts {
		for k, a := range p.keys {
			p.Keys = append(p.Keys, KeyIntent{Key: []byte(k), Access: a})
		}
		slices.SortFunc(p.Keys, func(a, b KeyIntent) int { return bytes.Compare(a.Key, b.Key) })
		rt.Participants = append(rt.Participants, p.Participant)
	}
	slices.SortFunc(rt.Participants, func(a, b Participant) int { return cmpU64(a.Shard, b.Shard) })
	rt.Anchor = AnchorKey(r)
	if rt.Anchor != nil {
		// From the participant that holds the anchor key, not from a lookup
		// of its own: the range map may change between two lookups, and
		// the anchor's shard must be a participant's.
		for _, p := range rt.Participants {
			if slices.ContainsFunc(p.Keys, func(k KeyIntent) bool { return bytes.Equal(k.Key, rt.Anchor) }) {
				rt.AnchorShard = p.Shard
			}
		}
	}
	return rt, nil
}

// AnchorKey returns the key whose shard holds the record (see Routing).
func AnchorKey(r *Request) []byte {
	for _, br := range [][]Op{r.Success, r.Failure} {
		for _, o := range br {
			if o.Kind.IsWrite() {
				return o.Key
			}
		}
	}
	if ks := r.Keys(); len(ks) > 0 {
		return ks[0]
	}
	return nil
}
