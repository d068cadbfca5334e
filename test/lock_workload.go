// Lock workloads (issue 12): concurrent clients drive a LockService and record what they saw, for the
// lock model (LockModel), the semaphore, FIFO and counter checkers. Every loop is bounded in count and
// time; every random choice comes from the seed, which the tests log.

package test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// LockWorkloadConfig configures RunLockWorkload.
type LockWorkloadConfig struct {
	Service LockService
	Names   []string // the locks; each client picks one per acquire
	Clients int
	Ops     int           // per client, at most
	Limit   int           // semaphore limit (1: a mutex, checked with LockModel too)
	TTL     time.Duration // every lease's
	// Wait is the longest wait of an acquire; each picks 0 (try-lock) or a random wait up to it.
	Wait time.Duration
	// Abandon is the chance that a holder stops renewing and forgets its grant, so it expires.
	Abandon float64
	// Shared is the chance that an acquire asks for a shared grant (a readers-writer lock). Histories
	// with shared grants are checked by CheckSemaphore only, not by the mutex model.
	Shared float64
	// OpTimeout bounds each call.
	OpTimeout time.Duration
	Seed      uint64
}

// LockWorkload is what RunLockWorkload recorded.
type LockWorkload struct {
	Rec    *LockRecorder
	shared bool // some acquires were shared
	mu     sync.Mutex
	// Holds are the grants as their clients saw them, per lock name (for CheckSemaphore).
	Holds map[string][]LockHold
	// unknown and refused count the errors read as unknown outcomes and as refusals, by operation and
	// message (the first few distinct ones), for the log.
	unknown, refused map[string]int
}

func (w *LockWorkload) note(m map[string]int, op LockOp, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	msg := string(op) + ": " + err.Error()
	if _, ok := m[msg]; ok || len(m) < 8 {
		m[msg]++
	}
}

func (w *LockWorkload) addHold(name string, h LockHold) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.Holds[name] = append(w.Holds[name], h)
}

// Summary counts the recorded operations by kind and answer.
func (w *LockWorkload) Summary() string {
	counts := map[string]int{}
	for _, op := range w.Rec.Operations() {
		in, out := op.Input.(LockInput), op.Output.(LockOutput)
		what := "ok"
		switch {
		case out.Unknown:
			what = "unknown"
		case out.Held:
			what = "lock_held"
		case out.Lost:
			what = "lock_lost"
		}
		counts[string(in.Op)+" "+what]++
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return fmt.Sprintf("%v; unknown outcomes from %v; refused (left out) %v", counts, w.unknown, w.refused)
}

// Check runs the checkers on the recorded workload: the porcupine lock model when the limit is 1 and no
// grant was shared (slack as LockModel's), and CheckSemaphore for every lock. It fails t on a violation and returns the number
// of violations found.
func (w *LockWorkload) Check(t testing.TB, limit int, slack time.Duration) int {
	t.Helper()
	t.Logf("lock workload: %s", w.Summary())
	bad := 0
	if limit == 1 && !w.shared {
		if w.Rec.Check(t, slack, 30*time.Second) == porcupine.Illegal {
			bad++
		}
	}
	for name, holds := range w.Holds {
		for _, err := range CheckSemaphore(holds, limit) {
			t.Errorf("lock %q: %v", name, err)
			bad++
		}
	}
	return bad
}

// RunLockWorkload runs cfg.Clients clients, each doing up to cfg.Ops operations on the locks until ctx
// ends: acquire (try-lock or a wait), and while holding, renew, status, release, or abandon the grant.
func RunLockWorkload(ctx context.Context, t testing.TB, cfg LockWorkloadConfig) *LockWorkload {
	t.Helper()
	if cfg.Limit == 0 {
		cfg.Limit = 1
	}
	if cfg.Service == nil || len(cfg.Names) == 0 || cfg.Clients < 1 || cfg.Ops < 1 || cfg.TTL <= 0 || cfg.Wait < 0 ||
		cfg.Shared < 0 || cfg.Shared > 1 {
		t.Fatalf("lock workload: bad config %+v", cfg)
	}
	if cfg.OpTimeout == 0 {
		cfg.OpTimeout = 5 * time.Second
	}
	w := &LockWorkload{Rec: NewLockRecorder(), Holds: map[string][]LockHold{}, shared: cfg.Shared > 0,
		unknown: map[string]int{}, refused: map[string]int{}}
	t.Logf("lock workload: seed %d, %d clients x %d ops, locks %q, limit %d, ttl %v", cfg.Seed, cfg.Clients,
		cfg.Ops, cfg.Names, cfg.Limit, cfg.TTL)
	var wg sync.WaitGroup
	for i := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &lockClient{cfg: cfg, id: i, w: w, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(i)))}
			c.run(WithClient(ctx, i))
		}()
	}
	wg.Wait()
	return w
}

type lockClient struct {
	cfg  LockWorkloadConfig
	id   int
	w    *LockWorkload
	rng  *rand.Rand
	name string
	hold *LockHold // nil: not holding
}

func (c *lockClient) run(ctx context.Context) {
	for op := 0; op < c.cfg.Ops && ctx.Err() == nil; op++ {
		if c.hold == nil {
			c.acquire(ctx)
		} else {
			switch r := c.rng.Float64(); {
			case r < c.cfg.Abandon:
				c.endHold() // stop renewing: the lease expires on its own
			case r < 0.4:
				c.renew(ctx)
			case r < 0.5:
				c.status(ctx)
			default:
				c.release(ctx)
			}
		}
		pause := time.Duration(c.rng.IntN(20)) * time.Millisecond
		if c.hold == nil {
			pause += 20 * time.Millisecond // back off after a refusal or a release: let others in
		}
		sleepCtx(ctx, pause)
	}
	if c.hold != nil {
		c.release(context.WithoutCancel(ctx)) // leave nothing held behind a finished run
	}
}

// call records in around f. f returns what a status saw, or the token an acquire was granted.
func (c *lockClient) call(ctx context.Context, in LockInput, f func(context.Context) (LockInfo, error)) error {
	in.Client, in.Name = c.id, c.name
	finish := c.w.Rec.Call(in)
	octx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout+in.Wait)
	info, err := f(octx)
	cancel()
	out, refused := LockOutcomeOf(err)
	switch {
	case out.Unknown:
		c.w.note(c.w.unknown, in.Op, err)
	case refused:
		c.w.note(c.w.refused, in.Op, err)
	}
	switch {
	case refused:
		out = LockOutput{Refused: true} // nothing took effect and nothing was observed
	case in.Op == LockOpStatus && err == nil:
		out = LockOutput{StatusHeld: info.Held, Token: info.Token}
	case in.Op == LockOpAcquire && err == nil:
		out.Token = info.Token
	case in.Op == LockOpAcquire && out.Held && in.Wait > 0:
		out.HeldBy = 0 // a waited refusal names the holder from a local read, not at a linearized point
	}
	finish(out)
	return err
}

func (c *lockClient) acquire(ctx context.Context) {
	c.name = c.cfg.Names[c.rng.IntN(len(c.cfg.Names))]
	var wait time.Duration
	if c.cfg.Wait > 0 && c.rng.IntN(3) == 0 {
		wait = time.Duration(c.rng.Int64N(int64(c.cfg.Wait)))
	}
	shared := c.rng.Float64() < c.cfg.Shared
	var token uint64
	call := c.w.Rec.Now() // before the recorder's stamp: the conservative start of the lease
	err := c.call(ctx, LockInput{Op: LockOpAcquire, TTL: c.cfg.TTL, Wait: wait}, func(ctx context.Context) (LockInfo, error) {
		var err error
		token, err = c.cfg.Service.Acquire(ctx, c.name, LockAcquire{TTL: c.cfg.TTL, Wait: wait,
			Owner: "c" + strconv.Itoa(c.id), Limit: c.cfg.Limit, Shared: shared})
		return LockInfo{Token: token}, err
	})
	if err == nil {
		c.hold = &LockHold{Client: c.id, Token: token, Granted: c.w.Rec.Now(), LeaseFrom: call, TTL: c.cfg.TTL,
			Shared: shared}
	}
}

func (c *lockClient) renew(ctx context.Context) {
	call := c.w.Rec.Now()
	tok := c.hold.Token
	err := c.call(ctx, LockInput{Op: LockOpRenew, Token: tok, TTL: c.cfg.TTL}, func(ctx context.Context) (LockInfo, error) {
		return LockInfo{}, c.cfg.Service.Renew(ctx, c.name, tok)
	})
	switch {
	case err == nil:
		c.hold.LeaseFrom = call
	case errors.Is(err, ErrLockLost):
		c.hold.Lost = c.w.Rec.Now()
		c.endHold()
	}
}

func (c *lockClient) release(ctx context.Context) {
	c.hold.Released = c.w.Rec.Now()
	tok := c.hold.Token
	err := c.call(ctx, LockInput{Op: LockOpRelease, Token: tok}, func(ctx context.Context) (LockInfo, error) {
		return LockInfo{}, c.cfg.Service.Release(ctx, c.name, tok)
	})
	if errors.Is(err, ErrLockLost) {
		c.hold.Lost = c.w.Rec.Now()
	}
	c.endHold()
}

func (c *lockClient) status(ctx context.Context) {
	_ = c.call(ctx, LockInput{Op: LockOpStatus}, func(ctx context.Context) (LockInfo, error) {
		return c.cfg.Service.Status(ctx, c.name)
	})
}

func (c *lockClient) endHold() {
	if c.hold != nil {
		c.w.addHold(c.name, *c.hold)
	}
	c.hold = nil
}

// FIFOWorkloadConfig configures RunFIFOWorkload.
type FIFOWorkloadConfig struct {
	Service LockService
	Name    string
	Waiters int
	TTL     time.Duration
	Wait    time.Duration // each waiter's wait; long enough for all before it to hold and release
	// BetweenQueued, if set, runs after each waiter is seen queued (a fault, a leader transfer).
	BetweenQueued func(i int)
}

// RunFIFOWorkload queues waiters one at a time behind a held lock and records, for each, when it was
// provably queued: after sending waiter i, it polls the lock's status until the waiter count is i+1
// (every waiter sent so far is queued, since the holder keeps the lock all along). Then the holder
// releases and every waiter, once granted, releases in turn. CheckFIFO the result.
func RunFIFOWorkload(ctx context.Context, t testing.TB, cfg FIFOWorkloadConfig) []LockWaiter {
	t.Helper()
	rec := NewLockRecorder()
	svc := cfg.Service
	holder, err := svc.Acquire(WithClient(ctx, 0), cfg.Name, LockAcquire{TTL: cfg.TTL, Owner: "holder"})
	if err != nil {
		t.Fatalf("FIFO: the first acquire of %q: %v", cfg.Name, err)
	}
	waiters := make([]LockWaiter, cfg.Waiters)
	var (
		mu sync.Mutex // waiters
		wg sync.WaitGroup
	)
	for i := range cfg.Waiters {
		cctx := WithClient(ctx, i+1)
		mu.Lock()
		waiters[i] = LockWaiter{Client: i + 1, Call: rec.Now()}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := svc.Acquire(cctx, cfg.Name, LockAcquire{TTL: cfg.TTL, Wait: cfg.Wait, Owner: fmt.Sprintf("w%d", i+1)})
			if err != nil {
				t.Logf("FIFO: waiter %d: %v", i+1, err)
				return
			}
			ret := rec.Now()
			mu.Lock()
			waiters[i].Granted, waiters[i].Token = true, tok
			if waiters[i].Queued == 0 {
				waiters[i].Queued = ret // granted: it was in by its return
			}
			mu.Unlock()
			sleepCtx(ctx, 5*time.Millisecond)
			if err := svc.Release(cctx, cfg.Name, tok); err != nil {
				t.Logf("FIFO: waiter %d release: %v", i+1, err)
			}
		}()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) && ctx.Err() == nil {
			info, err := svc.Status(WithClient(ctx, 0), cfg.Name)
			if err == nil && info.Waiters == i+1 && info.Held && info.Token == holder {
				mu.Lock()
				waiters[i].Queued = rec.Now()
				mu.Unlock()
				break
			}
			sleepCtx(ctx, 5*time.Millisecond)
		}
		mu.Lock()
		if waiters[i].Queued == 0 {
			t.Logf("FIFO: waiter %d was never seen queued", i+1)
		}
		mu.Unlock()
		if cfg.BetweenQueued != nil {
			cfg.BetweenQueued(i)
		}
	}
	if err := svc.Release(WithClient(ctx, 0), cfg.Name, holder); err != nil {
		t.Errorf("FIFO: the holder's release: %v", err)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return waiters
}

// CounterWorkloadConfig configures RunCounterWorkload.
type CounterWorkloadConfig struct {
	Service LockService
	Lock    string
	Key     string
	Clients int
	Incs    int // per client, at most
	TTL     time.Duration
	Wait    time.Duration
	// Fence sends the lock's token with the read and the write (I11). False is the negative control:
	// the same workload without fencing.
	Fence bool
	// Pause, when set, is how long client i sleeps between its read and its write of increment n (the
	// pause nemesis: a GC pause or SIGSTOP of the holder). A pause past TTL lets another client in.
	Pause func(client, n int) time.Duration
	Seed  uint64
}

// CounterResult is what RunCounterWorkload recorded.
type CounterResult struct {
	Initial, Final int64
	Incs           []CounterIncrement
	Rejected       int // fenced writes refused with stale_token
}

// RunCounterWorkload has clients increment a counter under a lock: acquire, read, (pause,) write the
// value read plus one, release. It returns every increment's outcome and the final value, for
// CheckCounter.
func RunCounterWorkload(ctx context.Context, t testing.TB, cfg CounterWorkloadConfig) CounterResult {
	t.Helper()
	svc := cfg.Service
	if err := svc.Put(WithClient(ctx, 0), cfg.Key, "0", "", 0); err != nil {
		t.Fatalf("counter: initial put: %v", err)
	}
	var (
		mu  sync.Mutex
		res = CounterResult{}
		wg  sync.WaitGroup
	)
	for i := range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cctx := WithClient(ctx, i)
			for n := 0; n < cfg.Incs && ctx.Err() == nil; n++ {
				inc, ok := counterIncrement(cctx, cfg, i, n)
				if !ok {
					continue
				}
				mu.Lock()
				if inc.Outcome == OutcomeFailed {
					res.Rejected++
				}
				res.Incs = append(res.Incs, inc)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	var final string
	err := errors.New("not read")
	for try := 0; try < 20 && err != nil; try++ {
		var found bool
		final, found, err = svc.Get(WithClient(context.WithoutCancel(ctx), try), cfg.Key, "", 0)
		if err == nil && !found {
			err = errors.New("the counter is gone")
		}
		if err != nil {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if err != nil {
		t.Fatalf("counter: final read: %v", err)
	}
	res.Final, err = strconv.ParseInt(final, 10, 64)
	if err != nil {
		t.Fatalf("counter: final value %q: %v", final, err)
	}
	return res
}

// counterIncrement does one increment; ok is false when it wrote nothing (no grant, failed read).
func counterIncrement(ctx context.Context, cfg CounterWorkloadConfig, client, n int) (CounterIncrement, bool) {
	svc := cfg.Service
	tok, err := svc.Acquire(ctx, cfg.Lock, LockAcquire{TTL: cfg.TTL, Wait: cfg.Wait, Owner: fmt.Sprintf("c%d", client)})
	if err != nil {
		return CounterIncrement{}, false
	}
	defer func() { _ = svc.Release(context.WithoutCancel(ctx), cfg.Lock, tok) }()
	fence := tok
	if !cfg.Fence {
		fence = 0
	}
	v, found, err := svc.Get(ctx, cfg.Key, cfg.Lock, fence)
	if err != nil || !found {
		return CounterIncrement{}, false
	}
	cur, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return CounterIncrement{}, false
	}
	if cfg.Pause != nil {
		sleepCtx(ctx, cfg.Pause(client, n))
	}
	inc := CounterIncrement{Client: client, Token: tok, Wrote: cur + 1}
	err = svc.Put(ctx, cfg.Key, strconv.FormatInt(cur+1, 10), cfg.Lock, fence)
	switch _, refused := LockOutcomeOf(err); {
	case err == nil:
		inc.Outcome = OutcomeOK
	case refused:
		inc.Outcome = OutcomeFailed
	default:
		inc.Outcome = OutcomeUnknown
	}
	return inc, true
}
