package bench

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Locker is the capability the lock workload needs of a Conn: take the lock
// name (waiting for it up to wait) and return the function that releases
// it. One call of each is one request and no retry where the system allows
// (etcd's Mutex.Lock is a few).
type Locker interface {
	Lock(ctx context.Context, name string, ttl, wait time.Duration) (unlock func(context.Context) error, err error)
}

// lockShared is what the clients of one contended run share: when the last
// release began, so a waiter granted after it can time the hand-off.
type lockShared struct {
	mu           sync.Mutex
	releaseStart time.Time
}

// lockName is the lock client w takes next: the one lock of a contended
// run, else one of the names of w's own (keys i, i+clients, i+2·clients…
// of the keyspace), so that no two clients ever want the same lock and the
// names spread over the keyspace and its shards.
func (w *worker) lockName(cfg Config) string {
	if cfg.Contended {
		return cfg.KeyPrefix + "lock"
	}
	per := max(cfg.Keys/cfg.Clients, 1)
	i := w.rnd.IntN(per)*cfg.Clients + w.index
	return Key(cfg.KeyPrefix, i%max(cfg.Keys, cfg.Clients), max(cfg.Keys, cfg.Clients))
}

// lockOnce is one operation of the lock workload: acquire, release. Its
// latency is both together; in a contended run the hand-off (the time from
// the previous holder's release to this grant) is recorded too when this
// acquire was waiting before that release began, and so is the release's
// own round trip, one commit of the lock's raft group in the same run: a
// hand-off within one commit has its p50 at or below the release's.
func (w *worker) lockOnce(ctx context.Context, cfg Config) {
	l := w.conn.(Locker)
	name := w.lockName(cfg)
	wait := time.Duration(0)
	if cfg.Contended {
		wait = cfg.OpTimeout
	}
	w.timed(ctx, cfg, opLock, func(octx context.Context) error {
		start := time.Now()
		unlock, err := l.Lock(octx, name, cfg.LockTTL, wait)
		if err != nil {
			return err
		}
		if cfg.Contended {
			granted := time.Now()
			w.shared.mu.Lock()
			if rs := w.shared.releaseStart; !rs.IsZero() && rs.After(start) {
				w.handoff.record(granted.Sub(rs))
			}
			w.shared.releaseStart = time.Now()
			w.shared.mu.Unlock()
		}
		relStart := time.Now()
		if err := unlock(octx); err != nil {
			return fmt.Errorf("release: %w", err)
		}
		if cfg.Contended {
			// The release's own round trip: one raft commit as this run
			// sees it, the yardstick of the hand-off (which starts at the
			// same moment and ends at the next holder's answer).
			w.release.record(time.Since(relStart))
		}
		return nil
	})
}

// timed runs one operation of kind k under the operation timeout and
// records its latency, or its error by code.
func (w *worker) timed(ctx context.Context, cfg Config, k opKind, op func(context.Context) error) {
	octx, cancel := context.WithTimeout(ctx, cfg.OpTimeout)
	defer cancel()
	start := time.Now()
	err := op(octx)
	lat := time.Since(start)
	if err != nil && ctx.Err() != nil {
		return // cut short by the end of the run
	}
	if err != nil {
		code := ErrorCode(err)
		w.errs[k][code]++
		if _, ok := w.sample[code]; !ok {
			w.sample[code] = err.Error()
		}
		w.failed.Add(1)
	} else {
		w.rec[k].record(lat)
	}
	w.done.Add(1)
}
