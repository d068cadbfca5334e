package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

// Concurrent writes all land, whole, and String reads while they run (the
// race detector checks the locking).
func TestConcurrentWrites(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				_, _ = b.Write([]byte("ab"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := b.String(); len(got) != 1600 || strings.Count(got, "ab") != 800 {
		t.Fatalf("got %d bytes, %d \"ab\": want 1600 and 800", len(got), strings.Count(got, "ab"))
	}
}
