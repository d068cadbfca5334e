package bench

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memTarget is an in-memory target. delay is each operation's service time;
// fail, when set, decides an operation's error.
type memTarget struct {
	delay time.Duration
	fail  func(ctx context.Context, op, key string) error

	mu         sync.Mutex
	data       map[string]string
	puts, gets atomic.Int64
	conns      int
	closed     bool
}

func newMemTarget(delay time.Duration) *memTarget {
	return &memTarget{delay: delay, data: map[string]string{}}
}

func (m *memTarget) Name() string        { return "mem" }
func (m *memTarget) Endpoints() []string { return []string{"mem:0"} }
func (m *memTarget) Close() error        { m.closed = true; return nil }
func (m *memTarget) Conn(int) (Conn, error) {
	m.mu.Lock()
	m.conns++
	m.mu.Unlock()
	return memConn{m}, nil
}

type memConn struct{ m *memTarget }

func (c memConn) wait(ctx context.Context) error {
	if c.m.delay == 0 {
		return nil
	}
	t := time.NewTimer(c.m.delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (c memConn) Put(ctx context.Context, key, value string) error {
	c.m.puts.Add(1)
	if err := c.wait(ctx); err != nil {
		return err
	}
	if c.m.fail != nil {
		if err := c.m.fail(ctx, "put", key); err != nil {
			return err
		}
	}
	c.m.mu.Lock()
	c.m.data[key] = value
	c.m.mu.Unlock()
	return nil
}

func (c memConn) Get(ctx context.Context, key string) error {
	c.m.gets.Add(1)
	if err := c.wait(ctx); err != nil {
		return err
	}
	if c.m.fail != nil {
		if err := c.m.fail(ctx, "get", key); err != nil {
			return err
		}
	}
	c.m.mu.Lock()
	_, ok := c.m.data[key]
	c.m.mu.Unlock()
	if !ok {
		return &OpError{Code: CodeNotFound}
	}
	return nil
}

func testConfig(w Workload) Config {
	cfg := DefaultConfig()
	cfg.Workload = w
	cfg.Clients = 8
	cfg.Keys = 500
	cfg.ValueSize = 16
	cfg.Seed = 42
	cfg.Duration = 0
	return cfg
}

func TestRunCountBound(t *testing.T) {
	m := newMemTarget(0)
	cfg := testConfig(WorkloadPut)
	cfg.Count = 1000
	res, err := Run(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 1000 || m.puts.Load() != 1000 || res.Errors != 0 {
		t.Errorf("ops %d, puts sent %d, errors %d; want exactly 1000, 1000, 0", res.Ops, m.puts.Load(), res.Errors)
	}
	if m.conns != cfg.Clients {
		t.Errorf("%d connections, want one per client (%d)", m.conns, cfg.Clients)
	}
	if st := res.ByOp["put"]; st.Ops != 1000 || st.Latency.Count != 1000 {
		t.Errorf("by op %+v", res.ByOp)
	}
	if _, ok := res.ByOp["get"]; ok {
		t.Errorf("a put workload reports gets: %+v", res.ByOp)
	}
	if res.Duration != "" || res.Count != 1000 {
		t.Errorf("bounds in report: duration %q count %d", res.Duration, res.Count)
	}
}

func TestRunDurationBound(t *testing.T) {
	m := newMemTarget(2 * time.Millisecond)
	cfg := testConfig(WorkloadPut)
	cfg.Duration = 300 * time.Millisecond
	start := time.Now()
	res, err := Run(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	// The clients stop issuing at the deadline and wait for what is in flight.
	if res.ElapsedSec < 0.3 || took > 2*time.Second {
		t.Errorf("elapsed %.3fs (took %v), want at least 0.3s and not much more", res.ElapsedSec, took)
	}
	if res.Ops == 0 || res.Ops != m.puts.Load() {
		t.Errorf("ops %d, sent %d: every operation issued should be counted", res.Ops, m.puts.Load())
	}
	// 8 clients, ~2ms each: a few thousand ops/s at most.
	if res.OpsPerSec <= 0 || res.OpsPerSec > 8*1000/2*1.1 {
		t.Errorf("throughput %v ops/s, not plausible for 8 clients at 2ms", res.OpsPerSec)
	}
	if res.Latency.P50 < 2 {
		t.Errorf("p50 %v ms, below the 2ms service time", res.Latency.P50)
	}
	if res.Duration != "300ms" {
		t.Errorf("duration in report %q", res.Duration)
	}
}

func TestRunContextEndsRun(t *testing.T) {
	m := newMemTarget(time.Millisecond)
	cfg := testConfig(WorkloadPut)
	cfg.Duration = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("run ignored its context for %v", time.Since(start))
	}
	if !res.Interrupted || res.Ops == 0 {
		t.Errorf("interrupted %v ops %d, want an interrupted run with some ops", res.Interrupted, res.Ops)
	}
	// Operations cut short by the end of the run are not errors of the system.
	if res.Errors != 0 {
		t.Errorf("errors %d %v after a cancel, want 0", res.Errors, res.ErrorsByCode)
	}
}

func TestRunErrorsByCodeAndOpTimeout(t *testing.T) {
	m := newMemTarget(0)
	var n atomic.Int64
	m.fail = func(ctx context.Context, _, _ string) error {
		switch n.Add(1) % 4 {
		case 1:
			return &OpError{Code: "unavailable", Err: errors.New("no leader")}
		case 2:
			select { // hangs until the runner's op timeout ends it
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Second):
				return errors.New("the op timeout was not applied")
			}
		}
		return nil
	}
	cfg := testConfig(WorkloadPut)
	cfg.Count = 400
	cfg.OpTimeout = 10 * time.Millisecond
	res, err := Run(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 200 || res.Errors != 200 {
		t.Errorf("ops %d errors %d, want 200 and 200", res.Ops, res.Errors)
	}
	if res.ErrorsByCode["unavailable"] != 100 || res.ErrorsByCode[CodeDeadlineExceeded] != 100 {
		t.Errorf("errors by code %v", res.ErrorsByCode)
	}
	if res.ErrorSamples["unavailable"] != "unavailable: no leader" {
		t.Errorf("error samples %v", res.ErrorSamples)
	}
	if res.ByOp["put"].Errors != 200 {
		t.Errorf("by op %+v", res.ByOp)
	}
}

func TestRunPreloadThenGet(t *testing.T) {
	m := newMemTarget(0)
	cfg := testConfig(WorkloadGet)
	cfg.Preload = true
	cfg.Count = 300
	res, err := Run(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.data) != cfg.Keys || m.puts.Load() != int64(cfg.Keys) {
		t.Errorf("preload wrote %d keys in %d puts, want all %d once", len(m.data), m.puts.Load(), cfg.Keys)
	}
	if res.Preload == nil || res.Preload.Keys != cfg.Keys {
		t.Errorf("preload stats %+v", res.Preload)
	}
	if res.Ops != 300 || res.Errors != 0 || m.gets.Load() != 300 {
		t.Errorf("ops %d errors %d gets %d, want 300 gets that all find their key", res.Ops, res.Errors, m.gets.Load())
	}
	if res.Consistency != "linearizable" {
		t.Errorf("consistency %q, want the default linearizable", res.Consistency)
	}
}

func TestRunPreloadFails(t *testing.T) {
	m := newMemTarget(0)
	m.fail = func(context.Context, string, string) error { return &OpError{Code: "unavailable"} }
	cfg := testConfig(WorkloadGet)
	cfg.Preload = true
	cfg.Count = 10
	if _, err := Run(context.Background(), cfg, m); err == nil || ErrorCode(err) != "unavailable" {
		t.Errorf("preload against a failing target: %v, want an unavailable error", err)
	}
}

func TestRunMixedRatio(t *testing.T) {
	m := newMemTarget(0)
	cfg := testConfig(WorkloadMixed)
	cfg.Count = 20000
	cfg.ReadRatio = 0.9
	cfg.Preload = true
	res, err := Run(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	gets, puts := res.ByOp["get"].Ops, res.ByOp["put"].Ops
	if gets+puts != 20000 || res.Ops != 20000 {
		t.Fatalf("gets %d + puts %d, ops %d, want 20000", gets, puts, res.Ops)
	}
	if r := float64(gets) / 20000; r < 0.88 || r > 0.92 {
		t.Errorf("read share %.3f, want about 0.9", r)
	}
	if res.ReadRatio == nil || *res.ReadRatio != 0.9 {
		t.Errorf("read ratio in report %v", res.ReadRatio)
	}
}

func TestRunSameSeedSameKeys(t *testing.T) {
	keys := func() map[string]string {
		m := newMemTarget(0)
		cfg := testConfig(WorkloadPut)
		cfg.Clients = 1
		cfg.Count = 200
		cfg.KeyDist = KeyDistZipf
		if _, err := Run(context.Background(), cfg, m); err != nil {
			t.Fatal(err)
		}
		return m.data
	}
	a, b := keys(), keys()
	if len(a) != len(b) {
		t.Fatalf("%d and %d keys", len(a), len(b))
	}
	for k, v := range a {
		if b[k] != v {
			t.Fatalf("key %s: %q and %q with the same seed", k, v, b[k])
		}
	}
}

func TestRunProgress(t *testing.T) {
	m := newMemTarget(time.Millisecond)
	cfg := testConfig(WorkloadPut)
	cfg.Duration = 250 * time.Millisecond
	cfg.ProgressInterval = 50 * time.Millisecond
	var mu sync.Mutex
	var got []Progress
	cfg.Progress = func(p Progress) {
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
	}
	res, err := Run(context.Background(), cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) < 3 {
		t.Fatalf("%d progress reports, want several", len(got))
	}
	last := got[len(got)-1]
	if !last.Final || last.Done != res.Ops || last.Duration != cfg.Duration || last.Phase != "run" {
		t.Errorf("last progress %+v, want final with %d ops", last, res.Ops)
	}
	for _, p := range got[:len(got)-1] {
		if p.Final {
			t.Errorf("a non-last report is final: %+v", p)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	if err := ok.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	cases := map[string]func(*Config){
		"workload":      func(c *Config) { c.Workload = "scan" },
		"clients":       func(c *Config) { c.Clients = 0 },
		"no bound":      func(c *Config) { c.Duration, c.Count = 0, 0 },
		"neg count":     func(c *Config) { c.Count = -1 },
		"keys":          func(c *Config) { c.Keys = 0 },
		"value size":    func(c *Config) { c.ValueSize = -1 },
		"dist":          func(c *Config) { c.KeyDist = "gauss" },
		"zipf s":        func(c *Config) { c.KeyDist, c.ZipfS = KeyDistZipf, 1 },
		"read ratio":    func(c *Config) { c.Workload, c.ReadRatio = WorkloadMixed, 1.5 },
		"op timeout":    func(c *Config) { c.OpTimeout = 0 },
		"progress tick": func(c *Config) { c.Progress, c.ProgressInterval = func(Progress) {}, 0 },
	}
	for name, mutate := range cases {
		c := DefaultConfig()
		mutate(&c)
		if c.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
