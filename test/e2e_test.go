package test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairndb/cairn/internal/syncbuf"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// cairnBinary builds cmd/cairn once per test process.
func cairnBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "cairn-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "cairn")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/cairndb/cairn/cmd/cairn").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is one cairn server process.
type proc struct {
	id, dataDir, http, raft, gossip string
	cmd                             *exec.Cmd
	log                             *syncbuf.Buffer
	env                             []string // added to the environment at start
}

// freePort returns a loopback address free for TCP and UDP alike, for a
// server process to bind later. It is taken below the kernel's ephemeral
// range: a port from that range (what ":0" gives) can be taken in the
// meantime as the source port of any outgoing connection, and a node
// then failed to start with "bind: address already in use" (CI, stop 14).
func freePort(t *testing.T) string {
	t.Helper()
	return procPorts.take(t)
}

// procPorts hands out each port once per test process.
var procPorts = portPool{given: map[int]bool{}}

type portPool struct {
	mu    sync.Mutex
	given map[int]bool
	next  int
}

// ephemeralLow is the bottom of the kernel's ephemeral port range (Linux:
// ip_local_port_range), 32768 when it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil || lo <= 12000 {
		return 32768
	}
	return lo
}

func (p *portPool) take(t *testing.T) string {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	lo, hi := 10000, ephemeralLow()
	if p.next == 0 {
		// Spread test processes that run at once (go test runs packages in
		// parallel) over the range.
		p.next = lo + (os.Getpid()*7919)%(hi-lo)
	}
	for range hi - lo {
		port := p.next
		p.next++
		if p.next >= hi {
			p.next = lo
		}
		if p.given[port] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		p.given[port] = true
		return addr
	}
	t.Fatalf("no free port below the ephemeral range [%d, %d)", lo, hi)
	return ""
}

func (p *proc) start(t *testing.T, bin string, join string, extra ...string) {
	t.Helper()
	args := []string{"server", "--id", p.id, "--data-dir", p.dataDir, "--http-addr", p.http,
		"--raft-addr", p.raft, "--gossip-addr", p.gossip, "--bootstrap-expect", "3",
		"--initial-splits", "g,n,t", "--raft-heartbeat", "500ms", "--log-level", "warn"}
	if join != "" {
		args = append(args, "--join", join)
	}
	args = append(args, extra...)
	p.log = &syncbuf.Buffer{}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.id, err)
	}
}

// newProcs returns n server processes n1..n{n}, not started, each with its
// own data dir and free addresses. Each is killed when the test ends, and
// the log of each one started is printed if the test failed.
func newProcs(t *testing.T, n int) []*proc {
	t.Helper()
	root := t.TempDir()
	procs := make([]*proc, n)
	for i := range procs {
		id := fmt.Sprintf("n%d", i+1)
		procs[i] = &proc{id: id, dataDir: filepath.Join(root, id), http: freePort(t), raft: freePort(t), gossip: freePort(t)}
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.kill()
			if t.Failed() && p.log != nil {
				t.Logf("%s log:\n%s", p.id, p.log.String())
			}
		}
	})
	return procs
}

// startProcs starts procs (every one after the first joining the first's
// gossip address) and waits until each answers /readyz.
func startProcs(t *testing.T, ctx context.Context, bin string, procs []*proc) {
	t.Helper()
	for i, p := range procs {
		join := ""
		if i > 0 {
			join = procs[0].gossip
		}
		p.start(t, bin, join)
	}
	for _, p := range procs {
		waitReadyz(t, ctx, p.http)
	}
}

func (p *proc) kill() {
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		_ = p.cmd.Wait()
	}
}

// The built binary as three `cairn server` processes, driven over HTTP with
// the docs/api.md calls and error cases, a SIGKILL and a restart.
func TestEndToEndBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := cairnBinary(t)
	procs := newProcs(t, 3)
	ctx := Context(t, 3*time.Minute)
	startProcs(t, ctx, bin, procs)
	a := procs[0].http

	t.Run("kv", func(t *testing.T) { e2eKV(t, ctx, procs) })
	t.Run("errors", func(t *testing.T) { e2eErrors(t, ctx, a) })
	t.Run("scan", func(t *testing.T) { e2eScan(t, ctx, procs) })
	t.Run("observability", func(t *testing.T) { e2eObservability(t, ctx, a) })

	// SIGKILL a node: the others carry on; restarted, it rejoins with its data.
	procs[2].kill()
	expectStatus(t, ctx, "PUT", a, KVPath("after-kill"), `{"value":"1"}`, 200)
	procs[2].start(t, bin, procs[0].gossip)
	waitReadyz(t, ctx, procs[2].http)
	WaitFor(t, 30*time.Second, "restarted node serves the write made while it was down", func() error {
		res, err := Do(ctx, "GET", procs[2].http, KVPath("after-kill"), nil)
		if err != nil || res.Status != 200 {
			return fmt.Errorf("%v %v", res, err)
		}
		return nil
	})

	// A machine crash (fsm/durability.go): SIGKILL, then a restart under
	// another boot id. Every state machine file was left open with unsynced
	// commits, so the node starts each shard again from its raft snapshot and
	// log, and serves every key from its own replicas.
	for i := range 40 {
		expectStatus(t, ctx, "PUT", a, KVPath(fmt.Sprintf("crash-%02d", i)), fmt.Sprintf(`{"value":"v%d"}`, i), 200)
	}
	procs[1].kill()
	procs[1].env = []string{"CAIRN_TEST_BOOT_ID=rebooted-" + procs[1].id}
	procs[1].start(t, bin, procs[0].gossip)
	waitReadyz(t, ctx, procs[1].http)
	WaitFor(t, 30*time.Second, "node restarted after a machine crash serves every key from its own replicas", func() error {
		for i := range 40 {
			path := KVPath(fmt.Sprintf("crash-%02d", i)) + "?consistency=stale"
			res, err := Do(ctx, "GET", procs[1].http, path, nil)
			if err != nil || res.Status != 200 || !strings.Contains(string(res.Body), fmt.Sprintf(`"v%d"`, i)) {
				return fmt.Errorf("GET %s: %v %v", path, res, err)
			}
		}
		return nil
	})
	if !strings.Contains(procs[1].log.String(), "starting again from the raft snapshot and log") {
		t.Errorf("no shard was rebuilt after the simulated machine crash; log:\n%s", procs[1].log.String())
	}

	// A data dir refuses to start under another identity.
	bad := &proc{id: "other", dataDir: procs[1].dataDir, http: freePort(t), raft: procs[1].raft, gossip: freePort(t)}
	out, err := exec.Command(bin, "server", "--id", bad.id, "--data-dir", bad.dataDir, "--http-addr", bad.http,
		"--raft-addr", bad.raft, "--gossip-addr", bad.gossip).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "belongs to node") {
		t.Fatalf("conflicting --id against stored identity: err=%v output=%s", err, out)
	}
}

func waitReadyz(t *testing.T, ctx context.Context, addr string) {
	t.Helper()
	WaitFor(t, 60*time.Second, addr+" ready", func() error {
		res, err := Do(ctx, "GET", addr, "/readyz", nil)
		if err != nil {
			return err
		}
		if res.Status != 200 {
			return fmt.Errorf("readyz: %s", res)
		}
		return nil
	})
}

func expectStatus(t *testing.T, ctx context.Context, method, addr, path string, body any, status int) *HTTPResult {
	t.Helper()
	res, err := Do(ctx, method, addr, path, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	if res.Status != status {
		t.Fatalf("%s %s: got %s, want status %d", method, path, res, status)
	}
	for _, h := range []string{"X-Cairn-Shard", "X-Cairn-Index", "X-Cairn-Session"} {
		if res.Header.Get(h) == "" {
			t.Fatalf("%s %s: response lacks header %s", method, path, h)
		}
	}
	return res
}

func expectCode(t *testing.T, ctx context.Context, method, addr, path string, body any, status int, code string) {
	t.Helper()
	res := expectStatus(t, ctx, method, addr, path, body, status)
	if res.Code() != code {
		t.Fatalf("%s %s: code %q, want %q (%s)", method, path, res.Code(), code, res)
	}
}

func e2eKV(t *testing.T, ctx context.Context, procs []*proc) {
	a, b := procs[0].http, procs[1].http
	res := expectStatus(t, ctx, "PUT", a, KVPath("a"), `{"value":"1"}`, 200)
	var p putAnswer
	if err := res.JSON(&p); err != nil || p.Version != 1 {
		t.Fatalf("put answer: %s", res)
	}
	// Any node answers; a key may contain '/'.
	res = expectStatus(t, ctx, "GET", b, KVPath("a"), nil, 200)
	var g getAnswer
	if err := res.JSON(&g); err != nil || g.Value != "1" || g.ModIndex != p.ModIndex {
		t.Fatalf("get answer: %s", res)
	}
	expectStatus(t, ctx, "PUT", b, KVPath("dir/sub/key"), `{"value":"slash"}`, 200)
	res = expectStatus(t, ctx, "GET", a, KVPath("dir/sub/key"), nil, 200)
	if !strings.Contains(string(res.Body), `"slash"`) {
		t.Fatalf("slash key: %s", res)
	}
	// Compare-and-set on mod_index, absent and value.
	expectStatus(t, ctx, "PUT", a, KVPath("a"), fmt.Sprintf(`{"value":"2","if":{"mod_index":%d}}`, p.ModIndex), 200)
	stale := fmt.Sprintf(`{"value":"3","if":{"mod_index":%d}}`, p.ModIndex)
	res = expectStatus(t, ctx, "PUT", a, KVPath("a"), stale, 409)
	if res.Code() != "condition_failed" || !strings.Contains(string(res.Body), `"current"`) {
		t.Fatalf("failed CAS must carry the current kv: %s", res)
	}
	expectCode(t, ctx, "PUT", a, KVPath("a"), `{"value":"x","if":{"absent":true}}`, 409, "condition_failed")
	expectStatus(t, ctx, "PUT", a, KVPath("a"), `{"value":"3","if":{"value":"2"}}`, 200)
	expectStatus(t, ctx, "PUT", a, KVPath("new"), `{"value":"n","if":{"absent":true}}`, 200)
	// prev=1 returns the previous kv.
	res = expectStatus(t, ctx, "PUT", b, KVPath("a")+"?prev=1", `{"value":"4"}`, 200)
	if !strings.Contains(string(res.Body), `"prev"`) {
		t.Fatalf("prev missing: %s", res)
	}
	// Delete, then 404; deleting again reports 0.
	res = expectStatus(t, ctx, "DELETE", b, KVPath("a"), nil, 200)
	if !strings.Contains(string(res.Body), `"deleted":1`) {
		t.Fatalf("delete: %s", res)
	}
	expectCode(t, ctx, "GET", a, KVPath("a"), nil, 404, "not_found")
	res = expectStatus(t, ctx, "DELETE", a, KVPath("a"), nil, 200)
	if !strings.Contains(string(res.Body), `"deleted":0`) {
		t.Fatalf("second delete: %s", res)
	}
	// Session and stale reads on any node.
	res = expectStatus(t, ctx, "PUT", a, KVPath("sess"), `{"value":"s"}`, 200)
	tok := res.Header.Get("X-Cairn-Session")
	for _, pr := range procs {
		r := doWithSession(t, ctx, pr.http, KVPath("sess")+"?consistency=session", tok)
		if r.Status != 200 || !strings.Contains(string(r.Body), `"s"`) {
			t.Fatalf("session read on %s: %s", pr.id, r)
		}
	}
	expectStatus(t, ctx, "GET", b, KVPath("sess")+"?consistency=stale&max_staleness=10s", nil, 200)
	// Binary values round-trip through octet-stream and raw=1.
	bin := []byte{0, 1, 2, 0xff, 0xfe}
	req, _ := newRawPut(ctx, a, KVPath("bin"), bin)
	if resp, err := testHTTP.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("binary put: %v %v", resp, err)
	}
	res = expectStatus(t, ctx, "GET", b, KVPath("bin")+"?raw=1", nil, 200)
	if !bytes.Equal(res.Body, bin) {
		t.Fatalf("raw get: %x, want %x", res.Body, bin)
	}
}

func e2eErrors(t *testing.T, ctx context.Context, a string) {
	cases := []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"bad json", "PUT", KVPath("e"), `{"value":`, 400, "invalid_argument"},
		{"unknown field", "PUT", KVPath("e"), `{"value":"1","colour":"red"}`, 400, "invalid_argument"},
		{"missing value", "PUT", KVPath("e"), `{}`, 400, "invalid_argument"},
		{"empty key", "PUT", "/v1/kv/", `{"value":"1"}`, 400, "invalid_argument"},
		{"key too large", "PUT", KVPath(strings.Repeat("k", 5000)), `{"value":"1"}`, 400, "invalid_argument"},
		// One code for "too large", value or body (issue 11 item 9; it was 400 invalid_argument).
		{"value too large", "PUT", KVPath("e"), fmt.Sprintf(`{"value":%q}`, strings.Repeat("v", 1<<20+1)), 413, "too_large"},
		{"body too large", "PUT", KVPath("e"), fmt.Sprintf(`{"value":%q}`, strings.Repeat("v", 7<<20)), 413, "too_large"},
		{"bad ttl", "PUT", KVPath("e"), `{"value":"1","ttl":"soon"}`, 400, "invalid_argument"},
		{"two conditions", "PUT", KVPath("e"), `{"value":"1","if":{"absent":true,"mod_index":3}}`, 400, "invalid_argument"},
		{"bad consistency", "GET", KVPath("e") + "?consistency=eventual", nil, 400, "invalid_argument"},
		{"bad if_mod_index", "DELETE", KVPath("e") + "?if_mod_index=x", nil, 400, "invalid_argument"},
		{"wrong method", "PATCH", KVPath("e"), nil, 405, "method_not_allowed"},
		{"bad scan range", "GET", "/v1/kv?start=b&end=a", nil, 400, "invalid_argument"},
		{"bad limit", "GET", "/v1/kv?limit=-1", nil, 400, "invalid_argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectCode(t, ctx, tc.method, a, tc.path, tc.body, tc.status, tc.code)
		})
	}
	// A malformed session token is a client error too.
	if r := doWithSession(t, ctx, a, KVPath("e"), "garbage"); r.Status != 400 {
		t.Fatalf("bad session token: %s", r)
	}
	// And the node keeps serving.
	expectStatus(t, ctx, "PUT", a, KVPath("still-serving"), `{"value":"yes"}`, 200)
}

func e2eScan(t *testing.T, ctx context.Context, procs []*proc) {
	a := procs[0].http
	keys := []string{"scan/a", "scan/h", "scan/o", "scan/u", "scan0", "b", "h", "o", "u", "z"}
	for _, k := range keys {
		expectStatus(t, ctx, "PUT", procs[len(k)%3].http, KVPath(k), `{"value":"v"}`, 200)
	}
	// A full scan in pages of 3 returns every key once, in byte order, across shards.
	got := ScanKeys(t, ctx, func(int) string { return a }, "keys_only=1", 3)
	for i := 1; i < len(got); i++ {
		if got[i-1] >= got[i] {
			t.Fatalf("scan out of order or duplicated at %d: %q", i, got)
		}
	}
	for _, k := range keys {
		if !slices.Contains(got, k) {
			t.Fatalf("scan lost %q: %q", k, got)
		}
	}
	res := expectStatus(t, ctx, "GET", procs[1].http, "/v1/kv?prefix=scan/", nil, 200)
	for _, k := range []string{"scan/a", "scan/h", "scan/o", "scan/u"} {
		if !strings.Contains(string(res.Body), `"`+k+`"`) {
			t.Fatalf("prefix scan lacks %q: %s", k, res)
		}
	}
	if strings.Contains(string(res.Body), `"scan0"`) {
		t.Fatalf("prefix scan returned a key outside the prefix: %s", res)
	}
}

func e2eObservability(t *testing.T, ctx context.Context, a string) {
	expectStatus(t, ctx, "GET", a, "/healthz", nil, 200)
	res, err := Do(ctx, "GET", a, "/metrics", nil)
	if err != nil || res.Status != 200 {
		t.Fatalf("metrics: %v %v", res, err)
	}
	for _, m := range []string{"cairn_http_request_duration_seconds", "cairn_shard_applied_index", "cairn_shard_is_leader",
		"cairn_shard_term", "cairn_shard_last_contact_seconds", "cairn_shard_leader_changes_total", "go_goroutines",
		"cairn_shard_propose_seconds_bucket", "cairn_raft_log_commit_seconds_bucket", "cairn_raft_log_writes_per_commit_count"} {
		if !strings.Contains(string(res.Body), m) {
			t.Fatalf("metrics lack %s", m)
		}
	}
	res = expectStatus(t, ctx, "GET", a, "/v1/cluster", nil, 200)
	var cv struct {
		Nodes  []map[string]any `json:"nodes"`
		Shards []map[string]any `json:"shards"`
	}
	if err := res.JSON(&cv); err != nil || len(cv.Nodes) != 3 || len(cv.Shards) != 4 {
		t.Fatalf("cluster: %s", res)
	}
}

func doWithSession(t *testing.T, ctx context.Context, addr, path, tok string) *HTTPResult {
	t.Helper()
	req, _ := newRequest(ctx, "GET", addr, path, nil)
	req.Header.Set("X-Cairn-Session", tok)
	res, err := doRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}
