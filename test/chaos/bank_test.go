package chaos

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/test"
)

// TestBankWorkloadInProcess runs the chaos suite's bank workload (Scenario
// S13, invariant I8) against an in-process cluster of four shards: with
// transfers as transactions CheckBank finds nothing; with the NonAtomic knob
// (a transfer as two plain puts) whole-bank reads see money missing and
// CheckBank must say so (the negative control). A cluster that does not
// serve a transaction over four shards fails it.
func TestBankWorkloadInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	c := test.StartCluster(t, test.ClusterConfig{InitialSplits: []string{"g", "n", "t"}})
	addrs := c.HTTPAddrs()
	prefixes := []string{"a/", "h/", "o/", "u/"}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	mk := func(name string, nonAtomic bool) *BankWorkload {
		b := &BankWorkload{Initial: 100, OpTimeout: 5 * time.Second, Gap: 2 * time.Millisecond, MaxOps: 5000,
			Seed: 11, ReadOneIn: 3, Shards: len(prefixes), NonAtomic: nonAtomic}
		for i := range 8 {
			b.Accounts = append(b.Accounts, fmt.Sprintf("%s%s/acct-%d", prefixes[i%len(prefixes)], name, i))
		}
		for i := range 4 {
			var eps []string
			for k := range addrs {
				eps = append(eps, addrs[(i+k)%len(addrs)])
			}
			cl, err := client.New(client.Config{Endpoints: eps, MaxRetries: 8, ClientID: fmt.Sprintf("%s%d", name, i)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cl.Close() })
			b.Clients = append(b.Clients, cl)
		}
		return b
	}
	if why := mk("probe", false).Probe(ctx, mk("probe", false).Clients[0]); why != "" {
		t.Fatalf("the cluster does not serve the bank's transactions: %s", why)
	}
	run := func(t *testing.T, b *BankWorkload) *BankResult {
		if err := b.Setup(ctx, b.Clients[0]); err != nil {
			t.Fatal(err)
		}
		b.Run(ctx, time.Now().Add(4*time.Second))
		r := b.Check(ctx, b.Clients[0])
		t.Logf("transfers %s; reads %s; errors %s; final %s; %d violations", countsString(r.Transfers),
			countsString(r.Reads), countsString(b.Errors()), r.Final, len(r.Violations))
		return r
	}
	t.Run("transactions", func(t *testing.T) {
		r := run(t, mk("txn", false))
		if an := r.Anomalies(); len(an) > 0 {
			t.Fatalf("anomalies:\n%s", strings.Join(an, "\n"))
		}
		if r.Transfers["ok"] == 0 {
			t.Fatal("no transfer committed: the run proves nothing")
		}
	})
	t.Run("non-atomic", func(t *testing.T) {
		r := run(t, mk("plain", true))
		if len(r.Violations) == 0 {
			t.Fatal("transfers as two plain puts: CheckBank found no wrong total")
		}
	})
}
