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

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/test/txncheck"
)

// bankWorkload runs transfers and whole-bank reads until ctx ends and
// returns the history (Scenario S13).
type bankWorkload struct {
	accounts []string
	mu       sync.Mutex
	hist     []txncheck.BankTxn
	start    time.Time
	counts   map[string]int
}

func (b *bankWorkload) now() int64 { return time.Since(b.start).Nanoseconds() }

func (b *bankWorkload) add(t txncheck.BankTxn, outcome string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hist = append(b.hist, t)
	b.counts[outcome]++
}

func bankStatus(err error) (txncheck.Status, string) {
	switch {
	case err == nil:
		return txncheck.OK, "ok"
	case errors.Is(err, client.ErrTxnAborted):
		return txncheck.Aborted, "aborted"
	case errors.Is(err, client.ErrUnavailable), errors.Is(err, client.ErrUnreachable):
		return txncheck.Unknown, "unavailable"
	}
	return txncheck.Unknown, "unknown"
}

// readAll is one transaction reading every account.
func (b *bankWorkload) readAll(ctx context.Context, c *client.Client) (map[string]int64, error) {
	tx := c.Txn()
	for _, a := range b.accounts {
		tx.Then(client.OpGet(a))
	}
	res, err := tx.Commit(ctx)
	if err != nil {
		return nil, err
	}
	bal := map[string]int64{}
	for _, r := range res.Results {
		if r.KV != nil {
			v, err := strconv.ParseInt(r.KV.Value, 10, 64)
			if err != nil {
				return nil, err
			}
			bal[r.Key] = v
		}
	}
	return bal, nil
}

func (b *bankWorkload) transfer(ctx context.Context, c *client.Client, rng *rand.Rand) {
	i, j := rng.IntN(len(b.accounts)), rng.IntN(len(b.accounts)-1)
	if j >= i {
		j++
	}
	from, to := b.accounts[i], b.accounts[j]
	amt := int64(1 + rng.IntN(20))
	// Read both in one transaction, then move the money if neither changed.
	res, err := c.Txn().Then(client.OpGet(from), client.OpGet(to)).Commit(ctx)
	if err != nil || res.Results[0].KV == nil || res.Results[1].KV == nil {
		return
	}
	fv, tv := res.Results[0].KV.Value, res.Results[1].KV.Value
	f, _ := strconv.ParseInt(fv, 10, 64)
	tt, _ := strconv.ParseInt(tv, 10, 64)
	h := txncheck.BankTxn{Kind: txncheck.Transfer, From: from, To: to, Amount: amt, Start: b.now()}
	res, err = c.Txn().
		If(client.Compare(from, client.TargetValue, "==", fv), client.Compare(to, client.TargetValue, "==", tv),
			client.Compare(from, client.TargetValue, ">=", amt)).
		Then(client.OpPut(from, strconv.FormatInt(f-amt, 10)), client.OpPut(to, strconv.FormatInt(tt+amt, 10))).
		Commit(ctx)
	h.End = b.now()
	st, outcome := bankStatus(err)
	if err == nil && !res.Succeeded {
		outcome = "transfer-compare-failed"
	}
	h.Status = st
	b.add(h, "transfer-"+outcome)
}

func (b *bankWorkload) balances(ctx context.Context, c *client.Client) {
	h := txncheck.BankTxn{Kind: txncheck.Balances, Start: b.now()}
	bal, err := b.readAll(ctx, c)
	h.End = b.now()
	h.Status, _ = bankStatus(err)
	_, outcome := bankStatus(err)
	h.Balances = bal
	b.add(h, "read-"+outcome)
}

func (b *bankWorkload) run(ctx context.Context, clients []*client.Client, readers int, seed uint64) {
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			for n := 0; ctx.Err() == nil && n < 100000; n++ {
				opCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				if i < readers {
					b.balances(opCtx, c)
				} else {
					b.transfer(opCtx, c, rng)
				}
				cancel()
			}
		})
	}
	wg.Wait()
}

// TestS13Bank is Scenario S13 (invariant I8): eight accounts over four
// shards, concurrent transfers between random accounts and concurrent
// whole-bank reads (one transaction reading every account), while the range
// holding two accounts splits, a replica moves to a fourth node, and leaders
// are killed and isolated: the total never changes, no balance goes
// negative, every balance read sees the exact total, and no intent is left.
func TestS13Bank(t *testing.T) {
	seed := testSeed(t)
	c := StartCluster(t, ClusterConfig{Nodes: 4, InitialSplits: []string{"bank/a2", "bank/a4", "bank/a6"}})
	clients := NewClients(t, c, 6)
	ctx := Context(t, 90*time.Second)
	b := &bankWorkload{start: time.Now(), counts: map[string]int{}}
	const initial = 100
	for i := range 8 {
		a := fmt.Sprintf("bank/a%d", i)
		b.accounts = append(b.accounts, a)
		if _, err := clients[0].Put(ctx, a, strconv.Itoa(initial)); err != nil {
			t.Fatal(err)
		}
	}
	total := int64(initial * len(b.accounts))

	runCtx, stop := context.WithTimeout(ctx, 12*time.Second)
	defer stop()
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.run(runCtx, clients, 2, seed)
	}()
	time.Sleep(time.Second)
	// A split under the workload: a6 and a7 land on different shards.
	splitShard(t, c, 4, "bank/a7")
	// A replica move to the fourth node.
	from := c.Nodes()[0].ID
	moveReplica(t, c, 2, from, c.Nodes()[3].ID)
	// Leader kills and isolations for the rest of the run.
	nem := &Nemesis{C: c, Seed: seed, Interval: time.Second, Faults: []Fault{FaultKill, FaultIsolateLeader}}
	var wg sync.WaitGroup
	stopNem := nem.Start(runCtx, 6*time.Second, &wg)
	defer stopNem()
	wg.Wait()
	<-done
	t.Logf("faults: %s", nem.Summary())
	// On a loaded machine the faulted run may commit little: the workload
	// goes on, without faults, until the history holds enough committed
	// transfers and reads to check (bounded: 30s more at most).
	enough := func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.counts["transfer-ok"] >= 10 && b.counts["read-ok"] >= 5
	}
	for extra := time.Now(); !enough() && time.Since(extra) < 30*time.Second; {
		moreCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
		b.run(moreCtx, clients, 2, seed+uint64(time.Since(extra)))
		cancel()
	}
	t.Logf("outcomes: %v", b.counts)

	// A last read meets and resolves whatever a killed coordinator left.
	var final map[string]int64
	WaitFor(t, 20*time.Second, "a final whole-bank read", func() error {
		var err error
		final, err = b.readAll(ctx, clients[0])
		return err
	})
	b.add(txncheck.BankTxn{Kind: txncheck.Balances, Balances: final, Status: txncheck.OK, Start: b.now(), End: b.now()}, "read-final")
	if v := txncheck.CheckBank(b.accounts, total, b.hist); len(v) > 0 {
		for i, x := range v {
			if i < 10 {
				t.Errorf("S13: %s", x)
			}
		}
		t.Fatalf("S13: %d violations in %d transactions", len(v), len(b.hist))
	}
	if b.counts["transfer-ok"] < 10 || b.counts["read-ok"] < 5 {
		t.Fatalf("S13: too few transactions committed: %v", b.counts)
	}
	// Read intents of coordinators that died are met only by writers: one
	// transaction writing every account back meets them all. Then every
	// replica applies the resolutions.
	WaitFor(t, 30*time.Second, "a transaction writing every account", func() error {
		bal, err := b.readAll(ctx, clients[1])
		if err != nil {
			return err
		}
		tx := clients[1].Txn()
		for _, a := range b.accounts {
			v := strconv.FormatInt(bal[a], 10)
			tx.If(client.Compare(a, client.TargetValue, "==", v)).Then(client.OpPut(a, v))
		}
		res, err := tx.Commit(ctx)
		if err == nil && !res.Succeeded {
			err = errors.New("the balances changed")
		}
		return err
	})
	WaitFor(t, 20*time.Second, "every intent resolved on every replica", func() error {
		if n := countIntents(t, c); n != 0 {
			return fmt.Errorf("%d intent keys remain", n)
		}
		return nil
	})
}
