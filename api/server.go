// Package api is cairn's HTTP JSON server: one route table, request parsing,
// routing to the owning shard's leader, and one table from errors to codes.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/clock"
	"github.com/cairndb/cairn/shard"
)

// Backend is what the API needs from the node. Implementations must be safe
// for concurrent use.
type Backend interface {
	NodeID() string
	// Ready reports whether the node can route requests.
	Ready() bool
	// Lookup returns the range owning key in the node's range map.
	Lookup(key []byte) (fsm.Range, bool)
	// Ranges returns the range map sorted by start key.
	Ranges() []fsm.Range
	// Replica returns this node's replica of a shard, if it hosts one.
	Replica(id uint64) (*shard.Replica, bool)
	// NodeHTTPAddr returns a node's API address.
	NodeHTTPAddr(id string) (string, bool)
	// Cluster describes the cluster for GET /v1/cluster.
	Cluster() ClusterView
	// Meta is this node's meta-group replica.
	Meta() MetaBackend
}

// HealthReporter is an optional Backend capability: Health returns why the
// node cannot serve at all (its raft log failed), nil when it can. /readyz
// fails and /healthz says why.
type HealthReporter interface {
	Health() error
}

// Config configures the API server.
type Config struct {
	Backend Backend
	// Placement serves the cluster operations; nil disables them (tests).
	Placement PlacementBackend
	Logger    *slog.Logger
	// Dial connects to other nodes for forwarding; nil = net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialTimeout bounds each node-to-node dial, name resolution included
	// (peers.go). Default 1s.
	DialTimeout time.Duration
	// UnreachableFor is how long a peer that could not be dialed is skipped
	// by routing before it is dialed again. Default 1s.
	UnreachableFor time.Duration
	// RouteWait bounds how long a request waits for a shard leader to appear
	// before answering unavailable. Default 3s.
	RouteWait time.Duration
	// SessionWait bounds how long a session read waits for a replica to catch
	// up to the session's index. Default 2s.
	SessionWait time.Duration
	Registry    *prometheus.Registry // nil = a new registry
	// Pprof mounts net/http/pprof at /debug/pprof/ (the --pprof flag).
	Pprof bool
	// Clock stamps proposals (a command's Time, from which TTLs count) and
	// times how long an unreachable peer is skipped; nil = the real clock.
	// Waits (RouteWait, SessionWait) run on real timers.
	Clock clock.Clock
}

// DefaultConfig returns the API's production settings; the caller fills in
// Backend (and Placement, Logger, Registry, Dial as needed).
func DefaultConfig() Config {
	return Config{DialTimeout: time.Second, UnreachableFor: time.Second, RouteWait: 3 * time.Second,
		SessionWait: 2 * time.Second, Clock: clock.Real()}
}

// Validate reports a configuration the server cannot run with. Zero
// durations take their defaults in NewServer; negative ones are refused.
func (c Config) Validate() error {
	var errs []error
	if c.Backend == nil {
		errs = append(errs, errors.New("api: Backend is required"))
	}
	for name, d := range map[string]time.Duration{"dial timeout": c.DialTimeout, "unreachable-for": c.UnreachableFor,
		"route wait": c.RouteWait, "session wait": c.SessionWait} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("api: %s %s is negative", name, d))
		}
	}
	return errors.Join(errs...)
}

// Server serves the HTTP API.
type Server struct {
	cfg     Config
	be      Backend
	pb      PlacementBackend
	log     *slog.Logger
	mux     *http.ServeMux
	peers   *http.Client
	down    *unreachable // peers whose last dial failed (peers.go)
	metrics *metrics
	node    string // this node's id
}

// headers of API.md.
const (
	hdrShard   = "X-Cairn-Shard"
	hdrIndex   = "X-Cairn-Index"
	hdrSession = "X-Cairn-Session"
	hdrHops    = "X-Cairn-Hops"
	// hdrNode names the node that served the request. A forwarding node
	// passes the serving node's headers on, so a client learns the shard
	// leader from any answer (client/route.go).
	hdrNode = "X-Cairn-Node"
	maxHops = 3
)

// NewServer returns the API handler. cfg must pass Validate (internal/node
// checks it at start); zero values take DefaultConfig's.
func NewServer(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.RouteWait <= 0 {
		cfg.RouteWait = 3 * time.Second
	}
	if cfg.SessionWait <= 0 {
		cfg.SessionWait = 2 * time.Second
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = time.Second
	}
	if cfg.UnreachableFor <= 0 {
		cfg.UnreachableFor = time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	down := newUnreachable(cfg.UnreachableFor, cfg.Clock)
	s := &Server{
		cfg: cfg, be: cfg.Backend, pb: cfg.Placement, log: cfg.Logger, mux: http.NewServeMux(),
		peers: &http.Client{Transport: &http.Transport{
			DialContext: boundedDial(dial, cfg.DialTimeout, down), MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second,
		}},
		down:    down,
		metrics: newMetrics(cfg.Registry),
		node:    cfg.Backend.NodeID(),
	}
	s.routes()
	return s
}

// routes is the route table.
func (s *Server) routes() {
	s.handle("GET /healthz", "healthz", s.healthz)
	s.handle("GET /readyz", "readyz", s.readyz)
	prom := promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{})
	s.handle("GET /metrics", "metrics", func(w http.ResponseWriter, r *http.Request) error {
		prom.ServeHTTP(w, r)
		return nil
	})
	s.handle("GET /v1/kv", "kv_scan", s.scan)
	s.handle("GET /v1/kv/", "kv_get", s.get)
	s.handle("PUT /v1/kv/", "kv_put", s.put)
	s.handle("POST /v1/kv/", "kv_put", s.put)
	s.handle("DELETE /v1/kv/", "kv_delete", s.del)
	s.handle("GET /v1/cluster", "cluster", s.cluster)
	s.handle("POST /v1/cluster/shards/{id}/split", "cluster_split", s.splitShard)
	s.handle("POST "+pathAllocRangeID, "internal", s.internalAllocRangeID)
	s.handle("POST "+pathReportRanges, "internal", s.internalReportRanges)
	if s.pb != nil {
		s.placementRoutes()
	}
	if s.cfg.Pprof {
		s.mux.HandleFunc("/debug/pprof/", pprof.Index)
		s.mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		s.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		s.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		s.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	s.handle("/v1/kv", "unknown", s.notFound) // other methods on the scan path: 405, not a redirect
	s.handle("/", "unknown", s.notFound)
}

// handlerFunc is an API handler: it writes its success itself and returns an
// error for the error table.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) handle(pattern, route string, h handlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		rw.Header().Set(hdrNode, s.node)
		setHeaders(rw, 0, 0, r.Header.Get(hdrSession)) // handlers that know better overwrite them
		if err := h(rw, r); err != nil {
			writeError(rw, err)
		}
		s.metrics.observe(route, r.Method, rw.status, time.Since(start))
	})
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// Close releases idle peer connections.
func (s *Server) Close() { s.peers.CloseIdleConnections() }

// healthz is 200 while the process serves (API.md); a node that cannot
// serve at all says why with "ok": false.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	if err := s.health(); err != nil {
		writeJSON(w, http.StatusOK, map[string]any{"ok": false, "node": s.be.NodeID(), "error": err.Error()})
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]any{"ok": true, "node": s.be.NodeID()})
	return nil
}

// health is the backend's Health, nil when it does not report one.
func (s *Server) health() error {
	if h, ok := s.be.(HealthReporter); ok {
		return h.Health()
	}
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if err := s.health(); err != nil {
		return fmt.Errorf("%w: %w", errUnhealthy, err)
	}
	if !s.be.Ready() {
		return errNotReady
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true, "node": s.be.NodeID()})
	return nil
}

// notFound answers every request no route matched: a known path with the
// wrong method is 405, anything else 404, both in the error envelope.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) error {
	setHeaders(w, 0, 0, r.Header.Get(hdrSession))
	p := r.URL.Path
	switch {
	case p == "/v1/kv", strings.HasPrefix(p, "/v1/kv/"),
		p == "/v1/cluster", p == "/healthz", p == "/readyz", p == "/metrics":
		return fmt.Errorf("%w: %s %s", errMethod, r.Method, p)
	}
	return fmt.Errorf("%w: no route for %s %s", errNotFound, r.Method, r.URL.Path)
}

// setHeaders sets the headers API.md promises on every response.
func setHeaders(w http.ResponseWriter, shardID, index uint64, sess string) {
	h := w.Header()
	h.Set(hdrShard, strconv.FormatUint(shardID, 10))
	h.Set(hdrIndex, strconv.FormatUint(index, 10))
	if sess == "" {
		sess = session{}.String()
	}
	h.Set(hdrSession, sess)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}
