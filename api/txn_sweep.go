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
