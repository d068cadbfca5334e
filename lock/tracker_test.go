package lock

import (
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

func granted(t *testing.T, name string, ttl time.Duration, index uint64) *Record {
	t.Helper()
	rec, res := Apply(nil, Acquire{Name: name, TTL: ttl, Limit: 1}, index, 0, 0)
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	return rec
}

// Invariant I10: a lease is due for expiry only a full TTL after the apply
// of its grant or last renew on the leader, and a renew restarts it.
func TestTrackerLeaseCountdown(t *testing.T) {
	tr := NewTracker(time.Second)
	rec := granted(t, "L", 10*time.Second, 1)
	tr.Observe("L", rec, 0)
	if got := tr.Due(10*time.Second-1, 0); len(got) != 0 {
		t.Fatalf("due before the TTL ran: %v", got)
	}
	if next, ok := tr.Next(); !ok || next != 10*time.Second {
		t.Fatalf("Next %v %v", next, ok)
	}
	if left, ok := tr.Remaining("L", 1, 3*time.Second); !ok || left != 7*time.Second {
		t.Fatalf("Remaining %v %v", left, ok)
	}
	if _, ok := tr.Remaining("L", 2, 0); ok {
		t.Fatal("Remaining of an unknown token")
	}
	// A renew applied at 4s moves the deadline to 14s; observing the same
	// record again (another lock entry, say) does not restart it.
	rec, _ = Apply(rec, Renew{Name: "L", Token: 1}, 2, 0, 0)
	tr.Observe("L", rec, 4*time.Second)
	tr.Observe("L", rec, 6*time.Second)
	if got := tr.Due(14*time.Second-1, 0); len(got) != 0 {
		t.Fatalf("due before the renewed TTL ran: %v", got)
	}
	want := []Command{Expire{Name: "L", Token: 1, RenewSeq: 2}}
	if got := tr.Due(14*time.Second, 0); !reflect.DeepEqual(got, want) {
		t.Fatalf("Due = %v, want %v", got, want)
	}
	// Proposed once; again only after the retry interval if it did not apply.
	if got := tr.Due(14*time.Second+time.Second/2, 0); len(got) != 0 {
		t.Fatalf("re-proposed before retry: %v", got)
	}
	if got := tr.Due(15*time.Second, 0); !reflect.DeepEqual(got, want) {
		t.Fatalf("not re-proposed after retry: %v", got)
	}
	next, _ := Apply(rec, want[0], 3, 0, 0)
	tr.Observe("L", next, 15*time.Second)
	if tr.Len() != 0 || len(tr.Due(time.Hour, 0)) != 0 {
		t.Fatal("expired lock still tracked")
	}
}

// Invariant I10: a new leader restarts every countdown. The old leader saw
// the grant at 0; the new one takes over at 8s and gives the lease its
// full TTL from there, whatever its own clock's origin.
func TestTrackerNewLeaderRestartsCountdowns(t *testing.T) {
	rec := granted(t, "L", 10*time.Second, 1)
	old := NewTracker(0)
	old.Observe("L", rec, 0)
	// The new leader's monotonic clock has another origin: 500s at global 8s.
	nl := NewTracker(0)
	nl.Observe("M", granted(t, "M", time.Second, 1), 400*time.Second) // stale state from an earlier term
	nl.Reset()
	nl.Observe("L", rec, 500*time.Second)
	if got := nl.Due(509*time.Second, 0); len(got) != 0 { // global 17s: past the old deadline
		t.Fatalf("new leader expired early: %v", got)
	}
	if got := nl.Due(510*time.Second, 0); len(got) != 1 {
		t.Fatalf("new leader did not expire after a full TTL: %v", got)
	}
}

func TestTrackerDelayAndWaiters(t *testing.T) {
	tr := NewTracker(time.Second)
	rec := granted(t, "L", 10*time.Second, 1)
	rec, _ = Apply(rec, Acquire{Name: "L", TTL: time.Second, Limit: 1, Wait: 5 * time.Second, WaiterID: "w"}, 2, 0, 100*sec)
	tr.Observe("L", rec, 0)
	if at, ok := tr.NextWaiter(); !ok || at != 105*sec {
		t.Fatalf("NextWaiter %d %v", at, ok)
	}
	if got := tr.Due(time.Second, 105*sec-1); len(got) != 0 {
		t.Fatalf("waiters due early: %v", got)
	}
	if got := tr.Due(time.Second, 105*sec); !reflect.DeepEqual(got, []Command{ExpireWaiters{Name: "L"}}) {
		t.Fatalf("Due = %v", got)
	}
	rec, _ = Apply(rec, ExpireWaiters{Name: "L"}, 3, 0, 105*sec)
	// A lease with a lock delay expires: EndDelay is due Delay later on the
	// leader's monotonic clock, not on anyone's wall clock.
	rec, _ = Apply(rec, Renew{Name: "L", Token: 1}, 4, 0, 0)
	rec.Holders[0].LockDelay = 3 * time.Second
	rec, res := Apply(rec, Expire{Name: "L", Token: 1, RenewSeq: 4}, 5, 0, 0)
	if res.Status != StatusExpired || rec == nil || rec.DelaySeq != 5 {
		t.Fatalf("expire: %+v %+v", res, rec)
	}
	tr.Observe("L", rec, 20*time.Second)
	if got := tr.Due(23*time.Second-1, 1e18); len(got) != 0 {
		t.Fatalf("delay ended early: %v", got)
	}
	if got := tr.Due(23*time.Second, 1e18); !reflect.DeepEqual(got, []Command{EndDelay{Name: "L", DelaySeq: 5}}) {
		t.Fatalf("Due = %v", got)
	}
}

// TestLeaseExpiryUnderFailover drives Apply and Tracker together through
// leader changes, election gaps and nodes whose clocks have different
// origins and wall offsets (Scenario S18): while the holder keeps renewing,
// its lease never expires; once it stops, the expiry lands no earlier than
// a full TTL after its last renew was applied (Invariant I10), and the
// waiter gets a higher token (Invariant I9).
func TestLeaseExpiryUnderFailover(t *testing.T) {
	seed := lockSeed(t)
	t.Logf("seed %d (replay with LOCK_SEED=%d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	for range 50 {
		leaseFailoverRun(t, rng)
		if t.Failed() {
			return
		}
	}
}

func leaseFailoverRun(t *testing.T, rng *rand.Rand) {
	const (
		step  = 50 * time.Millisecond
		ttl   = 5 * time.Second
		renew = 2 * time.Second
	)
	type node struct {
		mono time.Duration // the node's monotonic clock at global 0
		wall int64         // the node's wall clock offset
	}
	nodes := make([]node, 3)
	for i := range nodes {
		nodes[i] = node{mono: time.Duration(rng.Int64N(int64(time.Hour))),
			wall: rng.Int64N(10*sec) - 5*sec}
	}
	stop := time.Duration(10+rng.IntN(30)) * time.Second // the holder crashes here
	var (
		rec        *Record
		index      uint64
		leader     = 0
		noLeaderTo time.Duration // an election is running until then
		tr         = NewTracker(time.Second)
		lastRenew  time.Duration // global time the grant or last renew applied
		nextRenew  time.Duration
		holder     uint64
		expiredAt  time.Duration = -1
		leaderFrom time.Duration // when the current leader took over
	)
	apply := func(now time.Duration, c Command) Result {
		index++
		n := nodes[leader]
		next, res := Apply(rec, c, index, 0, int64(now)+n.wall+1e18)
		if res.Err == nil {
			rec = next
			tr.Observe(c.LockName(), rec, n.mono+now)
		}
		return res
	}
	// Leaders fail until stop+2*ttl; then the cluster is stable long enough
	// for the lease to run out.
	for now := time.Duration(0); now < stop+4*ttl; now += step {
		if now < noLeaderTo {
			continue
		}
		if now > 0 && now < stop+2*ttl && rng.IntN(200) == 0 { // the leader fails: an election, then a new leader
			leader = (leader + 1 + rng.IntN(2)) % 3
			noLeaderTo = now + time.Duration(rng.Int64N(int64(3*time.Second)))
			leaderFrom = noLeaderTo
			tr.Reset()
			tr.Observe("L", rec, nodes[leader].mono+noLeaderTo)
			continue
		}
		switch {
		case now == 0:
			res := apply(now, Acquire{Name: "L", Owner: "a", TTL: ttl, Limit: 1})
			holder, lastRenew, nextRenew = res.Token, now, now+renew
			apply(now, Acquire{Name: "L", Owner: "b", TTL: ttl, Limit: 1, Wait: time.Hour, WaiterID: "b"})
		case now < stop && now >= nextRenew && expiredAt < 0:
			if res := apply(now, Renew{Name: "L", Token: holder}); res.Err != nil {
				t.Fatalf("renew at %v: %v", now, res.Err)
			}
			lastRenew, nextRenew = now, now+renew
		}
		for _, c := range tr.Due(nodes[leader].mono+now, int64(now)+nodes[leader].wall+1e18) {
			res := apply(now, c)
			if res.Status != StatusExpired || res.Token != holder {
				continue // b's own lease runs out later: nobody renews it
			}
			if now < stop {
				t.Fatalf("lease expired at %v while the holder renewed (last renew %v)", now, lastRenew)
			}
			if now < lastRenew+ttl {
				t.Fatalf("lease expired at %v, %v after its last renew: early (ttl %v)", now, now-lastRenew, ttl)
			}
			if late := max(lastRenew, leaderFrom) + ttl + step; now > late {
				t.Fatalf("lease expired at %v, after %v (last renew %v, leader since %v)", now, late, lastRenew, leaderFrom)
			}
			if len(res.Granted) != 1 || res.Granted[0].Owner != "b" || res.Granted[0].Token <= holder {
				t.Fatalf("expiry did not pass the lock to the waiter with a higher token: %+v", res)
			}
			expiredAt = now
		}
	}
	if expiredAt < 0 {
		t.Fatalf("lease of a crashed holder (stopped %v) never expired", stop)
	}
}
