package test

import (
	"strings"
	"testing"
	"time"
)

func hold(client int, tok uint64, granted, leaseFrom int64, ttl int64, released int64) LockHold {
	return LockHold{Client: client, Token: tok, Granted: granted, LeaseFrom: leaseFrom, TTL: time.Duration(ttl),
		Released: released}
}

func shared(h LockHold) LockHold {
	h.Shared = true
	return h
}

// TestCheckSemaphore: the checker passes hand-offs and expiries done right and fails each violation
// (its negative controls).
func TestCheckSemaphore(t *testing.T) {
	tests := []struct {
		name  string
		limit int
		holds []LockHold
		want  string // "" for no error, else a fragment of the first error
	}{
		{"empty", 1, nil, ""},
		{"mutex hand-off by release", 1, []LockHold{
			hold(0, 5, 10, 0, 1000, 50),
			hold(1, 6, 60, 40, 1000, 90), // sent while A held; granted after A's release
		}, ""},
		{"mutex hand-off by expiry", 1, []LockHold{
			hold(0, 5, 10, 0, 100, 0),
			hold(1, 6, 120, 30, 1000, 0),
		}, ""},
		{"a renew extends the interval", 1, []LockHold{
			hold(0, 5, 10, 80, 100, 0), // renewed at 80: relies on it until 180
			hold(1, 6, 190, 30, 1000, 0),
		}, ""},
		{"two of a semaphore of two", 2, []LockHold{
			hold(0, 5, 10, 0, 1000, 500),
			hold(1, 6, 20, 15, 1000, 500),
			hold(2, 7, 510, 30, 1000, 600), // a third waits for a slot
		}, ""},
		{"touching intervals do not overlap", 1, []LockHold{
			hold(0, 5, 10, 0, 1000, 50),
			hold(1, 6, 50, 40, 1000, 90),
		}, ""},
		{"a lease that ended before its grant returned relies on nothing", 1, []LockHold{
			hold(0, 5, 10, 0, 1000, 0),
			hold(1, 6, 500, 0, 100, 0),
		}, ""},
		{"readers together, then a writer", 1, []LockHold{
			shared(hold(0, 5, 10, 0, 1000, 500)),
			shared(hold(1, 6, 20, 15, 1000, 450)),
			shared(hold(2, 7, 30, 25, 1000, 480)),
			hold(3, 8, 510, 40, 1000, 600),
			shared(hold(0, 9, 610, 550, 1000, 700)),
		}, ""},
		{"loss learned after the lease could end", 1, []LockHold{
			{Client: 0, Token: 5, Granted: 10, LeaseFrom: 0, TTL: 100, Lost: 150},
		}, ""},

		// Negative controls.
		{"two holders of a mutex", 1, []LockHold{
			hold(0, 5, 10, 0, 1000, 50),
			hold(1, 6, 40, 30, 1000, 90),
		}, "lock of limit 1 had 2 exclusive"},
		{"a grant before the lease could end", 1, []LockHold{
			hold(0, 5, 10, 0, 100, 0),
			hold(1, 6, 90, 30, 1000, 0),
		}, "had 2 exclusive"},
		{"three holders of a semaphore of two", 2, []LockHold{
			hold(0, 5, 10, 0, 1000, 500),
			hold(1, 6, 20, 15, 1000, 500),
			hold(2, 7, 30, 25, 1000, 600),
		}, "lock of limit 2 had 3 exclusive"},
		{"a token granted twice", 2, []LockHold{
			hold(0, 5, 10, 0, 1000, 500),
			hold(1, 5, 20, 15, 1000, 500),
		}, "I9: token 5 granted twice"},
		{"an exclusive holder among readers", 1, []LockHold{
			shared(hold(0, 5, 10, 0, 1000, 500)),
			shared(hold(1, 6, 20, 15, 1000, 500)),
			hold(2, 7, 30, 25, 1000, 600),
		}, "1 exclusive and 2 shared holders"},
		{"a reader while a writer holds", 1, []LockHold{
			hold(0, 5, 10, 0, 1000, 500),
			shared(hold(1, 6, 400, 15, 1000, 700)),
		}, "1 exclusive and 1 shared"},
		{"loss learned before the lease could end", 1, []LockHold{
			{Client: 0, Token: 5, Granted: 10, LeaseFrom: 0, TTL: 100, Lost: 60},
		}, "I10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errs := CheckSemaphore(tt.holds, tt.limit)
			checkErrs(t, errs, tt.want)
		})
	}
}

func checkErrs(t *testing.T, errs []error, want string) {
	t.Helper()
	switch {
	case want == "" && len(errs) > 0:
		t.Errorf("got errors %v, want none", errs)
	case want != "" && len(errs) == 0:
		t.Errorf("got no error, want one containing %q", want)
	case want != "" && !strings.Contains(errs[0].Error(), want):
		t.Errorf("got %v, want an error containing %q", errs, want)
	}
}

func TestCheckFIFO(t *testing.T) {
	w := func(client int, call, queued int64, tok uint64) LockWaiter {
		return LockWaiter{Client: client, Call: call, Queued: queued, Granted: tok != 0, Token: tok}
	}
	tests := []struct {
		name    string
		waiters []LockWaiter
		want    string
	}{
		{"empty", nil, ""},
		{"in arrival order", []LockWaiter{
			w(0, 0, 10, 5), w(1, 20, 30, 6), w(2, 40, 50, 9),
		}, ""},
		{"concurrent arrivals may go either way", []LockWaiter{
			w(0, 0, 30, 6), w(1, 20, 40, 5), // A was not provably queued before B was sent
		}, ""},
		{"an arrival never seen queued constrains nothing", []LockWaiter{
			w(0, 0, 0, 6), w(1, 20, 40, 5),
		}, ""},
		{"a waiter that gave up constrains nothing", []LockWaiter{
			w(0, 0, 10, 0), w(1, 20, 30, 6), w(2, 40, 50, 7),
		}, ""},

		// Negative controls.
		{"a later arrival granted first", []LockWaiter{
			w(0, 0, 10, 6), w(1, 20, 30, 5),
		}, "FIFO: client 0 was queued"},
		{"the third arrival overtakes the first", []LockWaiter{
			w(0, 0, 10, 9), w(1, 20, 30, 10), w(2, 40, 50, 7),
		}, "client 1"}, // the overtaken arrival with the highest token is named
		{"equal tokens", []LockWaiter{
			w(0, 0, 10, 6), w(1, 20, 30, 6),
		}, "FIFO"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkErrs(t, CheckFIFO(tt.waiters), tt.want) })
	}
}

func TestCheckCounter(t *testing.T) {
	inc := func(client int, wrote int64, o Outcome) CounterIncrement {
		return CounterIncrement{Client: client, Token: uint64(10 + client), Wrote: wrote, Outcome: o}
	}
	tests := []struct {
		name           string
		initial, final int64
		incs           []CounterIncrement
		want           string
	}{
		{"no increments", 3, 3, nil, ""},
		{"every acknowledged increment counted", 0, 3, []CounterIncrement{
			inc(0, 1, OutcomeOK), inc(1, 2, OutcomeOK), inc(0, 3, OutcomeOK),
		}, ""},
		{"an unknown increment may have landed", 0, 3, []CounterIncrement{
			inc(0, 1, OutcomeOK), inc(1, 2, OutcomeUnknown), inc(0, 3, OutcomeOK),
		}, ""},
		{"an unknown increment may not have landed", 0, 2, []CounterIncrement{
			inc(0, 1, OutcomeOK), inc(1, 2, OutcomeUnknown), inc(0, 2, OutcomeOK),
		}, ""},
		{"a failed (rejected) increment never counts", 0, 1, []CounterIncrement{
			inc(0, 1, OutcomeOK), inc(1, 1, OutcomeFailed),
		}, ""},

		// Negative controls.
		{"a lost update", 0, 2, []CounterIncrement{
			inc(0, 1, OutcomeOK), inc(1, 2, OutcomeOK), inc(0, 3, OutcomeOK),
		}, "lost update: the counter rose by 2, but 3"},
		{"two acknowledged writes of the same value", 0, 3, []CounterIncrement{
			inc(0, 1, OutcomeOK), inc(1, 1, OutcomeOK), inc(1, 2, OutcomeUnknown), inc(0, 3, OutcomeOK),
		}, "both wrote 1"},
		{"more than was written", 0, 4, []CounterIncrement{
			inc(0, 1, OutcomeOK), inc(1, 2, OutcomeOK),
		}, "more than the 2 acknowledged"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkErrs(t, CheckCounter(tt.initial, tt.final, tt.incs), tt.want) })
	}
}
