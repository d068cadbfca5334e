package chaos

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/cairndb/cairn/client"
)

// Canary issues a write to a fresh key of the probe shard every Every,
// whether or not the earlier ones have answered, and measures for every
// leader fault how long writes stopped: from the fault to the end of the
// first write issued after it that succeeded. Issuing on a clock rather than
// one after another keeps a hung write from hiding the moment writes work
// again.
//
// Scenario S1: every write acknowledged, in particular just before a leader
// died, must be readable at the end (Check).
type Canary struct {
	Clients        []*client.Client // used in turn; no retries of their own
	Prefix         string           // key prefix on the probe shard
	Every          time.Duration    // a write is issued this often
	AttemptTimeout time.Duration
	MaxInFlight    int   // a tick with this many writes unanswered issues none
	MaxOps         int64 // writes issued at most
	// Explain, if set, adds to the report of a lost key.
	Explain func(ctx context.Context, key string) string

	errs    errorCounts
	mu      sync.Mutex
	writes  []probe
	marks   []mark
	skipped int
}

type probe struct {
	key string
	addRecord
}

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

// Run issues writes until ctx ends, until passes or MaxOps were issued, then
// waits for the writes in flight.
func (c *Canary) Run(ctx context.Context, until time.Time) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, c.MaxInFlight)
	tick := time.NewTicker(c.Every)
	defer tick.Stop()
	for n := int64(0); n < c.MaxOps && time.Now().Before(until); n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case slots <- struct{}{}:
		default:
			c.mu.Lock()
			c.skipped++
			c.mu.Unlock()
			continue
		}
		cl := c.Clients[n%int64(len(c.Clients))]
		key := fmt.Sprintf("%s%08d", c.Prefix, n)
		wg.Go(func() {
			defer func() { <-slots }()
			actx, cancel := context.WithTimeout(ctx, c.AttemptTimeout)
			defer cancel()
			start := time.Now()
			res, err := cl.Put(actx, key, key)
			p := probe{key: key, addRecord: addRecord{state: classifyAdd(err), start: start, end: time.Now()}}
			if res != nil {
				p.index = res.Index
			}
			if err != nil {
				c.errs.note(err)
			}
			c.mu.Lock()
			c.writes = append(c.writes, p)
			c.mu.Unlock()
		})
	}
}

// Mark records that a leader fault struck node at t.
func (c *Canary) Mark(kind FaultKind, node string, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.marks = append(c.marks, mark{kind, node, t})
}

// Failovers measures every marked fault by the first successful write that
// started at or after it. Writes that began before it may have been
// acknowledged by the dying leader and say nothing about the new one.
func (c *Canary) Failovers() []Failover {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Failover
	for _, m := range c.marks {
		f := Failover{Kind: m.kind, Node: m.node, At: m.at}
		for _, w := range c.writes {
			if w.state != addAcked || w.start.Before(m.at) {
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

// Check reads the canary keys back: every acknowledged write must be there
// (S1), and nothing that was not written.
func (c *Canary) Check(ctx context.Context, reader *client.Client) (*SetResult, error) {
	c.mu.Lock()
	adds := make(map[string]addRecord, len(c.writes))
	for _, w := range c.writes {
		adds[w.key] = w.addRecord
	}
	c.mu.Unlock()
	present, err := readBack(ctx, reader, []string{c.Prefix})
	if err != nil {
		return nil, err
	}
	return compareSet(adds, present, explainer(ctx, reader, c.Explain)), nil
}

// Errors returns how many writes ended with each error code.
func (c *Canary) Errors() map[string]int { return c.errs.snapshot() }

// Skipped returns how many ticks issued no write because MaxInFlight writes
// were unanswered.
func (c *Canary) Skipped() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.skipped
}
