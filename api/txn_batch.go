package api

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/txn"
)

// Background resolutions are batched per shard (group commit): while one
// resolve entry of a shard is in flight, the resolutions queued behind it go
// out together in the next one (fsm.TxnCommand.Batch), so under load many
// transactions' intents on a shard cost one raft entry and one node-to-node
// call. A batch the shard refuses as a whole (a key moved by a split, say)
// is resolved one transaction at a time through resolveKeys, which routes
// each key again.

// Forgets (EvForget on committed records whose participants are resolved)
// are batched per anchor shard the same way: one record entry forgets many
// (fsm.TxnCommand.Batch of forget events); refused as a whole, each is sent
// alone, routed by its own anchor.

// txnResolveBatchMax bounds the transactions in one resolve (or forget)
// entry, and txnResolveBatchBytes the write-set bytes in one resolve entry
// (each resolution carries its record, values included): 128 transactions
// of up to 1 MiB each would make one entry of up to 128 MiB, which a
// node-to-node call refuses past its 6 MiB body limit and which every
// replica would hold at once. A transaction larger than the bound goes out
// alone.
const (
	txnResolveBatchMax   = 128
	txnResolveBatchBytes = 1 << 20
)

// shardBatcher is the group commit shared by resolves and forgets: items
// queue per shard; the first item of an idle shard starts a drainer (a
// background task of the node) that hands the queue to run in batches of at
// most txnResolveBatchMax items, and of at most txnResolveBatchBytes by the
// batch's weight when it has one (but never fewer than one item), until it
// is empty. run must answer every item.
type shardBatcher[T any] struct {
	mu      sync.Mutex
	queue   map[uint64][]T // shard -> waiting
	running map[uint64]bool
	sizes   prometheus.Observer // items per batch (cairn_txn_batch_size); nil: not observed
	// linger: how long the drainer waits before cutting a batch, so that a
	// host command takes the queue as riders (txn_riders.go); nil: not at all.
	linger func(shard uint64) time.Duration
}

// submit queues it for shard and, if no drainer runs for that shard, starts
// one (or, when the node is closing, drains in this goroutine, under ctx, so
// that what is queued is answered).
func (b *shardBatcher[T]) submit(ctx context.Context, s *Server, shard uint64, it T, run func(context.Context, []T), weight func(T) int) {
	b.mu.Lock()
	if b.queue == nil {
		b.queue, b.running = map[uint64][]T{}, map[uint64]bool{}
	}
	b.queue[shard] = append(b.queue[shard], it)
	start := !b.running[shard]
	b.running[shard] = true
	b.mu.Unlock()
	// The drainer lives while its queue refills (each batch bounded on its
	// own), until the node closes.
	if start && !s.txnbg.spawn(0, func(ctx context.Context) { b.drain(ctx, shard, run, weight) }) {
		b.drain(ctx, shard, run, weight)
	}
}

// drain runs shard's queued items, a batch at a time, until the queue is
// empty.
func (b *shardBatcher[T]) drain(ctx context.Context, shard uint64, run func(context.Context, []T), weight func(T) int) {
	for {
		if b.linger != nil && !b.full(shard) {
			if d := b.linger(shard); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
			}
		}
		b.mu.Lock()
		items := b.queue[shard]
		if len(items) == 0 {
			delete(b.queue, shard)
			b.running[shard] = false
			b.mu.Unlock()
			return
		}
		n := max(fit(items, txnResolveBatchMax, weight, txnResolveBatchBytes), 1) // one over the bound goes alone
		b.queue[shard] = items[n:]
		b.mu.Unlock()
		if b.sizes != nil {
			b.sizes.Observe(float64(n))
		}
		run(ctx, items[:n])
	}
}

// full reports whether shard's queue holds a whole batch (by count): its
// drainer then sends at once rather than linger for a host.
func (b *shardBatcher[T]) full(shard uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue[shard]) >= txnResolveBatchMax
}

// take removes up to max items queued for shard, within budget by weight
// when there is one (maybe none: an item over it stays for the drainer to
// send alone), for a host command to carry as riders; the drainer finds
// them gone.
func (b *shardBatcher[T]) take(shard uint64, max int, weight func(T) int, budget int) []T {
	b.mu.Lock()
	defer b.mu.Unlock()
	items := b.queue[shard]
	n := fit(items, max, weight, budget)
	if n == 0 {
		return nil
	}
	b.queue[shard] = items[n:]
	return items[:n]
}

// fit is how many of the first items make at most max items and, by weight
// when there is one, at most budget; none when the first alone is over it.
func fit[T any](items []T, max int, weight func(T) int, budget int) int {
	n := min(len(items), max)
	if weight != nil {
		w := 0
		for i := range n {
			if w += weight(items[i]); w > budget {
				return i
			}
		}
	}
	return n
}

// awaitItem waits for an item's answer or ctx's end.
func awaitItem(ctx context.Context, done chan error) error {
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// itemAnswer is how a queued resolution or forget is answered: a waiter's
// channel, or a continuation (resolveThen, forgetThen).
type itemAnswer struct {
	done chan error      // buffered: the drainer never blocks on it
	then func(err error) // instead of done: called once with the answer
}

// finish answers the item: its continuation, or its waiter.
func (a *itemAnswer) finish(err error) {
	if a.then != nil {
		a.then(err)
		return
	}
	a.done <- err
}

type resolveItem struct {
	id   string
	keys []txn.KeyIntent
	rec  *txn.Record
	itemAnswer
}

// resolveWeight is what a resolution adds to its batch's entry: its
// record's write set and its participants' keys.
func resolveWeight(it *resolveItem) int {
	n := 0
	for _, w := range it.rec.WriteSet {
		n += len(w.Key) + len(w.Value)
	}
	for _, p := range it.rec.Participants {
		for _, k := range p.Keys {
			n += len(k.Key)
		}
	}
	return n
}

// resolveBatched resolves transaction id's intents on keys (all owned, as
// last looked up, by one shard) from its final record, batched with other
// transactions' resolutions of that shard. It returns when the resolution
// applied or failed, or ctx ended.
func (s *Server) resolveBatched(ctx context.Context, id string, keys []txn.KeyIntent, rec *txn.Record) error {
	if len(keys) == 0 {
		return nil
	}
	it := &resolveItem{id: id, keys: keys, rec: rec, itemAnswer: itemAnswer{done: make(chan error, 1)}}
	if err := s.queueResolve(ctx, it); err != nil {
		return err
	}
	return awaitItem(ctx, it.done)
}

// resolveThen is resolveBatched without a waiter: then is called once with
// the answer, on whichever goroutine settles it (a drainer, or the
// coordinator whose command carried it as a rider), so it must not block.
func (s *Server) resolveThen(id string, keys []txn.KeyIntent, rec *txn.Record, then func(error)) {
	if len(keys) == 0 {
		then(nil)
		return
	}
	// ctx serves only a node that is closing (submit then drains here).
	if err := s.queueResolve(context.Background(), &resolveItem{id: id, keys: keys, rec: rec, itemAnswer: itemAnswer{then: then}}); err != nil {
		then(err)
	}
}

// queueResolve queues it on the shard that owns its first key, as this
// node last looked it up.
func (s *Server) queueResolve(ctx context.Context, it *resolveItem) error {
	rng, err := s.lookup(it.keys[0].Key)
	if err != nil {
		return err
	}
	// The record as these keys' resolution needs it: what a resolve
	// entry or a rider carries of it (txn.Record.ForKeys).
	it.rec = it.rec.ForKeys(it.keys)
	s.txnres.submit(ctx, s, rng.ID, it, s.resolveBatch, resolveWeight)
	return nil
}

// resolveBatch proposes one batch, bounded by writeTimeout; refused as a
// whole, or the call failed, it resolves one transaction at a time, each key
// routed again.
func (s *Server) resolveBatch(ctx context.Context, batch []*resolveItem) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	err := ctx.Err()
	if err == nil {
		err = s.proposeResolveBatch(ctx, batch)
	}
	for _, it := range batch {
		if err != nil && ctx.Err() == nil {
			it.finish(s.resolveKeys(ctx, it.id, it.keys, it.rec, nil))
		} else {
			it.finish(err)
		}
	}
}

func (s *Server) proposeResolveBatch(ctx context.Context, batch []*resolveItem) error {
	cmds := make([]*fsm.TxnCommand, len(batch))
	for i, it := range batch {
		cmds[i] = &fsm.TxnCommand{ID: it.id, Keys: it.keys, Record: it.rec, PreparedIndex: true}
	}
	head := cmds[0]
	head.Batch = cmds[1:]
	key := head.Keys[0].Key
	res, err := s.txnPropose(ctx, key, &fsm.Command{Op: fsm.OpTxnResolve, Key: key, Value: fsm.EncodeTxnCommand(head)})
	if err == nil && res.Err != nil {
		err = res.Err
	}
	if err == nil && res.TwoPC == nil {
		err = errors.New("api: resolve batch returned no result")
	}
	return err
}

type forgetItem struct {
	rec *txn.Record
	itemAnswer
}

// forgetBatched forgets the committed record rec, batched with other
// forgets of its anchor's shard. It returns when the forget applied or
// failed, or ctx ended.
func (s *Server) forgetBatched(ctx context.Context, rec *txn.Record) error {
	it := &forgetItem{rec: rec, itemAnswer: itemAnswer{done: make(chan error, 1)}}
	if err := s.queueForget(ctx, it); err != nil {
		return err
	}
	return awaitItem(ctx, it.done)
}

// forgetThen is forgetBatched without a waiter, as resolveThen is.
func (s *Server) forgetThen(rec *txn.Record, then func(error)) {
	if err := s.queueForget(context.Background(), &forgetItem{rec: rec, itemAnswer: itemAnswer{then: then}}); err != nil {
		then(err)
	}
}

// queueForget queues it on its anchor's shard, as this node last looked it
// up.
func (s *Server) queueForget(ctx context.Context, it *forgetItem) error {
	rng, err := s.lookup(it.rec.Anchor)
	if err != nil {
		return err
	}
	s.txnfgt.submit(ctx, s, rng.ID, it, s.forgetBatch, nil) // a forget carries an id: count only
	return nil
}

func (s *Server) forgetBatch(ctx context.Context, batch []*forgetItem) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	err := ctx.Err()
	if err == nil {
		now := s.cfg.Clock.Now().UnixNano()
		cmds := make([]*fsm.TxnCommand, len(batch))
		for i, it := range batch {
			cmds[i] = forgetCommand(it.rec, now)
		}
		head := cmds[0]
		head.Batch = cmds[1:]
		var res *fsm.Result
		res, err = s.txnPropose(ctx, head.Event.Anchor, &fsm.Command{Op: fsm.OpTxnRecord, Key: head.Event.Anchor,
			Value: fsm.EncodeTxnCommand(head)})
		if err == nil {
			err = res.Err
		}
	}
	for _, it := range batch {
		if err != nil && ctx.Err() == nil && len(batch) > 1 {
			it.finish(s.forgetOne(ctx, it.rec))
		} else {
			it.finish(err)
		}
	}
}
