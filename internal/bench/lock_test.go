package bench

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// memLocks is an in-memory lock service for the runner's lock workload: it
// records every name taken and the most holders any name ever had at once.
type memLocks struct {
	*memTarget
	mu       sync.Mutex
	held     map[string]int
	maxHeld  int
	names    map[string]map[int]bool // name -> clients that took it
	released chan struct{}
}

type memLockConn struct {
	memConn
	l *memLocks
	i int
}

func (m *memLocks) Conn(i int) (Conn, error) { return memLockConn{memConn{m.memTarget}, m, i}, nil }

func (c memLockConn) Lock(ctx context.Context, name string, ttl, wait time.Duration) (func(context.Context) error, error) {
	for {
		c.l.mu.Lock()
		if c.l.held[name] == 0 {
			c.l.held[name]++
			c.l.maxHeld = max(c.l.maxHeld, c.l.held[name])
			if c.l.names[name] == nil {
				c.l.names[name] = map[int]bool{}
			}
			c.l.names[name][c.i] = true
			c.l.mu.Unlock()
			break
		}
		c.l.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.l.released:
		case <-time.After(time.Millisecond):
		}
	}
	return func(context.Context) error {
		time.Sleep(200 * time.Microsecond)
		c.l.mu.Lock()
		c.l.held[name]--
		c.l.mu.Unlock()
		select {
		case c.l.released <- struct{}{}:
		default:
		}
		return nil
	}, nil
}

func newMemLocks() *memLocks {
	return &memLocks{memTarget: newMemTarget(0), held: map[string]int{}, names: map[string]map[int]bool{},
		released: make(chan struct{}, 1)}
}

func TestLockWorkloadUncontendedNamesAreClientsOwn(t *testing.T) {
	m := newMemLocks()
	cfg := DefaultConfig()
	cfg.Workload, cfg.Clients, cfg.Count, cfg.Keys, cfg.Seed = WorkloadLock, 8, 400, 1000, 7
	res, err := Run(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 400 || res.Errors != 0 || res.ByOp["lock"].Ops != 400 || res.Handoff != nil || res.Release != nil {
		t.Fatalf("ops %d errors %d by op %v handoff %v release %v; want 400 lock ops, no errors, no handoff or release",
			res.Ops, res.Errors, res.ByOp, res.Handoff, res.Release)
	}
	if len(m.names) < 100 {
		t.Errorf("only %d distinct names in 400 operations: names should spread over the keyspace", len(m.names))
	}
	for name, clients := range m.names {
		if len(clients) > 1 {
			t.Errorf("lock %q taken by clients %v: uncontended names must be each client's own", name, clients)
		}
	}
}

func TestLockWorkloadContendedRecordsHandoff(t *testing.T) {
	m := newMemLocks()
	cfg := DefaultConfig()
	cfg.Workload, cfg.Clients, cfg.Count, cfg.Contended, cfg.Seed = WorkloadLock, 4, 200, true, 7
	res, err := Run(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 200 || len(m.names) != 1 || m.maxHeld != 1 {
		t.Fatalf("ops %d, names %d, max holders %d; want 200 ops on one lock held by one at a time", res.Ops, len(m.names), m.maxHeld)
	}
	if res.Handoff == nil || res.Handoff.P50 <= 0 {
		t.Fatalf("handoff %+v: waiting clients should have timed their hand-offs", res.Handoff)
	}
	if res.Release == nil || res.Release.Count != 200 {
		t.Fatalf("release %+v: every one of the 200 releases should have been timed", res.Release)
	}
	var b bytes.Buffer
	if err := res.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "handoff") || !strings.Contains(b.String(), "release") ||
		!strings.Contains(b.String(), "one lock for every client") {
		t.Errorf("text report lacks the hand-off or release row or the contention note:\n%s", b.String())
	}
}

func TestLockWorkloadNeedsALocker(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Workload, cfg.Clients, cfg.Count = WorkloadLock, 1, 1
	if _, err := Run(context.Background(), cfg, newMemTarget(0)); err == nil || !strings.Contains(err.Error(), "no lock service") {
		t.Fatalf("err = %v; want a target without locks refused", err)
	}
}
