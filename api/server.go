// Package api is cairn's HTTP JSON server: one route table, request parsing,
// routing to the owning shard's leader, and one table from errors to codes.
// It asks its node only for the interfaces it declares: Backend, and each
// shard's replica as a ShardReplica (docs/architecture.md, "Node-to-node
// calls").
package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/clock"
	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/placement"
	"github.com/cairndb/cairn/shard"
	"github.com/cairndb/cairn/txn"
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
	// Replica returns this node's replica of a shard, if it hosts one
	// (never a non-nil interface holding a nil pointer).
	Replica(id uint64) (ShardReplica, bool)
	// NodeHTTPAddr returns a node's API address.
	NodeHTTPAddr(id string) (string, bool)
	// Cluster describes the cluster for GET /v1/cluster.
	Cluster() ClusterView
	// Meta is this node's meta-group replica.
	Meta() MetaBackend
}

// ShardReplica is everything the API asks of one shard's replica on this
// node: the key-value routes' Replica (replica.go), and the cluster
// operations', each declared where it is used: TokenReplica (tokenfloor.go),
// MemberReplica (placement.go) and placement.Splittable (admin.go).
// *shard.Replica implements it; client/clienttest serves the API over an
// in-memory one. The rules of concurrency and of which errors mean nothing
// was written are those of each part.
type ShardReplica interface {
	Replica
	TokenReplica
	MemberReplica
	placement.Splittable
}

var _ ShardReplica = (*shard.Replica)(nil)

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
	// (internal/cluster). Default 1s.
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
	// BodyTimeout bounds how long a request body may take to arrive,
	// counted from the moment the handler starts; a body still incomplete
	// then is answered 400 and its connection closed, so slow or stalled
	// clients cannot hold a node's connections. Default 30s.
	BodyTimeout time.Duration
	Registry    *prometheus.Registry // nil = a new registry
	// Pprof mounts net/http/pprof at /debug/pprof/ (the --pprof flag).
	Pprof bool
	// TxnKnobs are the transaction coordinator's test hooks; nil in
	// production.
	TxnKnobs *TxnKnobs
	// TxnLimits bounds a transaction (ops and bytes; --txn-max-ops,
	// --txn-max-bytes); zero = txn.DefaultLimits.
	TxnLimits txn.Limits
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
	if c.TxnLimits != (txn.Limits{}) {
		if err := c.TxnLimits.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("api: %w", err))
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
	peers   *cluster.Client       // every node-to-node call (internal/cluster)
	rt      *router[ShardReplica] // the routing loop, for every request that runs on one shard
	metrics *metrics
	txnm    *txnMetrics
	sweep   sweepLeases                // when this node began leading each shard, for the record sweeper
	txnbg   txnBackground              // resolutions after a transaction's reply (txn_coord.go)
	txnres  shardBatcher[*resolveItem] // those resolutions, batched per shard (txn_batch.go)
	txnfgt  shardBatcher[*forgetItem]  // and the forgets that follow them, batched per anchor shard
	hosts   hostTimes                  // when each shard last got a prepare or decide that could carry riders (txn_riders.go)
	txnLive atomic.Int64               // multi-shard transactions this node coordinates now
	txnprep shardBatcher[*proposeItem] // prepares for shards led elsewhere: calls shared per shard (txn_propose_batch.go)
	// txnSingles counts the prepares sent alone in the background (txnProposeSinglesMax).
	txnSingles atomic.Int64
	node       string // this node's id
	// kv holds the key routes by method, served outside the mux (ServeHTTP).
	kv map[string]http.HandlerFunc
	// locks holds the routes under /v1/locks/, served outside the mux too.
	locks lockRoutes
	// waits ends every waiting request (EndWaits).
	waits    context.Context
	endWaits context.CancelFunc
}

// headers of docs/api.md.
const (
	hdrShard   = "X-Cairn-Shard"
	hdrIndex   = "X-Cairn-Index"
	hdrSession = "X-Cairn-Session"
	// hdrNode names the node that served the request. A forwarding node
	// passes the serving node's headers on, so a client learns the shard
	// leader from any answer (client/route.go).
	hdrNode = "X-Cairn-Node"
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
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = 30 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	if cfg.TxnLimits == (txn.Limits{}) {
		cfg.TxnLimits = txn.DefaultLimits()
	}
	s := &Server{
		cfg: cfg, be: cfg.Backend, pb: cfg.Placement, log: cfg.Logger, mux: http.NewServeMux(),
		peers: cluster.New(cluster.Config{Dial: cfg.Dial, DialTimeout: cfg.DialTimeout, UnreachableFor: cfg.UnreachableFor,
			Clock: cfg.Clock}),
		metrics: newMetrics(cfg.Registry),
		txnm:    newTxnMetrics(cfg.Registry),
		node:    cfg.Backend.NodeID(),
	}
	s.waits, s.endWaits = context.WithCancel(context.Background())
	s.txnres.sizes = s.txnm.batch.WithLabelValues("resolve")
	s.txnfgt.sizes = s.txnm.batch.WithLabelValues("forget")
	s.txnprep.sizes = s.txnm.batch.WithLabelValues("prepare")
	s.txnres.linger, s.txnfgt.linger = s.riderLingerFor, s.riderLingerFor
	s.rt = &router[ShardReplica]{
		self: s.node, replica: cfg.Backend.Replica, addr: cfg.Backend.NodeHTTPAddr, down: s.peers.Down,
		wait: cfg.RouteWait, pause: 25 * time.Millisecond,
	}
	if s.pb != nil {
		s.rt.alive = s.pb.NodeAlive
	}
	s.routes()
	return s
}

// route runs one shard's part of a key-value request through the routing
// loop (route.go); its local step sees the replica as a Replica only.
func (s *Server) route(ctx context.Context, q routeReq[Replica]) error {
	return s.rt.route(ctx, routeReq[ShardReplica]{rng: q.rng, leader: q.leader, fallback: q.fallback, remote: q.remote,
		local: func(rep ShardReplica, rng fsm.Range) error { return q.local(rep, rng) }})
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
	get := s.wrap("GET /v1/kv/", "kv_get", s.get)
	s.kv = map[string]http.HandlerFunc{
		http.MethodGet:    get,
		http.MethodHead:   get,
		http.MethodPut:    s.wrap("PUT /v1/kv/", "kv_put", s.put),
		http.MethodPost:   s.wrap("POST /v1/kv/", "kv_put", s.put),
		http.MethodDelete: s.wrap("DELETE /v1/kv/", "kv_delete", s.del),
		"":                s.wrap(kvPrefix, "unknown", s.notFound), // any other method: 405
	}
	s.handle("POST /v1/txn", "txn", s.txnPost)
	s.handle("GET /v1/txn/{id}", "txn_inspect", s.txnInspect)
	s.handle("POST "+pathTxnPropose, "internal", s.internalTxnPropose)
	s.handle("POST "+pathTxnProposeBatch, "internal", s.internalTxnProposeBatch)
	s.handle("POST "+pathTxnProposeBin, "internal", s.internalTxnPropose)
	s.handle("POST "+pathTxnProposeBatchBin, "internal", s.internalTxnProposeBatch)
	s.handle("POST "+pathTxnInspect, "internal", s.internalTxnInspect)
	s.locks = s.newLockRoutes()
	s.handle("GET /v1/locks", "lock_list", s.lockList)
	s.handle("POST "+cluster.PathLockCancelWait, "internal", s.internalCancelWait)
	s.handle("GET /v1/cluster", "cluster", s.cluster)
	s.handle("POST /v1/cluster/shards/{id}/split", "cluster_split", s.splitShard)
	s.handle("GET /v1/cluster/shards/{id}/token-ceiling", "cluster_token_ceiling", s.tokenCeiling)
	s.handle("POST /v1/cluster/shards/{id}/token-floor", "cluster_token_floor", s.raiseTokenFloor)
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
	s.handle("/v1/locks", "unknown", s.notFound)
	s.handle("/", "unknown", s.notFound)
}

// kvPrefix starts every key route; the key is the rest of the path.
const kvPrefix = "/v1/kv/"

// queryParams lists the query parameters each public route takes
// (docs/api.md). A public route (under /v1/) refuses any other parameter;
// one missing here takes none. Probes, /metrics and the internal
// node-to-node routes are not checked.
var queryParams = map[string][]string{
	"GET /v1/kv":      {"prefix", "start", "end", "limit", "keys_only", "consistency", "max_staleness"},
	"GET /v1/kv/":     {"consistency", "max_staleness", "raw", "fence_lock", "fence_token"},
	"PUT /v1/kv/":     {"prev", "ttl", "request_id"}, // ttl and request_id with a binary body only (parsePut)
	"POST /v1/kv/":    {"prev", "ttl", "request_id"},
	"DELETE /v1/kv/":  {"if_mod_index", "request_id", "prev", "fence_lock", "fence_token"},
	"GET /v1/cluster": {"local"},
	"GET /v1/locks":   {"prefix", "start", "end", "limit"},
	"GET /v1/locks/":  {"wait_index", "wait"},
}

// handlerFunc is an API handler: it writes its success itself and returns an
// error for the error table.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func (s *Server) handle(pattern, route string, h handlerFunc) {
	s.mux.HandleFunc(pattern, s.wrap(pattern, route, h))
}

// wrap makes h an http.HandlerFunc: the headers every answer carries, the
// query check of a public route, the error table and the metrics.
func (s *Server) wrap(pattern, route string, h handlerFunc) http.HandlerFunc {
	_, path, _ := strings.Cut(pattern, " ")
	checked := strings.HasPrefix(path, "/v1/") && route != "unknown"
	accepted := queryParams[pattern]
	name := strings.Replace(pattern, kvPrefix, kvPrefix+"{key}", 1) // for messages
	name = strings.Replace(name, lockPrefix, lockPrefix+"{name}", 1)
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		rw.Header().Set(hdrNode, s.node)
		setHeaders(rw, 0, 0, r.Header.Get(hdrSession)) // handlers that know better overwrite them
		var err error
		if checked {
			err = checkQuery(r.URL.RawQuery, accepted, name)
		}
		if err == nil {
			err = h(rw, r)
		}
		if err != nil {
			writeError(rw, err)
		}
		s.metrics.observe(route, r.Method, rw.status, time.Since(start))
	}
}

// ServeHTTP implements http.Handler. Key routes are served here rather than
// by the mux: ServeMux cleans a path ("//", "." and ".." segments) and
// redirects to the cleaned one, which for /v1/kv/ is another key, and a
// client that follows the redirect writes there. The key is exactly the
// percent-decoded path after /v1/kv/ (keyFromPath).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.boundBody(w, r)
	if strings.HasPrefix(r.URL.Path, kvPrefix) {
		h, ok := s.kv[r.Method]
		if !ok {
			h = s.kv[""]
		}
		h(w, r)
		return
	}
	if strings.HasPrefix(r.URL.Path, lockPrefix) {
		s.serveLock(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// boundBody gives the request body BodyTimeout to arrive. The server's
// ReadHeaderTimeout bounds only the headers, and ReadTimeout would bound
// every request, long waits included; this is a deadline on the
// connection's reads set per request, lifted once the body has been read
// to its end, so it never cuts the wait for an answer. A body not in by then
// fails its read (readBody answers 400) and the server closes the
// connection. Writers that cannot set deadlines (test recorders) are left
// unbounded.
func (s *Server) boundBody(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody {
		return
	}
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout)) != nil {
		return
	}
	r.Body = &boundedBody{ReadCloser: r.Body, rc: rc, timeout: s.cfg.BodyTimeout}
}

// boundedBody is a request body under boundBody's deadline.
type boundedBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	done    bool
}

func (b *boundedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF && !b.done:
		// The whole body is in: lift the deadline, or the server's
		// background read would time out and cancel the request while the
		// handler waits for its answer.
		b.done = true
		_ = b.rc.SetReadDeadline(time.Time{})
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("not received within %s: %w", b.timeout, err)
	}
	return n, err
}

// EndWaits ends every request that is waiting (a queued lock acquire
// cancels its wait on the leader and answers 503 unavailable; a blocking
// status answers at once): the node is shutting down. Call it before the
// replicas stop, e.g. from http.Server.RegisterOnShutdown.
func (s *Server) EndWaits() { s.endWaits() }

// Close ends waiting requests, ends the transactions' background
// resolutions (and waits for them), and releases idle peer connections.
func (s *Server) Close() {
	s.endWaits()
	s.txnbg.close()
	s.peers.Close()
}

// healthz is 200 while the process serves (docs/api.md, "Server"); a node that cannot
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
	case p == "/v1/kv", strings.HasPrefix(p, "/v1/kv/"), p == "/v1/locks", strings.HasPrefix(p, lockPrefix),
		p == "/v1/cluster", p == "/v1/txn", p == "/healthz", p == "/readyz", p == "/metrics":
		return fmt.Errorf("%w: %s %s", errMethod, r.Method, p)
	}
	return fmt.Errorf("%w: no route for %s %s", errNotFound, r.Method, r.URL.Path)
}

// setHeaders sets the headers docs/api.md promises on every response.
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
