package node

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/shard"
)

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// freeUDPAndTCP returns a loopback address free for both TCP and UDP
// (memberlist binds both).
func freeUDPAndTCP(t *testing.T) string {
	t.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return addr
	}
	t.Fatal("no free gossip port")
	return ""
}

// get fetches url and returns the status and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func put(t *testing.T, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls cond every 20ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Invariant I1. A node whose raft log failed (an fdatasync returned EIO)
// does not crash, reports why it is unhealthy, fails /readyz, and stops every
// group on that log: no replica serves or acknowledges anything until the
// node restarts and replays what is on disk.
func TestNodeLogFailureStopsServing(t *testing.T) {
	var armed atomic.Bool
	knobs := &Knobs{WAL: &shard.WALKnobs{Sync: func(by shard.WALWriter, f *os.File) error {
		if armed.Load() {
			return syscall.EIO
		}
		return f.Sync()
	}}}
	testNodeLogFailure(t, shard.LogStoreWAL, knobs, func() { armed.Store(true) }, func() { armed.Store(false) })
}

// testNodeLogFailure runs TestNodeLogFailureStopsServing on store; arm makes
// the disk fail under it, disarm makes it work again.
func testNodeLogFailure(t *testing.T, store shard.LogStoreKind, knobs *Knobs, arm, disarm func()) {
	cfg := DefaultConfig()
	cfg.ID, cfg.DataDir = "n1", t.TempDir()
	httpLn, raftLn := listen(t), listen(t)
	cfg.HTTPListener, cfg.RaftListener = httpLn, raftLn
	cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr = httpLn.Addr().String(), raftLn.Addr().String(), freeUDPAndTCP(t)
	cfg.BootstrapExpect, cfg.Replication, cfg.NoAutoPlacement = 1, 1, true
	cfg.Tuning, cfg.MetaTuning = shard.FastRaftTuning(), shard.FastRaftTuning()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Knobs, cfg.LogStore = knobs, store
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	base := "http://" + n.HTTPAddr()
	waitFor(t, 30*time.Second, "readyz", func() bool { s, _ := get(t, base+"/readyz"); return s == http.StatusOK })
	waitFor(t, 30*time.Second, "a first write", func() bool { s, _ := put(t, base+"/v1/kv/a", `{"value":"1"}`); return s == http.StatusOK })
	if len(n.Host().Replicas()) == 0 {
		t.Fatal("no replica on the node")
	}

	arm()
	if s, body := put(t, base+"/v1/kv/b", `{"value":"2"}`); s == http.StatusOK {
		t.Errorf("a write whose log commit failed was acknowledged: %s", body)
	}
	disarm() // the disk "works" again: the node must stay down
	waitFor(t, 10*time.Second, "readyz to fail", func() bool { s, _ := get(t, base+"/readyz"); return s == http.StatusServiceUnavailable })
	if _, body := get(t, base+"/readyz"); !strings.Contains(body, "log failed") {
		t.Errorf("readyz does not say why: %s", body)
	}
	if s, body := get(t, base+"/healthz"); !strings.Contains(body, "log failed") {
		t.Errorf("healthz does not say why: %d %s", s, body)
	}
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, "cairn_node_log_failed 1") {
		t.Errorf("metrics do not say the log failed")
	}
	waitFor(t, 10*time.Second, "the replicas to stop", func() bool { return len(n.Host().Replicas()) == 0 })
	if _, err := n.Host().OpenReplica(fsm.Range{ID: 99}, nil); err == nil {
		t.Error("a replica opened on a failed log")
	}
	if s, body := put(t, base+"/v1/kv/c", `{"value":"3"}`); s == http.StatusOK {
		t.Errorf("a write was acknowledged after the log failed: %s", body)
	}
	if s, body := get(t, base+"/v1/kv/a"); s == http.StatusOK {
		t.Errorf("a read was served after the log failed: %s", body)
	}
}
