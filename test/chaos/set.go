package chaos

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairndb/cairn/client"
)

// addState is what a set add's client learned.
type addState int

const (
	addAcked   addState = iota + 1 // the write was acknowledged
	addUnknown                     // outcome unknown (timeout, outcome_unknown)
	addFailed                      // a definite failure: the server refused it before it was applied
)

// SetWorkload adds unique elements to a set, one key per element spread over
// every shard, and checks at the end that every acknowledged add is present
// and that nothing is present that was not added (or whose add definitely
// failed), with the value it was added with.
type SetWorkload struct {
	Clients   []*client.Client
	Prefixes  []string // key prefixes, one per shard; an element cycles through them
	OpTimeout time.Duration
	Gap       time.Duration // pause between two adds of one client
	MaxOps    int64
	// Explain, if set, adds to the report of a lost key (what each replica
	// holds, say).
	Explain func(ctx context.Context, key string) string

	issued atomic.Int64
	errs   errorCounts
	mu     sync.Mutex
	adds   map[string]addRecord // key -> outcome; the value is the key
}

// addRecord is one write of a key with itself as value, as its client saw it.
type addRecord struct {
	state      addState
	start, end time.Time
	index      uint64 // the raft index the write was acknowledged at
}

// describe says when and where an acknowledged write happened, to find it in
// the node logs.
func (a addRecord) describe() string {
	return fmt.Sprintf("acknowledged at index %d, written %s..%s UTC", a.index,
		a.start.UTC().Format("15:04:05.000"), a.end.UTC().Format("15:04:05.000"))
}

// Errors returns how many adds ended with each error code.
func (s *SetWorkload) Errors() map[string]int { return s.errs.snapshot() }

// errorCounts counts errors by their client code, to tell in the summary
// what the unknown and failed writes ran into.
type errorCounts struct {
	mu sync.Mutex
	m  map[string]int
}

func (e *errorCounts) note(err error) {
	code := "other"
	var ce *client.Error
	if errors.As(err, &ce) {
		code = ce.Code
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.m == nil {
		e.m = map[string]int{}
	}
	e.m[code]++
}

func (e *errorCounts) snapshot() map[string]int {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]int{}
	for k, v := range e.m {
		out[k] = v
	}
	return out
}

// classifyAdd maps a write's error to its outcome. Only an error that says
// the write cannot have been applied is a failure; a timeout is unknown.
func classifyAdd(err error) addState {
	switch {
	case err == nil:
		return addAcked
	case errors.Is(err, client.ErrOutcomeUnknown), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, context.Canceled):
		return addUnknown
	default:
		return addFailed
	}
}

// Run adds elements until ctx ends, until passes or MaxOps adds were issued.
func (s *SetWorkload) Run(ctx context.Context, until time.Time) {
	s.adds = map[string]addRecord{}
	var wg sync.WaitGroup
	for i, c := range s.Clients {
		wg.Go(func() {
			for seq := 0; ctx.Err() == nil && time.Now().Before(until); seq++ {
				if s.issued.Add(1) > s.MaxOps {
					return
				}
				key := fmt.Sprintf("%sc%d-%06d", s.Prefixes[seq%len(s.Prefixes)], i, seq)
				octx, cancel := context.WithTimeout(ctx, s.OpTimeout)
				start := time.Now()
				res, err := c.Put(octx, key, key)
				cancel()
				rec := addRecord{state: classifyAdd(err), start: start, end: time.Now()}
				if res != nil {
					rec.index = res.Index
				}
				s.mu.Lock()
				s.adds[key] = rec
				s.mu.Unlock()
				if err != nil {
					s.errs.note(err)
				}
				sleepCtx(ctx, s.Gap)
			}
		})
	}
	wg.Wait()
}

// SetResult is the outcome of the final read.
type SetResult struct {
	Acked, Unknown, Failed int // adds by outcome
	Present                int // elements read back
	UnknownPresent         int // unknown adds that took effect
	// The anomalies.
	Lost          []string // acknowledged, absent
	Phantom       []string // present but never added, or with another value
	FailedPresent []string // reported failed, present
}

// Anomalies counts the anomalies found.
func (r *SetResult) Anomalies() int { return len(r.Lost) + len(r.Phantom) + len(r.FailedPresent) }

// Check reads the whole set back with linearizable scans (retried while the
// cluster settles) and compares it with what the clients were told. A missing
// acknowledged element is confirmed with a point read before it is reported.
func (s *SetWorkload) Check(ctx context.Context, c *client.Client) (*SetResult, error) {
	s.mu.Lock()
	adds := make(map[string]addRecord, len(s.adds))
	for k, v := range s.adds {
		adds[k] = v
	}
	s.mu.Unlock()
	present, err := readBack(ctx, c, s.Prefixes)
	if err != nil {
		return nil, err
	}
	return compareSet(adds, present, explainer(ctx, c, s.Explain)), nil
}

// explainer returns what compareSet says about a lost key: a point read of
// it and then explain's findings.
func explainer(ctx context.Context, c *client.Client, explain func(context.Context, string) string) func(string) string {
	return func(key string) string {
		out := confirmAbsent(ctx, c, key)
		if explain != nil {
			out += "; " + explain(ctx, key)
		}
		return out
	}
}

// readBack reads every key under prefixes with linearizable scans, retrying
// a failed scan while the cluster settles.
func readBack(ctx context.Context, c *client.Client, prefixes []string) (map[string]string, error) {
	present := map[string]string{}
	for _, p := range prefixes {
		part := map[string]string{}
		var err error
		for attempt := 0; attempt < 10; attempt++ {
			clear(part) // a retried scan starts over
			err = c.ScanAll(ctx, client.ScanOptions{Prefix: p}, func(kv client.KV) error {
				part[kv.Key] = kv.Value
				return nil
			})
			if err == nil {
				break
			}
			sleepCtx(ctx, time.Second)
		}
		if err != nil {
			return nil, fmt.Errorf("reading back %q: %w", p, err)
		}
		for k, v := range part {
			present[k] = v
		}
	}
	return present, nil
}

// compareSet compares what was read back with what the writers were told;
// every key was written with itself as the value.
func compareSet(adds map[string]addRecord, present map[string]string, explain func(key string) string) *SetResult {
	r := &SetResult{Present: len(present)}
	for k, rec := range adds {
		v, ok := present[k]
		switch rec.state {
		case addAcked:
			r.Acked++
			if !ok {
				r.Lost = append(r.Lost, k+" ("+rec.describe()+"; "+explain(k)+")")
			}
		case addUnknown:
			r.Unknown++
			if ok {
				r.UnknownPresent++
			}
		case addFailed:
			r.Failed++
			if ok {
				r.FailedPresent = append(r.FailedPresent, k)
			}
		}
		if ok && v != k {
			r.Phantom = append(r.Phantom, fmt.Sprintf("%s holds %q, added as %q", k, v, k))
		}
	}
	for k := range present {
		if _, ok := adds[k]; !ok {
			r.Phantom = append(r.Phantom, k+" was never added")
		}
	}
	sort.Strings(r.Lost)
	sort.Strings(r.Phantom)
	sort.Strings(r.FailedPresent)
	return r
}

// confirmAbsent reads a key the scan did not return, to tell a lost write
// from a scan that missed it.
func confirmAbsent(ctx context.Context, c *client.Client, key string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	kv, err := c.Get(ctx, key)
	switch {
	case errors.Is(err, client.ErrNotFound):
		return "a point read finds it absent too"
	case err != nil:
		return "point read failed: " + err.Error()
	default:
		return fmt.Sprintf("a point read finds it (mod_index %d): the scan missed it", kv.ModIndex)
	}
}
