package lock

import (
	"cmp"
	"slices"
	"time"
)

// Tracker is the shard leader's countdowns for its locks (invariant I10):
// leases, lock delays and waiter deadlines. It decides when to propose
// Expire, EndDelay and ExpireWaiters; Apply decides whether they take
// effect, so a late or duplicate proposal is harmless.
//
// It reads no clock. Leases and delays run on the leader's monotonic clock,
// passed in as a duration since any fixed origin (time.Since(origin) of a
// time.Time taken once carries Go's monotonic reading); waiter deadlines are
// proposer wall times, so Due takes the wall clock too.
//
// Rules for the caller (shard/):
//   - Only the leader runs a Tracker. On becoming leader: Reset, then Observe
//     every lock record of the shard with the current time. Every countdown
//     therefore starts afresh: a lease granted or renewed under the old leader
//     gets its full TTL again, so failover never expires a lease early.
//   - After every applied lock entry, Observe the lock's new record (nil when
//     Apply dropped it) with the time of the apply on this replica.
//   - On losing leadership, stop calling Due (and Reset before leading again).
//
// Not safe for concurrent use.
type Tracker struct {
	retry time.Duration
	locks map[string]*tracked
}

type tracked struct {
	leases []trackedLease
	// A lock delay in progress: EndDelay{delaySeq} is due at delayEnd.
	delaySeq       uint64
	delayEnd       time.Duration
	delayProposed  time.Duration // when EndDelay was last returned by Due, -1 if never
	hasWaiters     bool
	waiterDeadline int64         // earliest waiter deadline (wall, unix ns)
	waitersAt      time.Duration // when ExpireWaiters was last returned, -1 if never
}

type trackedLease struct {
	token, renewSeq uint64
	deadline        time.Duration // monotonic: the apply of the grant or renew + TTL
	proposed        time.Duration // when Expire was last returned by Due, -1 if never
}

// NewTracker returns an empty tracker. A command Due returned is returned
// again after retry if it has not taken effect by then (the proposal may
// have been lost); retry <= 0 means one second.
func NewTracker(retry time.Duration) *Tracker {
	if retry <= 0 {
		retry = time.Second
	}
	return &Tracker{retry: retry, locks: map[string]*tracked{}}
}

// Reset forgets every countdown: call it when the replica becomes leader,
// before observing the records.
func (t *Tracker) Reset() { clear(t.locks) }

// Len returns how many locks have countdowns.
func (t *Tracker) Len() int { return len(t.locks) }

// Observe records the state of lock name after an entry applied at
// monotonic time now. A holder whose RenewSeq is new to the tracker (a
// grant or a renew) starts a full TTL from now; a holder seen before keeps
// its deadline; holders no longer in rec are forgotten. The same goes for
// a lock delay, keyed by its DelaySeq.
func (t *Tracker) Observe(name string, rec *Record, now time.Duration) {
	if rec == nil || (len(rec.Holders) == 0 && len(rec.Waiters) == 0 && rec.DelaySeq == 0) {
		delete(t.locks, name)
		return
	}
	old := t.locks[name]
	tr := &tracked{delayProposed: -1, waitersAt: -1}
	for _, h := range rec.Holders {
		l := trackedLease{token: h.Token, renewSeq: h.RenewSeq, deadline: now + h.TTL, proposed: -1}
		if old != nil {
			for _, ol := range old.leases {
				if ol.token == h.Token && ol.renewSeq == h.RenewSeq {
					l = ol
				}
			}
		}
		tr.leases = append(tr.leases, l)
	}
	if rec.DelaySeq != 0 {
		tr.delaySeq, tr.delayEnd = rec.DelaySeq, now+rec.Delay
		if old != nil && old.delaySeq == rec.DelaySeq {
			tr.delayEnd, tr.delayProposed = old.delayEnd, old.delayProposed
		}
	}
	for _, w := range rec.Waiters {
		if !tr.hasWaiters || w.Deadline < tr.waiterDeadline {
			tr.hasWaiters, tr.waiterDeadline = true, w.Deadline
		}
	}
	if old != nil && old.hasWaiters && tr.hasWaiters && old.waiterDeadline == tr.waiterDeadline {
		tr.waitersAt = old.waitersAt
	}
	t.locks[name] = tr
}

// Due returns the commands the leader should propose at monotonic time now
// and wall clock wall (unix ns, also the time the proposal carries), in
// name order: Expire for each lease past its deadline, EndDelay for a delay
// that has run, ExpireWaiters for a lock with a waiter past its deadline.
// A command returned is not returned again for retry unless it took effect
// (then Observe removed it) or the state changed.
func (t *Tracker) Due(now time.Duration, wall int64) []Command {
	var out []Command
	for _, name := range t.names() {
		tr := t.locks[name]
		for i := range tr.leases {
			l := &tr.leases[i]
			if now >= l.deadline && (l.proposed < 0 || now >= l.proposed+t.retry) {
				l.proposed = now
				out = append(out, Expire{Name: name, Token: l.token, RenewSeq: l.renewSeq})
			}
		}
		if tr.delaySeq != 0 && now >= tr.delayEnd && (tr.delayProposed < 0 || now >= tr.delayProposed+t.retry) {
			tr.delayProposed = now
			out = append(out, EndDelay{Name: name, DelaySeq: tr.delaySeq})
		}
		if tr.hasWaiters && wall >= tr.waiterDeadline && (tr.waitersAt < 0 || now >= tr.waitersAt+t.retry) {
			tr.waitersAt = now
			out = append(out, ExpireWaiters{Name: name})
		}
	}
	return out
}

// Next returns the earliest monotonic time at which a lease or delay falls
// due, and whether there is one; the caller's timer also wakes for the
// earliest waiter deadline, which NextWaiter gives in wall time.
func (t *Tracker) Next() (time.Duration, bool) {
	var next time.Duration
	found := false
	for _, tr := range t.locks {
		for _, l := range tr.leases {
			at := l.deadline
			if l.proposed >= 0 {
				at = l.proposed + t.retry
			}
			if !found || at < next {
				next, found = at, true
			}
		}
		if tr.delaySeq != 0 {
			at := tr.delayEnd
			if tr.delayProposed >= 0 {
				at = tr.delayProposed + t.retry
			}
			if !found || at < next {
				next, found = at, true
			}
		}
	}
	return next, found
}

// NextWaiter returns the earliest waiter deadline (wall, unix ns), and
// whether any lock has waiters.
func (t *Tracker) NextWaiter() (int64, bool) {
	var next int64
	found := false
	for _, tr := range t.locks {
		if tr.hasWaiters && (!found || tr.waiterDeadline < next) {
			next, found = tr.waiterDeadline, true
		}
	}
	return next, found
}

func (t *Tracker) names() []string {
	names := make([]string, 0, len(t.locks))
	for n := range t.locks {
		names = append(names, n)
	}
	slices.SortFunc(names, cmp.Compare)
	return names
}

// Remaining returns how long the lease of token on lock name has left on
// this leader's countdown at monotonic time now (0 once due), and whether
// the tracker knows the lease: a status answer's "expires_in". It is the
// leader's view; a failover before then only lengthens it.
func (t *Tracker) Remaining(name string, token uint64, now time.Duration) (time.Duration, bool) {
	tr := t.locks[name]
	if tr == nil {
		return 0, false
	}
	for _, l := range tr.leases {
		if l.token == token {
			return max(l.deadline-now, 0), true
		}
	}
	return 0, false
}
