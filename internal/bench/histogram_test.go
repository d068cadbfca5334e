package bench

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// within reports whether got is within rel (relative) of want.
func within(got, want, rel float64) bool {
	return math.Abs(got-want) <= rel*math.Abs(want)
}

func TestPercentilesUniform(t *testing.T) {
	// 1..10000 µs, each once: the p-th percentile is p% of 10 ms.
	r := newRecorder()
	for us := 1; us <= 10000; us++ {
		r.record(time.Duration(us) * time.Microsecond)
	}
	s := r.summary()
	checks := []struct {
		name      string
		got, want float64
	}{
		{"p50", s.P50, 5.0},
		{"p90", s.P90, 9.0},
		{"p99", s.P99, 9.9},
		{"p99.9", s.P999, 9.99},
		{"max", s.Max, 10.0},
		{"mean", s.Mean, 5.0005},
	}
	for _, c := range checks {
		// 3 significant digits: within 0.1%, plus rounding to 1µs.
		if !within(c.got, c.want, 0.0011) {
			t.Errorf("%s = %v ms, want %v ms (±0.1%%)", c.name, c.got, c.want)
		}
	}
	if s.Count != 10000 {
		t.Errorf("count %d, want 10000", s.Count)
	}
}

func TestPercentilesExponential(t *testing.T) {
	// Exponential with mean 2 ms: the q quantile is -2 ln(1-q) ms.
	rnd := rand.New(rand.NewPCG(7, 8))
	r := newRecorder()
	const n = 400000
	for range n {
		r.record(time.Duration(rnd.ExpFloat64() * 2 * float64(time.Millisecond)))
	}
	s := r.summary()
	for _, c := range []struct {
		name string
		got  float64
		q    float64
		tol  float64 // sampling error grows in the tail
	}{
		{"p50", s.P50, 0.50, 0.01},
		{"p90", s.P90, 0.90, 0.015},
		{"p99", s.P99, 0.99, 0.03},
		{"p99.9", s.P999, 0.999, 0.08},
	} {
		want := -2 * math.Log(1-c.q)
		if !within(c.got, want, c.tol) {
			t.Errorf("%s = %.3f ms, want %.3f ms (±%.0f%%)", c.name, c.got, want, c.tol*100)
		}
	}
	if !within(s.Mean, 2, 0.01) {
		t.Errorf("mean %.3f ms, want 2", s.Mean)
	}
}

func TestMaxIsExactAndBoundsPercentiles(t *testing.T) {
	r := newRecorder()
	r.record(1234567 * time.Nanosecond) // 1.234567 ms: the histogram keeps 1234 µs ±0.1%
	s := r.summary()
	if s.Max != 1.235 { // rounded to the microsecond
		t.Errorf("max %v, want 1.235", s.Max)
	}
	for _, p := range []float64{s.P50, s.P90, s.P99, s.P999} {
		if p > s.Max {
			t.Errorf("a percentile %v is above the max %v", p, s.Max)
		}
	}
}

func TestMergeEqualsOneRecorder(t *testing.T) {
	rnd := rand.New(rand.NewPCG(9, 10))
	one, parts := newRecorder(), []*recorder{newRecorder(), newRecorder(), newRecorder()}
	for i := range 30000 {
		d := time.Duration(rnd.IntN(50000)+1) * time.Microsecond
		one.record(d)
		parts[i%3].record(d)
	}
	merged := newRecorder()
	for _, p := range parts {
		merged.merge(p)
	}
	if a, b := one.summary(), merged.summary(); a != b {
		t.Errorf("merged %+v, want %+v", b, a)
	}
}

func TestRecorderEdges(t *testing.T) {
	if s := newRecorder().summary(); s != (Latency{}) {
		t.Errorf("empty recorder summary %+v, want zero", s)
	}
	r := newRecorder()
	r.record(0)             // below the lowest value: counted as 1µs
	r.record(2 * time.Hour) // above the highest: counted as an hour, max stays exact
	s := r.summary()
	if s.Count != 2 || s.Max != 7200000 || s.P50 > 0.002 {
		t.Errorf("edges summary %+v", s)
	}
}
