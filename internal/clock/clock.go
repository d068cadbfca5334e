// Package clock is the time source of every decision cairn takes from the
// time of day (TTL deadlines, stale-read bounds, proposal times, placement
// timeouts): a Config field of each deciding package, so a test can drive
// those decisions with a Fake.
package clock

import (
	"sync"
	"time"
)

// Clock tells the time. Implementations must be safe for concurrent use.
type Clock interface {
	Now() time.Time
}

// Real returns the system clock.
func Real() Clock { return realClock{} }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Func adapts a function to a Clock (tests that keep the time in a variable).
type Func func() time.Time

// Now calls f.
func (f Func) Now() time.Time { return f() }

// Fake is a clock that moves only when told (tests).
type Fake struct {
	mu  sync.Mutex
	now time.Time
}

// NewFake returns a Fake showing t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the fake time forward by d.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
}

// Set sets the fake time.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t
}
