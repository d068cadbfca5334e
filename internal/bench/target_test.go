package bench

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// TestHTTPClientKeepsConnections: clients that each send their requests to
// every node in turn (as routed cairn clients do, to the leader of each
// key's shard) reuse their connections: once every client has one to every
// node, no request dials again. With a total idle cap of 2 × clients the
// pool closed connections to one node to keep others', and every later
// round dialed again ("new connections after the first round: 576 of 0
// allowed (64 clients, 3 nodes, 192 dialed first)").
func TestHTTPClientKeepsConnections(t *testing.T) {
	const clients, nodes, rounds = 64, 3, 3
	var dials atomic.Int64
	var urls []string
	for range nodes {
		// Each node answers a round's requests only once all of them
		// arrived, so every round has every client's request in flight at
		// once on every node: the first round dials clients × nodes, and a
		// pool that keeps them needs no more.
		var mu sync.Mutex
		cond := sync.NewCond(&mu)
		arrived, gen := 0, 0
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			mu.Lock()
			arrived++
			if arrived == clients {
				arrived, gen = 0, gen+1
				cond.Broadcast()
			} else {
				for g := gen; g == gen; {
					cond.Wait()
				}
			}
			mu.Unlock()
			_, _ = io.WriteString(w, "ok")
		}))
		srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateNew {
				dials.Add(1)
			}
		}
		srv.Start()
		t.Cleanup(srv.Close)
		urls = append(urls, srv.URL)
	}
	hc := NewHTTPClient(clients)
	t.Cleanup(hc.CloseIdleConnections)
	// One round: every client sends one request to every node, all clients
	// at once on each node, so the pool must hold clients × nodes.
	round := func() {
		for _, u := range urls {
			var wg sync.WaitGroup
			start := make(chan struct{})
			for range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil)
					resp, err := hc.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}()
			}
			close(start)
			wg.Wait()
		}
	}
	round() // dials clients × nodes
	warm := dials.Load()
	if warm != clients*nodes {
		t.Fatalf("first round dialed %d connections, want %d", warm, clients*nodes)
	}
	for range rounds {
		round()
	}
	if extra := dials.Load() - warm; extra != 0 {
		t.Fatalf("new connections after the first round: %d of 0 allowed (%d clients, %d nodes, %d dialed first)",
			extra, clients, nodes, warm)
	}
}
