package bench

import (
	"math"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds with 3 significant digits (a value
// is within 0.1% of the one recorded), from 1µs to an hour; longer values are
// recorded as an hour. The exact maximum is kept beside the histogram.
const (
	histMinMicros = 1
	histMaxMicros = int64(time.Hour / time.Microsecond)
	histSigFigs   = 3
)

// recorder collects one client's latencies. It is not safe for concurrent
// use: each client has its own and the runner merges them at the end.
type recorder struct {
	h   *hdrhistogram.Histogram
	max time.Duration
	sum time.Duration
}

func newRecorder() *recorder {
	return &recorder{h: hdrhistogram.New(histMinMicros, histMaxMicros, histSigFigs)}
}

func (r *recorder) record(d time.Duration) {
	us := min(max(d.Microseconds(), histMinMicros), histMaxMicros)
	_ = r.h.RecordValue(us) // within range by construction
	r.max = max(r.max, d)
	r.sum += d
}

func (r *recorder) count() int64 { return r.h.TotalCount() }

func (r *recorder) merge(o *recorder) {
	r.h.Merge(o.h)
	r.max = max(r.max, o.max)
	r.sum += o.sum
}

// Latency is a latency distribution's summary, in milliseconds.
type Latency struct {
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99_9"`
	Max   float64 `json:"max"`
	Count int64   `json:"count"`
}

// summary returns the percentiles (each the histogram's highest value
// equivalent to the recorded one, so at most 0.1% above it, and never above
// the maximum) and the exact maximum and mean.
func (r *recorder) summary() Latency {
	n := r.h.TotalCount()
	if n == 0 {
		return Latency{}
	}
	maxMs := roundMillis(float64(r.max) / float64(time.Millisecond))
	q := func(p float64) float64 { return min(microsToMillis(r.h.ValueAtPercentile(p)), maxMs) }
	return Latency{
		Mean:  roundMillis(float64(r.sum) / float64(n) / float64(time.Millisecond)),
		P50:   q(50),
		P90:   q(90),
		P99:   q(99),
		P999:  q(99.9),
		Max:   maxMs,
		Count: n,
	}
}

func microsToMillis(us int64) float64 { return roundMillis(float64(us) / 1000) }

// roundMillis keeps microsecond precision (3 decimals of a millisecond).
func roundMillis(ms float64) float64 { return math.Round(ms*1000) / 1000 }
