package test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeLocks is an in-memory lock service and fenced store, correct unless a knob breaks it. It exists to
// show that the lock workloads and their checkers pass a correct service and catch each broken one; the
// product's own tests run the same workloads against a real cluster.
type fakeLocks struct {
	earlyExpiry bool // leases end after a quarter of their ttl (breaks I10)
	tokensBack  bool // tokens restart after a release (breaks I9)
	doubleGrant bool // every third try-lock is granted even if held (breaks mutual exclusion)
	overLimit   bool // a semaphore admits limit+1 holders
	lifo        bool // the newest waiter is served first
	noFence     bool // the store ignores fences (breaks I11)
	readersIn   bool // a shared acquire is granted while a writer holds

	mu     sync.Mutex
	locks  map[string]*fakeLock
	kv     map[string]string
	fences map[string]uint64 // key -> highest token seen (one lock per key in these tests)
	tries  int
}

type fakeLock struct {
	holders []fakeHolder
	waiters []*fakeWaiter // arrival order
	last    uint64
	limit   int // holders allowed together (the knob's extra one included)
}

type fakeHolder struct {
	token   uint64
	ttl     time.Duration
	expires time.Time
	shared  bool
}

type fakeWaiter struct {
	ttl    time.Duration
	shared bool
	token  uint64 // 0 until granted
}

// fits reports whether a grant of the mode fits next to the holders now.
func (f *fakeLocks) fits(l *fakeLock, shared bool) bool {
	excl, sh := 0, 0
	for _, h := range l.holders {
		if h.shared {
			sh++
		} else {
			excl++
		}
	}
	if shared {
		return excl == 0 || f.readersIn
	}
	return excl < l.limit && sh == 0
}

func newFakeLocks() *fakeLocks {
	return &fakeLocks{locks: map[string]*fakeLock{}, kv: map[string]string{}, fences: map[string]uint64{}}
}

// get returns name's lock with expired holders removed and waiters served, as cairn's leader does when
// it applies an expiry. The caller holds f.mu.
func (f *fakeLocks) get(name string) *fakeLock {
	l := f.locks[name]
	if l == nil {
		l = &fakeLock{limit: 1}
		f.locks[name] = l
	}
	now := time.Now()
	live := l.holders[:0]
	for _, h := range l.holders {
		if now.Before(h.expires) {
			live = append(live, h)
		}
	}
	l.holders = live
	f.serve(l)
	return l
}

// serve grants waiters in arrival order (newest first with the lifo knob) while there is room.
func (f *fakeLocks) serve(l *fakeLock) {
	for len(l.waiters) > 0 {
		i := 0
		if f.lifo {
			i = len(l.waiters) - 1
		}
		w := l.waiters[i]
		if !f.fits(l, w.shared) {
			return
		}
		l.waiters = append(l.waiters[:i:i], l.waiters[i+1:]...)
		w.token = f.grant(l, w.ttl, w.shared)
	}
}

func (f *fakeLocks) grant(l *fakeLock, ttl time.Duration, shared bool) uint64 {
	l.last++
	if f.tokensBack && len(l.holders) == 0 && l.last > 3 {
		l.last -= 2
	}
	life := ttl
	if f.earlyExpiry {
		life = ttl / 4
	}
	l.holders = append(l.holders, fakeHolder{token: l.last, ttl: ttl, expires: time.Now().Add(life), shared: shared})
	return l.last
}

func (f *fakeLocks) limit(req LockAcquire) int {
	limit := max(req.Limit, 1)
	if f.overLimit {
		limit++
	}
	return limit
}

func (f *fakeLocks) Acquire(ctx context.Context, name string, req LockAcquire) (uint64, error) {
	limit := f.limit(req)
	f.mu.Lock()
	l := f.get(name)
	l.limit = limit
	f.tries++
	if f.fits(l, req.Shared) && len(l.waiters) == 0 || f.doubleGrant && f.tries%3 == 0 {
		defer f.mu.Unlock()
		return f.grant(l, req.TTL, req.Shared), nil
	}
	if req.Wait == 0 {
		defer f.mu.Unlock()
		held := &LockHeldError{}
		if len(l.holders) > 0 {
			held.Token = l.holders[0].token
		}
		return 0, held
	}
	w := &fakeWaiter{ttl: req.TTL, shared: req.Shared}
	l.waiters = append(l.waiters, w)
	f.mu.Unlock()
	deadline := time.Now().Add(req.Wait)
	for {
		f.mu.Lock()
		l := f.get(name)
		if w.token != 0 {
			f.mu.Unlock()
			return w.token, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			l.waiters = slices.DeleteFunc(l.waiters, func(x *fakeWaiter) bool { return x == w })
			f.mu.Unlock()
			return 0, &LockHeldError{}
		}
		f.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
}

func (f *fakeLocks) holderOp(name string, token uint64, op func(l *fakeLock, i int)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.get(name)
	for i, h := range l.holders {
		if h.token == token {
			op(l, i)
			f.serve(l)
			return nil
		}
	}
	return ErrLockLost
}

func (f *fakeLocks) Renew(_ context.Context, name string, token uint64) error {
	return f.holderOp(name, token, func(l *fakeLock, i int) {
		life := l.holders[i].ttl
		if f.earlyExpiry {
			life /= 4
		}
		l.holders[i].expires = time.Now().Add(life)
	})
}

func (f *fakeLocks) Release(_ context.Context, name string, token uint64) error {
	return f.holderOp(name, token, func(l *fakeLock, i int) {
		l.holders = append(l.holders[:i:i], l.holders[i+1:]...)
	})
}

func (f *fakeLocks) Status(_ context.Context, name string) (LockInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.get(name)
	info := LockInfo{Held: len(l.holders) > 0, Waiters: len(l.waiters)}
	for _, h := range l.holders {
		info.Holders = append(info.Holders, h.token)
	}
	if info.Held {
		info.Token = l.holders[0].token
	}
	return info, nil
}

func (f *fakeLocks) fence(key string, token uint64) error {
	if token == 0 || f.noFence {
		return nil
	}
	if token < f.fences[key] {
		return ErrStaleToken
	}
	f.fences[key] = token
	return nil
}

func (f *fakeLocks) Get(_ context.Context, key, _ string, token uint64) (string, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fence(key, token); err != nil {
		return "", false, err
	}
	v, ok := f.kv[key]
	return v, ok, nil
}

func (f *fakeLocks) Put(_ context.Context, key, value, _ string, token uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fence(key, token); err != nil {
		return err
	}
	f.kv[key] = value
	return nil
}

func fakeLockWorkload(svc LockService, seed uint64, limit int, shared float64) LockWorkloadConfig {
	return LockWorkloadConfig{Service: svc, Names: []string{"a", "b"}, Clients: 5, Ops: 50, Limit: limit,
		TTL: 40 * time.Millisecond, Wait: 30 * time.Millisecond, Abandon: 0.1, Shared: shared,
		OpTimeout: time.Second, Seed: seed}
}

// TestLockWorkloadFakePasses: a correct lock service passes the lock model and the semaphore checker, as
// a mutex, a semaphore and a readers-writer lock.
func TestLockWorkloadFakePasses(t *testing.T) {
	for _, tt := range []struct {
		limit  int
		shared float64
	}{{1, 0}, {2, 0}, {1, 0.6}} {
		limit := tt.limit
		t.Run(fmt.Sprintf("limit %d shared %v", limit, tt.shared), func(t *testing.T) {
			w := RunLockWorkload(Context(t, 20*time.Second), t, fakeLockWorkload(newFakeLocks(), 1, limit, tt.shared))
			if n := len(w.Rec.Operations()); n < 100 {
				t.Errorf("only %d operations recorded", n)
			}
			w.Check(t, limit, 0)
		})
	}
}

// TestLockWorkloadBrokenFakesAreCaught is the workload-level negative control: each knob breaks one
// guarantee, and the checkers must report it.
func TestLockWorkloadBrokenFakesAreCaught(t *testing.T) {
	tests := []struct {
		name   string
		limit  int
		shared float64
		knob   func(f *fakeLocks)
	}{
		{"leases end early (I10)", 1, 0, func(f *fakeLocks) { f.earlyExpiry = true }},
		{"tokens go back (I9)", 1, 0, func(f *fakeLocks) { f.tokensBack = true }},
		{"two holders of a mutex", 1, 0, func(f *fakeLocks) { f.doubleGrant = true }},
		{"a semaphore over its limit", 2, 0, func(f *fakeLocks) { f.overLimit = true }},
		{"readers let in beside a writer", 1, 0.6, func(f *fakeLocks) { f.readersIn = true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(ArtifactsEnv, t.TempDir())
			f := newFakeLocks()
			tt.knob(f)
			w := RunLockWorkload(Context(t, 20*time.Second), t, fakeLockWorkload(f, 2, tt.limit, tt.shared))
			ct := &checkCaptureTB{TB: t}
			if bad := w.Check(ct, tt.limit, 0); bad == 0 || len(ct.errors) == 0 {
				t.Errorf("the checkers found nothing wrong with a broken service")
			}
			t.Logf("caught: %.300s", ct.errors)
		})
	}
}

func TestFIFOWorkloadFake(t *testing.T) {
	for _, lifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("lifo=%v", lifo), func(t *testing.T) {
			f := newFakeLocks()
			f.lifo = lifo
			ws := RunFIFOWorkload(Context(t, 20*time.Second), t, FIFOWorkloadConfig{Service: f, Name: "q",
				Waiters: 6, TTL: 5 * time.Second, Wait: 5 * time.Second})
			for _, w := range ws {
				if !w.Granted || w.Queued == 0 {
					t.Fatalf("waiter %+v: every waiter must be seen queued and granted", w)
				}
			}
			errs := CheckFIFO(ws)
			switch {
			case !lifo && len(errs) > 0:
				t.Errorf("a FIFO service failed: %v", errs)
			case lifo && len(errs) == 0:
				t.Errorf("a LIFO service passed the FIFO check (negative control)")
			}
		})
	}
}

// TestCounterWorkloadFake: with fencing, paused holders' late writes are refused and no update is lost;
// without it (the client sends no fence, or the store ignores it) updates are lost and CheckCounter says so.
func TestCounterWorkloadFake(t *testing.T) {
	pause := func(client, n int) time.Duration {
		if client == 0 && n%2 == 1 {
			return 120 * time.Millisecond // past the ttl: another client takes the lock meanwhile
		}
		return 10 * time.Millisecond
	}
	tests := []struct {
		name     string
		fence    bool
		noFence  bool
		wantLost bool
	}{
		{"fenced", true, false, false},
		{"client sends no fence", false, false, true},
		{"store ignores the fence", true, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeLocks()
			f.noFence = tt.noFence
			res := RunCounterWorkload(Context(t, 20*time.Second), t, CounterWorkloadConfig{Service: f, Lock: "L",
				Key: "counter", Clients: 4, Incs: 8, TTL: 50 * time.Millisecond, Wait: 2 * time.Second,
				Fence: tt.fence, Pause: pause})
			errs := CheckCounter(res.Initial, res.Final, res.Incs)
			t.Logf("%d increments, %d refused, final %d: %v", len(res.Incs), res.Rejected, res.Final, errs)
			lost := false
			for _, err := range errs {
				lost = lost || strings.Contains(err.Error(), "lost update")
			}
			if lost != tt.wantLost {
				t.Errorf("lost updates found = %v, want %v: %v", lost, tt.wantLost, errs)
			}
			if tt.fence && !tt.noFence && res.Rejected == 0 {
				t.Errorf("no paused holder's write was refused: the pauses did not bite")
			}
		})
	}
}
