package test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// S1, invariant I1, with real processes: every node SIGKILLed at the same
// moment under a write load loses no acknowledged write. Each state machine
// keeps its bbolt write transaction open across raft batches (fsm/opentx.go),
// so at the kill every replica holds applied entries that are not in its
// file; all three die, so none is left to send them, and they must come back
// from the raft logs on restart. The writes go to every node's HTTP API
// (forwarded to the shard leaders) over four shards.
func TestKillAllProcessesUnderWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := cairnBinary(t)
	procs := newProcs(t, 3)
	ctx := Context(t, 3*time.Minute)
	startProcs(t, ctx, bin, procs)
	// Every key of every shard is written once first, so no write below
	// waits for a leader still being placed.
	for _, k := range []string{"a", "h", "o", "u"} {
		WaitFor(t, 30*time.Second, "a first write to "+k, func() error {
			res, err := Do(ctx, "PUT", procs[0].http, KVPath(k+"/warm"), `{"value":"w"}`)
			if err != nil || res.Status != 200 {
				return fmt.Errorf("%v %v", res, err)
			}
			return nil
		})
	}

	const writers, perWriter = 16, 400
	var mu sync.Mutex
	acked := map[string]string{}
	loadCtx, stopLoad := context.WithTimeout(ctx, 20*time.Second)
	defer stopLoad()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			prefix := []string{"a", "h", "o", "u"}[w%4] // one per shard (splits g, n, t)
			addr := procs[w%3].http
			for n := range perWriter {
				if loadCtx.Err() != nil {
					return
				}
				key, val := fmt.Sprintf("%s/w%02d-%04d", prefix, w, n), fmt.Sprintf("v%d", n)
				res, err := Do(loadCtx, "PUT", addr, KVPath(key), fmt.Sprintf(`{"value":%q}`, val))
				if err != nil {
					return // the node is gone: later writes of this writer would fail too
				}
				if res.Status == 200 {
					mu.Lock()
					acked[key] = val
					mu.Unlock()
				}
			}
		})
	}
	// Kill every node at once in the middle of the load.
	WaitFor(t, 30*time.Second, "some writes acknowledged", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 300 {
			return fmt.Errorf("%d acknowledged", len(acked))
		}
		return nil
	})
	var kill sync.WaitGroup
	for _, p := range procs {
		kill.Go(p.kill)
	}
	kill.Wait()
	stopLoad()
	wg.Wait()
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	t.Logf("%d writes acknowledged before every node was killed", n)

	startProcs(t, ctx, bin, procs)
	var lost []string
	for key, val := range acked {
		var res *HTTPResult
		WaitFor(t, 30*time.Second, "linearizable read of "+key, func() error {
			var err error
			res, err = Do(ctx, "GET", procs[0].http, KVPath(key), nil)
			if err != nil || (res.Status != 200 && res.Status != 404) {
				return fmt.Errorf("%v %v", res, err)
			}
			return nil
		})
		if res.Status != 200 || !strings.Contains(string(res.Body), fmt.Sprintf("%q", val)) {
			lost = append(lost, fmt.Sprintf("%s (want %s, got %s)", key, val, res))
		}
	}
	if len(lost) > 0 {
		t.Fatalf("Invariant I1: %d of %d acknowledged writes lost after killing every node: %v", len(lost), n, lost[:min(len(lost), 10)])
	}
}
