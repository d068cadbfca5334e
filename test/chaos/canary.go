package chaos

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/test"
)

// Canary writes to keys of the probe shard without pause, one writer per
// client, and measures for every leader fault how long writes stopped: from
// the fault to the end of the first write issued after it that succeeded.
// Every fourth operation reads its key back; all of them are recorded for
// the linearizability check (Scenario S1: a write acknowledged just before
// the leader died is still there after failover).
type Canary struct {
	Clients []*client.Client // no retries of their own: the loop is the retry
	Keys    []string         // one per client, all on the probe shard
	Rec     *test.Recorder
	// AttemptTimeout bounds one operation; Gap is the pause between two.
	AttemptTimeout, Gap time.Duration
	MaxOps              int64 // across writers

	issued atomic.Int64
	mu     sync.Mutex
	writes []span // successful writes
	marks  []mark
	ok     int
	failed int
}

type span struct{ start, end time.Time }

type mark struct {
	kind FaultKind
	node string
	at   time.Time
}

// Failover is the measurement for one leader fault.
type Failover struct {
	Kind FaultKind
	Node string
	At   time.Time
	// Took is the time from the fault to the end of the first successful
	// write issued after it; valid when Recovered.
	Took      time.Duration
	Recovered bool
}

// Run writes until ctx ends, until passes or MaxOps operations were issued.
func (c *Canary) Run(ctx context.Context, until time.Time) {
	var wg sync.WaitGroup
	for i := range c.Clients {
		wg.Go(func() {
			// Stagger the writers so that some write starts soon after
			// any moment.
			sleepCtx(ctx, time.Duration(i)*c.Gap/time.Duration(len(c.Clients)))
			c.writer(ctx, until, i)
		})
	}
	wg.Wait()
}

func (c *Canary) writer(ctx context.Context, until time.Time, i int) {
	store := test.ClientStore{C: c.Clients[i]}
	key := c.Keys[i]
	for seq := 0; ctx.Err() == nil && time.Now().Before(until); seq++ {
		if c.issued.Add(1) > c.MaxOps {
			return
		}
		in := test.KVInput{Op: test.OpPut, Key: key, Value: fmt.Sprintf("canary%d-%d", i, seq)}
		if seq%4 == 3 {
			in = test.KVInput{Op: test.OpGet, Key: key}
		}
		actx, cancel := context.WithTimeout(ctx, c.AttemptTimeout)
		finish := c.Rec.Call(100+i, in)
		start := time.Now()
		var out test.KVOutput
		var err error
		if in.Op == test.OpGet {
			out.Value, out.Found, err = store.Get(actx, key)
		} else {
			err = store.Put(actx, key, in.Value)
		}
		end := time.Now()
		finish(out, err)
		cancel()
		c.mu.Lock()
		if err == nil {
			c.ok++
			if in.Op == test.OpPut {
				c.writes = append(c.writes, span{start, end})
			}
		} else {
			c.failed++
		}
		c.mu.Unlock()
		sleepCtx(ctx, c.Gap)
	}
}

// Mark records that a leader fault struck node at t.
func (c *Canary) Mark(kind FaultKind, node string, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.marks = append(c.marks, mark{kind, node, t})
}

// Failovers measures every marked fault: the first successful write that
// started at or after the fault. Writes that began before it may have been
// acknowledged by the dying leader and say nothing about the new one.
func (c *Canary) Failovers() []Failover {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Failover
	for _, m := range c.marks {
		f := Failover{Kind: m.kind, Node: m.node, At: m.at}
		for _, w := range c.writes {
			if w.start.Before(m.at) {
				continue
			}
			if d := w.end.Sub(m.at); !f.Recovered || d < f.Took {
				f.Took, f.Recovered = d, true
			}
		}
		out = append(out, f)
	}
	return out
}

// Counts returns the operations that succeeded and failed.
func (c *Canary) Counts() (ok, failed int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ok, c.failed
}
