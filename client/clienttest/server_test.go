package clienttest

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// do sends one request and returns the status and the error code ("" for
// a success); err is a transport failure.
func do(t *testing.T, s *Server, method, target, body string) (int, string, map[string]any, error) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	code := ""
	if e, ok := out["error"].(map[string]any); ok {
		code, _ = e["code"].(string)
	}
	return resp.StatusCode, code, out, nil
}

// Each fault answers as documented and applies the write or not.
func TestFaults(t *testing.T) {
	for _, tc := range []struct {
		fault   Fault
		status  int // 0: no answer
		code    string
		applied int
	}{
		{FaultNone, 200, "", 1},
		{FaultUnavailable, 503, "unavailable", 0},
		{FaultOverloaded, 429, "overloaded", 0},
		{FaultInternal, 500, "internal", 0},
		{FaultTimeoutBeforeApply, 504, "outcome_unknown", 0},
		{FaultTimeoutAfterApply, 504, "outcome_unknown", 1},
		{FaultResetBeforeApply, 0, "", 0},
		{FaultResetAfterApply, 0, "", 1},
		{FaultHangAfterApply, 0, "", 1},
	} {
		s := NewServer()
		s.InjectFaults(tc.fault)
		status, code, _, err := do(t, s, "PUT", "/v1/kv/k", `{"value":"v","request_id":"r1"}`)
		if status != tc.status || code != tc.code || (status == 0) != (err != nil) {
			t.Errorf("fault %d: status %d code %q err %v, want %d %q", tc.fault, status, code, err, tc.status, tc.code)
		}
		if n := s.Applied("r1"); n != tc.applied {
			t.Errorf("fault %d: applied %d, want %d", tc.fault, n, tc.applied)
		}
		if v, ok := s.Value("k"); ok != (tc.applied == 1) || ok && v != "v" {
			t.Errorf("fault %d: stored %q, %v", tc.fault, v, ok)
		}
		reqs := s.Requests()
		if len(reqs) != 1 || reqs[0].Fault != tc.fault || reqs[0].RequestID != "r1" {
			t.Errorf("fault %d: recorded %+v", tc.fault, reqs)
		}
		// The next request takes no fault; a retry with the same request id
		// is answered from the dedup table, not applied again (invariant I7).
		if status, _, _, err := do(t, s, "PUT", "/v1/kv/k", `{"value":"v","request_id":"r1"}`); status != 200 || err != nil {
			t.Errorf("fault %d: the request after it: %d, %v", tc.fault, status, err)
		}
		if n := s.Applied("r1"); n != 1 {
			t.Errorf("fault %d: applied %d after the retry, want 1", tc.fault, n)
		}
		s.Close()
	}
}

// The token floor routes run on the real server: the ceiling is above the
// base, a raised floor moves the base, and a lower one does not.
func TestTokenFloor(t *testing.T) {
	s := NewServer()
	defer s.Close()
	s.Set("a", "1")
	status, _, out, err := do(t, s, "GET", "/v1/cluster/shards/1/token-ceiling", "")
	if err != nil || status != 200 || out["token_ceiling"].(float64) <= 0 {
		t.Fatalf("token ceiling: %d %v %v", status, out, err)
	}
	for _, floor := range []string{"500", "20"} {
		if status, _, _, err := do(t, s, "POST", "/v1/cluster/shards/1/token-floor", `{"floor":`+floor+`}`); err != nil || status != 200 {
			t.Fatalf("token floor %s: %d %v", floor, status, err)
		}
		if b := s.TokenBase(); b != 500 {
			t.Errorf("token base %d after floor %s, want 500", b, floor)
		}
	}
	if status, code, _, _ := do(t, s, "GET", "/v1/cluster/shards/2/token-ceiling", ""); status != 404 || code != "not_found" {
		t.Errorf("unknown shard: %d %q", status, code)
	}
}

// What a one-replica shard cannot do is refused, not faked.
func TestUnsupported(t *testing.T) {
	s := NewServer()
	defer s.Close()
	if status, code, _, _ := do(t, s, "POST", "/v1/cluster/shards/1/split", `{"key":"m"}`); status != 500 || code != "internal" {
		t.Errorf("split: %d %q", status, code)
	}
	if status, _, _, _ := do(t, s, "POST", "/v1/cluster/shards/1/transfer-leader", `{"to":"n1"}`); status != 404 {
		t.Errorf("transfer-leader (placement routes not mounted): %d", status)
	}
}

// The scan knobs rewrite the request and the page around the real server.
// Each is set before the server's first request, as Server says.
func TestScanKnobs(t *testing.T) {
	for _, tc := range []struct {
		name          string
		nextIsLastKey bool
		maxLimit      int
		n             int
		next          string
	}{
		{"the server's next is just after the last key returned", false, 0, 3, "c\x00"},
		{"next is the last key", true, 0, 3, "c"},
		{"max limit 2", false, 2, 2, "b\x00"},
	} {
		s := NewServer()
		s.NextIsLastKey, s.MaxLimit = tc.nextIsLastKey, tc.maxLimit
		for _, k := range []string{"a", "b", "c", "d"} {
			s.Set(k, "v")
		}
		_, _, out, err := do(t, s, "GET", "/v1/kv?limit=3", "")
		if err != nil {
			t.Fatal(err)
		}
		next, _ := out["next"].(string)
		kvs, _ := out["kvs"].([]any)
		if len(kvs) != tc.n || next != tc.next {
			t.Errorf("%s: page of %d, next %q; want %d, %q", tc.name, len(kvs), next, tc.n, tc.next)
		}
		if q := s.Requests()[0].Query.Get("limit"); q != "3" {
			t.Errorf("%s: recorded limit %q, want the client's 3", tc.name, q)
		}
		s.Close()
	}
}

// GET /v1/cluster describes the one node and its shard.
func TestCluster(t *testing.T) {
	s := NewServer()
	defer s.Close()
	s.Set("a", "1")
	var view struct {
		Nodes []struct {
			ID       string `json:"id"`
			HTTPAddr string `json:"http_addr"`
		} `json:"nodes"`
		Shards []struct {
			ID           uint64 `json:"id"`
			Leader       string `json:"leader"`
			AppliedIndex uint64 `json:"applied_index"`
		} `json:"shards"`
	}
	resp, err := http.Get(s.URL + "/v1/cluster")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
		t.Fatal(err)
	}
	if len(view.Nodes) != 1 || view.Nodes[0].HTTPAddr != s.Addr() || len(view.Shards) != 1 ||
		view.Shards[0].ID != 1 || view.Shards[0].Leader != "n1" || view.Shards[0].AppliedIndex != 1 {
		t.Errorf("cluster view %+v", view)
	}
}

// A session read waits for the session's index: one this store has applied
// is served, one ahead of it (a token from another server) is refused.
func TestSessionRead(t *testing.T) {
	s := NewServer()
	defer s.Close()
	s.Set("a", "1")
	for _, tc := range []struct {
		index  string
		status int
	}{{"1", 200}, {"99", 503}} {
		req, _ := http.NewRequest("GET", s.URL+"/v1/kv/a?consistency=session", nil)
		req.Header.Set("X-Cairn-Session", "s1."+base64.RawURLEncoding.EncodeToString([]byte("1:"+tc.index)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("session at index %s: %d, want %d", tc.index, resp.StatusCode, tc.status)
		}
	}
}
