package cluster

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/shard"
)

// breakAfterRead is a node that reads the whole request and then drops the
// connection without answering: the request was sent, and may have been
// applied.
func breakAfterRead(t *testing.T) string {
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
			go func() {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 4096)
				_, _ = c.Read(buf) // the request line, headers and small body
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// A call is "failed" (nothing was done: route again) only when it provably
// never reached the other node; a write whose connection broke after it was
// sent is outcome unknown, all the way to the client (invariant I11: an
// ambiguous write is never reported as failed).
func TestCallFailedVersusOutcomeUnknown(t *testing.T) {
	c := New(Config{DialTimeout: 200 * time.Millisecond, UnreachableFor: time.Hour})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// A node that cannot be dialed: failed, and skipped by routing.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	err := c.Call(ctx, dead, http.MethodPost, "/internal/v1/shards/1/membership", map[string]string{"action": "remove"}, nil)
	if !errors.Is(err, ErrPeerUnreachable) || !Failed(err) || errors.Is(err, shard.ErrOutcomeUnknown) {
		t.Errorf("dial refused: %v; want ErrPeerUnreachable, failed", err)
	}
	if !c.Down(dead) {
		t.Errorf("a peer whose dial failed is not reported down")
	}

	// Sent, then the connection broke: a write's outcome is unknown.
	broken := breakAfterRead(t)
	err = c.Call(ctx, broken, http.MethodPost, "/internal/v1/shards/1/membership", map[string]string{"action": "remove"}, nil)
	if !errors.Is(err, shard.ErrOutcomeUnknown) || Failed(err) {
		t.Errorf("write broken after send: %v; want outcome unknown, not failed", err)
	}
	// A read broken after send wrote nothing: unavailable, not unknown.
	err = c.Call(ctx, broken, http.MethodGet, "/internal/v1/shards/1/status", nil, nil)
	if !errors.Is(err, shard.ErrUnavailable) || errors.Is(err, shard.ErrOutcomeUnknown) {
		t.Errorf("read broken after send: %v; want unavailable", err)
	}
	// The same for a forwarded client write.
	r := httptest.NewRequest(http.MethodPut, "/v1/kv/a", nil).WithContext(ctx)
	if _, err := c.Forward(r, []byte("v"), broken); !errors.Is(err, shard.ErrOutcomeUnknown) || Failed(err) {
		t.Errorf("forwarded write broken after send: %v; want outcome unknown", err)
	}
}

// Forwarding stops after MaxHops, before anything is sent; a 503 answer to
// the first hop means nothing was done there, and later hops pass the answer
// through unchanged; the hop count travels in HeaderHops.
func TestForwardHops(t *testing.T) {
	var gotHops []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHops = append(gotHops, r.Header.Get(HeaderHops))
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"error":{"code":"unavailable","message":"no leader","retryable":true}}`)
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	c := New(Config{})
	defer c.Close()

	r := httptest.NewRequest(http.MethodPut, "/v1/kv/a", nil)
	if _, err := c.Forward(r, nil, addr); !errors.Is(err, ErrRemoteUnavailable) || !Failed(err) {
		t.Errorf("503 at hop 0: %v; want ErrRemoteUnavailable", err)
	}
	r.Header.Set(HeaderHops, "1")
	resp, err := c.Forward(r, nil, addr)
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("503 at hop 1: %v %v; want the answer passed through", resp, err)
	}
	resp.Body.Close()
	r.Header.Set(HeaderHops, "3")
	if _, err := c.Forward(r, nil, addr); !errors.Is(err, ErrTooManyHops) {
		t.Errorf("hop %d: %v; want ErrTooManyHops", MaxHops, err)
	}
	if _, err := c.Get(context.Background(), r, addr, "/v1/kv", nil); !errors.Is(err, ErrTooManyHops) {
		t.Errorf("scan part at hop %d: %v; want ErrTooManyHops", MaxHops, err)
	}
	if len(gotHops) != 2 || gotHops[0] != "1" || gotHops[1] != "2" {
		t.Errorf("hops seen by the peer %v; want [1 2]", gotHops)
	}
}

// A peer that accepts a call and never answers holds no caller past
// CallTimeout when the caller set no deadline; the write's outcome is unknown
// (it was sent), a read's answer unavailable.
func TestCallTimeoutBoundsSilentPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	c := New(Config{CallTimeout: 200 * time.Millisecond})
	defer c.Close()
	start := time.Now()
	err = c.Call(context.Background(), ln.Addr().String(), http.MethodPost, "/internal/v1/shards/1/membership", nil, nil)
	if took := time.Since(start); took > 5*time.Second || !errors.Is(err, shard.ErrOutcomeUnknown) {
		t.Fatalf("silent peer: %v after %v; want outcome unknown within about 200ms", err, took)
	}
	r := httptest.NewRequest(http.MethodGet, "/v1/kv?start=a", nil)
	start = time.Now()
	if _, err := c.Get(context.Background(), r, ln.Addr().String(), "/v1/kv?start=a", nil); time.Since(start) > 5*time.Second ||
		!errors.Is(err, shard.ErrUnavailable) {
		t.Fatalf("silent peer, read: %v after %v; want unavailable within about 200ms", err, time.Since(start))
	}
}
