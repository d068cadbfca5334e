package bench

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// gatewayStub is a stand-in for etcd's v3 JSON gateway: it records the
// requests and keeps the keys, encoded as the gateway encodes them.
type gatewayStub struct {
	*httptest.Server
	mu   sync.Mutex
	data map[string]string // decoded key -> base64 value
	reqs []map[string]any
	// fail, when set, answers every request with this status and body.
	failStatus int
	failBody   string
}

func newGatewayStub(t *testing.T) *gatewayStub {
	g := &gatewayStub{data: map[string]string{}}
	g.Server = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.Close)
	return g
}

func (g *gatewayStub) serve(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	var req map[string]any
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &req) != nil {
		http.Error(w, `{"error":"bad request","code":3,"message":"bad request"}`, http.StatusBadRequest)
		return
	}
	req["path"] = r.URL.Path
	g.reqs = append(g.reqs, req)
	if g.failStatus != 0 {
		w.WriteHeader(g.failStatus)
		io.WriteString(w, g.failBody)
		return
	}
	key, err := base64.StdEncoding.DecodeString(req["key"].(string))
	if err != nil {
		http.Error(w, `{"error":"bad key","code":3,"message":"bad key"}`, http.StatusBadRequest)
		return
	}
	header := `{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"7","raft_term":"2"}`
	switch r.URL.Path {
	case "/v3/kv/put":
		g.data[string(key)] = req["value"].(string)
		io.WriteString(w, `{"header":`+header+`}`)
	case "/v3/kv/range":
		v, ok := g.data[string(key)]
		if !ok {
			io.WriteString(w, `{"header":`+header+`}`) // no kvs, no count: protobuf JSON leaves zero values out
			return
		}
		io.WriteString(w, `{"header":`+header+`,"kvs":[{"key":"`+req["key"].(string)+
			`","create_revision":"5","mod_revision":"7","version":"2","value":"`+v+`"}],"count":"1"}`)
	default:
		http.NotFound(w, r)
	}
}

func TestEtcdGatewayEncoding(t *testing.T) {
	g := newGatewayStub(t)
	for _, c := range []struct {
		consistency  string
		serializable any
	}{{"", nil}, {"linearizable", nil}, {"stale", true}} {
		g.reqs = nil
		tgt, err := NewEtcd(EtcdConfig{Endpoints: []string{strings.TrimPrefix(g.URL, "http://")}, Consistency: c.consistency})
		if err != nil {
			t.Fatal(err)
		}
		conn, _ := tgt.Conn(0)
		ctx := context.Background()
		if err := conn.Put(ctx, "bench/00000001", "hello/ü"); err != nil {
			t.Fatalf("put: %v", err)
		}
		if err := conn.Get(ctx, "bench/00000001"); err != nil {
			t.Fatalf("get: %v", err)
		}
		err = conn.Get(ctx, "missing")
		if ErrorCode(err) != CodeNotFound {
			t.Errorf("get missing: %v (code %q), want not_found", err, ErrorCode(err))
		}
		tgt.Close()

		put, get := g.reqs[0], g.reqs[1]
		if put["path"] != "/v3/kv/put" || put["key"] != b64("bench/00000001") || put["value"] != b64("hello/ü") {
			t.Errorf("put request %v", put)
		}
		if get["path"] != "/v3/kv/range" || get["key"] != b64("bench/00000001") || get["serializable"] != c.serializable {
			t.Errorf("consistency %q: range request %v, want serializable %v", c.consistency, get, c.serializable)
		}
		if _, ok := put["serializable"]; ok {
			t.Errorf("put carries serializable: %v", put)
		}
	}
	if g.data["bench/00000001"] != base64.StdEncoding.EncodeToString([]byte("hello/ü")) {
		t.Errorf("stored %q", g.data["bench/00000001"])
	}
}

func TestEtcdGatewayErrors(t *testing.T) {
	cases := []struct {
		status int
		body   string
		code   string
	}{
		// grpc-gateway v1 (etcd 3.4, 3.5)
		{503, `{"error":"etcdserver: request timed out","code":14,"message":"etcdserver: request timed out"}`, "unavailable"},
		{500, `{"error":"etcdserver: leader changed","code":4,"message":"etcdserver: leader changed"}`, "deadline_exceeded"},
		{429, `{"error":"etcdserver: too many requests","code":8,"message":"etcdserver: too many requests"}`, "resource_exhausted"},
		// grpc-gateway v2 (etcd 3.6): no "error" field
		{400, `{"code":3,"message":"etcdserver: key is not provided","details":[]}`, "invalid_argument"},
		// not the gateway's JSON: the HTTP status decides
		{502, `<html>bad gateway</html>`, "unavailable"},
		{418, ``, "http_418"},
	}
	for _, c := range cases {
		g := newGatewayStub(t)
		g.failStatus, g.failBody = c.status, c.body
		tgt, _ := NewEtcd(EtcdConfig{Endpoints: []string{g.URL}})
		conn, _ := tgt.Conn(0)
		err := conn.Put(context.Background(), "k", "v")
		var oe *OpError
		if !errors.As(err, &oe) || oe.Code != c.code {
			t.Errorf("%d %s: %v, want code %s", c.status, c.body, err, c.code)
		}
		tgt.Close()
	}
}

func TestEtcdUnreachableAndConfig(t *testing.T) {
	g := newGatewayStub(t)
	addr := g.Listener.Addr().String()
	g.Close() // nothing listens there now
	tgt, _ := NewEtcd(EtcdConfig{Endpoints: []string{addr}})
	defer tgt.Close()
	conn, _ := tgt.Conn(0)
	if err := conn.Put(context.Background(), "k", "v"); ErrorCode(err) != CodeUnreachable {
		t.Errorf("closed port: %v (code %q), want unreachable", err, ErrorCode(err))
	}
	if _, err := NewEtcd(EtcdConfig{Endpoints: []string{addr}, Consistency: "session"}); err == nil {
		t.Error("session consistency accepted for etcd")
	}
	if _, err := NewEtcd(EtcdConfig{}); err == nil {
		t.Error("no endpoints accepted")
	}
}

func TestEtcdConnsSpreadOverEndpoints(t *testing.T) {
	tgt, _ := NewEtcd(EtcdConfig{Endpoints: []string{"a:1", "http://b:2/", "c:3"}})
	defer tgt.Close()
	for i, want := range []string{"http://a:1", "http://b:2", "http://c:3", "http://a:1"} {
		c, _ := tgt.Conn(i)
		if got := c.(*etcdConn).put; got != want+"/v3/kv/put" {
			t.Errorf("conn %d: %s, want %s/v3/kv/put", i, got, want)
		}
	}
}
