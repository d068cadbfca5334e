package bench

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func run(target string, w Workload, clients int, opsPerSec, p50, p99 float64, errs int64) *Result {
	r := &Result{Workload: w, Target: target, Clients: clients, OpsPerSec: opsPerSec, Errors: errs,
		Latency: Latency{P50: p50, P99: p99}}
	if w != WorkloadPut {
		r.Consistency = "linearizable"
	}
	if w == WorkloadMixed {
		rr := 0.9
		r.ReadRatio = &rr
	}
	return r
}

func TestSummaryMarkdown(t *testing.T) {
	shard := func(n string, ops float64) *Result {
		r := run("cairn", WorkloadPut, 64, ops, 10, 20, 0)
		r.Label, r.System = LabelShards, map[string]string{"shards": n}
		return r
	}
	s := &Summary{
		Title: "cairn vs etcd, 2026-11-03",
		Env:   []EnvEntry{{"machine", "2 cores | 8 GiB"}, {"etcd", "3.4.23"}},
		Runs: []*Result{
			run("etcd", WorkloadGet, 64, 7000, 8, 20, 0),
			run("cairn", WorkloadPut, 64, 6000, 9.5, 24, 1),
			run("etcd", WorkloadPut, 64, 5000, 11, 30, 0),
			run("cairn", WorkloadGet, 64, 14000, 4, 10, 0),
			run("etcd-native", WorkloadPut, 64, 8000, 7, 15, 0),
			run("cairn", WorkloadPut, 1, 400, 2.5, 4, 0), // no etcd counterpart
			run("cairn", WorkloadMixed, 16, 3000, 5, 9, 0),
			run("etcd", WorkloadMixed, 16, 3000, 5, 18, 0),
			shard("16", 12000), shard("1", 6000), shard("4", 9000),
		},
	}
	var b bytes.Buffer
	if err := s.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"# cairn vs etcd, 2026-11-03\n",
		"| machine | 2 cores \\| 8 GiB |\n",
		"| put | 1 | 400 | – | – | 2.50 / 4.00 | – | – | 0 / – | – | – | – |\n",
		"| put | 64 | 6000 | 5000 | 1.20× | 9.50 / 24.0 | 11.0 / 30.0 | 0.80× | 1 / 0 | 8000 | 7.00 / 15.0 | 0.75× |\n",
		"| get (linearizable) | 64 | 14000 | 7000 | 2.00× | 4.00 / 10.0 | 8.00 / 20.0 | 0.50× | 0 / 0 | – | – | – |\n",
		"| mixed 90/10 (linearizable) | 16 | 3000 | 3000 | 1.00× | 5.00 / 9.00 | 5.00 / 18.0 | 0.50× | 0 / 0 |",
		"| 1 | put | 64 | 6000 | 10.0 / 20.0 | 0 | 1.00× |\n| 4 | put | 64 | 9000 | 10.0 / 20.0 | 0 | 1.50× |\n| 16 | put | 64 | 12000 | 10.0 / 20.0 | 0 | 2.00× |\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	// Rows go put, get, mixed; within a workload by clients.
	if i, j, k := strings.Index(out, "| put | 1 |"), strings.Index(out, "| put | 64 |"), strings.Index(out, "| get (linearizable) | 64"); !(i < j && j < k) {
		t.Errorf("rows out of order:\n%s", out)
	}

	b.Reset()
	if err := s.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back Summary
	if err := json.Unmarshal(b.Bytes(), &back); err != nil || len(back.Runs) != len(s.Runs) || back.Env[1].Value != "3.4.23" {
		t.Errorf("JSON round trip: %v %+v", err, back)
	}
}

func TestSummaryWithoutNative(t *testing.T) {
	s := &Summary{Runs: []*Result{run("cairn", WorkloadPut, 64, 6000, 9.5, 24, 0), run("etcd", WorkloadPut, 64, 5000, 11, 30, 0)}}
	var b bytes.Buffer
	_ = s.WriteMarkdown(&b)
	if strings.Contains(b.String(), "native") || strings.Contains(b.String(), "shard count") {
		t.Errorf("columns or sections without data:\n%s", b.String())
	}
	if !strings.Contains(b.String(), "# cairn benchmark\n") {
		t.Errorf("default title missing:\n%s", b.String())
	}
}

// The log-store runs (make bench, BENCH_STORES) get a table of their own,
// wal against boltdb, and stay out of the cairn/etcd comparison.
func TestSummaryLogStores(t *testing.T) {
	store := func(name string, w Workload, clients int, ops, p99 float64) *Result {
		r := run("cairn", w, clients, ops, 2, p99, 0)
		r.Label = LabelLogStore + name
		return r
	}
	s := &Summary{Runs: []*Result{
		run("cairn", WorkloadPut, 64, 6000, 9.5, 24, 0), run("etcd", WorkloadPut, 64, 5000, 11, 30, 0),
		store("boltdb", WorkloadPut, 16, 1000, 40), store("wal", WorkloadPut, 16, 2000, 20),
		store("wal", WorkloadGet, 16, 8000, 5), // no boltdb counterpart
	}}
	var b bytes.Buffer
	if err := s.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"## cairn by raft log store (--log-store)\n",
		"| put | 16 | 2000 | 1000 | 0.50× | 2.00 / 20.0 | 2.00 / 40.0 | 2.00× | 0 / 0 |\n",
		"| get (linearizable) | 16 | 8000 | – | – | 2.00 / 5.00 | – | – | 0 / – |\n",
		"| put | 64 | 6000 | 5000 | 1.20× |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "| put | 16 | 2000 | – |") {
		t.Errorf("a log-store run landed in the cairn/etcd table:\n%s", out)
	}
	if i, j := strings.Index(out, "| put | 16 | 2000"), strings.Index(out, "| get (linearizable) | 16"); i > j {
		t.Errorf("rows out of order:\n%s", out)
	}
}

func TestSummaryLocks(t *testing.T) {
	lock := func(target string, clients int, contended bool, ops, p50, handoff float64) *Result {
		r := run(target, WorkloadLock, clients, ops, p50, 2*p50, 0)
		r.Consistency, r.Contended, r.Label = "", contended, "uncontended shards=4"
		if contended {
			r.Handoff = &Latency{P50: handoff, P99: 2 * handoff}
			r.Release = &Latency{P50: handoff / 2, P99: handoff}
		}
		return r
	}
	s := &Summary{Runs: []*Result{
		run("cairn", WorkloadPut, 1, 300, 3, 5, 0),
		lock("cairn", 64, false, 9000, 6, 0), lock("etcd-native", 64, false, 3000, 20, 0),
		lock("cairn", 64, true, 250, 200, 2.5), lock("etcd-native", 64, true, 120, 500, 8),
		lock("cairn", 1, false, 160, 6, 0),
		// the same pair on a one-shard cairn cluster: a row of its own
		oneShard(lock("cairn", 64, false, 12000, 5, 0)), oneShard(lock("etcd-native", 64, false, 3100, 20, 0)),
	}}
	var b bytes.Buffer
	if err := s.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"## locks: cairn against etcd's concurrency.Mutex (native client)\n",
		"cairn's put p50 at 1 client, 3.00 ms.",
		"| uncontended | 4 | 1 | 160 | – | – |",
		"| uncontended | 4 | 64 | 9000 | 3000 | 3.00× | 6.00 / 12.0 | 20.0 / 40.0 | – | – | – | – | 0 / 0 |\n",
		"| contended | 4 | 64 | 250 | 120 | 2.08× | 200 / 400 | 500 / 1000 | 2.50 / 5.00 | 8.00 / 16.0 | 1.25 / 2.50 | 4.00 / 8.00 | 0 / 0 |\n",
		"| uncontended | 1 | 64 | 12000 | 3100 | 3.87× |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "| lock | 64 |") {
		t.Errorf("a lock run landed in the key-value table:\n%s", out)
	}
	if i, j, k := strings.Index(out, "| uncontended | 1 | 64"), strings.Index(out, "| uncontended | 4 | 64"),
		strings.Index(out, "| contended | 4 | 64"); i > j || j > k {
		t.Errorf("rows out of order:\n%s", out)
	}
}

// oneShard marks r as run on (or paired with) a one-shard cairn cluster.
func oneShard(r *Result) *Result {
	r.Label = strings.Replace(r.Label, "shards=4", "shards=1", 1)
	return r
}

func TestSummaryTxns(t *testing.T) {
	tx := func(target string, clients int, cross bool, ops, p50 float64) *Result {
		r := run(target, WorkloadTxn, clients, ops, p50, 2*p50, 0)
		r.Consistency, r.CrossShard, r.Label = "", cross, "one-shard shards=4"
		return r
	}
	s := &Summary{Runs: []*Result{
		tx("cairn", 64, false, 6000, 10), tx("etcd-native", 64, false, 3000, 20),
		tx("cairn", 64, true, 2000, 30), tx("etcd-native", 64, true, 3000, 20),
		oneShard(tx("cairn", 64, false, 9000, 7)), oneShard(tx("etcd-native", 64, false, 3000, 20)),
	}}
	var b bytes.Buffer
	if err := s.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"## transactions: cairn against etcd's transactions (native client)\n",
		"| one shard | 4 | 64 | 6000 | 3000 | 2.00× | 10.0 / 20.0 | 20.0 / 40.0 | – | 0 / 0 |\n",
		// the share is of the one-shard rate on the same cluster (4 shards), not the one-shard cluster's
		"| two shards | 4 | 64 | 2000 | 3000 | 0.67× | 30.0 / 60.0 | 20.0 / 40.0 | 0.33× | 0 / 0 |\n",
		"| one shard | 1 | 64 | 9000 | 3000 | 3.00× |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "| txn | 64 |") {
		t.Errorf("a txn run landed in the key-value table:\n%s", out)
	}
}

// TestSummaryRepeats: repeated runs of a row (BENCH_REPEAT) show as their
// median run with the range and count of the repeats, ratios are of the
// medians, and rows without repeats read as before.
func TestSummaryRepeats(t *testing.T) {
	lock := func(target string, ops, p50 float64) *Result {
		r := run(target, WorkloadLock, 64, ops, p50, 2*p50, 0)
		r.Consistency, r.Label = "", "uncontended shards=4"
		return r
	}
	tx := func(target string, cross bool, ops float64) *Result {
		r := run(target, WorkloadTxn, 64, ops, 10, 20, 0)
		r.Consistency, r.CrossShard, r.Label = "", cross, "one-shard shards=4"
		return r
	}
	s := &Summary{Runs: []*Result{
		// alternated as run.sh does; medians 3300 (p50 7) and 2000
		lock("cairn", 3600, 6), lock("etcd-native", 2000, 20),
		lock("etcd-native", 1900, 21), lock("cairn", 3000, 8),
		lock("cairn", 3300, 7), lock("etcd-native", 2100, 19),
		// an even count: the lower middle one
		tx("cairn", false, 5000), tx("cairn", false, 6000), tx("cairn", true, 2400), tx("cairn", true, 2000),
		tx("etcd-native", false, 3000),
	}}
	var b bytes.Buffer
	if err := s.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Some runs were repeated",
		"| uncontended | 4 | 64 | 3300 (3000–3600, 3 runs) | 2000 (1900–2100, 3 runs) | 1.65× | 7.00 / 14.0 | 20.0 / 40.0 |",
		"| one shard | 4 | 64 | 5000 (5000–6000, 2 runs) | 3000 | 1.67× |",
		"| two shards | 4 | 64 | 2000 (2000–2400, 2 runs) | – | – | 10.0 / 20.0 | – | 0.40× |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	// The JSON keeps every run as it was.
	var j bytes.Buffer
	if err := s.WriteJSON(&j); err != nil {
		t.Fatal(err)
	}
	var back Summary
	if err := json.Unmarshal(j.Bytes(), &back); err != nil || len(back.Runs) != len(s.Runs) {
		t.Fatalf("JSON has %d runs (%v), want %d", len(back.Runs), err, len(s.Runs))
	}

	b.Reset()
	single := &Summary{Runs: []*Result{lock("cairn", 3600, 6), lock("etcd-native", 2000, 20)}}
	if err := single.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "repeated") || strings.Contains(b.String(), "runs)") {
		t.Errorf("a summary without repeats mentions them:\n%s", b.String())
	}
}

// TestSummaryRepeatsKey: what makes runs repeats of one another is what the
// runner was asked to measure. A repeat whose cluster description failed
// (no shard count) is still a repeat; runs of other lengths are not; the
// same report read twice is one run.
func TestSummaryRepeatsKey(t *testing.T) {
	put := func(target string, ops float64, shards string) *Result {
		r := run(target, WorkloadPut, 64, ops, 10, 20, 0)
		r.Duration = "10s"
		if shards != "" {
			r.System = map[string]string{"shards": shards}
		}
		return r
	}
	noDescribe := put("cairn", 400, "")
	longer := put("etcd", 3000, "")
	longer.Duration = "60s"
	twice := put("etcd", 950, "")
	twice.Seed, twice.Started = 9, time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)
	s := &Summary{Runs: []*Result{
		longer, // its own row key's cell is replaced by the later 10s repeats
		put("cairn", 1000, "1"), put("cairn", 1100, "1"), noDescribe,
		put("etcd", 900, ""), twice, twice, put("etcd", 1000, ""),
	}}
	var b bytes.Buffer
	if err := s.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	// cairn: 400, 1000, 1100 → 1000; etcd (10s): 900, 950, 1000 → 950, the
	// same report counted once; the 60s run stays out of those repeats.
	if want := "| put | 64 | 1000 (400–1100, 3 runs) | 950 (900–1000, 3 runs) | 1.05× |"; !strings.Contains(out, want) {
		t.Errorf("summary lacks %q:\n%s", want, out)
	}
	if strings.Contains(out, "4 runs") || strings.Contains(out, "(900–3000") {
		t.Errorf("runs that are not repeats were merged:\n%s", out)
	}
}
