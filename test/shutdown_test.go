package test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Issue 10 item 7: `docker compose stop` killed two of three nodes after the
// 10s grace. On SIGTERM a node stops taking requests, hands its leaderships
// (the meta group's too) to other replicas and exits within a few seconds;
// writes through the other nodes carry on. Then the last two are stopped at
// once, as `docker compose stop` does: they exit within a few seconds too,
// although they can no longer form a quorum.
func TestSIGTERMHandsOffAndExits(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := cairnBinary(t)
	procs := newProcs(t, 3)
	ctx := Context(t, 2*time.Minute)
	startProcs(t, ctx, bin, procs)
	keys := []string{"a-stop", "h-stop", "o-stop", "u-stop"} // one per shard (splits g, n, t)
	for _, k := range keys {
		expectStatus(t, ctx, "PUT", procs[0].http, KVPath(k), `{"value":"0"}`, 200)
	}

	// The victim leads the most shards, so it has leaderships to hand off.
	var view struct {
		PlacementLeader string `json:"placement_leader"`
		Shards          []struct {
			Leader string `json:"leader"`
		} `json:"shards"`
	}
	res := expectStatus(t, ctx, "GET", procs[0].http, "/v1/cluster?local=true", nil, 200)
	if err := res.JSON(&view); err != nil {
		t.Fatal(err)
	}
	leads := map[string]int{}
	for _, s := range view.Shards {
		leads[s.Leader]++
	}
	victim := 0
	for i, p := range procs {
		if leads[p.id] > leads[procs[victim].id] {
			victim = i
		}
	}
	v := procs[victim]
	var others []*proc
	for _, p := range procs {
		if p != v {
			others = append(others, p)
		}
	}
	t.Logf("victim %s leads %d of %d shards (placement leader %s)", v.id, leads[v.id], len(view.Shards), view.PlacementLeader)

	// Writers through the surviving nodes, one per key, each request bounded.
	wctx, stopWriters := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	lastOK := map[string]time.Time{}
	maxGap := map[string]time.Duration{}
	for i, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := others[i%2].http
			mu.Lock()
			lastOK[k] = time.Now()
			mu.Unlock()
			for n := 0; wctx.Err() == nil && n < 100000; n++ {
				rctx, cancel := context.WithTimeout(wctx, 5*time.Second)
				res, err := Do(rctx, "PUT", addr, KVPath(k), fmt.Sprintf(`{"value":"%d"}`, n))
				cancel()
				if err == nil && res.Status == 200 {
					now := time.Now()
					mu.Lock()
					maxGap[k] = max(maxGap[k], now.Sub(lastOK[k]))
					lastOK[k] = now
					mu.Unlock()
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)

	start := time.Now()
	if err := v.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- v.cmd.Wait() }()
	select {
	case err := <-exited:
		t.Logf("%s exited %v after SIGTERM (%v)", v.id, time.Since(start), err)
		if err != nil {
			t.Errorf("%s exit status after SIGTERM: %v", v.id, err)
		}
	case <-time.After(8 * time.Second):
		t.Fatalf("%s still running 8s after SIGTERM", v.id)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("%s took %v to exit after SIGTERM, want a few seconds", v.id, took)
	}
	v.cmd = nil // exited: nothing for cleanup to kill

	// Handed off, not abandoned: the survivors already follow new leaders
	// (without a handoff they would believe in the dead one for a heartbeat
	// timeout, 500ms here, and then hold an election).
	handedOff := time.Now()
	for {
		stillLed := ""
		for _, o := range others {
			res, err := Do(ctx, "GET", o.http, "/v1/cluster?local=true", nil)
			if err != nil || res.Status != 200 {
				t.Fatalf("cluster view from %s: %v %v", o.id, res, err)
			}
			var local struct {
				Shards []struct {
					ID     uint64 `json:"id"`
					Leader string `json:"leader"`
				} `json:"shards"`
			}
			if err := res.JSON(&local); err != nil {
				t.Fatal(err)
			}
			for _, s := range local.Shards {
				if s.Leader == v.id {
					stillLed = fmt.Sprintf("%s sees %s leading shard %d", o.id, v.id, s.ID)
				}
			}
		}
		if stillLed == "" {
			break
		}
		if time.Since(handedOff) > 400*time.Millisecond {
			t.Fatalf("%v after %s exited, %s: its leaderships were not handed off", time.Since(handedOff), v.id, stillLed)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Writes carry on through the others.
	time.Sleep(2 * time.Second)
	stopWriters()
	wg.Wait()
	for _, k := range keys {
		WaitFor(t, 10*time.Second, "write "+k+" after the SIGTERM", func() error {
			res, err := Do(ctx, "PUT", others[0].http, KVPath(k), `{"value":"after"}`)
			if err != nil || res.Status != 200 {
				return fmt.Errorf("%v %v", res, err)
			}
			return nil
		})
	}
	mu.Lock()
	t.Logf("longest gap between successful writes per key while %s stopped: %v", v.id, maxGap)
	mu.Unlock()

	// `docker compose stop`: the remaining two at once.
	start = time.Now()
	for _, p := range others {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	var ewg sync.WaitGroup
	for _, p := range others {
		ewg.Add(1)
		go func() {
			defer ewg.Done()
			done := make(chan error, 1)
			go func() { done <- p.cmd.Wait() }()
			select {
			case err := <-done:
				t.Logf("%s exited %v after SIGTERM (%v)", p.id, time.Since(start), err)
				if err != nil {
					t.Errorf("%s exit status after SIGTERM: %v", p.id, err)
				}
				p.cmd = nil
			case <-time.After(8 * time.Second):
				t.Errorf("%s still running 8s after SIGTERM (the last two nodes stopped together)", p.id)
			}
		}()
	}
	ewg.Wait()
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the last two nodes took %v to exit after SIGTERM, want a few seconds", took)
	}
}
