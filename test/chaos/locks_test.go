package chaos

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/test"
)

// TestLockWorkloadInProcess runs the chaos suite's fenced lock workload
// (Scenario S15, invariants I9, I11) against an in-process cluster, so the
// workload itself is checked without docker: fenced, with paused holders
// and a kill of the lock's shard leader, CheckLock finds no anomaly and the
// store refuses some late holder's write (stale_token); with the Unfenced
// knob the same paused holders overwrite their successors' increments and
// CheckLock finds the lost updates (the negative control).
func TestLockWorkloadInProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster")
	}
	c := test.StartCluster(t, test.ClusterConfig{InitialSplits: []string{"m"}})
	addrs := c.HTTPAddrs()
	mk := func(name string, unfenced bool) *LockWorkload {
		w := &LockWorkload{
			Lock: "a/" + name + "/lock", Counter: "z/" + name + "/counter",
			TTL: time.Second, Wait: time.Second, OpTimeout: 5 * time.Second,
			PauseOneIn: 6, Pause: 1500 * time.Millisecond, Gap: 10 * time.Millisecond,
			MaxOps: 2000, Seed: 7, Unfenced: unfenced,
		}
		for i := range 3 {
			cname := fmt.Sprintf("%s-c%d", name, i)
			var eps []string
			for k := range addrs {
				eps = append(eps, addrs[(i+k)%len(addrs)])
			}
			cl, err := client.New(client.Config{Endpoints: eps, MaxRetries: 8, ClientID: cname,
				BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
				HTTPClient: &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 3 * time.Second}}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = cl.Close() })
			w.Clients, w.Names = append(w.Clients, cl), append(w.Names, cname)
		}
		return w
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	reader := mk("reader", false).Clients[0]

	t.Run("fenced", func(t *testing.T) {
		w := mk("fenced", false)
		done := make(chan struct{})
		go func() {
			defer close(done)
			w.Run(ctx, time.Now().Add(7*time.Second))
		}()
		// Kill the leader of the lock's shard (the first) mid-run and
		// bring it back.
		sleepCtx(ctx, 2*time.Second)
		if l, err := c.Leader(1); err == nil {
			c.Kill(l)
			sleepCtx(ctx, time.Second)
			c.Restart(l)
		} else {
			t.Logf("no leader of shard 1 to kill: %v", err)
		}
		<-done
		res, err := w.Check(ctx, reader)
		if err != nil {
			t.Fatal(err)
		}
		logLockResult(t, res, w.Errors())
		if an := res.Anomalies(); len(an) > 0 {
			t.Fatalf("anomalies:\n%s", strings.Join(an, "\n"))
		}
		if res.Acked < 5 || res.StaleWrites+res.StaleReads == 0 {
			t.Fatalf("the run proves too little: %d acknowledged increments, %d stale_token writes and %d reads (want >= 5 and > 0)",
				res.Acked, res.StaleWrites, res.StaleReads)
		}
	})
	t.Run("unfenced", func(t *testing.T) {
		w := mk("unfenced", true)
		w.Run(ctx, time.Now().Add(6*time.Second))
		res, err := w.Check(ctx, reader)
		if err != nil {
			t.Fatal(err)
		}
		logLockResult(t, res, w.Errors())
		if len(res.Lost) == 0 {
			t.Fatalf("without fencing, paused holders should have lost updates; the checker found none (%d increments acknowledged)", res.Acked)
		}
	})
}

func logLockResult(t *testing.T, r *LockResult, errs map[string]int) {
	t.Helper()
	t.Logf("lock %s: %d grants; increments %d acknowledged, %d unknown (%d applied), %d failed (%d stale_token); %d stale reads; counter %d; %d lost; errors %s",
		r.Lock, r.Grants, r.Acked, r.Unknown, r.UnknownApplied, r.Failed, r.StaleWrites, r.StaleReads, r.Final, len(r.Lost), countsString(errs))
}
