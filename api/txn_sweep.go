package api

import (
	"context"
	"sync"
	"time"

	"github.com/cairndb/cairn/txn"
)

// SweepTxnRecords is the record sweeper (txn/DESIGN.md "The coordinator"):
// on every shard this node leads, a record whose heartbeat is older than the
// timeout is pushed (an expired Pending record is aborted by the push, a
// conditional write) and, once final, its intents are resolved on every
// participant. It finds what no reader would: a transaction whose every
// prepare was refused and whose coordinator then died leaves a record and no
// intent. The node calls it periodically; it returns when ctx ends or the
// sweep is done.
func (s *Server) SweepTxnRecords(ctx context.Context) {
	if !s.be.Ready() {
		return
	}
	now := s.cfg.Clock.Now().UnixNano()
	for _, rng := range s.be.Ranges() {
		rep, ok := s.rt.replica(rng.ID)
		if !ok || !rep.IsLeader() {
			s.sweep.lost(rng.ID)
			continue
		}
		// A new leader gives every record a full timeout from its own
		// start: no coordinator's heartbeat could land while the shard had
		// no leader, so a record's age says nothing about its coordinator
		// across a failover (the lock tracker restarts its countdowns the
		// same way).
		if now-s.sweep.leading(rng.ID, now) <= int64(txnTimeout) {
			continue
		}
		s.sweepIntents(ctx, rep, rng.ID, now)
		s.sweepRecords(ctx, rep, rng.ID, now)
	}
}

// Record sweeping bounds. A pass looks at up to txnRecordSweepVisit
// records of a shard, resuming after the last one the previous pass looked
// at (a shard keeps every record for the dedup window after it ends, so a
// full scan per pass grew with the transaction rate; at a sweep every
// txnSweepEvery a shard of 100,000 records is covered in a few seconds). A
// committed record not forgotten by its coordinator is picked once its last
// heartbeat is txnForgetAge old: a coordinator commits within a heartbeat
// interval of its last heartbeat and usually resolves and forgets within
// milliseconds, so the sweeper rarely duplicates its work; when it does (a
// slow coordinator still resolving) that is harmless: the sweeper resolves
// every participant itself before it forgets, and resolution and forget
// are idempotent.
const (
	txnRecordSweepVisit = 16384
	txnRecordSweepMax   = 256 // records picked per shard and pass
	txnForgetAge        = 2 * txnTimeout
)

// sweepRecords is one bounded pass over the records of shard (led here):
// a live record whose heartbeat expired is pushed (sweepRecord); a
// committed record never forgotten (its coordinator died, or a resolution
// failed, after the commit) has its intents resolved on every participant
// from the record (idempotent: a key already resolved has none) and, once
// every resolution succeeded, is forgotten, so its shard drops it after the
// dedup window (txn/DESIGN.md "Forgetting a committed record"). A record
// that cannot be ended now (a participant is down) is looked at again on a
// later pass; the pass resumes after the last record it looked at, so such
// records do not starve the others.
func (s *Server) sweepRecords(ctx context.Context, rep Replica, shard uint64, now int64) {
	after := s.sweep.cursor(shard, 'r')
	picks, next, err := rep.FSM().TxnSweepRecords(after, now-int64(txnTimeout), now-int64(txnForgetAge),
		txnRecordSweepVisit, txnRecordSweepMax)
	if err != nil {
		s.log.Warn("txn sweeper: read records", "shard", shard, "err", err)
		return
	}
	// Picks come in id order; a pass cut short by the sweep's deadline
	// resumes at the first one it did not end, not after the last one read.
	for _, r := range picks {
		if ctx.Err() != nil {
			s.sweep.setCursor(shard, 'r', after)
			return
		}
		if r.State.Final() {
			s.resolveAndForget(ctx, r)
		} else {
			s.sweepRecord(ctx, r)
		}
		after = []byte(r.ID)
	}
	s.sweep.setCursor(shard, 'r', next)
}

// resolveAndForget resolves a final record's intents on every participant
// and, for a committed record whose every resolution succeeded, forgets it.
func (s *Server) resolveAndForget(ctx context.Context, final *txn.Record) {
	ok := true
	for _, p := range final.Participants {
		if err := s.resolveKeys(ctx, final.ID, p.Keys, final, nil); err != nil {
			ok = false
			s.log.Debug("txn sweeper: resolve", "txn", final.ID, "shard", p.Shard, "err", err)
		}
	}
	if ok && final.State == txn.Committed && !final.Forgotten {
		s.forgetTxn(ctx, final)
	}
}

func (s *Server) sweepRecord(ctx context.Context, r *txn.Record) {
	ev := &txn.Event{Kind: txn.EvPush, ID: r.ID, Anchor: r.Anchor, Now: s.cfg.Clock.Now().UnixNano(), Timeout: txnTimeout}
	res, err := s.txnPropose(ctx, r.Anchor, txnRecordCommand(r.ID, ev))
	if err != nil || res.Err != nil || res.TwoPC.Record == nil || !res.TwoPC.Record.State.Final() {
		return
	}
	s.txnm.swept.Inc()
	s.resolveAndForget(ctx, res.TwoPC.Record)
}

// Intent sweeping bounds: an intent is looked at once it is this old (a
// coordinator resolves within a few round trips of its commit), at most
// this many per shard and sweep; its record is pushed only past
// txnIntentPushAge (its coordinator, if alive, heartbeats the record long
// before; the record sweeper or a reader usually ends a dead one first).
const (
	txnIntentResolveAge = time.Second
	txnIntentPushAge    = 2 * txnTimeout
	txnIntentSweepMax   = 256
)

// sweepIntents ends the intents on shard (led here) that outlived their
// coordinator's resolution: a coordinator that replied at the commit point
// and died (or was stopped, or timed out) before resolving leaves its record
// final and intents behind, which no reader may ever meet. Per transaction:
// read its record at the anchor; final — resolve its intents on this shard,
// as its coordinator would have; not final or missing — past
// txnIntentPushAge, push it as a reader would (priority 0: a live
// transaction is never aborted, an expired one is), and resolve if that
// made it final. The record itself is dropped by its shard after the dedup
// window once aborted, or once forgotten when committed: this sweep resolves
// one shard only, so it does not forget; sweepUnforgotten does.
func (s *Server) sweepIntents(ctx context.Context, rep Replica, shard uint64, now int64) {
	ins, next, err := rep.FSM().TxnOldIntentsAfter(s.sweep.cursor(shard, 'i'), now-int64(txnIntentResolveAge), txnIntentSweepMax)
	if err != nil {
		s.log.Warn("txn sweeper: read intents", "shard", shard, "err", err)
		return
	}
	s.sweep.setCursor(shard, 'i', next)
	type group struct {
		first txn.Intent
		keys  []txn.KeyIntent
	}
	byTxn := map[string]*group{}
	var order []string
	for _, in := range ins {
		g := byTxn[in.TxnID]
		if g == nil {
			g = &group{first: in}
			byTxn[in.TxnID] = g
			order = append(order, in.TxnID)
		}
		g.keys = append(g.keys, txn.KeyIntent{Key: in.Key, Access: in.Access})
		if in.PreparedAt < g.first.PreparedAt {
			g.first.PreparedAt = in.PreparedAt
		}
	}
	for _, id := range order {
		if ctx.Err() != nil {
			return
		}
		g := byTxn[id]
		rec, err := s.readTxnRecord(ctx, id, g.first.Anchor)
		if err != nil {
			continue
		}
		if (rec == nil || !rec.State.Final()) && now-g.first.PreparedAt > int64(txnIntentPushAge) {
			in := g.first
			ev := &txn.Event{Kind: txn.EvPush, ID: id, Anchor: in.Anchor, Now: s.cfg.Clock.Now().UnixNano(),
				Timeout: txnTimeout, PreparedAt: in.PreparedAt, Priority: in.Priority}
			res, err := s.txnPropose(ctx, in.Anchor, txnRecordCommand(id, ev))
			if err == nil && res.Err == nil {
				rec = res.TwoPC.Record
			}
		}
		if rec == nil || !rec.State.Final() {
			continue
		}
		s.txnm.swept.Inc()
		if err := s.resolveKeys(ctx, id, g.keys, rec, nil); err != nil {
			s.log.Debug("txn sweeper: resolve intents", "txn", id, "shard", shard, "err", err)
		}
	}
}

// readTxnRecord reads transaction id's record on its anchor's shard leader
// (linearizably); nil when there is none.
func (s *Server) readTxnRecord(ctx context.Context, id string, anchor []byte) (*txn.Record, error) {
	rng, err := s.lookup(anchor)
	if err != nil {
		return nil, err
	}
	a, err := s.inspectShard(ctx, txnInspectRequest{Shard: rng.ID, ID: id})
	if err != nil || len(a.Record) == 0 {
		return nil, err
	}
	return txn.DecodeRecord(a.Record)
}

// txnSweepEvery is how often a node sweeps its records.
const txnSweepEvery = time.Second

// RunTxnSweeper sweeps every txnSweepEvery until stop is closed.
func (s *Server) RunTxnSweeper(stop <-chan struct{}) {
	base, cancelAll := context.WithCancel(context.Background())
	defer cancelAll()
	go func() {
		select {
		case <-stop:
			cancelAll()
		case <-base.Done():
		}
	}()
	t := time.NewTicker(txnSweepEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(base, writeTimeout)
		s.SweepTxnRecords(ctx)
		cancel()
	}
}

// sweepLeases remembers when the sweeper first saw this node lead each
// shard (nanoseconds on the server's clock); a shard led without a break
// keeps its first time. It also keeps, per shard, where each bounded scan
// ('i' old intents, 'r' records) resumes: after the last key it
// looked at, so entries that cannot be ended now (their anchor or a
// participant is down) do not starve those behind them.
type sweepLeases struct {
	mu    sync.Mutex
	since map[uint64]int64
	after map[sweepScan][]byte
}

type sweepScan struct {
	shard uint64
	kind  byte
}

// cursor returns where shard's scan of kind resumes (nil: from the start).
func (l *sweepLeases) cursor(shard uint64, kind byte) []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.after[sweepScan{shard, kind}]
}

// setCursor records where shard's scan of kind resumes (nil: the scan
// reached the end, start again).
func (l *sweepLeases) setCursor(shard uint64, kind byte, next []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.after == nil {
		l.after = map[sweepScan][]byte{}
	}
	if next == nil {
		delete(l.after, sweepScan{shard, kind})
		return
	}
	l.after[sweepScan{shard, kind}] = next
}

// leading returns when this node began leading shard, as first seen at now.
func (l *sweepLeases) leading(shard uint64, now int64) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.since == nil {
		l.since = map[uint64]int64{}
	}
	t, ok := l.since[shard]
	if !ok {
		l.since[shard], t = now, now
	}
	return t
}

// lost forgets shard: this node does not lead it now.
func (l *sweepLeases) lost(shard uint64) {
	l.mu.Lock()
	delete(l.since, shard)
	for _, k := range []byte{'i', 'r'} {
		delete(l.after, sweepScan{shard, k})
	}
	l.mu.Unlock()
}
