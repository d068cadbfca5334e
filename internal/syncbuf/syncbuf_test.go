package syncbuf

import (
	"fmt"
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

// A Tail keeps whole lines, at most about twice Max bytes, and the newest
// ones; it says when it dropped some.
func TestTailKeepsTheLastLines(t *testing.T) {
	tl := &Tail{Max: 100}
	for i := range 1000 {
		_, _ = fmt.Fprintf(tl, "line %04d\n", i)
	}
	got := tl.String()
	first, rest, _ := strings.Cut(got, "\n")
	if first != "(earlier lines dropped)" {
		t.Fatalf("first line %q, want the dropped note", first)
	}
	if !strings.HasSuffix(rest, "line 0999\n") || !strings.HasPrefix(rest, "line ") || len(rest) > 200 || len(rest) < 100 {
		t.Fatalf("kept %d bytes, %q...%q: want whole lines up to line 0999, 100-200 bytes",
			len(rest), rest[:min(20, len(rest))], rest[max(0, len(rest)-20):])
	}
	small := &Tail{Max: 100}
	_, _ = small.Write([]byte("one\n"))
	if s := small.String(); s != "one\n" {
		t.Fatalf("nothing dropped: got %q", s)
	}
}
