package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairndb/cairn/client"
)

// LockWorkload is the fenced lock workload (Scenario S15, invariants I9 and
// I11 of docs/architecture.md): every client loops acquiring Lock, reading
// Counter with a fenced read, writing the read value plus one with a fenced
// write and releasing. Some iterations pause for longer than the lease, as a
// stopped process would, between the read and the write (by the time the
// write comes another client may hold the lock and have read with its higher
// token, and the store must refuse the late write) or between the grant and
// the read (the late fenced read must be refused once a higher token was
// registered). Meanwhile the nemesis pauses and kills nodes. CheckLock
// decides the history.
type LockWorkload struct {
	Clients   []*client.Client
	Names     []string // one per client, for the owner field and the values
	Lock      string
	Counter   string
	TTL       time.Duration // the lease asked for
	Wait      time.Duration // how long an acquire waits in the queue
	OpTimeout time.Duration
	// PauseOneIn makes one iteration in that many (at random) pause for
	// Pause, after its grant or (as often) after its fenced read; 0: never.
	PauseOneIn int
	Pause      time.Duration
	Gap        time.Duration // between two iterations of one client
	MaxOps     int64         // acquires issued at most
	Seed       uint64
	// Unfenced is a test knob: plain reads and writes instead of fenced
	// ones, so paused holders overwrite their successors' increments and
	// CheckLock must find lost updates (the workload's negative control).
	Unfenced bool

	issued   atomic.Int64
	acqErrs  errorCounts // acquire errors by code
	readErrs errorCounts
	relErrs  errorCounts
	mu       sync.Mutex
	hist     LockHistory
}

// lockGrantJSON is the answer of POST /v1/locks/{name}/acquire.
type lockGrantJSON struct {
	Name  string `json:"name"`
	Token uint64 `json:"token"`
	TTL   string `json:"ttl"`
	Owner string `json:"owner"`
}

func lockPath(name, action string) string {
	return "/v1/locks/" + client.EscapeKey(name) + "/" + action
}

// Run runs every client until ctx ends, until passes or MaxOps acquires
// were issued.
func (w *LockWorkload) Run(ctx context.Context, until time.Time) {
	w.hist = LockHistory{Lock: w.Lock, Counter: w.Counter}
	var wg sync.WaitGroup
	for i, c := range w.Clients {
		rng := rand.New(rand.NewPCG(w.Seed, uint64(i)))
		wg.Go(func() {
			for seq := 0; ctx.Err() == nil && time.Now().Before(until); seq++ {
				if w.issued.Add(1) > w.MaxOps {
					return
				}
				pause := pauseNone
				if w.PauseOneIn > 0 && rng.IntN(w.PauseOneIn) == 0 {
					pause = pauseBeforeRead + rng.IntN(2)
				}
				if !w.iteration(ctx, c, w.Names[i], seq, pause) {
					sleepCtx(ctx, w.Gap+time.Duration(rng.Int64N(int64(w.Gap)+1)))
				}
			}
		})
	}
	wg.Wait()
}

// Where an iteration pauses.
const (
	pauseNone        = 0
	pauseBeforeRead  = 1
	pauseBeforeWrite = 2
)

// iteration is one acquire, fenced read, fenced write and release. It
// reports whether it got as far as the write.
func (w *LockWorkload) iteration(ctx context.Context, c *client.Client, name string, seq int, pause int) bool {
	tok, ok := w.acquire(ctx, c, name)
	if !ok {
		return false
	}
	defer w.release(ctx, c, tok)
	if pause == pauseBeforeRead {
		sleepCtx(ctx, w.Pause)
	}
	read, ok := w.read(ctx, c, tok)
	if !ok {
		return false
	}
	if pause == pauseBeforeWrite {
		sleepCtx(ctx, w.Pause)
	}
	n, err := counterN(read)
	if err != nil {
		// Not a counter value: the write would corrupt the chain; the final
		// check reports the value.
		return false
	}
	inc := Increment{Client: name, Token: tok, Read: read, Wrote: fmt.Sprintf("%d %s-%d", n+1, name, seq)}
	octx, cancel := context.WithTimeout(ctx, w.OpTimeout)
	defer cancel()
	var opts []client.PutOption
	if !w.Unfenced {
		opts = append(opts, client.WithFence(w.Lock, tok))
	}
	inc.Start = time.Now()
	res, err := c.Put(octx, w.Counter, inc.Wrote, opts...)
	inc.End, inc.State = time.Now(), classifyAdd(err)
	if res != nil {
		inc.Index = res.Index
	}
	if err != nil {
		inc.Code = errCode(err)
	}
	w.mu.Lock()
	w.hist.Incs = append(w.hist.Incs, inc)
	w.mu.Unlock()
	return true
}

// acquire asks for the lock and records the grant.
func (w *LockWorkload) acquire(ctx context.Context, c *client.Client, name string) (uint64, bool) {
	octx, cancel := context.WithTimeout(ctx, w.OpTimeout)
	defer cancel()
	body := map[string]string{"ttl": w.TTL.String(), "wait": w.Wait.String(), "owner": name}
	var g lockGrantJSON
	start := time.Now()
	meta, err := c.Do(octx, client.Request{Method: http.MethodPost, Path: lockPath(w.Lock, "acquire"), Body: body, RouteKey: w.Lock}, &g)
	if err != nil {
		w.acqErrs.note(err)
		return 0, false
	}
	if g.Token == 0 {
		w.acqErrs.note(&client.Error{Code: "no-token"})
		return 0, false
	}
	w.mu.Lock()
	w.hist.Grants = append(w.hist.Grants, LockGrant{Client: name, Token: g.Token, Start: start, End: time.Now(), Index: meta.Index})
	w.mu.Unlock()
	return g.Token, true
}

// read reads the counter with a fenced read ("" when absent).
func (w *LockWorkload) read(ctx context.Context, c *client.Client, tok uint64) (string, bool) {
	octx, cancel := context.WithTimeout(ctx, w.OpTimeout)
	defer cancel()
	var kv client.KV
	var err error
	if w.Unfenced {
		var got *client.KV
		if got, err = c.Get(octx, w.Counter); got != nil {
			kv = *got
		}
	} else {
		q := url.Values{"fence_lock": {w.Lock}, "fence_token": {strconv.FormatUint(tok, 10)}}
		_, err = c.Do(octx, client.Request{Method: http.MethodGet, Path: "/v1/kv/" + client.EscapeKey(w.Counter), Query: q, RouteKey: w.Counter}, &kv)
	}
	switch {
	case err == nil:
		return kv.Value, true
	case errors.Is(err, client.ErrNotFound):
		return "", true
	case errors.Is(err, client.ErrStaleToken):
		w.mu.Lock()
		w.hist.StaleReads++
		w.mu.Unlock()
	}
	w.readErrs.note(err)
	return "", false
}

// release gives the lock back; lock_lost means the lease ran out first.
func (w *LockWorkload) release(ctx context.Context, c *client.Client, tok uint64) {
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.OpTimeout)
	defer cancel()
	_, err := c.Do(octx, client.Request{Method: http.MethodPost, Path: lockPath(w.Lock, "release"),
		Body: map[string]uint64{"token": tok}, RouteKey: w.Lock}, nil)
	if err != nil {
		w.relErrs.note(err)
	}
}

// History returns a copy of what the clients saw.
func (w *LockWorkload) History() LockHistory {
	w.mu.Lock()
	defer w.mu.Unlock()
	h := w.hist
	h.Grants = append([]LockGrant(nil), w.hist.Grants...)
	h.Incs = append([]Increment(nil), w.hist.Incs...)
	return h
}

// Errors returns the error counts of acquires, fenced reads and releases,
// as "acquire:lock_held" and so on.
func (w *LockWorkload) Errors() map[string]int {
	out := map[string]int{}
	for what, e := range map[string]*errorCounts{"acquire": &w.acqErrs, "read": &w.readErrs, "release": &w.relErrs} {
		for code, n := range e.snapshot() {
			out[what+":"+code] += n
		}
	}
	return out
}

// Check reads the counter (linearizable, retried while the cluster
// settles) and checks the history against it.
func (w *LockWorkload) Check(ctx context.Context, reader *client.Client) (*LockResult, error) {
	var final string
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var kv *client.KV
		kv, err = reader.Get(rctx, w.Counter)
		cancel()
		if err == nil {
			final = kv.Value
			break
		}
		if errors.Is(err, client.ErrNotFound) {
			final, err = "", nil
			break
		}
		sleepCtx(ctx, time.Second)
	}
	if err != nil {
		return nil, fmt.Errorf("reading counter %q: %w", w.Counter, err)
	}
	return CheckLock(w.History(), final), nil
}

// errCode is err's client code, "other" for an error without one.
func errCode(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Code
	}
	return "other"
}
