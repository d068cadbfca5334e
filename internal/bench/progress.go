package bench

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// ProgressPrinter writes Progress to w: on a terminal, one line with a bar
// redrawn in place and cleared when a phase ends; otherwise a plain line
// every PlainEvery and one when a phase ends, so logs stay short.
type ProgressPrinter struct {
	w          io.Writer
	tty        bool
	PlainEvery time.Duration

	mu        sync.Mutex
	lastPlain map[string]time.Duration
}

// NewProgressPrinter returns a printer to w; tty says whether w is a terminal.
func NewProgressPrinter(w io.Writer, tty bool) *ProgressPrinter {
	return &ProgressPrinter{w: w, tty: tty, PlainEvery: 10 * time.Second, lastPlain: map[string]time.Duration{}}
}

// Update prints p. It is safe to call from the runner's goroutine.
func (pp *ProgressPrinter) Update(p Progress) {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.tty {
		if p.Final {
			fmt.Fprint(pp.w, "\r\033[K")
			return
		}
		fmt.Fprintf(pp.w, "\r\033[K%s", progressLine(p, true))
		return
	}
	if !p.Final && p.Elapsed-pp.lastPlain[p.Phase] < pp.PlainEvery {
		return
	}
	pp.lastPlain[p.Phase] = p.Elapsed
	fmt.Fprintln(pp.w, progressLine(p, false))
}

const barWidth = 24

// progressLine is "run  12s/30s [=====>    ]  48213 ops  4012 ops/s  0 errors";
// the bar only on a terminal, "done" at the end of a phase.
func progressLine(p Progress, bar bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-7s", p.Phase)
	frac := -1.0
	switch {
	case p.Total > 0:
		fmt.Fprintf(&b, " %d/%d ops  %s", p.Done, p.Total, p.Elapsed.Round(time.Second))
		frac = float64(p.Done) / float64(p.Total)
	case p.Duration > 0:
		fmt.Fprintf(&b, " %s/%s  %d ops", p.Elapsed.Round(time.Second), p.Duration, p.Done)
		frac = p.Elapsed.Seconds() / p.Duration.Seconds()
	default:
		fmt.Fprintf(&b, " %s  %d ops", p.Elapsed.Round(time.Second), p.Done)
	}
	if bar && frac >= 0 {
		n := int(min(frac, 1) * barWidth)
		b.WriteString("  [" + strings.Repeat("=", n) + strings.Repeat(" ", barWidth-n) + "]")
	}
	fmt.Fprintf(&b, "  %s ops/s  %d errors", formatRate(p.Rate), p.Errors)
	if p.Final {
		b.WriteString("  done")
	}
	return b.String()
}
