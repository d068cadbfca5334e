package test

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
)

// The Go client's locks (issue 12 item 7) on a real in-process cluster: one
// cluster, each subtest with its own lock names.
func TestLockClient(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"lc/list/m"}})
	addrs := c.HTTPAddrs()
	t.Run("LockUnlockFence", func(t *testing.T) { lockClientBasics(t, addrs) })
	t.Run("S15LostFiresBeforeTakeover", func(t *testing.T) { lockClientLost(t, addrs) })
	t.Run("WatchAndList", func(t *testing.T) { lockClientWatchList(t, addrs) })
	t.Run("I10WaitedGrantKeepsItsLease", func(t *testing.T) { lockClientWaited(t, addrs) })
}

func newLockClient(t *testing.T, addrs []string, knobs *client.Knobs) *client.Client {
	t.Helper()
	cl, err := client.New(client.Config{Endpoints: addrs, Knobs: knobs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

// Lock, TryLock refused naming the holder, Unlock, a higher token for the
// next holder (I9), and the store refusing the old token's fenced put,
// delete and read once the new one reached the key (I11).
func lockClientBasics(t *testing.T, addrs []string) {
	ctx := Context(t, 20*time.Second)
	a, b := newLockClient(t, addrs, nil), newLockClient(t, addrs[1:], nil)
	const name = "lc/basic"
	la, err := a.Lock(ctx, name, client.LockOptions{TTL: 5 * time.Second, Owner: "A"})
	if err != nil {
		t.Fatal(err)
	}
	if la.Token() == 0 || la.Name() != name || la.Owner() != "A" || la.TTL() != 5*time.Second {
		t.Fatalf("grant: name %q token %d owner %q ttl %v", la.Name(), la.Token(), la.Owner(), la.TTL())
	}
	_, err = b.TryLock(ctx, name, client.LockOptions{TTL: 5 * time.Second, Owner: "B"})
	if !errors.Is(err, client.ErrLockHeld) {
		t.Fatalf("TryLock of a held lock: %v, want lock_held", err)
	}
	if owner, tok, ok := client.LockHolderOf(err); !ok || owner != "A" || tok != la.Token() {
		t.Fatalf("lock_held names owner %q token %d (%v), want A %d", owner, tok, ok, la.Token())
	}
	st, err := b.LockStatus(ctx, name)
	if err != nil || !st.Held || st.Token != la.Token() || st.Owner != "A" || st.ExpiresIn() <= 0 || len(st.Holders) != 1 {
		t.Fatalf("status: %+v, %v", st, err)
	}
	if _, err := a.Put(ctx, "lc/basic/k", "a1", la.Fence()); err != nil {
		t.Fatalf("fenced put by the holder: %v", err)
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	if err := la.Unlock(ctx); err != nil {
		t.Fatalf("second unlock (idempotent): %v", err)
	}
	select {
	case <-la.Lost():
		t.Fatal("Unlock closed Lost")
	default:
	}
	lb, err := b.TryLock(ctx, name, client.LockOptions{TTL: 5 * time.Second, Owner: "B"})
	if err != nil {
		t.Fatalf("TryLock after unlock: %v", err)
	}
	defer func() { _ = lb.Unlock(ctx) }()
	if lb.Token() <= la.Token() { // Invariant I9
		t.Fatalf("token %d after %d: tokens must increase", lb.Token(), la.Token())
	}
	// Invariant I11: B's fenced read registers its token; every write of A's
	// older token is then refused, a put, a delete and a fenced read alike.
	if kv, err := b.Get(ctx, "lc/basic/k", lb.FencedRead()); err != nil || kv.Value != "a1" {
		t.Fatalf("fenced read by the new holder: %+v, %v", kv, err)
	}
	if _, err := a.Put(ctx, "lc/basic/k", "a2", la.Fence()); !errors.Is(err, client.ErrStaleToken) {
		t.Fatalf("stale fenced put: %v, want stale_token", err)
	}
	if _, err := a.Delete(ctx, "lc/basic/k", la.Fence()); !errors.Is(err, client.ErrStaleToken) {
		t.Fatalf("stale fenced delete: %v, want stale_token", err)
	}
	if _, err := a.Get(ctx, "lc/basic/k", la.FencedRead()); !errors.Is(err, client.ErrStaleToken) {
		t.Fatalf("stale fenced read: %v, want stale_token", err)
	}
	if _, err := a.Get(ctx, "lc/basic/k", la.FencedRead(), client.Stale(0)); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("fenced stale read: %v, want invalid_argument", err)
	}
	if n, err := b.Delete(ctx, "lc/basic/k", lb.Fence()); err != nil || n != 1 {
		t.Fatalf("fenced delete by the holder: %d, %v", n, err)
	}
	// A renew or release with the old token is lock_lost: a stale holder
	// can neither extend nor free the new grant.
	if _, err := a.RenewLock(ctx, name, la.Token()); !errors.Is(err, client.ErrLockLost) {
		t.Fatalf("renew with the old token: %v, want lock_lost", err)
	}
	if err := a.ReleaseLock(ctx, name, la.Token()); !errors.Is(err, client.ErrLockLost) {
		t.Fatalf("release with the old token: %v, want lock_lost", err)
	}
}

// Scenario S15, invariant I10, from the holder's side: A's renewals stop (a
// paused holder, by the SkipLockRenew knob), its lease expires on the
// leader and B, waiting, gets the lock. A's Lost must have fired before B
// was granted (the client's lease bound is conservative), Unlock reports the
// loss, and A's late fenced write is refused while an unfenced one (the
// negative control) lands: the token, not Lost, is what protects the data.
func lockClientLost(t *testing.T, addrs []string) {
	ctx := Context(t, 20*time.Second)
	var paused atomic.Bool
	a := newLockClient(t, addrs, &client.Knobs{SkipLockRenew: func(string, uint64) bool { return paused.Load() }})
	b := newLockClient(t, addrs, nil)
	const name, key = "lc/lost", "lc/lost/k"
	// A margin of 600ms (not the default ttl/10) keeps the ordering check
	// below from depending on a loaded machine scheduling the client's
	// lease timer within 200ms.
	const ttl = 2 * time.Second
	la, err := a.Lock(ctx, name, client.LockOptions{TTL: ttl, Owner: "A", LeaseMargin: 600 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	// Renewals keep the lock past several renew intervals and a full TTL.
	time.Sleep(2 * ttl)
	select {
	case <-la.Lost():
		t.Fatalf("lost while renewing: %v", la.Err())
	default:
	}
	if _, err := b.TryLock(ctx, name, client.LockOptions{TTL: ttl}); !errors.Is(err, client.ErrLockHeld) {
		t.Fatalf("TryLock while A renews: %v, want lock_held", err)
	}
	var lostAt atomic.Int64
	go func() {
		select {
		case <-la.Lost():
			lostAt.Store(time.Now().UnixNano())
		case <-ctx.Done():
		}
	}()
	paused.Store(true)
	lb, err := b.Lock(ctx, name, client.LockOptions{TTL: 5 * time.Second, Wait: 10 * time.Second, Owner: "B"})
	if err != nil {
		t.Fatalf("B waits for the expiry: %v", err)
	}
	grantedAt := time.Now().UnixNano()
	defer func() { _ = lb.Unlock(ctx) }()
	if l := lostAt.Load(); l == 0 || l > grantedAt {
		t.Fatalf("A's Lost fired at %d, B granted at %d: Lost must fire before the takeover", l, grantedAt)
	}
	if !errors.Is(la.Err(), client.ErrLockLost) {
		t.Fatalf("Err after the lease ran out: %v, want lock_lost", la.Err())
	}
	if err := la.Unlock(ctx); !errors.Is(err, client.ErrLockLost) {
		t.Fatalf("Unlock of a lost lock: %v, want lock_lost", err)
	}
	if lb.Token() <= la.Token() {
		t.Fatalf("B's token %d not above A's %d (I9)", lb.Token(), la.Token())
	}
	if _, err := b.Put(ctx, key, "b", lb.Fence()); err != nil {
		t.Fatalf("B's fenced put: %v", err)
	}
	if _, err := a.Put(ctx, key, "a-late", la.Fence()); !errors.Is(err, client.ErrStaleToken) {
		t.Fatalf("A's late fenced put: %v, want stale_token", err)
	}
	if kv, err := b.Get(ctx, key); err != nil || kv.Value != "b" {
		t.Fatalf("after A's refused write: %+v, %v", kv, err)
	}
	// Negative control: without the fence A's late write lands over B's.
	if _, err := a.Put(ctx, key, "a-late"); err != nil {
		t.Fatalf("unfenced put: %v", err)
	}
	if kv, err := b.Get(ctx, key); err != nil || kv.Value != "a-late" {
		t.Fatalf("negative control: the unfenced late write should land, got %+v, %v", kv, err)
	}
}

// WatchLock returns when the holders change; ListLocks lists across two
// shards in name order.
func lockClientWatchList(t *testing.T, addrs []string) {
	ctx := Context(t, 20*time.Second)
	a := newLockClient(t, addrs, nil)
	const name = "lc/list/z-watched"
	st, err := a.LockStatus(ctx, name)
	if err != nil || st.Held {
		t.Fatalf("status of a free lock: %+v, %v", st, err)
	}
	type answer struct {
		li  *client.LockInfo
		err error
	}
	got := make(chan answer, 1)
	go func() {
		li, err := a.WatchLock(ctx, name, st.Index, 10*time.Second)
		got <- answer{li, err}
	}()
	time.Sleep(200 * time.Millisecond) // let the watch start (it answers a change either way)
	l, err := a.TryLock(ctx, name, client.LockOptions{TTL: 5 * time.Second, Owner: "W"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Unlock(ctx) }()
	select {
	case r := <-got:
		if r.err != nil || !r.li.Held || r.li.Token != l.Token() || r.li.Index == st.Index {
			t.Fatalf("watch answered %+v, %v; want the new holder %d", r.li, r.err, l.Token())
		}
	case <-ctx.Done():
		t.Fatal("watch did not return after the grant")
	}
	names := []string{"lc/list/a", "lc/list/q"} // either side of the split at lc/list/m
	for _, n := range names {
		l, err := a.TryLock(ctx, n, client.LockOptions{TTL: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = l.Unlock(ctx) }()
	}
	locks, err := a.ListLocks(ctx, "lc/list/")
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, li := range locks {
		if !li.Held || li.Token == 0 {
			t.Errorf("listed %+v: want held with a token", li)
		}
		listed = append(listed, li.Name)
	}
	want := []string{"lc/list/a", "lc/list/q", name}
	if len(listed) != len(want) || listed[0] != want[0] || listed[1] != want[1] || listed[2] != want[2] {
		t.Fatalf("ListLocks(lc/list/) = %q, want %q", listed, want)
	}
}

// A grant that waited in the queue longer than its own TTL is held and
// renewed, not taken for lost: the acquire's send time is then more than a
// lease ago, so the client bases the lease on a renew (invariant I10 from
// the client's side).
func lockClientWaited(t *testing.T, addrs []string) {
	ctx := Context(t, 20*time.Second)
	a, b := newLockClient(t, addrs, nil), newLockClient(t, addrs, nil)
	const name = "lc/waited"
	la, err := a.Lock(ctx, name, client.LockOptions{TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(1500 * time.Millisecond) // > B's TTL of 1s
		_ = la.Unlock(ctx)
	}()
	lb, err := b.Lock(ctx, name, client.LockOptions{TTL: time.Second, Wait: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lb.Unlock(ctx) }()
	select {
	case <-lb.Lost():
		t.Fatalf("a grant after a long wait was taken for lost: %v", lb.Err())
	case <-time.After(2 * time.Second):
	}
	if st, err := a.LockStatus(ctx, name); err != nil || st.Token != lb.Token() {
		t.Fatalf("status %+v, %v: want B (%d) still holding after two of its TTLs", st, err, lb.Token())
	}
}
