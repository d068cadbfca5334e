package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Progress is a snapshot of a running benchmark, for a progress line.
type Progress struct {
	Phase    string // "preload" or "run"
	Elapsed  time.Duration
	Done     int64         // operations finished, successful or not
	Errors   int64         // of which failed
	Total    int64         // operations planned; 0 when bound by time
	Duration time.Duration // the time bound; 0 when bound by count
	Rate     float64       // operations finished per second over the last interval
	Final    bool          // the phase has ended
}

type opKind int

const (
	opGet opKind = iota
	opPut
	opLock // an acquire and its release, timed together (lock.go)
	opTxn  // a two-key transaction (txn.go)
	numOps
)

func (k opKind) String() string { return [...]string{"get", "put", "lock", "txn"}[k] }

// worker is one closed-loop client. Its recorders and error counts are
// touched by its own goroutine only, and read once it has stopped; done and
// failed are read by the progress goroutine while it runs.
type worker struct {
	conn   Conn
	rnd    *rand.Rand
	keys   keyPicker
	vals   *valueSource
	rec    [numOps]*recorder
	errs   [numOps]map[string]int64
	sample map[string]string // first error message per code
	done   atomic.Int64
	failed atomic.Int64
	// The lock workload's (lock.go): the index of this client, the hand-off
	// and release recorders (contended only) and the state every client of
	// a run shares.
	index   int
	handoff *recorder
	release *recorder
	shared  *lockShared
}

func newWorker(i int, cfg Config, conn Conn) *worker {
	rnd := rand.New(rand.NewPCG(cfg.Seed, uint64(i)))
	w := &worker{
		conn:    conn,
		rnd:     rnd,
		keys:    newKeyPicker(cfg.KeyDist, cfg.ZipfS, cfg.Keys, rnd),
		vals:    newValueSource(rnd, cfg.ValueSize),
		sample:  map[string]string{},
		index:   i,
		handoff: newRecorder(),
		release: newRecorder(),
	}
	for k := range numOps {
		w.rec[k] = newRecorder()
		w.errs[k] = map[string]int64{}
	}
	return w
}

// Run runs the benchmark cfg describes against t: an unmeasured preload when
// cfg.Preload is set, then cfg.Clients clients, each issuing its next
// operation as soon as the previous one answers, until cfg.Count operations
// have been issued or cfg.Duration has passed. Operations in flight at the
// deadline are waited for and counted, and the elapsed time runs until the
// last one answers.
//
// When ctx ends, Run stops the clients, drops the operations it cut short and
// returns what was measured so far with Interrupted set. It returns an error
// when cfg is invalid, a connection cannot be made, or the preload fails.
// Run does not close t.
func Run(ctx context.Context, cfg Config, t Target) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Seed == 0 {
		cfg.Seed = rand.Uint64() | 1
	}
	res := newResult(cfg, t)
	if d, ok := t.(Describer); ok {
		res.System = d.Describe(ctx)
	}
	workers := make([]*worker, cfg.Clients)
	shared := &lockShared{}
	for i := range workers {
		conn, err := t.Conn(i)
		if err != nil {
			return nil, fmt.Errorf("connection %d: %w", i, err)
		}
		if cfg.Workload == WorkloadLock {
			if _, ok := conn.(Locker); !ok {
				return nil, fmt.Errorf("%s has no lock service to measure", t.Name())
			}
		}
		if cfg.Workload == WorkloadTxn {
			if _, ok := conn.(Txner); !ok {
				return nil, fmt.Errorf("%s has no transactions to measure", t.Name())
			}
		}
		workers[i] = newWorker(i, cfg, conn)
		workers[i].shared = shared
	}
	if cfg.Preload {
		start := time.Now()
		if err := preload(ctx, cfg, workers); err != nil {
			return nil, err
		}
		res.Preload = &PreloadStats{Keys: cfg.Keys, ElapsedSec: seconds(time.Since(start))}
	}
	if ctx.Err() != nil {
		res.Interrupted = true
		return res, nil
	}
	elapsed := measure(ctx, cfg, workers)
	res.Interrupted = ctx.Err() != nil
	res.fill(workers, elapsed)
	return res, nil
}

// measure runs the measured phase and returns its elapsed time.
func measure(ctx context.Context, cfg Config, workers []*worker) time.Duration {
	start := time.Now()
	var deadline time.Time
	if cfg.Count == 0 {
		deadline = start.Add(cfg.Duration)
	}
	stop := startProgress(cfg, "run", start, workers, cfg.Count, durationIf(cfg.Count == 0, cfg.Duration))
	var issued atomic.Int64
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() { w.loop(ctx, cfg, deadline, &issued) })
	}
	wg.Wait()
	elapsed := time.Since(start)
	stop()
	return elapsed
}

func durationIf(ok bool, d time.Duration) time.Duration {
	if ok {
		return d
	}
	return 0
}

func (w *worker) loop(ctx context.Context, cfg Config, deadline time.Time, issued *atomic.Int64) {
	for ctx.Err() == nil {
		if cfg.Count > 0 {
			if issued.Add(1) > cfg.Count {
				return
			}
		} else if !time.Now().Before(deadline) {
			return
		}
		if cfg.Workload == WorkloadLock {
			w.lockOnce(ctx, cfg)
			continue
		}
		if cfg.Workload == WorkloadTxn {
			w.txnOnce(ctx, cfg)
			continue
		}
		kind := opPut
		switch cfg.Workload {
		case WorkloadGet:
			kind = opGet
		case WorkloadMixed:
			if w.rnd.Float64() < cfg.ReadRatio {
				kind = opGet
			}
		}
		key := Key(cfg.KeyPrefix, w.keys.next(), cfg.Keys)
		var value string
		if kind == opPut {
			value = w.vals.next()
		}
		octx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
		start := time.Now()
		var err error
		if kind == opGet {
			err = w.conn.Get(octx, key)
		} else {
			err = w.conn.Put(octx, key, value)
		}
		lat := time.Since(start)
		cancel()
		if err != nil && ctx.Err() != nil {
			return // cut short by the end of the run, not a failure of the system
		}
		if err != nil {
			code := ErrorCode(err)
			w.errs[kind][code]++
			if _, ok := w.sample[code]; !ok {
				w.sample[code] = err.Error()
			}
			w.failed.Add(1)
		} else {
			w.rec[kind].record(lat)
		}
		w.done.Add(1)
	}
}

// preloadAttempts bounds the tries of each preload write, so that a leader
// election during the preload does not fail the run.
const preloadAttempts = 5

// preload writes every key once, the keys dealt round-robin to the clients.
func preload(ctx context.Context, cfg Config, workers []*worker) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := startProgress(cfg, "preload", time.Now(), workers, int64(cfg.Keys), 0)
	var wg sync.WaitGroup
	for wi, w := range workers {
		wg.Go(func() {
			for i := wi; i < cfg.Keys; i += len(workers) {
				if err := w.preloadKey(ctx, cfg, Key(cfg.KeyPrefix, i, cfg.Keys)); err != nil {
					cancel(err)
					return
				}
				w.done.Add(1)
			}
		})
	}
	wg.Wait()
	stop()
	for _, w := range workers {
		w.done.Store(0)
	}
	if err := context.Cause(ctx); err != nil {
		return fmt.Errorf("preload: %w", err)
	}
	return nil
}

func (w *worker) preloadKey(ctx context.Context, cfg Config, key string) error {
	var err error
	for attempt := range preloadAttempts {
		if attempt > 0 {
			t := time.NewTimer(time.Duration(attempt) * 200 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return context.Cause(ctx)
			case <-t.C:
			}
		}
		octx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
		err = w.conn.Put(octx, key, w.vals.next())
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
	}
	return fmt.Errorf("key %q: %w", key, err)
}

// startProgress calls cfg.Progress every cfg.ProgressInterval until the
// returned function is called, which reports once more with Final set and
// returns when the goroutine has ended.
func startProgress(cfg Config, phase string, start time.Time, workers []*worker, total int64, bound time.Duration) func() {
	if cfg.Progress == nil {
		return func() {}
	}
	snap := func() Progress {
		p := Progress{Phase: phase, Elapsed: time.Since(start), Total: total, Duration: bound}
		for _, w := range workers {
			p.Done += w.done.Load()
			p.Errors += w.failed.Load()
		}
		return p
	}
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		tick := time.NewTicker(cfg.ProgressInterval)
		defer tick.Stop()
		var last Progress
		for {
			select {
			case <-ctx.Done():
				p := snap()
				p.Final = true
				if d := p.Elapsed.Seconds(); d > 0 {
					p.Rate = float64(p.Done) / d
				}
				cfg.Progress(p)
				return
			case <-tick.C:
				p := snap()
				if d := (p.Elapsed - last.Elapsed).Seconds(); d > 0 {
					p.Rate = float64(p.Done-last.Done) / d
				}
				cfg.Progress(p)
				last = p
			}
		}
	}()
	return func() {
		cancel()
		<-ended
	}
}

func seconds(d time.Duration) float64 {
	return float64(d.Round(time.Millisecond)) / float64(time.Second)
}
