package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Lock is a held lock that renews itself in the background until Unlock, or
// until it is lost. Its methods are safe for concurrent use.
//
// The lease is judged on this process's monotonic clock: it is taken to end
// at (send time of the last successful acquire or renew) + TTL - LeaseMargin.
// The server's leader starts its countdown only when it applies the grant or
// renew, which is after the client sent it, so as long as clock rates differ
// by less than the margin, Lost fires before the server can expire the lease
// and grant the lock to someone else (lock/DESIGN.md, "Leases and expiry").
// Losing the lock is still possible without Lost having fired in time (a
// process paused longer than the margin sees Lost only when it runs again):
// protect writes with the token (WithFence, FencedRead), not with Lost alone.
type Lock struct {
	c      *Client
	name   string
	token  uint64
	ttl    time.Duration
	owner  string
	margin time.Duration

	ctx    context.Context // ends at Unlock: stops the renewer
	cancel context.CancelFunc
	done   chan struct{} // closed when the renewer has stopped

	mu       sync.Mutex
	leaseEnd time.Time // monotonic
	lostErr  error
	lost     chan struct{}

	unlockOnce sync.Once
	unlockErr  error
}

// Lock acquires the lock name and keeps it: the returned Lock renews its
// lease every TTL/3 and retries retryable failures until the lease would run
// out. opts.Wait 0 waits as long as ctx allows (at most MaxLockWait). A lock
// still held when the wait ends gives an error matching ErrLockHeld
// (LockHolderOf names the holder). ctx bounds the acquire only: the Lock
// lives on until Unlock or its loss.
func (c *Client) Lock(ctx context.Context, name string, opts LockOptions) (*Lock, error) {
	if opts.Wait == 0 {
		opts.Wait = MaxLockWait
		if dl, ok := ctx.Deadline(); ok {
			// End the server's wait a little before ctx, so the answer is
			// lock_held rather than a cut connection.
			left := time.Until(dl)
			opts.Wait = max(0, min(opts.Wait, left-left/10))
		}
	}
	return c.lock(ctx, name, opts)
}

// TryLock is Lock without waiting: it fails at once with an error matching
// ErrLockHeld when the lock is not free.
func (c *Client) TryLock(ctx context.Context, name string, opts LockOptions) (*Lock, error) {
	opts.Wait = 0
	return c.lock(ctx, name, opts)
}

func (c *Client) lock(ctx context.Context, name string, opts LockOptions) (*Lock, error) {
	g, err := c.AcquireLock(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	l := &Lock{
		c: c, name: g.Name, token: g.Token, ttl: g.TTL, owner: g.Owner, margin: opts.margin(),
		done: make(chan struct{}), lost: make(chan struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.leaseEnd = g.Sent.Add(l.ttl - l.margin)
	if time.Since(g.Sent) > l.ttl/3 {
		// The acquire waited in the queue: the grant is younger than the
		// send time, which may already be a lease ago. A renew sent now
		// gives a bound worth having.
		sent := time.Now()
		if _, err := c.RenewLock(ctx, l.name, l.token); err != nil {
			rctx, cancel := context.WithTimeout(context.Background(), l.ttl)
			defer cancel()
			_ = c.ReleaseLock(rctx, l.name, l.token)
			return nil, err
		}
		l.leaseEnd = sent.Add(l.ttl - l.margin)
	}
	go l.renewLoop(l.ttl / 3)
	return l, nil
}

// Name returns the lock's name.
func (l *Lock) Name() string { return l.name }

// Token returns the fencing token of this grant (invariant I9).
func (l *Lock) Token() uint64 { return l.token }

// TTL returns the lease length.
func (l *Lock) TTL() time.Duration { return l.ttl }

// Owner returns the owner label the grant carries.
func (l *Lock) Owner() string { return l.owner }

// Lost returns a channel closed when the lock is lost: a renew was answered
// lock_lost (or not_found), or no renew succeeded before the lease would
// have run out on this process's clock. Unlock does not close it.
func (l *Lock) Lost() <-chan struct{} { return l.lost }

// Err returns why the lock was lost (an error matching ErrLockLost), or nil
// while it is held.
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lostErr
}

// LeaseEnd returns when the lease is taken to end on this process's
// monotonic clock (see Lock).
func (l *Lock) LeaseEnd() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.leaseEnd
}

// Fence returns the option that makes a Put or Delete a fenced write under
// this grant (invariant I11).
func (l *Lock) Fence() WriteOption { return WithFence(l.name, l.token) }

// FencedRead returns the option that makes a Get a fenced read under this
// grant: it registers the token on the key, so every later write with a
// lower token is refused (docs/api.md, "Locks").
func (l *Lock) FencedRead() ReadOption { return FencedRead(l.name, l.token) }

// Unlock stops the renewals and releases the lock. It is idempotent: later
// calls return the first call's result. When the lock had already been
// lost it releases nothing and returns why (matching ErrLockLost): the
// caller's critical section may have overlapped another holder's.
func (l *Lock) Unlock(ctx context.Context) error {
	l.unlockOnce.Do(func() {
		l.cancel()
		<-l.done
		if err := l.Err(); err != nil {
			l.unlockErr = err
			return
		}
		err := l.c.ReleaseLock(ctx, l.name, l.token)
		if errors.Is(err, ErrLockLost) || errors.Is(err, ErrNotFound) {
			l.markLost(err)
		}
		l.unlockErr = err
	})
	return l.unlockErr
}

// markLost records the first reason the lock was lost and closes Lost.
func (l *Lock) markLost(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lostErr != nil {
		return
	}
	if !errors.Is(err, ErrLockLost) {
		err = &Error{Code: CodeLockLost, Message: err.Error(), err: err}
	}
	l.lostErr = err
	close(l.lost)
	l.c.log.Debug("cairn client: lock lost", "name", l.name, "token", l.token, "err", err)
}

// renewLoop renews the lease every TTL/3 (the first time after first) until
// Unlock, a definite loss, or the lease's end on this process's clock.
func (l *Lock) renewLoop(first time.Duration) {
	defer close(l.done)
	next := first
	failures := 0
	for {
		end := l.LeaseEnd()
		left := time.Until(end)
		if left <= 0 {
			l.markLost(fmt.Errorf("lease of %q (token %d) ran out on the client's clock: no renew succeeded within ttl %v less margin %v",
				l.name, l.token, l.ttl, l.margin))
			return
		}
		if next > left {
			next = left // wake at the lease's end to declare it lost
		}
		t := time.NewTimer(next)
		select {
		case <-l.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if time.Until(end) <= 0 {
			continue
		}
		if skip := l.c.knobs.SkipLockRenew; skip != nil && skip(l.name, l.token) {
			next = l.ttl / 3
			continue
		}
		sent := time.Now()
		ctx, cancel := context.WithDeadline(l.ctx, end)
		_, err := l.c.RenewLock(ctx, l.name, l.token)
		cancel()
		switch {
		case err == nil:
			l.mu.Lock()
			l.leaseEnd = sent.Add(l.ttl - l.margin)
			l.mu.Unlock()
			failures, next = 0, l.ttl/3
		case l.ctx.Err() != nil:
			return
		case errors.Is(err, ErrLockLost), errors.Is(err, ErrNotFound), errors.Is(err, ErrInvalidArgument):
			l.markLost(err)
			return
		default:
			failures++
			next = l.c.backoff(failures)
			l.c.log.Debug("cairn client: lock renew failed", "name", l.name, "token", l.token, "err", err)
		}
	}
}
