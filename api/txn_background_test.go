package api

import (
	"context"
	"runtime"
	"testing"
	"time"
)

// TestTxnBackgroundSpawnLeavesNothing: a finished background task with a
// timeout leaves nothing behind in the node's background context (each
// detached transaction's resolution and each prepare sent alone is one).
func TestTxnBackgroundSpawnLeavesNothing(t *testing.T) {
	var b txnBackground
	defer b.close()
	const n = 50000
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	for range n {
		if !b.spawn(time.Minute, func(context.Context) {}) {
			t.Fatal("spawn refused before close")
		}
	}
	b.wg.Wait()
	if grew := int64(heap()) - int64(before); grew > 2<<20 {
		t.Fatalf("%d finished tasks left %d bytes behind (%d each)", n, grew, grew/n)
	}
}
