// Package clienttest is test scaffolding for the client and the command
// lines: the real API server (api.Server, docs/api.md) over an in-memory
// backend — one node hosting one shard (id 1, the whole keyspace) whose
// replica is a real fsm.FSM that applies each proposal at once, without raft
// — served over loopback HTTP, with faults injected through the backend.
//
// The server, its request parsing, routing, error table, session tokens
// and the state machine are the product's own; only raft is missing.
// Splits, membership changes and locks are refused (500 internal), and
// the placement routes are not mounted. A fault strikes where the backend
// sees the request: a proposal (put, delete, token floor) or a linearizable
// or session read.
package clienttest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairndb/cairn/api"
	"github.com/cairndb/cairn/fsm"
)

// Fault is a failure injected into one request instead of (or after)
// serving it.
type Fault int

const (
	FaultNone               Fault = iota
	FaultUnavailable              // 503 unavailable: the shard has no leader, nothing applied
	FaultOverloaded               // 429 overloaded, nothing applied (answered in front of the server, see serve)
	FaultInternal                 // 500 internal: the backend fails unexpectedly, nothing applied
	FaultTimeoutBeforeApply       // 504 outcome_unknown, nothing applied
	FaultTimeoutAfterApply        // applied, then 504 outcome_unknown
	FaultResetBeforeApply         // the connection is closed without an answer, nothing applied
	FaultResetAfterApply          // applied, then the connection is closed without an answer
	FaultHangAfterApply           // applied, then no answer until the client gives up
)

// Recorded is what the server saw of one request.
type Recorded struct {
	Method      string
	EscapedPath string
	Query       url.Values
	RequestID   string // from the PUT body or the query
	Session     string // X-Cairn-Session sent by the client
	Fault       Fault  // injected into this request (FaultNone when it reached no proposal or read)
}

// Server is the real API server over the in-memory backend. Its fields may
// be set before the first request.
type Server struct {
	*httptest.Server

	// NextIsLastKey makes a scan's "next" the last key returned instead of
	// the server's (the key just after it), to check that clients cope with
	// a continuation that includes a key they have seen.
	// The server never answers so; the page is rewritten after it.
	NextIsLastKey bool
	// MaxLimit caps a scan's page, as a server whose page limit is
	// smaller (0: the server's own). The request's limit is lowered before
	// the server reads it.
	MaxLimit int

	api  *api.Server
	be   *backend
	dir  string
	hang chan struct{} // closed by Close: ends injected hangs

	mu     sync.Mutex
	faults []Fault
	reqs   []Recorded
	once   sync.Once
}

// NewServer starts a server on a fresh store; Close it when done. It
// panics if the store cannot be opened.
func NewServer() *Server {
	dir, err := os.MkdirTemp("", "clienttest")
	if err != nil {
		panic(err)
	}
	f, err := fsm.Open(fsm.Config{Path: filepath.Join(dir, "shard.db"), MmapSize: 1 << 20,
		Initial: fsm.Range{ID: shardID, Epoch: 1, Replicas: []string{nodeID}},
		Logger:  slog.New(slog.DiscardHandler)})
	if err != nil {
		_ = os.RemoveAll(dir)
		panic(fmt.Sprintf("clienttest: open the store: %v", err))
	}
	s := &Server{dir: dir, hang: make(chan struct{})}
	s.be = &backend{rep: &replica{fsm: f, hang: s.hang, applied: map[string]int{}}}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.be.addr = s.Listener.Addr().String()
	cfg := api.DefaultConfig()
	cfg.Backend, cfg.Logger = s.be, slog.New(slog.DiscardHandler)
	s.api = api.NewServer(cfg)
	s.Start()
	return s
}

// Close stops the server and removes its store.
func (s *Server) Close() {
	s.once.Do(func() {
		close(s.hang)
		s.Server.Close()
		s.api.Close()
		_ = s.be.rep.fsm.Close()
		_ = os.RemoveAll(s.dir)
	})
}

// Addr is the server's "host:port", as an endpoint.
func (s *Server) Addr() string { return strings.TrimPrefix(s.URL, "http://") }

// InjectFaults queues faults; each following request takes the next one.
func (s *Server) InjectFaults(faults ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, faults...)
}

// Requests returns the requests seen so far.
func (s *Server) Requests() []Recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

// Applied is how many times a write with this request id changed the store.
func (s *Server) Applied(requestID string) int {
	s.be.rep.mu.Lock()
	defer s.be.rep.mu.Unlock()
	return s.be.rep.applied[requestID]
}

// Value returns key's stored value and whether it exists.
func (s *Server) Value(key string) (string, bool) {
	kv, err := s.be.rep.fsm.Get([]byte(key))
	if err != nil {
		panic(fmt.Sprintf("clienttest: read %q: %v", key, err))
	}
	if kv == nil {
		return "", false
	}
	return string(kv.Value), true
}

// Set stores key directly, as if written earlier: a put at the next index.
func (s *Server) Set(key, value string) {
	res, err := s.be.rep.apply(&fsm.Command{Op: fsm.OpPut, Key: []byte(key), Value: []byte(value),
		Time: time.Now().UnixNano()})
	if err == nil {
		err = res.Err
	}
	if err != nil {
		panic(fmt.Sprintf("clienttest: set %q: %v", key, err))
	}
}

// TokenBase is the shard's lock token base: the highest floor raised.
func (s *Server) TokenBase() uint64 { return s.be.rep.fsm.TokenBase() }

// serve records the request, takes its fault and hands it to the API
// server. Only FaultOverloaded is answered here: the server has no
// admission control, so nothing behind it answers 429.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	rec := Recorded{Method: r.Method, EscapedPath: r.URL.EscapedPath(), Query: r.URL.Query(),
		Session: r.Header.Get("X-Cairn-Session"), RequestID: r.URL.Query().Get("request_id")}
	if (r.Method == http.MethodPut || r.Method == http.MethodPost) && strings.HasPrefix(r.URL.Path, "/v1/kv/") && r.Body != nil {
		// The body is read here to record its request id, and handed on.
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		var pb struct {
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal(body, &pb) == nil && pb.RequestID != "" {
			rec.RequestID = pb.RequestID
		}
	}
	s.mu.Lock()
	slot := &faultSlot{s: s, req: len(s.reqs)}
	if len(s.faults) > 0 {
		slot.fault, s.faults = s.faults[0], s.faults[1:]
	}
	s.reqs = append(s.reqs, rec)
	s.mu.Unlock()

	if slot.fault == FaultOverloaded {
		slot.take()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = io.WriteString(w, `{"error":{"code":"overloaded","message":"admission refused (injected)","retryable":true}}`)
		return
	}
	r = r.WithContext(context.WithValue(r.Context(), faultKey{}, slot))
	scan := r.Method == http.MethodGet && r.URL.Path == "/v1/kv"
	if scan && s.MaxLimit > 0 {
		q := r.URL.Query()
		if n, err := strconv.Atoi(q.Get("limit")); err != nil || n > s.MaxLimit {
			q.Set("limit", strconv.Itoa(s.MaxLimit))
			r.URL.RawQuery = q.Encode()
		}
	}
	if !scan || !s.NextIsLastKey {
		s.api.ServeHTTP(w, r)
		return
	}
	rw := httptest.NewRecorder()
	s.api.ServeHTTP(rw, r)
	body := rw.Body.Bytes()
	var page map[string]json.RawMessage
	var kvs []struct {
		Key string `json:"key"`
	}
	if rw.Code == http.StatusOK && json.Unmarshal(body, &page) == nil && page["next"] != nil &&
		json.Unmarshal(page["kvs"], &kvs) == nil && len(kvs) > 0 {
		page["next"], _ = json.Marshal(kvs[len(kvs)-1].Key)
		body, _ = json.Marshal(page)
	}
	for k, vs := range rw.Header() {
		w.Header()[k] = vs
	}
	w.Header().Del("Content-Length")
	w.WriteHeader(rw.Code)
	_, _ = w.Write(body)
}

// faultKey carries a request's *faultSlot in its context, from serve to the
// backend.
type faultKey struct{}

// faultSlot is the fault a request took from the queue; it strikes at most
// once, at the first proposal or read of the request, and is then recorded.
type faultSlot struct {
	s     *Server
	req   int // the request's index in s.reqs
	fault Fault
	once  sync.Once
}

func (f *faultSlot) take() Fault {
	taken := FaultNone
	f.once.Do(func() {
		taken = f.fault
		f.s.mu.Lock()
		f.s.reqs[f.req].Fault = taken
		f.s.mu.Unlock()
	})
	return taken
}

// takeFault is the fault of the request ctx belongs to, once.
func takeFault(ctx context.Context) Fault {
	if slot, ok := ctx.Value(faultKey{}).(*faultSlot); ok {
		return slot.take()
	}
	return FaultNone
}
