// Package clienttest is test scaffolding for the client and the command
// lines: an in-memory fake of the key-value part of the HTTP API (docs/api.md) with
// fault injection, as one shard (id 1) whose token ceiling and floor
// (backups) it keeps. It is not the server and checks nothing about it; the real
// server is tested in api/ and test/.
package clienttest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fault is a failure the fake injects instead of (or after) serving a request.
type Fault int

const (
	FaultNone               Fault = iota
	FaultUnavailable              // 503 unavailable, nothing applied
	FaultOverloaded               // 429 overloaded, nothing applied
	FaultInternal                 // 500 with a non-JSON body, nothing applied
	FaultTimeoutBeforeApply       // 504 outcome_unknown, nothing applied
	FaultTimeoutAfterApply        // the request is served, then 504 outcome_unknown
	FaultResetBeforeApply         // the connection is reset after the request was read
	FaultResetAfterApply          // the request is served, then the connection is reset
	FaultHangAfterApply           // the request is served, then no answer until the client gives up
)

// Recorded is what the fake saw of one request.
type Recorded struct {
	Method      string
	EscapedPath string
	Query       url.Values
	RequestID   string // from the PUT body or the DELETE query
	Session     string // X-Cairn-Session sent by the client
	Fault       Fault  // injected into this request
}

type entry struct {
	value                       string
	createIndex, modIndex, vers uint64
	lease                       string
}

type stored struct {
	status int
	body   []byte
}

// Server is the fake. Its fields may be set before the first request.
type Server struct {
	*httptest.Server

	// NextIsLastKey makes a scan's "next" the last key returned instead of
	// the first key not returned, to check that clients cope with both.
	NextIsLastKey bool
	// MaxLimit caps a scan's page (default 1000).
	MaxLimit int

	mu      sync.Mutex
	data    map[string]*entry
	index   uint64
	dedup   map[string]stored
	applied map[string]int
	faults  []Fault
	reqs    []Recorded
	base    uint64 // the one shard's lock token base (RaiseTokenFloor)
}

// TokenBase is the fake shard's token base: the highest floor raised.
func (f *Server) TokenBase() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.base
}

// NewServer starts a fake; Close it when done.
func NewServer() *Server {
	f := &Server{
		data:     map[string]*entry{},
		dedup:    map[string]stored{},
		applied:  map[string]int{},
		MaxLimit: 1000,
	}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	return f
}

// Addr is the fake's "host:port", as an endpoint.
func (f *Server) Addr() string { return strings.TrimPrefix(f.URL, "http://") }

// InjectFaults queues faults; each following request takes the next one.
func (f *Server) InjectFaults(faults ...Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, faults...)
}

// Requests returns the requests seen so far.
func (f *Server) Requests() []Recorded {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// Applied is how many times a write with this request id changed the store.
func (f *Server) Applied(requestID string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied[requestID]
}

// Value returns key's stored value and whether it exists.
func (f *Server) Value(key string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.data[key]
	if !ok {
		return "", false
	}
	return e.value, true
}

// Set stores key directly, as if written earlier.
func (f *Server) Set(key, value string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	f.data[key] = &entry{value: value, createIndex: f.index, modIndex: f.index, vers: 1}
}

func (f *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 2<<20))
	rec := Recorded{Method: r.Method, EscapedPath: r.URL.EscapedPath(), Query: r.URL.Query(),
		Session: r.Header.Get("X-Cairn-Session"), RequestID: r.URL.Query().Get("request_id")}
	var pb putBody
	if r.Method == http.MethodPost {
		r.Body = io.NopCloser(strings.NewReader(string(body)))
	}
	if r.Method == http.MethodPut {
		dec := json.NewDecoder(strings.NewReader(string(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&pb); err != nil {
			f.reply(w, r, http.StatusBadRequest, errBody("invalid_argument", err.Error(), false))
			return
		}
		rec.RequestID = pb.RequestID
	}

	f.mu.Lock()
	fault := FaultNone
	if len(f.faults) > 0 {
		fault, f.faults = f.faults[0], f.faults[1:]
	}
	rec.Fault = fault
	f.reqs = append(f.reqs, rec)
	f.mu.Unlock()

	switch fault {
	case FaultUnavailable:
		f.reply(w, r, http.StatusServiceUnavailable, errBody("unavailable", "no leader for shard 1", true))
		return
	case FaultOverloaded:
		f.reply(w, r, http.StatusTooManyRequests, errBody("overloaded", "admission refused", true))
		return
	case FaultInternal:
		http.Error(w, "<html>boom</html>", http.StatusInternalServerError)
		return
	case FaultTimeoutBeforeApply:
		f.reply(w, r, http.StatusGatewayTimeout, errBody("outcome_unknown", "proposal timed out", true))
		return
	case FaultResetBeforeApply:
		reset(w)
		return
	}

	status, out := f.handle(r, &pb, rec.RequestID)
	switch fault {
	case FaultTimeoutAfterApply:
		f.reply(w, r, http.StatusGatewayTimeout, errBody("outcome_unknown", "leadership lost", true))
	case FaultResetAfterApply:
		reset(w)
	case FaultHangAfterApply:
		<-r.Context().Done()
	default:
		f.reply(w, r, status, out)
	}
}

// reset closes the connection with an RST and without an answer.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

func (f *Server) reply(w http.ResponseWriter, r *http.Request, status int, body []byte) {
	f.mu.Lock()
	idx := f.index
	// The fake's session token is "s<index>"; merging is keeping the max.
	if n, err := strconv.ParseUint(strings.TrimPrefix(r.Header.Get("X-Cairn-Session"), "s"), 10, 64); err == nil && n > idx {
		idx = n
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Cairn-Shard", "1")
	w.Header().Set("X-Cairn-Index", strconv.FormatUint(idx, 10))
	w.Header().Set("X-Cairn-Session", "s"+strconv.FormatUint(idx, 10))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func errBody(code, msg string, retryable bool) []byte {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "message": msg, "retryable": retryable}})
	return b
}

type putBody struct {
	Value string `json:"value"`
	TTL   string `json:"ttl"`
	If    *struct {
		ModIndex *uint64 `json:"mod_index"`
		Absent   bool    `json:"absent"`
		Value    *string `json:"value"`
	} `json:"if"`
	Fence *struct {
		Lock  string `json:"lock"`
		Token uint64 `json:"token"`
	} `json:"fence"`
	RequestID string `json:"request_id"`
}

func (f *Server) handle(r *http.Request, pb *putBody, requestID string) (int, []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := r.URL.EscapedPath()
	if p == "/v1/kv" && r.Method == http.MethodGet {
		return f.scan(r.URL.Query())
	}
	switch {
	case p == "/v1/cluster" && r.Method == http.MethodGet:
		b, _ := json.Marshal(map[string]any{"nodes": []any{}, "shards": []map[string]any{{"id": 1, "start": "", "end": ""}}})
		return http.StatusOK, b
	case p == "/v1/cluster/shards/1/token-ceiling" && r.Method == http.MethodGet:
		b, _ := json.Marshal(map[string]any{"shard": 1, "token_ceiling": f.base + f.index + 128})
		return http.StatusOK, b
	case p == "/v1/cluster/shards/1/token-floor" && r.Method == http.MethodPost:
		var req struct {
			Floor uint64 `json:"floor"`
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			return http.StatusBadRequest, errBody("invalid_argument", err.Error(), false)
		}
		f.base = max(f.base, req.Floor)
		b, _ := json.Marshal(map[string]any{"shard": 1, "token_base": f.base})
		return http.StatusOK, b
	}
	raw, ok := strings.CutPrefix(p, "/v1/kv/")
	if !ok {
		return http.StatusNotFound, errBody("not_found", "no route "+p, false)
	}
	key, err := url.PathUnescape(raw)
	if err != nil || key == "" {
		return http.StatusBadRequest, errBody("invalid_argument", "bad key", false)
	}
	switch r.Method {
	case http.MethodGet:
		return f.get(key, r.URL.Query())
	case http.MethodPut, http.MethodDelete:
		if s, ok := f.dedup[requestID]; ok && requestID != "" {
			return s.status, s.body // invariant I7: a duplicate gets the first answer
		}
		var status int
		var body []byte
		if r.Method == http.MethodPut {
			status, body = f.put(key, pb, r.URL.Query().Get("prev") == "1")
		} else {
			status, body = f.del(key, r.URL.Query())
		}
		if requestID != "" {
			f.dedup[requestID] = stored{status, body}
			if status == http.StatusOK {
				f.applied[requestID]++
			}
		}
		return status, body
	}
	return http.StatusMethodNotAllowed, errBody("invalid_argument", "method", false)
}

func (e *entry) json(key string, withValue bool) map[string]any {
	m := map[string]any{"key": key, "create_index": e.createIndex, "mod_index": e.modIndex,
		"version": e.vers, "lease": e.lease}
	if withValue {
		m["value"] = e.value
	}
	return m
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func (f *Server) get(key string, q url.Values) (int, []byte) {
	switch q.Get("consistency") {
	case "", "linearizable", "session", "stale":
	default:
		return http.StatusBadRequest, errBody("invalid_argument", "bad consistency", false)
	}
	if ms := q.Get("max_staleness"); ms != "" {
		if _, err := time.ParseDuration(ms); err != nil {
			return http.StatusBadRequest, errBody("invalid_argument", "bad max_staleness", false)
		}
	}
	e, ok := f.data[key]
	if !ok {
		return http.StatusNotFound, errBody("not_found", fmt.Sprintf("key %q not found", key), false)
	}
	return http.StatusOK, mustJSON(e.json(key, true))
}

func (f *Server) put(key string, pb *putBody, prev bool) (int, []byte) {
	if pb.TTL != "" {
		if _, err := time.ParseDuration(pb.TTL); err != nil {
			return http.StatusBadRequest, errBody("invalid_argument", "bad ttl", false)
		}
	}
	old := f.data[key]
	if c := pb.If; c != nil {
		held := true
		switch {
		case c.ModIndex != nil:
			held = (old == nil && *c.ModIndex == 0) || (old != nil && old.modIndex == *c.ModIndex)
		case c.Absent:
			held = old == nil
		case c.Value != nil:
			held = old != nil && old.value == *c.Value
		}
		if !held {
			b := map[string]any{"code": "condition_failed", "message": "condition failed", "retryable": false}
			if old != nil {
				b["current"] = old.json(key, true)
			}
			return http.StatusConflict, mustJSON(map[string]any{"error": b})
		}
	}
	f.index++
	e := &entry{value: pb.Value, createIndex: f.index, modIndex: f.index, vers: 1}
	if old != nil {
		e.createIndex, e.vers = old.createIndex, old.vers+1
	}
	f.data[key] = e
	res := map[string]any{"key": key, "mod_index": e.modIndex, "version": e.vers}
	if prev && old != nil {
		res["prev"] = old.json(key, true)
	}
	return http.StatusOK, mustJSON(res)
}

func (f *Server) del(key string, q url.Values) (int, []byte) {
	old := f.data[key]
	if s := q.Get("if_mod_index"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return http.StatusBadRequest, errBody("invalid_argument", "bad if_mod_index", false)
		}
		if old == nil || old.modIndex != n {
			return http.StatusConflict, errBody("condition_failed", "mod_index differs", false)
		}
	}
	if old == nil {
		return http.StatusOK, []byte(`{"deleted":0}`)
	}
	f.index++
	delete(f.data, key)
	return http.StatusOK, []byte(`{"deleted":1}`)
}

func (f *Server) scan(q url.Values) (int, []byte) {
	start, end := q.Get("start"), q.Get("end")
	prefix := q.Get("prefix")
	limit := f.MaxLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return http.StatusBadRequest, errBody("invalid_argument", "bad limit", false)
		}
		if n > 0 && n < limit {
			limit = n
		}
	}
	keys := make([]string, 0, len(f.data))
	for k := range f.data {
		if strings.HasPrefix(k, prefix) && k >= start && (end == "" || k < end) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	page := map[string]any{"more": false}
	if len(keys) > limit {
		page["more"] = true
		page["next"] = keys[limit]
		if f.NextIsLastKey {
			page["next"] = keys[limit-1]
		}
		keys = keys[:limit]
	}
	kvs := make([]map[string]any, 0, len(keys))
	for _, k := range keys {
		kvs = append(kvs, f.data[k].json(k, q.Get("keys_only") != "1"))
	}
	page["kvs"] = kvs
	return http.StatusOK, mustJSON(page)
}
