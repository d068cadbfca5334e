package fsm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func keysOf(kvs []*KV) []string {
	out := make([]string, len(kvs))
	for i, kv := range kvs {
		out[i] = string(kv.Key)
	}
	return out
}

func TestScan(t *testing.T) {
	f := newFSM(t)
	for i, k := range []string{"b", "c", "d", "e", "x", "xz"} {
		mustApply(t, f, uint64(i+1), put(k, "v-"+k))
	}
	cases := []struct {
		name       string
		start, end string
		limit      int
		want       []string
		more       bool
	}{
		{"whole range", "", "", 0, []string{"b", "c", "d", "e", "x", "xz"}, false},
		{"clipped below and above", "a", "zzz", 0, []string{"b", "c", "d", "e", "x", "xz"}, false},
		{"end exclusive", "c", "e", 0, []string{"c", "d"}, false},
		{"limit cuts", "", "", 2, []string{"b", "c"}, true},
		{"limit exact", "c", "e", 2, []string{"c", "d"}, false},
		{"next page", "c\x00", "", 2, []string{"d", "e"}, true},
		{"empty window", "e", "c", 0, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kvs, more, err := f.Scan([]byte(tc.start), []byte(tc.end), tc.limit, false)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(keysOf(kvs)) != fmt.Sprint(tc.want) || more != tc.more {
				t.Fatalf("got %v more=%v, want %v more=%v", keysOf(kvs), more, tc.want, tc.more)
			}
			for _, kv := range kvs {
				if string(kv.Value) != "v-"+string(kv.Key) || kv.Version != 1 {
					t.Fatalf("bad kv %+v", kv)
				}
			}
		})
	}
	kvs, _, err := f.Scan(nil, nil, 0, true)
	if err != nil || len(kvs) != 6 || kvs[0].Value != nil || kvs[0].ModIndex != 1 {
		t.Fatalf("keys-only scan: %v %+v", err, kvs)
	}
}

func TestWaitApplied(t *testing.T) {
	f := newFSM(t)
	ctx := t.Context()
	if err := f.WaitApplied(ctx, 0); err != nil {
		t.Fatalf("WaitApplied(0): %v", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Go(func() { errs[i] = f.WaitApplied(ctx, uint64(i+1)) })
	}
	for i := 1; i <= 5; i++ {
		mustApply(t, f, uint64(i), put("k", "v"))
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("waiter %d: %v", i, err)
		}
	}

	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := f.WaitApplied(cctx, 100); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitApplied past deadline: %v", err)
	}

	done := make(chan error, 1)
	go func() { done <- f.WaitApplied(ctx, 100) }()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitApplied after Close: %v", err)
	}
}

// Reads run in their own read transactions alongside apply (run with -race).
func TestReadsConcurrentWithApply(t *testing.T) {
	f := newFSM(t)
	logs := workload(t, 400)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, _, err := f.Scan(nil, nil, 10, false); err != nil {
				t.Error(err)
				return
			}
			if _, err := f.Get([]byte("kb")); err != nil {
				t.Error(err)
				return
			}
			if _, _, err := f.Hash(); err != nil {
				t.Error(err)
				return
			}
			_ = f.SizeBytes()
		}
	})
	for i := 0; i < len(logs); i += 16 {
		f.ApplyBatch(logs[i:min(i+16, len(logs))])
	}
	close(stop)
	wg.Wait()
}

func TestHashDistinguishesState(t *testing.T) {
	a, b := newFSM(t), newFSM(t)
	mustApply(t, a, 1, put("k", "v"))
	mustApply(t, b, 1, put("k", "w"))
	_, ha := mustHash(t, a)
	_, hb := mustHash(t, b)
	if string(ha) == string(hb) {
		t.Fatal("different values hash the same")
	}
	b.Apply(&raft.Log{Index: 2, Type: raft.LogNoop})
	if applied, _ := mustHash(t, b); applied != 2 {
		t.Fatalf("Hash applied = %d, want 2", applied)
	}
	f := newFSM(t)
	for i := 0; i < 100; i++ {
		mustApply(t, f, uint64(i+1), put(fmt.Sprintf("k%03d", i), strings.Repeat("v", 1024)))
	}
	if n := f.SizeBytes(); n < 100*1024 {
		t.Fatalf("SizeBytes %d after 100 KiB of values", n)
	}
}

func TestClosedReads(t *testing.T) {
	f := newFSM(t)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Get([]byte("k")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if _, err := f.Snapshot(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Snapshot after Close: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestOpenValidates(t *testing.T) {
	cases := []Config{
		{},
		{Path: t.TempDir() + "/x", DedupWindow: -1},
		{Path: t.TempDir() + "/x", Initial: Range{Start: []byte("b"), End: []byte("a")}},
	}
	for _, cfg := range cases {
		if _, err := Open(cfg); err == nil {
			t.Fatalf("Open(%+v) succeeded", cfg)
		}
	}
}

// A shard with an unbounded range (the first shard of a cluster) scans from
// the very first key.
func TestScanFullRange(t *testing.T) {
	f := newFSM(t, func(c *Config) { c.Initial = Range{ID: 1} })
	for i, k := range []string{"\x00", "a", "zz"} {
		mustApply(t, f, uint64(i+1), put(k, "v"))
	}
	kvs, more, err := f.Scan(nil, nil, 0, true)
	if err != nil || more || fmt.Sprint(keysOf(kvs)) != fmt.Sprint([]string{"\x00", "a", "zz"}) {
		t.Fatalf("Scan = %q more=%v err=%v", keysOf(kvs), more, err)
	}
}
