package fsm

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scanWithRange is a full scan together with the range it answers for.
func scanWithRange(f *FSM) ([]*KV, bool, Range, error) {
	return f.ScanRange(nil, nil, 0, true)
}

// Invariants I2, I5: a read racing a split answers from one state: the range
// before the split with every key of it, or the range after with its half.
// A GET of a key that exists the whole time (in the parent, then in the
// child) is found or answered wrong_shard, never not_found; a scan returns
// every key of the range it answers for, so a caller that moves its cursor
// to that range's end skips nothing.
func TestReadsRacingSplit(t *testing.T) {
	const rounds = 5
	for round := 0; round < rounds; round++ {
		fx := newSplitFixture(t)
		// The committed split reaches Range() 2 ms late: reads that check
		// Range() meet the committed data under the old range every time.
		fx.parent.cfg.BeforeRangePublish = func() { time.Sleep(2 * time.Millisecond) }
		all := []string{"c", "k", "m", "p", "q", "r", "x"} // every key of the fixture
		var stop atomic.Bool
		var reads, afterGet, afterScan atomic.Int64 // all reads; reads that saw the split
		var wg sync.WaitGroup
		for _, key := range []string{"m", "p", "x"} { // the child's half
			wg.Go(func() {
				for !stop.Load() {
					kv, err := fx.parent.Get([]byte(key))
					reads.Add(1)
					var ws *WrongShardError
					switch {
					case errors.As(err, &ws):
						afterGet.Add(1)
					case err != nil:
						t.Errorf("Get(%q): %v", key, err)
						return
					case kv == nil:
						t.Errorf("round %d: Invariant I2/I5: Get(%q) = not found while the key existed the whole time", round, key)
						return
					}
				}
			})
		}
		wg.Go(func() {
			for !stop.Load() {
				kvs, more, rng, err := scanWithRange(fx.parent)
				reads.Add(1)
				if err != nil {
					t.Errorf("scan: %v", err)
					return
				}
				var want []string
				for _, k := range all {
					if rng.Contains([]byte(k)) {
						want = append(want, k)
					}
				}
				if got := keysOf(kvs); more || !slices.Equal(got, want) {
					t.Errorf("round %d: Invariant I5: scan answering for range [%q, %q) at epoch %d returned %q more=%v, want %q",
						round, rng.Start, rng.End, rng.Epoch, got, more, want)
					return
				}
				if rng.Epoch > testRange.Epoch {
					afterScan.Add(1)
				}
			}
		})
		for deadline := time.Now().Add(5 * time.Second); reads.Load() < 100 && time.Now().Before(deadline); {
			time.Sleep(100 * time.Microsecond) // the readers are running before the split
		}
		r := mustApply(t, fx.parent, 10, &Command{Op: OpSplit, Key: []byte("m"), Epoch: testRange.Epoch,
			ChildID: 42, Servers: testServers})
		if r.Err != nil {
			t.Fatalf("split: %v", r.Err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for (afterGet.Load() < 100 || afterScan.Load() < 100) && time.Now().Before(deadline) && !t.Failed() {
			time.Sleep(time.Millisecond)
		}
		stop.Store(true)
		wg.Wait()
		if t.Failed() {
			return
		}
		if afterGet.Load() == 0 || afterScan.Load() == 0 {
			t.Fatalf("readers never saw the split: %d gets, %d scans", afterGet.Load(), afterScan.Load())
		}
	}
}
