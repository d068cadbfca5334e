package shard

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// groupCommit is the queue in front of the WAL: writers from every group
// submit and wait; one committer goroutine takes everything queued (at most
// logCommitMax) and makes it durable in one commit, so while one commit
// syncs the next batch gathers. It also keeps the WAL's statistics and metrics.
type groupCommit[W any] struct {
	reqs    chan pendingWrite[W]
	commit  func(batch []W) []error // one error per write, nil for success
	writes  atomic.Uint64
	commits atomic.Uint64
	metrics atomic.Pointer[logStoreMetrics]

	mu     sync.RWMutex // orders submit against close
	closed bool
	done   chan struct{}
}

type pendingWrite[W any] struct {
	w   W
	err chan error
}

// startGroupCommit starts the committer; commit must answer every write of
// its batch.
func startGroupCommit[W any](commit func(batch []W) []error) *groupCommit[W] {
	g := &groupCommit[W]{reqs: make(chan pendingWrite[W], logCommitMax), commit: commit, done: make(chan struct{})}
	go g.loop()
	return g
}

// submit queues w and returns once it is durable (or failed).
func (g *groupCommit[W]) submit(w W) error { return g.submitAsync(w)() }

// submitAsync queues w and returns a wait for its commit: it returns once w
// is durable (or failed). Writes commit in the order they were queued.
func (g *groupCommit[W]) submitAsync(w W) (wait func() error) {
	p := pendingWrite[W]{w: w, err: make(chan error, 1)}
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		return func() error { return ErrLogStoreClosed }
	}
	g.reqs <- p
	g.mu.RUnlock()
	return func() error { return <-p.err }
}

// close stops the committer after the writes already queued.
func (g *groupCommit[W]) close() {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return
	}
	g.closed = true
	close(g.reqs)
	g.mu.Unlock()
	<-g.done
}

func (g *groupCommit[W]) loop() {
	defer close(g.done)
	for p := range g.reqs {
		batch := []pendingWrite[W]{p}
	drain:
		for len(batch) < logCommitMax {
			select {
			case p, ok := <-g.reqs:
				if !ok {
					break drain
				}
				batch = append(batch, p)
			default:
				break drain
			}
		}
		writes := make([]W, len(batch))
		for i, p := range batch {
			writes[i] = p.w
		}
		start := time.Now()
		errs := g.commit(writes)
		ok := true
		for _, err := range errs {
			ok = ok && err == nil
		}
		// Count before answering: a writer that returned sees its write
		// in the statistics.
		if ok {
			g.writes.Add(uint64(len(batch)))
			g.commits.Add(1)
			if m := g.metrics.Load(); m != nil {
				m.commit.Observe(time.Since(start).Seconds())
				m.batch.Observe(float64(len(batch)))
			}
		}
		for i, p := range batch {
			p.err <- errs[i]
		}
	}
}

// registerMetrics exposes commit latency and writes per commit on reg.
func (g *groupCommit[W]) registerMetrics(reg prometheus.Registerer) error {
	m, err := newLogStoreMetrics(reg)
	if err != nil {
		return err
	}
	g.metrics.Store(m)
	return nil
}

// Stats returns how many writes committed in how many commits.
func (g *groupCommit[W]) stats() LogStoreStats {
	return LogStoreStats{Writes: g.writes.Load(), Commits: g.commits.Load()}
}
