package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func sampleResult() *Result {
	rr := 0.9
	return &Result{
		Workload:    WorkloadMixed,
		Target:      "cairn",
		Endpoints:   []string{"127.0.0.1:7070", "127.0.0.1:7080"},
		System:      map[string]string{"shards": "4"},
		Clients:     64,
		Duration:    "30s",
		Keys:        100000,
		ValueSize:   256,
		KeyDist:     KeyDistZipf,
		ZipfS:       1.1,
		ReadRatio:   &rr,
		Consistency: "linearizable",
		Seed:        42,
		Started:     time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC),
		Preload:     &PreloadStats{Keys: 100000, ElapsedSec: 12.34},
		ElapsedSec:  30.012,
		Ops:         150000,
		Errors:      7,
		OpsPerSec:   4998.0,
		Latency:     Latency{Mean: 12.1, P50: 11.25, P90: 16.03, P99: 24.1, P999: 40.25, Max: 180.5, Count: 150000},
		ByOp: map[string]OpStats{
			"get": {Ops: 135000, Errors: 2, OpsPerSec: 4498.2, Latency: Latency{P50: 0.95, P90: 1.5, P99: 3.2, P999: 9.1, Max: 55, Count: 135000}},
			"put": {Ops: 15000, Errors: 5, OpsPerSec: 499.8, Latency: Latency{P50: 14.1, P90: 18, P99: 30.5, P999: 60, Max: 180.5, Count: 15000}},
		},
		ErrorsByCode: map[string]int64{"outcome_unknown": 2, "unavailable": 5},
		ErrorSamples: map[string]string{"unavailable": "unavailable: no leader for shard 1"},
	}
}

func TestWriteText(t *testing.T) {
	var b bytes.Buffer
	if err := sampleResult().WriteText(&b); err != nil {
		t.Fatal(err)
	}
	want := `cairn bench mixed: target cairn (127.0.0.1:7070,127.0.0.1:7080), 4 shards
64 clients, 30s, 100000 keys (zipf s=1.1), 256-byte values, 90% reads, linearizable reads, seed 42
preloaded 100000 keys in 12.3s (not measured)
150000 ops in 30.01s: 4998 ops/s, 7 errors

     op     ops  ops/s  p50 ms  p90 ms  p99 ms  p99.9 ms  max ms  errors
    get  135000   4498   0.950    1.50    3.20      9.10    55.0       2
    put   15000    500    14.1    18.0    30.5      60.0     180       5
  total  150000   4998    11.2    16.0    24.1      40.2     180       7

errors by code:
  unavailable               5  e.g. unavailable: no leader for shard 1
  outcome_unknown           2
`
	if got := b.String(); got != want {
		t.Errorf("text report:\n%s\nwant:\n%s", got, want)
	}
}

func TestWriteTextSingleOpNoErrors(t *testing.T) {
	r := &Result{Workload: WorkloadPut, Target: "etcd", Endpoints: []string{"127.0.0.1:2379"}, Clients: 1,
		Count: 10, Keys: 10, ValueSize: 8, KeyDist: KeyDistUniform, Seed: 1, ElapsedSec: 0.5, Ops: 10, OpsPerSec: 20,
		Latency: Latency{P50: 0.05, Max: 0.2}, ByOp: map[string]OpStats{"put": {Ops: 10, OpsPerSec: 20, Latency: Latency{P50: 0.05, Max: 0.2}}},
		Interrupted: true}
	var b bytes.Buffer
	if err := r.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"target etcd (127.0.0.1:2379)\n", "1 clients, 10 ops, 10 keys (uniform), 8-byte values, seed 1\n",
		"10 ops in 0.50s: 20.0 ops/s, 0 errors (interrupted)\n", "  put   10   20.0   0.050       -       -         -   0.200       0\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "total") || strings.Contains(out, "errors by code") {
		t.Errorf("a single-op report without errors has a total row or error list:\n%s", out)
	}
}

func TestWriteJSON(t *testing.T) {
	var b bytes.Buffer
	if err := sampleResult().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"workload", "target", "endpoints", "clients", "keys", "value_size", "key_dist", "read_ratio",
		"consistency", "seed", "elapsed_s", "ops", "errors", "ops_per_sec", "latency_ms", "by_op", "errors_by_code", "preload"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q: %s", k, b.String())
		}
	}
	lat := m["latency_ms"].(map[string]any)
	for _, k := range []string{"p50", "p90", "p99", "p99_9", "max", "mean"} {
		if _, ok := lat[k]; !ok {
			t.Errorf("latency lacks %q", k)
		}
	}
	if lat["p99_9"] != 40.25 || m["ops_per_sec"] != 4998.0 {
		t.Errorf("values changed on the way: %v %v", lat["p99_9"], m["ops_per_sec"])
	}
	var back Result
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Latency != sampleResult().Latency || *back.ReadRatio != 0.9 || back.ByOp["put"].Errors != 5 {
		t.Errorf("round trip: %+v", back)
	}
	// A put run has neither read ratio nor consistency.
	b.Reset()
	put := &Result{Workload: WorkloadPut}
	_ = put.WriteJSON(&b)
	if strings.Contains(b.String(), "read_ratio") || strings.Contains(b.String(), "consistency") {
		t.Errorf("put JSON: %s", b.String())
	}
}

func TestFormatMillis(t *testing.T) {
	for _, c := range []struct {
		in   float64
		want string
	}{{0, "-"}, {0.0504, "0.050"}, {1.234, "1.23"}, {12.34, "12.3"}, {123.4, "123"}, {2500, "2500"}} {
		if got := formatMillis(c.in); got != c.want {
			t.Errorf("formatMillis(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestProgressLine(t *testing.T) {
	p := Progress{Phase: "run", Elapsed: 12 * time.Second, Duration: 30 * time.Second, Done: 48213, Rate: 4012.4, Errors: 3}
	if got, want := progressLine(p, true), "run     12s/30s  48213 ops  [=========               ]  4012 ops/s  3 errors"; got != want {
		t.Errorf("tty line\n%q, want\n%q", got, want)
	}
	p = Progress{Phase: "preload", Elapsed: 2 * time.Second, Total: 1000, Done: 1000, Rate: 500, Final: true}
	if got, want := progressLine(p, false), "preload 1000/1000 ops  2s  500 ops/s  0 errors  done"; got != want {
		t.Errorf("plain line\n%q, want\n%q", got, want)
	}
}

func TestProgressPrinter(t *testing.T) {
	var tty, plain bytes.Buffer
	pt, pp := NewProgressPrinter(&tty, true), NewProgressPrinter(&plain, false)
	pp.PlainEvery = 10 * time.Second
	for s := 1; s <= 25; s++ {
		p := Progress{Phase: "run", Elapsed: time.Duration(s) * time.Second, Duration: 25 * time.Second, Done: int64(s)}
		p.Final = s == 25
		pt.Update(p)
		pp.Update(p)
	}
	if n := strings.Count(plain.String(), "\n"); n != 3 { // at 10s, 20s and the final one
		t.Errorf("plain output has %d lines, want 3:\n%s", n, plain.String())
	}
	if strings.Contains(plain.String(), "\r") || strings.Contains(plain.String(), "[") {
		t.Errorf("plain output has terminal controls or a bar: %q", plain.String())
	}
	if !strings.HasSuffix(tty.String(), "\r\033[K") || strings.Count(tty.String(), "\n") != 0 {
		t.Errorf("terminal output should redraw one line and clear it at the end: %q", tty.String())
	}
}
