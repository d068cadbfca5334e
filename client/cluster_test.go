package client

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// clusterStub is an httptest server for the cluster endpoints. Each request
// is recorded and answered by the next scripted reply; when the script is
// used up, by the last one.
type clusterStub struct {
	*httptest.Server
	mu      sync.Mutex
	seen    []stubRequest
	replies []stubReply
}

type stubRequest struct {
	Method, Path, Body string // Path is the escaped path
}

type stubReply struct {
	status int
	body   string
	hangUp bool // close the connection without an answer, after reading the request
}

func newClusterStub(t *testing.T, replies ...stubReply) *clusterStub {
	t.Helper()
	s := &clusterStub{replies: replies}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *clusterStub) serve(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.seen = append(s.seen, stubRequest{r.Method, r.URL.EscapedPath(), string(b)})
	rep := s.replies[min(len(s.seen), len(s.replies))-1]
	s.mu.Unlock()
	if rep.hangUp {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rep.status)
	_, _ = io.WriteString(w, rep.body)
}

func (s *clusterStub) requests() []stubRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]stubRequest(nil), s.seen...)
}

func (s *clusterStub) addr() string { return strings.TrimPrefix(s.URL, "http://") }

func ok(body string) stubReply { return stubReply{status: http.StatusOK, body: body} }

func apiError(status int, code string, retryable bool) stubReply {
	b, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "message": "stub says " + code, "retryable": retryable}})
	return stubReply{status: status, body: string(b)}
}

const clusterJSON = `{"nodes":[
  {"id":"n1","http_addr":"127.0.0.1:7070","raft_addr":"127.0.0.1:7071","state":"alive","shards":2,"leaders":1},
  {"id":"n2","http_addr":"127.0.0.1:7080","raft_addr":"127.0.0.1:7081","state":"suspect","shards":1,"leaders":1,"future_field":true}],
 "shards":[
  {"id":1,"start":"","end":"m","epoch":2,"replicas":["n1","n2"],"leader":"n1","size_bytes":1536,"applied_index":42},
  {"id":7,"start":"m","end":"","epoch":2,"replicas":["n1"],"leader":"","size_bytes":0,"applied_index":0}],
 "placement_leader":"n1"}`

func TestCluster(t *testing.T) {
	s := newClusterStub(t, ok(clusterJSON))
	c := mustClient(t, []string{s.addr()})
	st, err := c.Cluster(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	want := &ClusterStatus{
		Nodes: []NodeStatus{
			{ID: "n1", HTTPAddr: "127.0.0.1:7070", RaftAddr: "127.0.0.1:7071", State: "alive", Shards: 2, Leaders: 1},
			{ID: "n2", HTTPAddr: "127.0.0.1:7080", RaftAddr: "127.0.0.1:7081", State: "suspect", Shards: 1, Leaders: 1},
		},
		Shards: []ShardStatus{
			{ID: 1, Start: "", End: "m", Epoch: 2, Replicas: []string{"n1", "n2"}, Leader: "n1", SizeBytes: 1536, AppliedIndex: 42},
			{ID: 7, Start: "m", End: "", Epoch: 2, Replicas: []string{"n1"}},
		},
		PlacementLeader: "n1",
	}
	if !reflect.DeepEqual(st, want) {
		t.Errorf("status =\n%+v\nwant\n%+v", st, want)
	}
	if got := s.requests(); len(got) != 1 || got[0] != (stubRequest{"GET", "/v1/cluster", ""}) {
		t.Errorf("requests = %+v", got)
	}
}

func TestClusterOperationRequests(t *testing.T) {
	const splitJSON = `{"parent":{"id":1,"start":"","end":"m","epoch":3,"replicas":["n1","n2","n3"]},` +
		`"child":{"id":9,"start":"m","end":"","epoch":3,"replicas":["n1","n2","n3"]}}`
	cases := []struct {
		name  string
		reply stubReply
		call  func(*Client) error
		want  stubRequest
	}{
		{"split at key", ok(splitJSON), func(c *Client) error {
			res, err := c.SplitShard(ctxT(t), 1, "m")
			if err == nil && (res.Parent.ID != 1 || res.Child.ID != 9 || res.Child.Start != "m" || res.Parent.Epoch != 3 || len(res.Child.Replicas) != 3) {
				t.Errorf("split result = %+v", res)
			}
			return err
		}, stubRequest{"POST", "/v1/cluster/shards/1/split", `{"key":"m"}`}},
		{"split at an epoch", ok(splitJSON), func(c *Client) error {
			_, err := c.SplitShardAtEpoch(ctxT(t), 1, "m", 3)
			return err
		}, stubRequest{"POST", "/v1/cluster/shards/1/split", `{"key":"m","epoch":3}`}},
		{"split at the middle omits key", ok(splitJSON), func(c *Client) error {
			_, err := c.SplitShard(ctxT(t), 18446744073709551615, "")
			return err
		}, stubRequest{"POST", "/v1/cluster/shards/18446744073709551615/split", `{}`}},
		{"transfer leader", ok(`{"shard":4,"leader":"n3"}`), func(c *Client) error {
			return c.TransferLeader(ctxT(t), 4, "n3")
		}, stubRequest{"POST", "/v1/cluster/shards/4/transfer-leader", `{"to":"n3"}`}},
		{"drain", ok(`{"node":"n2","draining":true,"removed":false}`), func(c *Client) error {
			return c.DrainNode(ctxT(t), "n2")
		}, stubRequest{"POST", "/v1/cluster/nodes/n2/drain", ""}},
		{"drain escapes the node id", ok(`{}`), func(c *Client) error {
			return c.DrainNode(ctxT(t), "a/b c")
		}, stubRequest{"POST", "/v1/cluster/nodes/a%2Fb%20c/drain", ""}},
		{"remove", ok(`{"node":"n2","draining":true,"removed":true}`), func(c *Client) error {
			return c.RemoveNode(ctxT(t), "n2")
		}, stubRequest{"DELETE", "/v1/cluster/nodes/n2", ""}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newClusterStub(t, tc.reply)
			c := mustClient(t, []string{s.addr()})
			if err := tc.call(c); err != nil {
				t.Fatal(err)
			}
			if got := s.requests(); len(got) != 1 || got[0] != tc.want {
				t.Errorf("requests = %+v, want [%+v]", got, tc.want)
			}
		})
	}
}

func TestClusterOperationErrors(t *testing.T) {
	unavailable := apiError(http.StatusServiceUnavailable, CodeUnavailable, true)
	cases := []struct {
		name     string
		replies  []stubReply
		call     func(*Client) error
		want     error // nil: success
		requests int
	}{
		{"remove a live node with replicas", []stubReply{apiError(http.StatusConflict, CodeConditionFailed, false)},
			func(c *Client) error { return c.RemoveNode(ctxT(t), "n1") }, ErrConditionFailed, 1},
		{"split unknown shard", []stubReply{apiError(http.StatusNotFound, CodeNotFound, false)},
			func(c *Client) error { _, err := c.SplitShard(ctxT(t), 99, ""); return err }, ErrNotFound, 1},
		{"split at a stale epoch", []stubReply{apiError(http.StatusConflict, CodeConditionFailed, false)},
			func(c *Client) error { _, err := c.SplitShardAtEpoch(ctxT(t), 2, "", 3); return err }, ErrConditionFailed, 1},
		{"split key outside the range", []stubReply{apiError(http.StatusBadRequest, CodeInvalidArgument, false)},
			func(c *Client) error { _, err := c.SplitShard(ctxT(t), 1, "zz"); return err }, ErrInvalidArgument, 1},
		// 503 means nothing was applied, so even a write without a request id is retried.
		{"split retried after unavailable", []stubReply{unavailable, unavailable, ok(`{"parent":{"id":1},"child":{"id":2}}`)},
			func(c *Client) error { _, err := c.SplitShard(ctxT(t), 1, ""); return err }, nil, 3},
		{"status retried after unavailable", []stubReply{unavailable, ok(clusterJSON)},
			func(c *Client) error { _, err := c.Cluster(ctxT(t)); return err }, nil, 2},
		// Invariant I7's other half: a write without a request id whose
		// outcome is unknown is reported, never sent again.
		{"transfer timed out", []stubReply{apiError(http.StatusGatewayTimeout, CodeOutcomeUnknown, true), ok(`{}`)},
			func(c *Client) error { return c.TransferLeader(ctxT(t), 1, "n2") }, ErrOutcomeUnknown, 1},
		{"drain cut off after sending", []stubReply{{hangUp: true}, ok(`{}`)},
			func(c *Client) error { return c.DrainNode(ctxT(t), "n2") }, ErrOutcomeUnknown, 1},
		{"split with a 500", []stubReply{{status: http.StatusInternalServerError, body: "boom"}, ok(`{}`)},
			func(c *Client) error { _, err := c.SplitShard(ctxT(t), 1, ""); return err }, ErrOutcomeUnknown, 1},
		{"status cut off is read again", []stubReply{{hangUp: true}, ok(clusterJSON)},
			func(c *Client) error { _, err := c.Cluster(ctxT(t)); return err }, nil, 2},
		{"empty target node", nil,
			func(c *Client) error { return c.TransferLeader(ctxT(t), 1, "") }, ErrInvalidArgument, 0},
		{"empty drain node", nil,
			func(c *Client) error { return c.DrainNode(ctxT(t), "") }, ErrInvalidArgument, 0},
		{"empty remove node", nil,
			func(c *Client) error { return c.RemoveNode(ctxT(t), "") }, ErrInvalidArgument, 0},
		{"split key not UTF-8", nil,
			func(c *Client) error { _, err := c.SplitShard(ctxT(t), 1, "\xff"); return err }, ErrInvalidArgument, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newClusterStub(t, append(tc.replies, ok(`{}`))...)
			c := mustClient(t, []string{s.addr()})
			err := tc.call(c)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("err = %v, want success", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if n := len(s.requests()); n != tc.requests {
				t.Errorf("requests = %d, want %d", n, tc.requests)
			}
		})
	}
}

func TestClusterUnreachable(t *testing.T) {
	c := mustClient(t, []string{deadAddr(t)}, noRetries)
	_, err := c.Cluster(ctxT(t))
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("status: err = %v, want unreachable", err)
	}
	// Nothing was sent, so a write without a request id is unreachable too,
	// not of unknown outcome.
	if err := c.DrainNode(ctxT(t), "n1"); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("drain: err = %v, want unreachable", err)
	}
}
