package lock

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const sec = int64(time.Second)

// step is one command of a table case, applied at the next index (or at
// index when set) with the proposer time at (or the previous one).
type step struct {
	cmd    Command
	index  uint64
	base   uint64 // used when setBase is true: a split moved the record to a new group
	setB   bool
	at     int64
	status Status
	token  uint64 // checked when non-zero
	code   Code   // expected error code
	check  func(t *testing.T, r *Record, res Result)
}

type runner struct {
	t     *testing.T
	rec   *Record
	index uint64
	base  uint64
	now   int64
}

func newRunner(t *testing.T) *runner { return &runner{t: t, now: 1000 * sec} }

// do applies cmd at the next index. Every record Apply returns goes
// through the encoding, as it would through bbolt and snapshots.
func (r *runner) do(cmd Command) Result {
	r.t.Helper()
	r.index++
	return r.apply(cmd)
}

func (r *runner) apply(cmd Command) Result {
	r.t.Helper()
	before := r.rec.Clone()
	next, res := Apply(r.rec, cmd, r.index, r.base, r.now)
	if !reflect.DeepEqual(before, r.rec.Clone()) {
		r.t.Fatalf("Apply modified its input record")
	}
	if res.Err != nil {
		if next != r.rec {
			r.t.Fatalf("%T failed with %v but returned a different record", cmd, res.Err)
		}
		return res
	}
	checkRecord(r.t, next)
	if next != nil {
		dec, err := DecodeRecord(EncodeRecord(next))
		if err != nil {
			r.t.Fatalf("DecodeRecord(EncodeRecord(%+v)): %v", next, err)
		}
		if !reflect.DeepEqual(dec, next) {
			r.t.Fatalf("record does not round-trip:\n got %+v\nwant %+v", dec, next)
		}
		next = dec
	}
	r.rec = next
	return res
}

// checkRecord asserts the structural invariants every record keeps.
func checkRecord(t *testing.T, r *Record) {
	t.Helper()
	if r == nil {
		return
	}
	var last uint64
	excl, shared := 0, 0
	for _, h := range r.Holders {
		if h.Token <= last {
			t.Fatalf("holders' tokens not increasing: %+v", r.Holders) // Invariant I9
		}
		last = h.Token
		if h.Token > r.LastToken {
			t.Fatalf("holder token %d above LastToken %d", h.Token, r.LastToken)
		}
		if h.Mode == Shared {
			shared++
		} else {
			excl++
		}
	}
	if excl > 0 && shared > 0 {
		t.Fatalf("shared and exclusive holders together: %+v", r.Holders)
	}
	if excl > r.Limit || len(r.Holders) > MaxHolders {
		t.Fatalf("%d exclusive holders with limit %d", excl, r.Limit)
	}
	if len(r.Holders) == 0 && len(r.Waiters) == 0 && r.DelaySeq == 0 {
		t.Fatalf("empty record kept: %+v", r)
	}
}

func runSteps(t *testing.T, steps []step) *runner {
	t.Helper()
	r := newRunner(t)
	for i, s := range steps {
		if s.at != 0 {
			r.now = s.at
		}
		if s.setB {
			r.base = s.base
		}
		if s.index != 0 {
			r.index = s.index
		} else {
			r.index++
		}
		res := r.apply(s.cmd)
		if s.code != "" {
			if res.Err == nil || res.Err.Code != s.code {
				t.Fatalf("step %d %T%+v: err %v, want code %s", i, s.cmd, s.cmd, res.Err, s.code)
			}
		} else if res.Err != nil {
			t.Fatalf("step %d %T%+v: unexpected error %v", i, s.cmd, s.cmd, res.Err)
		}
		if res.Status != s.status {
			t.Fatalf("step %d %T%+v: status %d, want %d (result %+v)", i, s.cmd, s.cmd, res.Status, s.status, res)
		}
		if s.token != 0 && res.Token != s.token {
			t.Fatalf("step %d %T%+v: token %d, want %d", i, s.cmd, s.cmd, res.Token, s.token)
		}
		if s.check != nil {
			s.check(t, r.rec, res)
		}
	}
	return r
}

func acq(owner string) Acquire {
	return Acquire{Name: "L", Owner: owner, TTL: 10 * time.Second, Limit: 1, WaiterID: "req-" + owner}
}

func (a Acquire) wait(d time.Duration) Acquire { a.Wait = d; return a }
func (a Acquire) shared() Acquire              { a.Mode = Shared; return a }
func (a Acquire) limit(n int) Acquire          { a.Limit = n; return a }
func (a Acquire) delay(d time.Duration) Acquire {
	a.LockDelay = d
	return a
}

func holders(t *testing.T, r *Record, owners ...string) {
	t.Helper()
	var got []string
	if r != nil {
		for _, h := range r.Holders {
			got = append(got, h.Owner)
		}
	}
	if strings.Join(got, ",") != strings.Join(owners, ",") {
		t.Fatalf("holders %v, want %v", got, owners)
	}
}

func waiters(t *testing.T, r *Record, ids ...string) {
	t.Helper()
	var got []string
	if r != nil {
		for _, w := range r.Waiters {
			got = append(got, w.ID)
		}
	}
	if strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Fatalf("waiters %v, want %v", got, ids)
	}
}

func isFree(t *testing.T, r *Record, _ Result) {
	t.Helper()
	if r != nil {
		t.Fatalf("record kept after the lock became free: %+v", r)
	}
}

func grantedTo(owners ...string) func(*testing.T, *Record, Result) {
	return func(t *testing.T, _ *Record, res Result) {
		t.Helper()
		var got []string
		for _, h := range res.Granted {
			got = append(got, h.Owner)
		}
		if strings.Join(got, ",") != strings.Join(owners, ",") {
			t.Fatalf("granted to %v, want %v", got, owners)
		}
	}
}

// TestApplyTransitions walks every transition of the lock state machine.
// Tokens are base+index of the granting entry (Invariant I9); expiry is a
// command that must name the lease's renew seq (Invariant I10); a stale
// token can neither renew nor release (Invariants I9, I11).
func TestApplyTransitions(t *testing.T) {
	cases := []struct {
		name  string
		steps []step
	}{
		{"acquire free, release, free again", []step{
			{cmd: acq("a"), status: StatusGranted, token: 1, check: func(t *testing.T, r *Record, _ Result) {
				holders(t, r, "a")
				if h := r.Holders[0]; h.GrantSeq != 1 || h.RenewSeq != 1 || h.TTL != 10*time.Second || r.ChangeSeq != 1 {
					t.Fatalf("holder %+v, record %+v", h, r)
				}
			}},
			{cmd: Release{Name: "L", Token: 1}, status: StatusReleased, token: 1, check: isFree},
			{cmd: acq("b"), status: StatusGranted, token: 3},
		}},
		{"trylock on a held lock is lock_held naming the holder", []step{
			{cmd: acq("a"), status: StatusGranted, token: 1},
			{cmd: acq("b"), code: CodeLockHeld, check: func(t *testing.T, r *Record, res Result) {
				if res.Err.Owner != "a" || res.Err.Token != 1 || !errors.Is(res.Err, ErrLockHeld) {
					t.Fatalf("lock_held error %+v does not name the holder", res.Err)
				}
				holders(t, r, "a")
				waiters(t, r)
			}},
		}},
		{"waiters are granted FIFO, each by the entry that frees the lock", []step{
			{cmd: acq("a"), status: StatusGranted, token: 1},
			{cmd: acq("b").wait(time.Minute), status: StatusQueued},
			{cmd: acq("c").wait(time.Minute), status: StatusQueued, check: func(t *testing.T, r *Record, res Result) {
				if res.Position != 1 || res.WaiterID != "req-c" {
					t.Fatalf("queued %+v, want position 1 of req-c", res)
				}
				waiters(t, r, "req-b", "req-c")
			}},
			{cmd: Release{Name: "L", Token: 1}, status: StatusReleased, token: 1, check: func(t *testing.T, r *Record, res Result) {
				grantedTo("b")(t, r, res)
				if res.Granted[0].Token != 4 || res.Granted[0].WaiterID != "req-b" {
					t.Fatalf("grant %+v, want token 4 (the release's index) for req-b", res.Granted[0])
				}
				holders(t, r, "b")
				waiters(t, r, "req-c")
			}},
			{cmd: Release{Name: "L", Token: 4}, status: StatusReleased, check: grantedTo("c")},
			{cmd: Release{Name: "L", Token: 5}, status: StatusReleased, check: isFree},
		}},
		{"a new acquire does not barge past waiters", []step{
			{cmd: acq("a").limit(2), status: StatusGranted},
			{cmd: acq("x").limit(2).shared().wait(time.Minute), status: StatusQueued},
			// A slot is free, but a shared waiter is ahead: b queues (or fails as a try).
			{cmd: acq("b").limit(2), code: CodeLockHeld},
			{cmd: acq("b").limit(2).wait(time.Minute), status: StatusQueued, check: func(t *testing.T, r *Record, _ Result) {
				waiters(t, r, "req-x", "req-b")
			}},
		}},
		{"release and renew by token; stale and foreign tokens are lock_lost", []step{
			{cmd: acq("a"), status: StatusGranted, token: 1},
			{cmd: Renew{Name: "L", Token: 7}, code: CodeLockLost},
			{cmd: Release{Name: "L", Token: 7}, code: CodeLockLost},
			{cmd: Renew{Name: "L", Token: 0}, code: CodeInvalidArgument},
			{cmd: Renew{Name: "L", Token: 1}, status: StatusRenewed, token: 1, check: func(t *testing.T, r *Record, res Result) {
				if res.TTL != 10*time.Second || r.Holders[0].RenewSeq != 5 || r.ChangeSeq != 1 {
					t.Fatalf("renew: result %+v record %+v", res, r)
				}
			}},
			{cmd: Release{Name: "L", Token: 1}, status: StatusReleased, check: isFree},
			{cmd: Release{Name: "L", Token: 1}, code: CodeLockLost},
			{cmd: Renew{Name: "L", Token: 1}, code: CodeLockLost},
		}},
		{"expiry frees the lock for the next waiter with a higher token; the old token is lost", []step{
			{cmd: acq("a"), status: StatusGranted, token: 1},
			{cmd: acq("b").wait(time.Minute), status: StatusQueued},
			{cmd: Expire{Name: "L", Token: 1, RenewSeq: 1}, status: StatusExpired, token: 1, check: func(t *testing.T, r *Record, res Result) {
				grantedTo("b")(t, r, res)
				if res.Granted[0].Token != 3 {
					t.Fatalf("next token %d, want 3", res.Granted[0].Token)
				}
			}},
			{cmd: Renew{Name: "L", Token: 1}, code: CodeLockLost},
			{cmd: Release{Name: "L", Token: 1}, code: CodeLockLost, check: func(t *testing.T, r *Record, _ Result) {
				holders(t, r, "b")
			}},
		}},
		{"an expiry that a renew overtook changes nothing", []step{
			{cmd: acq("a"), status: StatusGranted, token: 1},
			{cmd: Renew{Name: "L", Token: 1}, status: StatusRenewed}, // RenewSeq 2
			{cmd: Expire{Name: "L", Token: 1, RenewSeq: 1}, status: StatusNone, check: func(t *testing.T, r *Record, _ Result) {
				holders(t, r, "a")
			}},
			{cmd: Expire{Name: "L", Token: 9, RenewSeq: 2}, status: StatusNone},
			{cmd: Expire{Name: "L", Token: 1, RenewSeq: 2}, status: StatusExpired, check: isFree},
			{cmd: Expire{Name: "L", Token: 1, RenewSeq: 2}, status: StatusNone, check: isFree},
		}},
		{"lock_delay holds the lock ungranted after an expiry until EndDelay", []step{
			{cmd: acq("a").delay(5 * time.Second), status: StatusGranted, token: 1},
			{cmd: Expire{Name: "L", Token: 1, RenewSeq: 1}, status: StatusExpired, check: func(t *testing.T, r *Record, res Result) {
				if r == nil || r.DelaySeq != 2 || r.Delay != 5*time.Second || r.Held() {
					t.Fatalf("record after expiry %+v, want a delay from seq 2", r)
				}
			}},
			{cmd: acq("b"), code: CodeLockHeld},
			{cmd: acq("b").wait(time.Minute), status: StatusQueued},
			{cmd: EndDelay{Name: "L", DelaySeq: 1}, status: StatusNone},
			{cmd: EndDelay{Name: "L", DelaySeq: 2}, status: StatusDelayEnd, check: func(t *testing.T, r *Record, res Result) {
				grantedTo("b")(t, r, res)
				if r.DelaySeq != 0 || r.Delay != 0 {
					t.Fatalf("delay not cleared: %+v", r)
				}
			}},
		}},
		{"no lock_delay after a clean release", []step{
			{cmd: acq("a").delay(5 * time.Second), status: StatusGranted},
			{cmd: acq("b").wait(time.Minute), status: StatusQueued},
			{cmd: Release{Name: "L", Token: 1}, status: StatusReleased, check: func(t *testing.T, r *Record, res Result) {
				grantedTo("b")(t, r, res)
				if r.DelaySeq != 0 {
					t.Fatalf("release started a delay: %+v", r)
				}
			}},
		}},
		{"a delay-only record is dropped when the delay ends", []step{
			{cmd: acq("a").delay(time.Second), status: StatusGranted},
			{cmd: Expire{Name: "L", Token: 1, RenewSeq: 1}, status: StatusExpired},
			{cmd: EndDelay{Name: "L", DelaySeq: 2}, status: StatusDelayEnd, check: isFree},
		}},
		{"semaphore: limit holders, each with its own token", []step{
			{cmd: acq("a").limit(3), status: StatusGranted, token: 1},
			{cmd: acq("b").limit(3), status: StatusGranted, token: 2},
			{cmd: acq("c").limit(3), status: StatusGranted, token: 3},
			{cmd: acq("d").limit(3), code: CodeLockHeld},
			{cmd: acq("d").limit(3).wait(time.Minute), status: StatusQueued},
			{cmd: Release{Name: "L", Token: 2}, status: StatusReleased, check: func(t *testing.T, r *Record, res Result) {
				grantedTo("d")(t, r, res)
				holders(t, r, "a", "c", "d")
			}},
			{cmd: Renew{Name: "L", Token: 3}, status: StatusRenewed},
			{cmd: Release{Name: "L", Token: 2}, code: CodeLockLost},
		}},
		{"limit must match while the lock is in use", []step{
			{cmd: acq("a").limit(3), status: StatusGranted},
			{cmd: acq("b").limit(2), code: CodeInvalidArgument, check: func(t *testing.T, r *Record, _ Result) {
				holders(t, r, "a")
			}},
			{cmd: Release{Name: "L", Token: 1}, status: StatusReleased, check: isFree},
			{cmd: acq("b").limit(2), status: StatusGranted},
		}},
		{"shared holders together, exclusive alone, FIFO between them", []step{
			{cmd: acq("r1").shared(), status: StatusGranted, token: 1},
			{cmd: acq("r2").shared(), status: StatusGranted, token: 2},
			{cmd: acq("w"), code: CodeLockHeld},
			{cmd: acq("w").wait(time.Minute), status: StatusQueued},
			{cmd: acq("r3").shared().wait(time.Minute), status: StatusQueued},
			{cmd: acq("r4").shared().wait(time.Minute), status: StatusQueued},
			{cmd: Release{Name: "L", Token: 1}, status: StatusReleased, check: grantedTo()},
			{cmd: Release{Name: "L", Token: 2}, status: StatusReleased, check: func(t *testing.T, r *Record, res Result) {
				grantedTo("w")(t, r, res)
				if r.Mode() != Exclusive {
					t.Fatalf("mode %v", r.Mode())
				}
			}},
			// Two shared waiters granted by one entry (index 9): tokens 9 and 10.
			{cmd: Release{Name: "L", Token: 8}, status: StatusReleased, check: func(t *testing.T, r *Record, res Result) {
				grantedTo("r3", "r4")(t, r, res)
				if res.Granted[0].Token != 9 || res.Granted[1].Token != 10 || r.LastToken != 10 {
					t.Fatalf("grants %+v, want tokens 9 and 10", res.Granted)
				}
			}},
			// The next entry's seq (10) is not above the last token: max(last+1, seq) wins.
			{cmd: acq("r5").shared(), status: StatusGranted, token: 11},
		}},
		{"a retried acquire gets its first outcome again", []step{
			{cmd: acq("a"), status: StatusGranted, token: 1},
			{cmd: acq("a"), status: StatusGranted, token: 1},
			{cmd: acq("b").wait(time.Minute), status: StatusQueued},
			{cmd: acq("b").wait(time.Minute), status: StatusQueued, check: func(t *testing.T, r *Record, res Result) {
				waiters(t, r, "req-b")
				if res.Position != 0 {
					t.Fatalf("position %d", res.Position)
				}
			}},
		}},
		{"cancel removes a waiter; cancelling a blocking head lets those behind in", []step{
			{cmd: acq("r1").shared(), status: StatusGranted},
			{cmd: acq("w").wait(time.Minute), status: StatusQueued},
			{cmd: acq("r2").shared().wait(time.Minute), status: StatusQueued},
			{cmd: acq("r3").shared().wait(time.Minute), status: StatusQueued},
			{cmd: CancelWait{Name: "L", WaiterID: "nobody"}, status: StatusNone},
			{cmd: CancelWait{Name: "L", WaiterID: ""}, code: CodeInvalidArgument},
			{cmd: CancelWait{Name: "L", WaiterID: "req-w"}, status: StatusCancelled, check: func(t *testing.T, r *Record, res Result) {
				grantedTo("r2", "r3")(t, r, res)
				holders(t, r, "r1", "r2", "r3")
				if !reflect.DeepEqual(res.Removed, []string{"req-w"}) {
					t.Fatalf("removed %v", res.Removed)
				}
			}},
			// r2's request ended just after its grant: the cancel releases it.
			{cmd: CancelWait{Name: "L", WaiterID: "req-r2"}, status: StatusReleased, token: 7, check: func(t *testing.T, r *Record, _ Result) {
				holders(t, r, "r1", "r3")
			}},
		}},
		{"waiters past their deadline leave and are never granted", []step{
			{cmd: acq("a"), status: StatusGranted, token: 1, at: 1000 * sec},
			{cmd: acq("b").wait(5 * time.Second), status: StatusQueued},
			{cmd: acq("c").wait(time.Minute), status: StatusQueued},
			{cmd: acq("d").wait(2 * time.Second), status: StatusQueued},
			{cmd: ExpireWaiters{Name: "L"}, status: StatusNone, at: 1001 * sec},
			{cmd: ExpireWaiters{Name: "L"}, status: StatusCancelled, at: 1002 * sec, check: func(t *testing.T, r *Record, res Result) {
				waiters(t, r, "req-b", "req-c")
				if !reflect.DeepEqual(res.Removed, []string{"req-d"}) {
					t.Fatalf("removed %v", res.Removed)
				}
			}},
			// b's deadline passed without an ExpireWaiters: the release skips it.
			{cmd: Release{Name: "L", Token: 1}, status: StatusReleased, at: 1006 * sec, check: func(t *testing.T, r *Record, res Result) {
				grantedTo("c")(t, r, res)
				if !reflect.DeepEqual(res.Removed, []string{"req-b"}) {
					t.Fatalf("removed %v", res.Removed)
				}
			}},
		}},
		// Found by TestApplyProperties: an acquire that dropped a timed-out head
		// left a grantable waiter behind it waiting.
		{"an acquire that drops a timed-out head serves the waiters behind it first", []step{
			{cmd: acq("r1").shared(), status: StatusGranted, at: 1000 * sec},
			{cmd: acq("w").wait(2 * time.Second), status: StatusQueued},
			{cmd: acq("r2").shared().wait(time.Minute), status: StatusQueued},
			{cmd: acq("x").wait(time.Minute), status: StatusQueued, at: 1003 * sec, check: func(t *testing.T, r *Record, res Result) {
				grantedTo("r2")(t, r, res)
				holders(t, r, "r1", "r2")
				waiters(t, r, "req-x")
			}},
		}},
		// A refused command reports nothing it did not do: the serve it ran
		// (dropping the timed-out head, granting r2) is discarded with it.
		{"a refused try-acquire reports no grants and names the holder before the entry", []step{
			{cmd: acq("r1").shared(), status: StatusGranted, at: 1000 * sec},
			{cmd: acq("w").wait(2 * time.Second), status: StatusQueued},
			{cmd: acq("r2").shared().wait(time.Minute), status: StatusQueued},
			{cmd: acq("x"), code: CodeLockHeld, at: 1003 * sec, check: func(t *testing.T, r *Record, res Result) {
				if len(res.Granted) != 0 || len(res.Removed) != 0 || res.Err.Owner != "r1" || res.Err.Token != 1 {
					t.Fatalf("refused acquire reported %+v", res)
				}
				holders(t, r, "r1")
				waiters(t, r, "req-w", "req-r2")
			}},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { runSteps(t, tc.steps) })
	}
}

// TestApplyInvalidArguments: bad input is invalid_argument and leaves the
// record untouched (Apply returns it as is).
func TestApplyInvalidArguments(t *testing.T) {
	long := strings.Repeat("x", MaxNameSize+1)
	cases := []struct {
		name string
		cmd  Command
	}{
		{"empty name", Acquire{Name: "", TTL: 10 * time.Second, Limit: 1}},
		{"oversized name", Acquire{Name: long, TTL: 10 * time.Second, Limit: 1}},
		{"NUL in name", Acquire{Name: "a\x00b", TTL: 10 * time.Second, Limit: 1}},
		{"ttl zero", acq("b").limit(1).wait(0).ttl(0)},
		{"ttl below min", acq("b").ttl(MinTTL - 1)},
		{"ttl above max", acq("b").ttl(MaxTTL + 1)},
		{"limit zero", acq("b").limit(0)},
		{"limit negative", acq("b").limit(-1)},
		{"limit above max", acq("b").limit(MaxLimit + 1)},
		{"limit mismatch with the holder's", acq("b").limit(2)},
		{"negative wait", acq("b").wait(-time.Second)},
		{"wait above max", acq("b").wait(MaxWait + 1)},
		{"unknown mode", Acquire{Name: "L", TTL: 10 * time.Second, Limit: 1, Mode: 7}},
		{"lock delay above max", acq("b").delay(MaxLockDelay + 1)},
		{"negative lock delay", acq("b").delay(-1)},
		{"owner too long", Acquire{Name: "L", Owner: long, TTL: 10 * time.Second, Limit: 1}},
		{"request id too long", Acquire{Name: "L", WaiterID: strings.Repeat("r", MaxWaiterIDSize+1), TTL: 10 * time.Second, Limit: 1}},
		{"wait without request id", Acquire{Name: "L", TTL: 10 * time.Second, Limit: 1, Wait: time.Second}},
		{"renew token 0", Renew{Name: "L"}},
		{"release token 0", Release{Name: "L"}},
		{"cancel without id", CancelWait{Name: "L"}},
		{"command for another lock", Release{Name: "M", Token: 1}},
		{"nil command", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRunner(t)
			r.do(acq("a"))
			before := r.rec.Clone()
			next, res := Apply(r.rec, tc.cmd, 2, 0, r.now)
			if res.Err == nil || res.Err.Code != CodeInvalidArgument || !errors.Is(res.Err, ErrInvalidArgument) {
				t.Fatalf("err %v, want invalid_argument", res.Err)
			}
			if next != r.rec || !reflect.DeepEqual(before, next) {
				t.Fatalf("invalid command changed the record: %+v", next)
			}
		})
	}
	if _, res := Apply(nil, acq("a"), 0, 0, 0); res.Err == nil {
		t.Fatal("index 0 accepted")
	}
}

func (a Acquire) ttl(d time.Duration) Acquire { a.TTL = d; return a }

// TestTokenRuleAcrossSplit: a record that moves to a split's child keeps
// its last token, and the child's base (parent base + split index) keeps
// base+index above every token the parent handed out, even when several
// grants in one entry ran ahead of the index and the record was dropped.
// Invariant I9.
func TestTokenRuleAcrossSplit(t *testing.T) {
	// Parent group with base 7 (itself a split's child).
	r := newRunner(t)
	r.base, r.index = 7, 99
	want := func(res Result, tokens ...uint64) {
		t.Helper()
		var got []uint64
		for _, h := range res.Granted {
			got = append(got, h.Token)
		}
		if !reflect.DeepEqual(got, tokens) {
			t.Fatalf("granted tokens %v, want %v", got, tokens)
		}
	}
	want(r.do(acq("w")), 107)                            // index 100
	r.do(acq("r1").shared().wait(time.Hour))             // 101
	r.do(acq("r2").shared().wait(time.Hour))             // 102
	want(r.do(Release{Name: "L", Token: 107}), 110, 111) // 103: two grants, one ahead of base+index
	// The split commits at parent index 104: the child's base is 7+104.
	childBase := r.base + 104
	c := newRunner(t)
	c.rec, c.base, c.index = r.rec.Clone(), childBase, 1 // the child starts from its snapshot at index 1
	res := c.do(acq("r3").shared())                      // child index 2
	want(res, childBase+2)
	if res.Token <= 111 {
		t.Fatalf("child token %d not above the parent's 111", res.Token)
	}
	c.do(Release{Name: "L", Token: 110})
	c.do(Release{Name: "L", Token: 111})
	c.do(Release{Name: "L", Token: res.Token})
	if c.rec != nil {
		t.Fatalf("record kept: %+v", c.rec)
	}
	// The record is gone; a new grant still lands above every earlier token.
	if next := c.do(acq("x")); next.Token <= res.Token {
		t.Fatalf("token %d after a dropped record is not above %d", next.Token, res.Token)
	}
	// The parent's later entries (its own indices continue) never see this
	// name again: the key is outside its range (I5). Its other names keep
	// increasing from its own base+index.
}
