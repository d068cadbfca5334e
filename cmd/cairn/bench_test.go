package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/internal/bench"
)

// runBenchCmd runs "cairn ARGS..." with the global flags and the bench
// command, as runKV does for kv.
func runBenchCmd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCommand(newBenchCmd, args...)
}

func TestBenchAgainstFake(t *testing.T) {
	_, ep := fake(t)
	out, errOut, code := runBenchCmd(t, "bench", "mixed", ep, "--count", "300", "--clients", "4", "--keys", "20",
		"--value-size", "32", "--key-dist", "zipf", "--seed", "7", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var res bench.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out)
	}
	if res.Ops != 300 || res.Errors != 0 || res.Workload != "mixed" || res.Clients != 4 || res.Seed != 7 ||
		res.KeyDist != "zipf" || res.Consistency != "linearizable" || res.Preload == nil {
		t.Errorf("result %+v", res)
	}
	if !strings.Contains(errOut, "run") || !strings.Contains(errOut, "done") {
		t.Errorf("no plain progress lines on stderr: %q", errOut)
	}

	out, errOut, code = runBenchCmd(t, "bench", "put", ep, "--count", "50", "--clients", "2")
	if code != 0 || !strings.Contains(out, "cairn bench put: target cairn") || !strings.Contains(out, "p99.9 ms") {
		t.Errorf("text report (exit %d):\n%s\n%s", code, out, errOut)
	}
	// -o json is --json.
	out, _, code = runBenchCmd(t, "bench", "get", ep, "--count", "10", "--clients", "2", "--keys", "5", "-o", "json",
		"--consistency", "stale")
	if code != 0 || !strings.Contains(out, `"consistency": "stale"`) {
		t.Errorf("get -o json (exit %d): %s", code, out)
	}
}

func TestBenchUsage(t *testing.T) {
	_, ep := fake(t)
	cases := []struct {
		name  string
		args  []string
		inErr string
	}{
		{"txn on etcd", []string{"bench", "txn", "--target", "etcd", "--count", "1"}, "bench/etcdnative txn"},
		{"txn keys", []string{"bench", "txn", ep, "--keys", "2", "--count", "1"}, "at least 4 keys"},
		{"txn consistency", []string{"bench", "txn", ep, "--consistency", "stale"}, "unknown flag"},
		{"lock on etcd", []string{"bench", "lock", "--target", "etcd", "--count", "1"}, "bench/etcdnative lock"},
		{"lock ttl", []string{"bench", "lock", ep, "--ttl", "10ms", "--count", "1"}, "lock ttl must be at least 1s"},
		{"lock preload", []string{"bench", "lock", ep, "--preload"}, "unknown flag"},
		{"no workload", []string{"bench", ep}, "missing workload"},
		{"unknown workload", []string{"bench", "scan", ep}, "unknown workload"},
		{"count and duration", []string{"bench", "put", ep, "--count", "5", "--duration", "1s"}, "mutually exclusive"},
		{"bad dist", []string{"bench", "put", ep, "--count", "5", "--key-dist", "gauss"}, "unknown key distribution"},
		{"bad target", []string{"bench", "put", ep, "--target", "redis"}, "--target must be cairn or etcd"},
		{"bad clients", []string{"bench", "put", ep, "--clients", "0"}, "clients must be at least 1"},
		{"read ratio on put", []string{"bench", "put", ep, "--read-ratio", "0.5"}, "unknown flag"},
		{"bad ratio", []string{"bench", "mixed", ep, "--read-ratio", "2", "--count", "1"}, "read ratio"},
		{"session on etcd", []string{"bench", "get", "--target", "etcd", "--consistency", "session", "--count", "1"}, "no session reads"},
		{"bad consistency", []string{"bench", "get", ep, "--consistency", "eventual", "--count", "1"}, "unknown consistency"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, errOut, code := runBenchCmd(t, c.args...)
			if code != 2 || !strings.Contains(errOut, c.inErr) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, errOut, c.inErr)
			}
		})
	}
}

func TestBenchUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, errOut, code := runBenchCmd(t, "bench", "put", "--endpoints", addr, "--count", "5", "--clients", "2")
	if code != 3 || !strings.Contains(errOut, "no operation succeeded (unreachable 5)") {
		t.Errorf("exit %d, stderr %q; want 3 and every op unreachable", code, errOut)
	}
	_, errOut, code = runBenchCmd(t, "bench", "get", "--endpoints", addr, "--count", "5", "--clients", "2", "--timeout", "1s")
	if code != 3 || !strings.Contains(errOut, "preload") {
		t.Errorf("get: exit %d, stderr %q; want 3 and a failed preload", code, errOut)
	}
}

// etcdGateway answers /v3/kv/put and /v3/kv/range like etcd's JSON gateway,
// with every key present.
func etcdGateway(t *testing.T) string {
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Key, Value string }
		_ = json.NewDecoder(r.Body).Decode(&req)
		switch r.URL.Path {
		case "/v3/kv/put":
			io.WriteString(w, `{"header":{"revision":"2"}}`)
		case "/v3/kv/range":
			io.WriteString(w, `{"header":{"revision":"2"},"kvs":[{"key":"`+req.Key+`","value":"dg=="}],"count":"1"}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

func TestBenchEtcdTarget(t *testing.T) {
	gw := etcdGateway(t)
	out, errOut, code := runBenchCmd(t, "bench", "get", "--target", "etcd", "--endpoints", gw, "--count", "40",
		"--clients", "3", "--keys", "10", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var res bench.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Target != "etcd" || res.Ops != 40 || res.Errors != 0 {
		t.Errorf("result %v %+v", err, res)
	}
}

func TestBenchSummarizeAndSplitKeys(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, rs ...*bench.Result) string {
		var b bytes.Buffer
		for _, r := range rs {
			if err := r.WriteJSON(&b); err != nil {
				t.Fatal(err)
			}
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c := &bench.Result{Workload: "put", Target: "cairn", Clients: 64, OpsPerSec: 6000, Latency: bench.Latency{P50: 9, P99: 20}}
	e := &bench.Result{Workload: "put", Target: "etcd", Clients: 64, OpsPerSec: 5000, Latency: bench.Latency{P50: 10, P99: 25},
		Seed: 7, Started: time.Date(2026, 12, 1, 6, 0, 0, 0, time.UTC)}
	f1, f2 := write("a.json", c), write("b.json", e, e) // a file may hold several reports; the same one twice is one run
	md, js := filepath.Join(dir, "out.md"), filepath.Join(dir, "out.json")
	_, errOut, code := runBenchCmd(t, "bench", "summarize", "--title", "T", "--env", "machine=2 cores", "--md", md, "--json-out", js, f1, f2)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	b, _ := os.ReadFile(md)
	if !strings.Contains(string(b), "# T\n") || !strings.Contains(string(b), "| put | 64 | 6000 | 5000 | 1.20× |") {
		t.Errorf("markdown:\n%s", b)
	}
	var s bench.Summary
	b, _ = os.ReadFile(js)
	if err := json.Unmarshal(b, &s); err != nil || len(s.Runs) != 3 || s.Env[0].Key != "machine" {
		t.Errorf("summary JSON %v %+v", err, s)
	}
	if _, errOut, code := runBenchCmd(t, "bench", "summarize", "--env", "novalue", f1); code != 2 || !strings.Contains(errOut, "KEY=VALUE") {
		t.Errorf("bad --env: exit %d %q", code, errOut)
	}
	if _, _, code := runBenchCmd(t, "bench", "summarize", filepath.Join(dir, "missing.json")); code != 1 {
		t.Errorf("missing file: exit %d, want 1", code)
	}

	out, _, code := runBenchCmd(t, "bench", "split-keys", "--shards", "4", "--keys", "1000")
	if code != 0 || out != "bench/00000250,bench/00000500,bench/00000750\n" {
		t.Errorf("split-keys: exit %d %q", code, out)
	}
	if _, _, code := runBenchCmd(t, "bench", "split-keys", "--shards", "0"); code != 2 {
		t.Errorf("split-keys --shards 0: exit %d, want 2", code)
	}
}
