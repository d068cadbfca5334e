package test

import (
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
)

// TestTxnCommitRetryUnderContention: workers increment two counters on two
// shards at once, each increment a read then a two-shard transaction that
// compares both keys' mod_index with what it read (read again when a
// compare failed). Conflicting transactions abort one another (txn_aborted:
// the cluster's abort counter must move, or this proves nothing);
// client.CommitRetry runs each aborted one again as a new transaction, so no
// worker sees an abort, and both counters end at exactly the number of
// increments: nothing lost, nothing applied twice (I8).
func TestTxnCommitRetryUnderContention(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"trc/m"}})
	clients := NewClients(t, c, 4)
	ctx := Context(t, 90*time.Second)
	for _, k := range []string{"trc/a", "trc/z"} {
		if _, err := clients[0].Put(ctx, k, "0"); err != nil {
			t.Fatal(err)
		}
	}
	aborted := func() float64 {
		sum := 0.0
		for _, n := range c.Nodes() {
			v, _ := metricValue(t, n.HTTPAddr, `cairn_txn_total{outcome="aborted_pushed",shards="multi"}`)
			sum += v
		}
		return sum
	}
	before := aborted()
	const perWorker = 10
	// Rounds of increments until conflicts aborted some (nearly always the
	// first round: 3 to 8 aborts in 40 increments under -race).
	rounds := 0
	for rounds < 3 && (rounds == 0 || aborted() == before) {
		rounds++
		var wg sync.WaitGroup
		errs := make(chan error, len(clients))
		for _, cl := range clients {
			wg.Go(func() {
				for done := 0; done < perWorker; {
					a, err := cl.Get(ctx, "trc/a")
					if err != nil {
						errs <- err
						return
					}
					z, err := cl.Get(ctx, "trc/z")
					if err != nil {
						errs <- err
						return
					}
					va, _ := strconv.Atoi(a.Value)
					vz, _ := strconv.Atoi(z.Value)
					res, err := cl.Txn().
						If(client.Compare("trc/a", client.TargetModIndex, "==", a.ModIndex),
							client.Compare("trc/z", client.TargetModIndex, "==", z.ModIndex)).
						Then(client.OpPut("trc/a", strconv.Itoa(va+1)), client.OpPut("trc/z", strconv.Itoa(vz+1))).
						CommitRetry(ctx, 50)
					if err != nil {
						errs <- err
						return
					}
					if res.Succeeded {
						done++
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if errors.Is(err, client.ErrTxnAborted) {
				t.Fatalf("an abort reached the caller through CommitRetry: %v", err)
			}
			t.Fatal(err)
		}
	}
	want := strconv.Itoa(rounds * len(clients) * perWorker)
	for _, k := range []string{"trc/a", "trc/z"} {
		kv, err := clients[0].Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if kv.Value != want {
			t.Errorf("%s = %s after %s increments", k, kv.Value, want)
		}
	}
	n := aborted() - before
	t.Logf("%s increments; %.0f attempts aborted by conflicts and run again", want, n)
	if n == 0 {
		t.Fatal("no transaction was aborted: the contention this test needs did not happen")
	}
}
