package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cairndb/cairn/fsm"
)

// notReadyBackend is a node that has not formed a cluster: Ready is false, so
// no handler gets as far as routing, and every other method fails the test if
// it is reached.
type notReadyBackend struct{ t *testing.T }

func (b notReadyBackend) NodeID() string { return "n1" }
func (b notReadyBackend) Ready() bool    { return false }
func (b notReadyBackend) Lookup([]byte) (fsm.Range, bool) {
	b.t.Error("Lookup called on a node that is not ready")
	return fsm.Range{}, false
}
func (b notReadyBackend) Ranges() []fsm.Range {
	b.t.Error("Ranges called on a node that is not ready")
	return nil
}
func (b notReadyBackend) Replica(uint64) (ShardReplica, bool) {
	b.t.Error("Replica called on a node that is not ready")
	return nil, false
}
func (b notReadyBackend) NodeHTTPAddr(string) (string, bool) {
	b.t.Error("NodeHTTPAddr called on a node that is not ready")
	return "", false
}
func (b notReadyBackend) Cluster() ClusterView {
	b.t.Error("Cluster called on a node that is not ready")
	return ClusterView{}
}

func (b notReadyBackend) Meta() MetaBackend {
	b.t.Error("Meta called on a node that is not ready")
	return nil
}

func TestRoutesNotReady(t *testing.T) {
	tok := session{3: 41}.String()
	tests := []struct {
		method, target, body string
		session              string // X-Cairn-Session sent
		status               int
		code                 string // "" = not an error
	}{
		{method: "GET", target: "/healthz", status: 200},
		{method: "HEAD", target: "/healthz", status: 200},
		{method: "GET", target: "/readyz", status: 503, code: "unavailable"},
		{method: "GET", target: "/nope", status: 404, code: "not_found"},
		{method: "GET", target: "/", status: 404, code: "not_found"},
		{method: "GET", target: "/v2/kv/a", status: 404, code: "not_found"},
		{method: "PATCH", target: "/v1/kv/x", status: 405, code: "method_not_allowed"},
		{method: "DELETE", target: "/healthz", status: 405, code: "method_not_allowed"},
		{method: "PUT", target: "/v1/cluster", status: 405, code: "method_not_allowed"},
		{method: "GET", target: "/v1/cluster", status: 503, code: "unavailable"},
		{method: "GET", target: "/v1/kv/a", status: 503, code: "unavailable"},
		{method: "GET", target: "/v1/kv/a", session: tok, status: 503, code: "unavailable"},
		{method: "PUT", target: "/v1/kv/a", body: `{"value":"1"}`, status: 503, code: "unavailable"},
		{method: "POST", target: "/v1/kv/a", body: `{"value":"1"}`, session: tok, status: 503, code: "unavailable"},
		{method: "DELETE", target: "/v1/kv/a", status: 503, code: "unavailable"},
		{method: "GET", target: "/v1/kv?prefix=a", status: 503, code: "unavailable"},
		// Parsing comes before the readiness check.
		{method: "GET", target: "/v1/kv/", status: 400, code: "invalid_argument"},
		{method: "GET", target: "/v1/kv/a?consistency=eventual", status: 400, code: "invalid_argument"},
		{method: "GET", target: "/v1/kv/a", session: "bogus", status: 400, code: "invalid_argument"},
		{method: "PUT", target: "/v1/kv/a", body: `{"value":1}`, status: 400, code: "invalid_argument"},
		{method: "DELETE", target: "/v1/kv/a?if_mod_index=x", status: 400, code: "invalid_argument"},
		{method: "GET", target: "/v1/kv?limit=0", status: 400, code: "invalid_argument"},
		{method: "GET", target: "/v1/kv?start=b&end=a", status: 400, code: "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target+" "+tt.session, func(t *testing.T) {
			s := NewServer(Config{Backend: notReadyBackend{t}})
			defer s.Close()
			r := httptest.NewRequest(tt.method, tt.target, strings.NewReader(tt.body))
			if tt.session != "" {
				r.Header.Set(hdrSession, tt.session)
			}
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status %d; want %d (body %s)", w.Code, tt.status, w.Body)
			}
			for _, h := range []string{hdrShard, hdrIndex, hdrSession} {
				if w.Header().Get(h) == "" {
					t.Errorf("answer lacks %s; headers %v", h, w.Header())
				}
			}
			if got := w.Header().Get(hdrShard); got != "0" {
				t.Errorf("%s = %q; want 0 (no shard served it)", hdrShard, got)
			}
			if got := w.Header().Get(hdrIndex); got != "0" {
				t.Errorf("%s = %q; want 0", hdrIndex, got)
			}
			if tt.session != "" && tt.code != "invalid_argument" {
				if got := w.Header().Get(hdrSession); got != tt.session {
					t.Errorf("%s = %q; want the client's %q back", hdrSession, got, tt.session)
				}
			}
			if tt.method == "HEAD" {
				return
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q; want application/json", ct)
			}
			if tt.code == "" {
				var body map[string]any
				if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
					t.Fatalf("body %q: %v", w.Body, err)
				}
				return
			}
			detail := decodeEnvelope(t, w.Body.Bytes())
			wantRetryable := tt.code == "unavailable"
			if detail["code"] != tt.code || detail["retryable"] != wantRetryable {
				t.Errorf("error %v; want code %s retryable %v", detail, tt.code, wantRetryable)
			}
		})
	}
}

func TestHealthzBody(t *testing.T) {
	s := NewServer(Config{Backend: notReadyBackend{t}})
	defer s.Close()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	var body struct {
		OK   bool   `json:"ok"`
		Node string `json:"node"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || !body.OK || body.Node != "n1" {
		t.Errorf("healthz body %s (%v); want ok true node n1", w.Body, err)
	}
	if got, want := w.Header().Get(hdrSession), (session{}).String(); got != want {
		t.Errorf("%s = %q; want the empty session %q", hdrSession, got, want)
	}
}

// TestRoutesEdgeCases: unknown paths are 404, writes to the scan path 405,
// and /metrics carries the API headers too.
func TestRoutesEdgeCases(t *testing.T) {
	tests := []struct {
		name, method, target string
		status               int
		bug                  string
	}{
		{"unknown path sharing a route's prefix", "GET", "/v1/kvx", 404,
			"api/server.go notFound matches route prefixes with strings.HasPrefix, so /v1/kvx is 405"},
		{"unknown path under healthz", "GET", "/healthzz", 404,
			"api/server.go notFound matches route prefixes with strings.HasPrefix, so /healthzz is 405"},
		{"unknown path under cluster", "GET", "/v1/cluster/nodes", 404,
			"api/server.go notFound: GET /v1/cluster/nodes is 405 although no method is routed there"},
		{"write to the scan path", "POST", "/v1/kv", 405,
			"api/server.go routes: the subtree patterns \"PUT|POST|DELETE /v1/kv/\" make ServeMux answer 307 to /v1/kv/ (no envelope, no headers) instead of 405"},
		{"metrics carries the API headers", "GET", "/metrics", 200,
			"api/server.go routes: /metrics is mounted on the mux directly, so it lacks X-Cairn-* headers"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewServer(Config{Backend: notReadyBackend{t}})
			defer s.Close()
			w := httptest.NewRecorder()
			s.ServeHTTP(w, httptest.NewRequest(tt.method, tt.target, nil))
			if w.Code != tt.status || w.Header().Get(hdrSession) == "" {
				t.Fatalf("%s (got %d, headers %v)", tt.bug, w.Code, w.Header())
			}
		})
	}
}
