// Checkers over recorded lock histories that a porcupine model of one mutex does not cover (issue 12):
// a semaphore never has more than its limit of holders, waiters are granted in arrival order, and a
// counter incremented under a fenced lock loses no update.

package test

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"time"
)

// LockHold is one grant as its client saw it. Times are on one monotonic clock (LockRecorder.Now).
type LockHold struct {
	Client int
	Token  uint64
	// Granted is when the granting acquire returned: from then on the client knows it holds the lock.
	Granted int64
	// LeaseFrom is the call of the last acknowledged acquire or renew of this grant; the lease is then
	// guaranteed until LeaseFrom+TTL (the server starts its countdown no earlier, I10).
	LeaseFrom int64
	TTL       time.Duration
	// Released is when the client sent its release (0: it never did).
	Released int64
	// Lost is when the client learned it had lost the lock: a renew or release answered lock_lost
	// (0: never).
	Lost int64
	// Shared: a shared (reader) grant; false is exclusive.
	Shared bool
}

// End is when the client stops relying on the grant: its release's call, or the end of its guaranteed
// lease, whichever is first.
func (h LockHold) End() int64 {
	end := h.LeaseFrom + int64(h.TTL)
	if h.Released != 0 {
		end = min(end, h.Released)
	}
	return end
}

func (h LockHold) String() string {
	mode := ""
	if h.Shared {
		mode = " shared"
	}
	return fmt.Sprintf("client %d token %d%s held [%v, %v]", h.Client, h.Token, mode, time.Duration(h.Granted),
		time.Duration(h.End()))
}

// CheckSemaphore checks that at no moment more than limit clients relied on an exclusive grant of one
// lock, and that no shared grant was relied on together with an exclusive one (shared grants admit each
// other without bound): the intervals [Granted, End()) of holds overlap no deeper than that. It also
// checks what a correct server guarantees each hold: tokens are distinct (I9), and no client learned of a
// loss before its guaranteed lease ended (I10). It returns one error per violation found (nil: none).
//
// Why an overlap is a violation: a holder's interval ends no later than its release was sent, or than
// the earliest moment the server may expire it; the next grant on that slot is applied after that and
// returns later still. So in a correct run, conflicting intervals never share a moment.
func CheckSemaphore(holds []LockHold, limit int) []error {
	var errs []error
	seen := make(map[uint64]LockHold, len(holds))
	for _, h := range holds {
		if prev, dup := seen[h.Token]; dup {
			errs = append(errs, fmt.Errorf("I9: token %d granted twice: %v and %v", h.Token, prev, h))
		}
		seen[h.Token] = h
		if h.Lost != 0 && h.Lost < h.LeaseFrom+int64(h.TTL) {
			errs = append(errs, fmt.Errorf("I10: %v learned of its loss at %v, before its lease could end",
				h, time.Duration(h.Lost)))
		}
	}
	type edge struct {
		at    int64
		delta int // +1 start, -1 end
		hold  int
	}
	var edges []edge
	for i, h := range holds {
		if h.End() > h.Granted {
			edges = append(edges, edge{h.Granted, +1, i}, edge{h.End(), -1, i})
		}
	}
	// Ends sort before starts at the same instant: intervals are half-open.
	slices.SortFunc(edges, func(a, b edge) int {
		return cmp.Or(cmp.Compare(a.at, b.at), cmp.Compare(a.delta, b.delta), cmp.Compare(a.hold, b.hold))
	})
	open := map[int]bool{}
	exclusive, shared := 0, 0
	reported := false
	for _, e := range edges {
		n := &exclusive
		if holds[e.hold].Shared {
			n = &shared
		}
		if e.delta < 0 {
			delete(open, e.hold)
			*n--
			continue
		}
		open[e.hold] = true
		*n++
		if (exclusive > limit || exclusive > 0 && shared > 0) && !reported {
			var who []string
			for _, i := range slices.Sorted(maps.Keys(open)) {
				who = append(who, holds[i].String())
			}
			errs = append(errs, fmt.Errorf("lock of limit %d had %d exclusive and %d shared holders at %v: %v",
				limit, exclusive, shared, time.Duration(e.at), who))
			reported = true // one report per run: the first moment is the interesting one
		}
	}
	return errs
}

// LockWaiter is one acquire of a FIFO history, as observed.
type LockWaiter struct {
	Client int
	// Call is when the acquire was sent.
	Call int64
	// Queued is the earliest time at which the client can prove its acquire was in the lock's queue (or
	// granted): the return of a status read, called after this acquire was sent, whose waiter count
	// equals the number of acquires outstanding then (so every one of them is queued); or the acquire's
	// own return if it was granted. 0: never observed.
	Queued int64
	// Granted and Token: the acquire was granted that token.
	Granted bool
	Token   uint64
}

// CheckFIFO checks that waiters were granted in arrival order, as far as the history can show it.
//
// What is observable: the queue's order is decided when each acquire is applied, which the client cannot
// see; it can only bound it. If A is provably queued (A.Queued) before B was even sent (B.Call), A
// arrived first, and since grants take strictly increasing tokens in the order they are made (I9), a
// FIFO queue grants A first: A.Token < B.Token. Acquires whose order is not provable, or that were not
// both granted (a waiter whose wait ran out leaves the queue), constrain nothing. It returns one error per
// B that some earlier arrival A overtook, naming the A with the highest token.
func CheckFIFO(waiters []LockWaiter) []error {
	var granted []LockWaiter
	for _, w := range waiters {
		if w.Granted {
			granted = append(granted, w)
		}
	}
	byQueued := slices.Clone(granted)
	slices.SortFunc(byQueued, func(a, b LockWaiter) int { return cmp.Compare(a.Queued, b.Queued) })
	byCall := slices.Clone(granted)
	slices.SortFunc(byCall, func(a, b LockWaiter) int { return cmp.Compare(a.Call, b.Call) })

	var errs []error
	var best *LockWaiter // the arrival with the highest token among those queued before the current Call
	i := 0
	for _, b := range byCall {
		for ; i < len(byQueued) && byQueued[i].Queued < b.Call; i++ {
			if byQueued[i].Queued == 0 {
				continue
			}
			if best == nil || byQueued[i].Token > best.Token {
				best = &byQueued[i]
			}
		}
		if best != nil && best.Token >= b.Token {
			errs = append(errs, fmt.Errorf("FIFO: client %d was queued at %v, before client %d sent its acquire at %v, "+
				"but got token %d >= %d", best.Client, time.Duration(best.Queued), b.Client, time.Duration(b.Call),
				best.Token, b.Token))
		}
	}
	return errs
}

// CounterIncrement is one read-modify-write of a shared counter under a lock: the value written
// (the value read plus one) and whether the write was acknowledged.
type CounterIncrement struct {
	Client  int
	Token   uint64
	Wrote   int64
	Outcome Outcome // OutcomeOK: acknowledged; OutcomeUnknown: may have landed; others: did not
}

// CheckCounter checks a fenced-counter history for lost updates (I11): every acknowledged increment
// survives in the final value, so final-initial is at least the number of acknowledged increments, and
// at most that plus the increments whose outcome is unknown. Two acknowledged increments that wrote the
// same value read the same value: one overwrote the other (a lost update even if the count hides it).
func CheckCounter(initial, final int64, incs []CounterIncrement) []error {
	var errs []error
	acked, unknown := 0, 0
	wrote := make(map[int64]CounterIncrement)
	for _, inc := range incs {
		switch inc.Outcome {
		case OutcomeOK:
			acked++
			if prev, dup := wrote[inc.Wrote]; dup {
				errs = append(errs, fmt.Errorf("lost update: client %d (token %d) and client %d (token %d) "+
					"both wrote %d, acknowledged", prev.Client, prev.Token, inc.Client, inc.Token, inc.Wrote))
			}
			wrote[inc.Wrote] = inc
		case OutcomeUnknown:
			unknown++
		}
	}
	switch got := final - initial; {
	case got < int64(acked):
		errs = append(errs, fmt.Errorf("lost update: the counter rose by %d, but %d increments were acknowledged "+
			"(%d unknown)", got, acked, unknown))
	case got > int64(acked+unknown):
		errs = append(errs, fmt.Errorf("the counter rose by %d, more than the %d acknowledged and %d unknown increments",
			got, acked, unknown))
	}
	return errs
}
