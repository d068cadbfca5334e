package api

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/txn"
)

// Riders (txn/DESIGN.md "Riders", command level 2): the background
// resolutions and forgets queued for a shard (txn_batch.go) go out in the
// next prepare or decide this node sends that shard, inside its entry
// (fsm.TxnCommand.Riders), instead of in entries of their own. Under load a
// shard gets a prepare or a decide every few milliseconds from each node, so
// a two-shard transaction's background work costs no entry at all. The
// queues' drainers linger a little before sending a batch alone, but only
// while hosts are likely to come: others of this node's transactions are
// under way and hosts went out to that shard a moment ago. A lone client's
// resolution goes out at once, as before, so its next read does not meet
// the intent it left.

// LevelReporter is an optional Backend capability: the cluster's shard
// command level (placement.State.Level as this node knows it). A coordinator
// attaches riders only at level 2 or above, when every replica applies them.
type LevelReporter interface {
	ClusterLevel() int
}

const (
	// ridersLevel is the cluster command level riders need.
	ridersLevel = 2
	// riderLinger is how long a drainer waits for a host before sending its
	// queue as a batch, and riderRecent how recently a host must have gone
	// out to the shard for it to wait at all.
	riderLinger = 25 * time.Millisecond
	riderRecent = 50 * time.Millisecond
	// riderBytes bounds the resolutions' weight (resolveWeight) one host
	// carries; a resolution over it is sent alone by its queue's drainer.
	// The host and its riders must also fit fsm.MaxTxnCommandSize: a host
	// may itself be a decide of txn.HardMaxBytes of writes, and one whose
	// encoding with riders would not fit goes without them (withRiders).
	riderBytes = 256 << 10
)

// ridersOn reports whether the cluster's level allows riders.
func (s *Server) ridersOn() bool {
	l, ok := s.be.(LevelReporter)
	return ok && l.ClusterLevel() >= ridersLevel
}

// hostTimes remembers when each shard last got a host from this node.
type hostTimes struct {
	mu   sync.Mutex
	last map[uint64]time.Time
}

func (h *hostTimes) note(shard uint64, now time.Time) {
	h.mu.Lock()
	if h.last == nil {
		h.last = map[uint64]time.Time{}
	}
	h.last[shard] = now
	h.mu.Unlock()
}

func (h *hostTimes) since(shard uint64, now time.Time) time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.last[shard]
	if !ok {
		return time.Duration(1<<63 - 1)
	}
	return now.Sub(t)
}

// riderLingerFor is how long shard's drainers wait for a host before
// sending alone: riderLinger while riders are on, at least two of this
// node's transactions are under way (the one whose work is queued may be
// one of them) and hosts went out to that shard within riderRecent; else
// nothing.
func (s *Server) riderLingerFor(shard uint64) time.Duration {
	if !s.ridersOn() || s.txnLive.Load() < 2 || s.hosts.since(shard, time.Now()) > riderRecent {
		return 0
	}
	return riderLinger
}

// riders are what one host command carries, taken from shard's queues.
type riders struct {
	shard    uint64
	resolves []*resolveItem
	forgets  []*forgetItem
}

// takeRiders moves what waits in shard's resolve and forget queues onto
// tc, a prepare or record command about to be proposed there (shard as the
// coordinator routed it, as the queues are keyed; a rider the shard no
// longer owns is refused and sent alone), at most txnResolveBatchMax of
// them and riderBytes of resolutions, and returns them for settle. Nil when
// riders are off or nothing waits.
func (s *Server) takeRiders(shard uint64, tc *fsm.TxnCommand) *riders {
	if !s.ridersOn() {
		return nil
	}
	s.hosts.note(shard, time.Now())
	r := &riders{shard: shard, resolves: s.txnres.take(shard, txnResolveBatchMax, resolveWeight, riderBytes)}
	r.forgets = s.txnfgt.take(shard, txnResolveBatchMax-len(r.resolves), nil, 0)
	if len(r.resolves)+len(r.forgets) == 0 {
		return nil
	}
	for _, it := range r.resolves {
		tc.Riders = append(tc.Riders, &fsm.TxnCommand{ID: it.id, Keys: it.keys, Record: it.rec, PreparedIndex: true})
	}
	now := s.cfg.Clock.Now().UnixNano()
	for _, it := range r.forgets {
		tc.Riders = append(tc.Riders, forgetCommand(it.rec, now))
	}
	s.txnm.batch.WithLabelValues("rider").Observe(float64(len(tc.Riders)))
	return r
}

// withRiders encodes tc, a prepare or record command for shard, with the
// riders takeRiders gives it, unless they would take it over
// fsm.MaxTxnCommandSize: then they go back to their queues and tc goes
// alone, as it would have without riders.
func (s *Server) withRiders(ctx context.Context, shard uint64, tc *fsm.TxnCommand) ([]byte, *riders) {
	r := s.takeRiders(shard, tc)
	v := fsm.EncodeTxnCommand(tc)
	if r != nil && len(v) > fsm.MaxTxnCommandSize {
		r.requeue(ctx, s)
		tc.Riders = nil
		return fsm.EncodeTxnCommand(tc), nil
	}
	return v, r
}

// settle answers each rider from its host's answer. Applied: done. Refused
// by the shard (a split moved its keys): sent again alone in the
// background, routed afresh. Of unknown fate (the host failed or was not
// sent, or its replica counted fewer riders than it carried): back to its
// queue, to ride again or go in a batch. Resolutions and forgets are
// idempotent, so sending one that did apply is harmless.
func (r *riders) settle(ctx context.Context, s *Server, res *fsm.Result, err error) {
	if r == nil {
		return
	}
	n := len(r.resolves) + len(r.forgets)
	if err != nil || res == nil || res.Err != nil || res.TwoPC == nil || res.TwoPC.Riders != n {
		r.requeue(ctx, s)
		return
	}
	refused := res.TwoPC.RidersRefused
	for i, it := range r.resolves {
		if !slices.Contains(refused, i) {
			it.finish(nil)
		} else if !s.txnbg.spawn(writeTimeout, func(ctx context.Context) {
			it.finish(s.resolveKeys(ctx, it.id, it.keys, it.rec, nil))
		}) {
			it.finish(errRiderClosing)
		}
	}
	for i, it := range r.forgets {
		if !slices.Contains(refused, len(r.resolves)+i) {
			it.finish(nil)
		} else if !s.txnbg.spawn(writeTimeout, func(ctx context.Context) { it.finish(s.forgetOne(ctx, it.rec)) }) {
			it.finish(errRiderClosing)
		}
	}
}

// requeue puts the riders back in their shard's queues (their waiters keep
// waiting), where a drainer sends them in a batch unless a host takes them
// first. ctx serves only a node that is closing, whose queue is then
// drained in this goroutine.
func (r *riders) requeue(ctx context.Context, s *Server) {
	for _, it := range r.resolves {
		s.txnres.submit(ctx, s, r.shard, it, s.resolveBatch, resolveWeight)
	}
	for _, it := range r.forgets {
		s.txnfgt.submit(ctx, s, r.shard, it, s.forgetBatch, nil)
	}
}

var errRiderClosing = errors.New("api: the node is closing; the rider's work is left to the sweepers")

// forgetCommand is the EvForget of a committed record.
func forgetCommand(rec *txn.Record, now int64) *fsm.TxnCommand {
	return &fsm.TxnCommand{ID: rec.ID, Event: &txn.Event{Kind: txn.EvForget, ID: rec.ID, Anchor: rec.Anchor, Now: now}}
}
