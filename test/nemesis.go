package test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
)

// ClientStore adapts client.Client to the register workload's KVStore.
type ClientStore struct{ C *client.Client }

// Get reads key linearizably.
func (s ClientStore) Get(ctx context.Context, key string) (string, bool, error) {
	kv, err := s.C.Get(ctx, key)
	if errors.Is(err, client.ErrNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return kv.Value, true, nil
}

// Put writes key; the client gives it a request id reused on retries (I7).
func (s ClientStore) Put(ctx context.Context, key, value string) error {
	_, err := s.C.Put(ctx, key, value)
	return err
}

// CAS writes key if it holds expect (or is absent).
func (s ClientStore) CAS(ctx context.Context, key, expect string, expectAbsent bool, value string) (bool, error) {
	opt := client.IfValue(expect)
	if expectAbsent {
		opt = client.IfAbsent()
	}
	_, err := s.C.Put(ctx, key, value, opt)
	if errors.Is(err, client.ErrConditionFailed) {
		return false, nil
	}
	return err == nil, err
}

// ClassifyClientError is sound for the register model: a read error drops
// the read; a write error is indeterminate unless the server said the
// condition failed (CAS returns that as ok=false, nil).
func ClassifyClientError(err error) Outcome {
	if err == nil {
		return OutcomeOK
	}
	if errors.Is(err, client.ErrConditionFailed) {
		return OutcomeConditionFailed
	}
	return OutcomeUnknown
}

// NewClients returns one client per worker; worker i starts at node i mod n
// and fails over to the others.
func NewClients(t testing.TB, c *Cluster, n int) []*client.Client {
	t.Helper()
	addrs := c.HTTPAddrs()
	var out []*client.Client
	for i := 0; i < n; i++ {
		eps := append(append([]string(nil), addrs[i%len(addrs):]...), addrs[:i%len(addrs)]...)
		cl, err := client.New(client.Config{Endpoints: eps, ClientID: fmt.Sprintf("w%d", i),
			MaxRetries: 8, BackoffMin: 20 * time.Millisecond, BackoffMax: 300 * time.Millisecond})
		if err != nil {
			t.Fatalf("client: %v", err)
		}
		t.Cleanup(func() { cl.Close() })
		out = append(out, cl)
	}
	return out
}

// Nemesis injects random faults into a cluster: kills and restarts, node
// isolation, and isolating a shard leader. Every choice derives from Seed.
type Nemesis struct {
	C        *Cluster
	Seed     uint64
	Interval time.Duration // between faults; default 1.5s
	Shards   []uint64      // shards whose leaders may be isolated
	mu       sync.Mutex
	Log      []string
}

// Run injects faults until ctx ends, then heals and restarts everything.
// At most one node is faulty at a time, so a majority always remains.
func (n *Nemesis) Run(ctx context.Context) {
	rng := rand.New(rand.NewPCG(n.Seed, 0x6e656d))
	interval := n.Interval
	if interval == 0 {
		interval = 1500 * time.Millisecond
	}
	nodes := len(n.C.Nodes())
	for ctx.Err() == nil {
		victim := rng.IntN(nodes)
		kind := rng.IntN(3)
		if kind == 2 && len(n.Shards) > 0 {
			if l, err := n.C.Leader(n.Shards[rng.IntN(len(n.Shards))]); err == nil {
				victim = l
			}
		}
		switch kind {
		case 0:
			n.note("kill n%d", victim+1)
			n.C.Kill(victim)
		default:
			n.note("isolate n%d", victim+1)
			n.C.Isolate(victim)
		}
		sleepCtx(ctx, interval/2+time.Duration(rng.Int64N(int64(interval))))
		n.note("heal n%d", victim+1)
		n.C.Heal()
		n.C.Restart(victim)
		sleepCtx(ctx, interval/2)
	}
	n.C.Heal()
	for i := 0; i < nodes; i++ {
		n.C.Restart(i)
	}
}

// Start runs the nemesis in a goroutine counted by wg for d (or until stop
// is called), after which it heals and restarts everything.
func (n *Nemesis) Start(ctx context.Context, d time.Duration, wg *sync.WaitGroup) (stop func()) {
	ctx, stop = context.WithTimeout(ctx, d)
	wg.Add(1)
	go func() {
		defer wg.Done()
		n.Run(ctx)
	}()
	return stop
}

func (n *Nemesis) note(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.Log = append(n.Log, fmt.Sprintf(format, args...))
}

// Summary lists the faults injected.
func (n *Nemesis) Summary() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return strings.Join(n.Log, ", ")
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
