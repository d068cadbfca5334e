package shard

import (
	"container/heap"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/clock"
)

// Clock is the time source for every deadline and bound the replica decides
// (TTL expiry, stale-read bounds, proposal times; later lock leases). Only
// durations between two Now calls matter. It is internal/clock's, shared by
// every deciding package.
type Clock = clock.Clock

// ttlManager runs TTL countdowns on the leader only. A key's countdown starts
// when this replica learns of it as leader, so a key may outlive its TTL
// across a failover but never expires early (invariant I10). Expiry is a
// committed OpExpire conditioned on the key's mod_index.
type ttlManager struct {
	mu     sync.Mutex
	active bool
	queue  ttlHeap
	wake   chan struct{}
}

func newTTLManager() *ttlManager {
	return &ttlManager{wake: make(chan struct{}, 1)}
}

// add schedules e to expire at deadline if the manager is running (this
// replica leads). Called on the apply goroutine; never blocks.
func (m *ttlManager) add(deadline time.Time, e fsm.TTLEntry) {
	m.mu.Lock()
	if m.active {
		heap.Push(&m.queue, ttlItem{deadline: deadline, entry: e})
	}
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// run loads every TTL key, then proposes expiries as deadlines pass, until
// ctx ends.
func (m *ttlManager) run(ctx context.Context, r *Replica) {
	m.mu.Lock()
	m.active = true
	m.queue = m.queue[:0]
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.active = false
		m.queue = nil
		m.mu.Unlock()
	}()
	entries, err := r.fsm.TTLKeys()
	if err != nil {
		r.log.Error("load ttl keys", "err", err)
	}
	now := r.clock.Now()
	for _, e := range entries {
		m.add(now.Add(e.TTL), e)
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		due, wait := m.next(r.clock.Now())
		for _, e := range due {
			r.expire(ctx, e)
		}
		if len(due) > 0 {
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-m.wake:
		case <-timer.C:
		}
	}
}

// next pops the entries whose deadline passed (at most 128) and says how long
// to wait for the next one.
func (m *ttlManager) next(now time.Time) ([]fsm.TTLEntry, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var due []fsm.TTLEntry
	for len(m.queue) > 0 && len(due) < 128 {
		if m.queue[0].deadline.After(now) {
			break
		}
		due = append(due, heap.Pop(&m.queue).(ttlItem).entry)
	}
	if len(m.queue) == 0 {
		return due, time.Hour
	}
	return due, m.queue[0].deadline.Sub(now)
}

func (r *Replica) expire(ctx context.Context, e fsm.TTLEntry) {
	cctx, cancel := context.WithTimeout(ctx, r.applyTimeout)
	defer cancel()
	res, err := r.Propose(cctx, &fsm.Command{Op: fsm.OpExpire, Key: e.Key, ModIndex: e.ModIndex,
		Time: r.clock.Now().UnixNano()})
	var ie *fsm.IntentError
	if err == nil && errors.As(res.Err, &ie) {
		// A transaction holds the key: expire it once the intent is gone.
		r.ttl.add(r.clock.Now().Add(time.Second), e)
		return
	}
	if err != nil && ctx.Err() == nil {
		r.log.Warn("ttl expiry failed; will retry as leader", "key", string(e.Key), "err", err)
		r.ttl.add(r.clock.Now().Add(time.Second), e)
	}
}

type ttlItem struct {
	deadline time.Time
	entry    fsm.TTLEntry
}

type ttlHeap []ttlItem

func (h ttlHeap) Len() int           { return len(h) }
func (h ttlHeap) Less(i, j int) bool { return h[i].deadline.Before(h[j].deadline) }
func (h ttlHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *ttlHeap) Push(x any)        { *h = append(*h, x.(ttlItem)) }
func (h *ttlHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	*h = old[:len(old)-1]
	return it
}
