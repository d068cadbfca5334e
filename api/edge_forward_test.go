package api

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/shard"
)

// remoteOnlyBackend is a node (n1) that hosts no replica: every key lives in
// shard 1 on n2 and n3, at the addresses given.
type remoteOnlyBackend struct {
	notReadyBackend
	addrs map[string]string
}

func (b remoteOnlyBackend) Ready() bool { return true }
func (b remoteOnlyBackend) Lookup([]byte) (fsm.Range, bool) {
	return fsm.Range{ID: 1, Epoch: 1, Replicas: []string{"n2", "n3"}}, true
}
func (b remoteOnlyBackend) Replica(uint64) (ShardReplica, bool) { return nil, false }
func (b remoteOnlyBackend) NodeHTTPAddr(id string) (string, bool) {
	a, ok := b.addrs[id]
	return a, ok
}

// hangUp reads one request and closes the connection without answering.
func hangUp(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Read(make([]byte, 4096))
			c.Close()
		}
	}()
	return ln.Addr().String()
}

// The edge over a fake backend and fake peers, no cluster: a forwarded
// write whose connection breaks after it was sent answers 504
// outcome_unknown and is not sent to another replica (it may have been
// applied: invariant I11's ambiguity is the client's to resolve); a read in
// the same spot answers 503; a replica that answers 503 (nothing done) is
// skipped for the next one.
func TestEdgeForwardingOutcomes(t *testing.T) {
	var mu sync.Mutex
	served := 0
	n3 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		served++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"key":"k","mod_index":5}`))
	}))
	defer n3.Close()
	unavailable := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, shard.ErrUnavailable)
	}))
	defer unavailable.Close()

	do := func(addrs map[string]string, method string) (*httptest.ResponseRecorder, map[string]any) {
		s := NewServer(Config{Backend: remoteOnlyBackend{notReadyBackend{t}, addrs}, RouteWait: 300 * time.Millisecond})
		defer s.Close()
		w := httptest.NewRecorder()
		r := httptest.NewRequest(method, "/v1/kv/k", strings.NewReader(`{"value":"v"}`))
		if method == http.MethodGet {
			r = httptest.NewRequest(method, "/v1/kv/k?consistency=stale", nil)
		}
		s.ServeHTTP(w, r)
		var body map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		return w, body
	}
	broken := hangUp(t)
	n3addr := n3.Listener.Addr().String()

	// The write reached n2 (the first replica) and the connection broke.
	w, body := do(map[string]string{"n2": broken, "n3": n3addr}, http.MethodPut)
	if w.Code != http.StatusGatewayTimeout || !strings.Contains(w.Body.String(), `"outcome_unknown"`) {
		t.Errorf("write broken after send: %d %v; want 504 outcome_unknown", w.Code, body)
	}
	if served != 0 {
		t.Errorf("a write of unknown outcome was sent to another replica")
	}
	// A read in the same spot: nothing was written.
	w, body = do(map[string]string{"n2": broken, "n3": n3addr}, http.MethodGet)
	if w.Code != http.StatusServiceUnavailable {
		t.Errorf("read broken after send: %d %v; want 503", w.Code, body)
	}
	// n2 answers 503: nothing was done there; n3 serves it.
	w, body = do(map[string]string{"n2": unavailable.Listener.Addr().String(), "n3": n3addr}, http.MethodGet)
	if w.Code != http.StatusOK || served != 1 {
		t.Errorf("after a 503 from n2: %d %v, n3 served %d; want n3 to serve it", w.Code, body, served)
	}
}
