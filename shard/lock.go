package shard

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/lock"
)

// Locks on a replica (lock/DESIGN.md, shard/DESIGN.md "Locks"):
//
//   - Lock proposes one lock.Command as an fsm.OpLock entry (leader only) and
//     returns what lock.Apply did.
//   - The leader runs a lock.Tracker (lockManager.run, beside the TTL
//     countdowns): on becoming leader it observes every record with its own
//     clock, after every applied lock entry it observes the new record, and
//     it proposes the Expire, EndDelay and ExpireWaiters the tracker finds
//     due (invariant I10). Followers run no tracker and propose nothing.
//   - Every replica, leader or not, wakes the requests waiting on it for a
//     grant (WaitLockGrant) or a change of holders (WaitLockChange) from its
//     own apply stream, so a leader change strands no waiter.

// ErrWaiterGone means the waiter a WaitLockGrant watched left the lock's
// queue without a grant on this replica's state (its wait expired, it was
// cancelled, or it was granted and already released or expired before the
// wait looked).
var ErrWaiterGone = errors.New("lock waiter is no longer queued")

// lockRetry is how long the tracker waits before proposing again a command
// that did not take effect (a lost proposal).
const lockRetry = time.Second

// maxLockProposals bounds the leader's concurrent tracker proposals.
const maxLockProposals = 32

// maxDeletedNames bounds the names whose last deletion seq the notifier
// remembers for WaitLockChange; past it, it forgets them all and answers
// waits on a free lock from before that moment at once (a spurious wake-up,
// never a missed one).
const maxDeletedNames = 4096

// lockMetrics are the host's lock metrics (nil fields: none registered).
type lockMetrics struct {
	grants, expiries, releases *prometheus.CounterVec
	waiters                    *prometheus.GaugeVec
	handoff                    prometheus.Histogram
}

func newLockMetrics(reg prometheus.Registerer) (*lockMetrics, error) {
	counter := func(name, help string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cairn", Subsystem: "lock",
			Name: name, Help: help}, []string{"shard"})
	}
	m := &lockMetrics{
		grants:   counter("grants_total", "Lock grants applied while this replica led the shard (including waiters served by a release or expiry)."),
		expiries: counter("expiries_total", "Leases expired by this replica as the shard's leader (an applied Expire that took effect)."),
		releases: counter("releases_total", "Locks released while this replica led the shard (a release, or a cancelled wait whose grant it undid)."),
		waiters: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "cairn", Subsystem: "lock",
			Name: "waiters", Help: "Queued lock acquires in the shard, as its leader sees them (0 on followers)."}, []string{"shard"}),
		handoff: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "cairn", Subsystem: "lock",
			Name: "handoff_seconds",
			Help: "On the leader: from proposing an entry that frees a lock (release, expiry, cancelled wait, end of delay) " +
				"to its applied result granting the next waiters (one raft commit: the grant is in the same entry).",
			Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16)}),
	}
	for _, c := range []prometheus.Collector{m.grants, m.expiries, m.releases, m.waiters, m.handoff} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// lockManager is one replica's lock machinery: the leader's tracker and the
// notifier of local waits.
type lockManager struct {
	shard   string
	metrics *lockMetrics // nil without metrics

	mu      sync.Mutex
	active  bool   // this replica leads and run is going
	runs    uint64 // run generations: a run ending late must not stop the next one
	tracker *lock.Tracker
	origin  time.Time // the tracker's monotonic origin (the replica's clock)
	now     func() time.Time
	waiting int // queued waiters over the shard's records, while active
	wake    chan struct{}

	grants  map[string]map[*grantWait]struct{} // by lock name
	changes map[string]map[*changeWait]struct{}
	deleted map[string]uint64 // name -> seq of the entry that dropped its held record
	floor   uint64            // a free lock's last change is unknown below this seq

	proposed atomic.Uint64 // tracker commands this replica proposed (tests: followers propose none)
}

type grantWait struct {
	name, id string
	ch       chan struct{} // cap 1: something to look at
	// guarded by lockManager.mu
	done   bool
	holder lock.Holder
	index  uint64
	err    error
}

type changeWait struct {
	name  string
	after uint64
	ch    chan struct{} // cap 1
}

func newLockManager(shard uint64, m *lockMetrics, now func() time.Time) *lockManager {
	return &lockManager{shard: strconv.FormatUint(shard, 10), metrics: m, now: now,
		wake: make(chan struct{}, 1), grants: map[string]map[*grantWait]struct{}{},
		changes: map[string]map[*changeWait]struct{}{}, deleted: map[string]uint64{}}
}

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// mono is the tracker's monotonic time. Called with mu held.
func (m *lockManager) mono() time.Duration { return m.now().Sub(m.origin) }

// onLock is the FSM's OnLock hook: called on the apply goroutine after the
// entry's batch committed, on every replica. It never blocks for long.
func (m *lockManager) onLock(e fsm.LockEvent) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.active {
		m.tracker.Observe(e.Name, e.Next, m.mono())
		m.waiting += waiterCount(e.Next) - waiterCount(e.Prev)
		signal(m.wake)
	}
	if m.active && m.metrics != nil { // counted once, by the leader
		m.count(e)
	}
	if e.Next == nil && e.Prev.Held() {
		if len(m.deleted) >= maxDeletedNames {
			clear(m.deleted)
			m.floor = e.Seq
		}
		m.deleted[e.Name] = e.Seq
	} else if e.Next != nil {
		delete(m.deleted, e.Name)
	}
	for w := range m.grants[e.Name] {
		if w.done {
			continue
		}
		for _, h := range e.Result.Granted {
			if h.WaiterID == w.id {
				w.done, w.holder, w.index = true, h, e.Index
			}
		}
		if !w.done {
			if h := holderOf(e.Next, w.id); h != nil {
				w.done, w.holder, w.index = true, *h, e.Index
			} else if !isWaiter(e.Next, w.id) && e.Result.Err == nil {
				w.done, w.err = true, ErrWaiterGone
			}
		}
		if w.done {
			signal(w.ch)
		}
	}
	for w := range m.changes[e.Name] {
		if changedAfter(e.Next, e.Prev, e.Seq, w.after) {
			signal(w.ch)
		}
	}
}

func (m *lockManager) count(e fsm.LockEvent) {
	if n := len(e.Result.Granted); n > 0 {
		m.metrics.grants.WithLabelValues(m.shard).Add(float64(n))
	}
	switch e.Result.Status {
	case lock.StatusExpired:
		m.metrics.expiries.WithLabelValues(m.shard).Inc()
	case lock.StatusReleased:
		m.metrics.releases.WithLabelValues(m.shard).Inc()
	}
	m.metrics.waiters.WithLabelValues(m.shard).Set(float64(m.waiting))
}

// changedAfter reports whether an entry at seq that turned prev into next
// changed the holders after seq after.
func changedAfter(next, prev *lock.Record, seq, after uint64) bool {
	if next != nil {
		return next.ChangeSeq > after
	}
	return prev.Held() && seq > after
}

// recheckAll wakes every wait to look at the stored records again: a
// snapshot was installed (forget, below seq, which free locks changed when)
// or a split moved records away, without OnLock.
func (m *lockManager) recheckAll(restored bool, seq uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if restored {
		clear(m.deleted)
		m.floor = max(m.floor, seq)
	}
	for _, ws := range m.grants {
		for w := range ws {
			signal(w.ch)
		}
	}
	for _, ws := range m.changes {
		for w := range ws {
			signal(w.ch)
		}
	}
	signal(m.wake)
}

func waiterCount(r *lock.Record) int {
	if r == nil {
		return 0
	}
	return len(r.Waiters)
}

func holderOf(r *lock.Record, waiterID string) *lock.Holder {
	if r == nil {
		return nil
	}
	for i := range r.Holders {
		if r.Holders[i].WaiterID == waiterID {
			return &r.Holders[i]
		}
	}
	return nil
}

func isWaiter(r *lock.Record, waiterID string) bool {
	if r == nil {
		return false
	}
	for _, w := range r.Waiters {
		if w.ID == waiterID {
			return true
		}
	}
	return false
}

// Lock proposes cmd on the lock named by cmd.LockName() as the shard's
// leader and returns what lock.Apply did (LockResult.Result.Err holds a
// lock_held, lock_lost or invalid_argument refusal, with the record
// unchanged) and the entry's index. Errors are Propose's (*NotLeaderError,
// ErrUnavailable, ErrOutcomeUnknown), an encoding error wrapping
// fsm.ErrInvalidCommand, or the entry's *fsm.WrongShardError (the lock name
// is outside the shard's range, I5). epoch is the range epoch the caller
// routed with. An acquire should carry a WaiterID (the request id), so a
// retry after ErrOutcomeUnknown is recognised.
func (r *Replica) Lock(ctx context.Context, cmd lock.Command, epoch uint64) (*fsm.LockResult, uint64, error) {
	if cmd == nil {
		return nil, 0, fmt.Errorf("%w: nil lock command", fsm.ErrInvalidCommand)
	}
	b, err := lock.EncodeCommand(cmd)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", fsm.ErrInvalidCommand, err)
	}
	start := time.Now() // a latency, not a decision
	res, err := r.Propose(ctx, &fsm.Command{Op: fsm.OpLock, Epoch: epoch, Time: r.clock.Now().UnixNano(),
		Key: []byte(cmd.LockName()), Value: b})
	if err != nil {
		return nil, 0, err
	}
	if res.Err != nil {
		return nil, res.Index, res.Err
	}
	if res.Lock == nil {
		return nil, res.Index, fmt.Errorf("shard %d: %w: no lock result", r.id, ErrOutcomeUnknown)
	}
	r.observeHandoff(cmd, res.Lock, start)
	return res.Lock, res.Index, nil
}

// observeHandoff records, for an entry that freed capacity and granted
// waiters in the same apply, the time from its proposal to that result.
func (r *Replica) observeHandoff(cmd lock.Command, lr *fsm.LockResult, start time.Time) {
	if r.locks.metrics == nil || cmd.Kind() == lock.KindAcquire || len(lr.Result.Granted) == 0 {
		return
	}
	r.locks.metrics.handoff.Observe(time.Since(start).Seconds())
}

// WaitLockGrant returns the holder and the applied index once this
// replica's state shows waiterID granted the lock name: by an entry applied
// after the call began, or already a holder in the current record. It
// returns ErrWaiterGone when the waiter is neither queued nor holding (its
// wait expired or was cancelled), *fsm.WrongShardError when the lock is no
// longer in this shard's range (a split moved it: ask the new shard),
// ctx.Err() when ctx ends first (the caller then proposes CancelWait; a
// CancelWait that finds the waiter already granted releases that grant,
// so a requester that gave up never holds the lock unknowingly), or
// ErrUnavailable when the replica closes.
//
// Any replica may wait, leader or not: the grant is in the replicated log
// and every replica applies it, so a leader change strands no waiter. The
// replica must have applied the entry that queued the waiter (the one Lock
// proposed there has); elsewhere use WaitLockGrantAt with that entry's index.
func (r *Replica) WaitLockGrant(ctx context.Context, name, waiterID string) (lock.Holder, uint64, error) {
	return r.WaitLockGrantAt(ctx, name, waiterID, 0)
}

// WaitLockGrantAt is WaitLockGrant on a replica that may not have applied
// the acquire yet: it first waits until this replica applied index (the
// index Lock returned for the queued acquire).
func (r *Replica) WaitLockGrantAt(ctx context.Context, name, waiterID string, index uint64) (lock.Holder, uint64, error) {
	if err := r.fsm.WaitApplied(ctx, index); err != nil {
		if ctx.Err() != nil {
			return lock.Holder{}, 0, ctx.Err()
		}
		return lock.Holder{}, 0, fmt.Errorf("shard %d: %w: %w", r.id, ErrUnavailable, err)
	}
	m := r.locks
	w := &grantWait{name: name, id: waiterID, ch: make(chan struct{}, 1)}
	m.mu.Lock()
	if m.grants[name] == nil {
		m.grants[name] = map[*grantWait]struct{}{}
	}
	m.grants[name][w] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.grants[name], w)
		if len(m.grants[name]) == 0 {
			delete(m.grants, name)
		}
		m.mu.Unlock()
	}()
	// Registered first, then look: a grant applied in between is seen
	// either by the look or by onLock.
	look := func() (lock.Holder, uint64, bool, error) {
		m.mu.Lock()
		if w.done {
			m.mu.Unlock()
			return w.holder, w.index, true, w.err
		}
		m.mu.Unlock()
		rec, applied, err := r.fsm.LockRecord([]byte(name))
		if err != nil {
			return lock.Holder{}, 0, true, err
		}
		if h := holderOf(rec, waiterID); h != nil {
			return *h, applied, true, nil
		}
		if !isWaiter(rec, waiterID) {
			return lock.Holder{}, 0, true, ErrWaiterGone
		}
		return lock.Holder{}, 0, false, nil
	}
	for {
		if h, idx, done, err := look(); done {
			return h, idx, err
		}
		select {
		case <-w.ch:
		case <-ctx.Done():
			return lock.Holder{}, 0, ctx.Err()
		case <-r.stop:
			return lock.Holder{}, 0, fmt.Errorf("shard %d: %w", r.id, ErrUnavailable)
		}
	}
}

// WaitLockChange returns nil once the holders of lock name changed after
// sequence number afterSeq as this replica's state shows it: its record's
// ChangeSeq is above afterSeq, or its record was dropped (the lock freed)
// by an entry above afterSeq. The index a status answer reports is the
// record's ChangeSeq, or for a free lock TokenBase()+the applied index it was
// read at, so waiting with it returns at the next change. After a restart or
// a snapshot install a wait on a free lock from before it may return at once
// (a spurious wake-up, never a missed one). Errors: ctx.Err(),
// *fsm.WrongShardError (the lock moved to another shard), ErrUnavailable.
func (r *Replica) WaitLockChange(ctx context.Context, name string, afterSeq uint64) error {
	m := r.locks
	w := &changeWait{name: name, after: afterSeq, ch: make(chan struct{}, 1)}
	m.mu.Lock()
	if m.changes[name] == nil {
		m.changes[name] = map[*changeWait]struct{}{}
	}
	m.changes[name][w] = struct{}{}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.changes[name], w)
		if len(m.changes[name]) == 0 {
			delete(m.changes, name)
		}
		m.mu.Unlock()
	}()
	for {
		rec, _, err := r.fsm.LockRecord([]byte(name))
		if err != nil {
			return err
		}
		if rec != nil && rec.ChangeSeq > afterSeq {
			return nil
		}
		if rec == nil {
			m.mu.Lock()
			d, ok := m.deleted[name]
			floor := m.floor
			m.mu.Unlock()
			if (ok && d > afterSeq) || (!ok && floor > afterSeq) {
				return nil
			}
		}
		select {
		case <-w.ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-r.stop:
			return fmt.Errorf("shard %d: %w", r.id, ErrUnavailable)
		}
	}
}

// LockStatus returns the record of lock name as this replica applied it
// (nil: free) and the index a status answer reports, which WaitLockChange
// takes: the record's ChangeSeq, or for a free lock TokenBase() + the
// applied index it was read at. Errors are fsm.LockRecord's. For a
// linearizable status, call LinearizableRead on the leader first.
func (r *Replica) LockStatus(name string) (*lock.Record, uint64, error) {
	rec, applied, err := r.fsm.LockRecord([]byte(name))
	if err != nil {
		return nil, 0, err
	}
	if rec != nil {
		return rec, rec.ChangeSeq, nil
	}
	return nil, r.fsm.TokenBase() + applied, nil
}

// LockRemaining returns how long the lease of token on lock name has left
// on this replica's countdown (the leader's view; a failover only lengthens
// it), and false when this replica does not lead or does not know the lease.
func (r *Replica) LockRemaining(name string, token uint64) (time.Duration, bool) {
	m := r.locks
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.active {
		return 0, false
	}
	return m.tracker.Remaining(name, token, m.mono())
}

// run is the leader's lock loop: it restarts every countdown from this
// replica's clock (Reset, then Observe every record) and proposes what the
// tracker finds due until ctx ends (leadership lost or shutdown).
func (m *lockManager) run(ctx context.Context, r *Replica) {
	m.mu.Lock()
	m.runs++
	gen := m.runs
	m.tracker = lock.NewTracker(lockRetry)
	m.origin = m.now()
	m.active = true
	m.waiting = 0
	// Loaded under mu: an entry applied meanwhile is observed after the
	// load (onLock waits for mu), so the newest record wins.
	recs, _, err := r.fsm.LockRecords()
	if err != nil {
		r.log.Error("load lock records", "err", err)
	}
	now := m.mono() - r.knobs.lockTakeoverCredit(r.id)
	for _, rec := range recs {
		m.tracker.Observe(rec.Name, rec, now)
		m.waiting += len(rec.Waiters)
	}
	if m.metrics != nil {
		m.metrics.waiters.WithLabelValues(m.shard).Set(float64(m.waiting))
	}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		if m.runs == gen {
			m.active = false
			m.tracker = nil
			if m.metrics != nil {
				m.metrics.waiters.WithLabelValues(m.shard).Set(0)
			}
		}
		m.mu.Unlock()
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ctx.Err() == nil {
		m.mu.Lock()
		if m.runs != gen {
			m.mu.Unlock()
			return
		}
		mono, wall := m.mono(), m.now().UnixNano()
		due := m.tracker.Due(mono, wall)
		next, ok := m.tracker.Next()
		nextWaiter, okWaiter := m.tracker.NextWaiter()
		m.mu.Unlock()
		if len(due) > 0 {
			m.propose(ctx, r, due)
			continue
		}
		wait := time.Hour
		if ok {
			wait = min(wait, next-mono)
		}
		if okWaiter {
			wait = min(wait, time.Duration(nextWaiter-wall))
		}
		timer.Reset(max(wait, time.Millisecond))
		select {
		case <-ctx.Done():
		case <-m.wake:
		case <-timer.C:
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// propose proposes the tracker's commands, a bounded number at a time, and
// waits for them. A failure is logged; the tracker returns the command again
// after lockRetry if it did not take effect.
func (m *lockManager) propose(ctx context.Context, r *Replica, cmds []lock.Command) {
	sem := make(chan struct{}, maxLockProposals)
	var wg sync.WaitGroup
	for _, c := range cmds {
		sem <- struct{}{}
		wg.Add(1)
		go func(c lock.Command) {
			defer func() { <-sem; wg.Done() }()
			cctx, cancel := context.WithTimeout(ctx, r.applyTimeout)
			defer cancel()
			m.proposed.Add(1)
			_, _, err := r.Lock(cctx, c, 0)
			var wrong *fsm.WrongShardError
			switch {
			case errors.As(err, &wrong):
				// A split moved the lock to another shard, whose leader
				// counts it down now: forget it here.
				m.mu.Lock()
				if m.tracker != nil {
					m.tracker.Observe(c.LockName(), nil, m.mono())
				}
				m.mu.Unlock()
			case err != nil && ctx.Err() == nil:
				r.log.Warn("lock tracker proposal failed; will retry as leader",
					"lock", c.LockName(), "kind", c.Kind().String(), "err", err)
			}
		}(c)
	}
	wg.Wait()
}

// TokenCeiling bounds every fencing token this replica's group has handed
// out as far as this replica has applied: a token is at most the seq of its
// grant plus the holders granted with it (lock/DESIGN.md "Why it never goes
// back"), so base + applied index + lock.MaxHolders is above all of them.
// Read it on the leader after a linearizable read to cover every
// acknowledged grant.
func (r *Replica) TokenCeiling() uint64 {
	return r.fsm.TokenBase() + r.fsm.Applied() + lock.MaxHolders
}

// RaiseTokenBase proposes an fsm.OpRaiseBase: every token the group gives
// after it is above floor (leader only; bases never go down).
func (r *Replica) RaiseTokenBase(ctx context.Context, floor uint64) error {
	res, err := r.Propose(ctx, &fsm.Command{Op: fsm.OpRaiseBase, Value: binary.BigEndian.AppendUint64(nil, floor)})
	if err != nil {
		return err
	}
	return res.Err
}
