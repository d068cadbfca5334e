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
		recs, err := rep.FSM().TxnLiveRecords()
		if err != nil {
			s.log.Warn("txn sweeper: read records", "shard", rng.ID, "err", err)
			continue
		}
		for _, r := range recs {
			if ctx.Err() != nil {
				return
			}
			if now-r.Heartbeat <= int64(txnTimeout) {
				continue
			}
			s.sweepRecord(ctx, r)
		}
	}
}

func (s *Server) sweepRecord(ctx context.Context, r *txn.Record) {
	ev := &txn.Event{Kind: txn.EvPush, ID: r.ID, Anchor: r.Anchor, Now: s.cfg.Clock.Now().UnixNano(), Timeout: txnTimeout}
	res, err := s.txnPropose(ctx, r.Anchor, txnRecordCommand(r.ID, ev))
	if err != nil || res.Err != nil || res.TwoPC.Record == nil || !res.TwoPC.Record.State.Final() {
		return
	}
	final := res.TwoPC.Record
	s.txnm.swept.Inc()
	for _, p := range final.Participants {
		if err := s.resolveKeys(ctx, final.ID, p.Keys, final, nil); err != nil {
			s.log.Debug("txn sweeper: resolve", "txn", final.ID, "shard", p.Shard, "err", err)
		}
	}
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
// window, as before.
func (s *Server) sweepIntents(ctx context.Context, rep Replica, shard uint64, now int64) {
	ins, err := rep.FSM().TxnOldIntents(now-int64(txnIntentResolveAge), txnIntentSweepMax)
	if err != nil {
		s.log.Warn("txn sweeper: read intents", "shard", shard, "err", err)
		return
	}
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
// keeps its first time.
type sweepLeases struct {
	mu    sync.Mutex
	since map[uint64]int64
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
	l.mu.Unlock()
}
