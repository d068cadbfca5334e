package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/cairndb/cairn/client"
)

// runCluster runs "cairn ARGS..." with only the global flags and the cluster
// command, prints a returned error the way main does, and returns the exit
// code.
func runCluster(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCommand(newClusterCmd, args...)
}

const stubClusterJSON = `{"nodes":[
  {"id":"n2","http_addr":"127.0.0.1:7080","raft_addr":"127.0.0.1:7081","state":"suspect","shards":1,"leaders":0,"level":0},
  {"id":"n1","http_addr":"127.0.0.1:7070","raft_addr":"127.0.0.1:7071","state":"alive","shards":2,"leaders":2,"level":1}],
 "shards":[
  {"id":7,"start":"m","end":"","epoch":3,"replicas":["n1"],"leader":"","size_bytes":0,"applied_index":0},
  {"id":1,"start":"","end":"m","epoch":3,"replicas":["n1","n2"],"leader":"n1","size_bytes":1572864,"applied_index":42}],
 "placement_leader":"n1","level":0}`

// clusterStub serves the cluster endpoints of docs/api.md with canned answers
// and records "METHOD PATH BODY" of each request.
type clusterStub struct {
	mu   sync.Mutex
	seen []string
}

func newClusterStub(t *testing.T) (*clusterStub, string) {
	t.Helper()
	s := &clusterStub{}
	mux := http.NewServeMux()
	answer := func(status int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			s.mu.Lock()
			path := r.URL.EscapedPath()
			if r.URL.RawQuery != "" {
				path += "?" + r.URL.RawQuery
			}
			s.seen = append(s.seen, strings.TrimSpace(r.Method+" "+path+" "+string(b)))
			s.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, body)
		}
	}
	mux.Handle("GET /v1/cluster", answer(200, stubClusterJSON))
	mux.Handle("POST /v1/cluster/shards/1/split", answer(200,
		`{"parent":{"id":1,"start":"","end":"g","epoch":4,"replicas":["n1","n2"]},"child":{"id":8,"start":"g","end":"m","epoch":4,"replicas":["n1","n2"]}}`))
	mux.Handle("POST /v1/cluster/shards/2/split", answer(409,
		`{"error":{"code":"condition_failed","message":"range 2 is at epoch 5, not 3: it changed since","retryable":false}}`))
	mux.Handle("POST /v1/cluster/shards/99/split", answer(404,
		`{"error":{"code":"not_found","message":"shard 99: not found","retryable":false}}`))
	mux.Handle("POST /v1/cluster/shards/1/transfer-leader", answer(200, `{"shard":1,"leader":"n2"}`))
	mux.Handle("POST /v1/cluster/nodes/n2/drain", answer(200, `{"node":"n2","draining":true,"removed":false}`))
	mux.Handle("DELETE /v1/cluster/nodes/n2", answer(200, `{"node":"n2","draining":true,"removed":true}`))
	mux.Handle("DELETE /v1/cluster/nodes/n1", answer(409,
		`{"error":{"code":"condition_failed","message":"node n1 is alive and still holds replicas; drain it first","retryable":false}}`))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return s, "--endpoints=" + srv.Listener.Addr().String()
}

func (s *clusterStub) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

// cells splits a space-aligned table into rows of cells.
func cells(table string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(strings.TrimRight(table, "\n"), "\n") {
		rows = append(rows, strings.Fields(line))
	}
	return rows
}

func TestClusterStatusTable(t *testing.T) {
	_, ep := newClusterStub(t)
	out, errOut, code := runCluster(t, "cluster", "status", ep)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := [][]string{
		{"ID", "HTTP", "STATE", "SHARDS", "LEADERS", "LEVEL"},
		{"n1*", "127.0.0.1:7070", "alive", "2", "2", "1"},
		{"n2", "127.0.0.1:7080", "suspect", "1", "0", "0"},
		{"*", "placement", "leader"},
		{"command", "level:", "0", "(LEVEL:", "each", "node's", "binary)"},
		{},
		{"ID", "START", "END", "EPOCH", "REPLICAS", "LEADER", "SIZE", "APPLIED"},
		{"1", "-inf", "m", "3", "n1,n2", "n1", "1.5MiB", "42"},
		{"7", "m", "+inf", "3", "n1", "-", "0B", "0"},
	}
	got := cells(out)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("status table:\n%s\nwant rows %q", out, want)
	}
	// Columns are aligned: every shard row starts its SIZE where the header does.
	lines := strings.Split(out, "\n")
	col := strings.Index(lines[6], "SIZE")
	for _, l := range lines[7:9] {
		if col < 0 || len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("SIZE column not aligned at %d in %q", col, l)
		}
	}
}

// --local asks the node for its own view instead of the placement leader's.
func TestClusterStatusLocal(t *testing.T) {
	s, ep := newClusterStub(t)
	if _, errOut, code := runCluster(t, "cluster", "status", ep); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if _, errOut, code := runCluster(t, "cluster", "status", "--local", ep); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if got := s.requests(); len(got) != 2 || got[0] != "GET /v1/cluster" || got[1] != "GET /v1/cluster?local=true" {
		t.Fatalf("requests %q", got)
	}
}

func TestClusterStatusJSON(t *testing.T) {
	_, ep := newClusterStub(t)
	out, errOut, code := runCluster(t, "cluster", "status", "-o", "json", ep)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var st client.ClusterStatus
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(st.Nodes) != 2 || len(st.Shards) != 2 || st.PlacementLeader != "n1" ||
		st.Shards[1].SizeBytes != 1572864 || st.Nodes[1].RaftAddr != "127.0.0.1:7071" {
		t.Errorf("status = %+v", st)
	}
	for _, field := range []string{`"http_addr"`, `"raft_addr"`, `"size_bytes"`, `"applied_index"`, `"placement_leader"`} {
		if !strings.Contains(out, field) {
			t.Errorf("json output lacks %s: %s", field, out)
		}
	}
}

func TestClusterCommands(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		code    int
		stdout  string // regexp stdout must match, unless empty
		inErr   string // substring of stderr
		request string // the one request the stub must have seen; "" for none
	}{
		{"split at key", []string{"cluster", "split", "1", "g"}, 0,
			`(?m)^parent\s+1\s+-inf\s+g\s+4\s+n1,n2\n^child\s+8\s+g\s+m\s+4\s+n1,n2\n$`, "",
			`POST /v1/cluster/shards/1/split {"key":"g"}`},
		{"split at the middle", []string{"cluster", "split", "1", "-o", "json"}, 0,
			`^\{"parent":\{"id":1,.*"child":\{"id":8,"start":"g","end":"m","epoch":4,"replicas":\["n1","n2"\]\}\}\n$`, "",
			`POST /v1/cluster/shards/1/split {}`},
		{"split unknown shard", []string{"cluster", "split", "99"}, 1, "", "error: not_found: shard 99",
			`POST /v1/cluster/shards/99/split {}`},
		{"split at epoch", []string{"cluster", "split", "1", "g", "--epoch", "3"}, 0,
			`(?m)^parent\s+1\s+-inf\s+g\s+4\s+n1,n2\n`, "",
			`POST /v1/cluster/shards/1/split {"key":"g","epoch":3}`},
		{"split at the middle at epoch", []string{"cluster", "split", "1", "--epoch=3", "-o", "json"}, 0, `"child"`, "",
			`POST /v1/cluster/shards/1/split {"epoch":3}`},
		{"split at a stale epoch", []string{"cluster", "split", "2", "--epoch", "3"}, 1, "", "error: condition_failed: range 2 is at epoch 5",
			`POST /v1/cluster/shards/2/split {"epoch":3}`},
		{"transfer leader", []string{"cluster", "transfer-leader", "1", "n2"}, 0, `^shard 1: leader is now n2\n$`, "",
			`POST /v1/cluster/shards/1/transfer-leader {"to":"n2"}`},
		{"transfer leader json", []string{"cluster", "transfer-leader", "1", "n2", "-o", "json"}, 0,
			`^\{"shard":1,"leader":"n2"\}\n$`, "", `POST /v1/cluster/shards/1/transfer-leader {"to":"n2"}`},
		{"drain", []string{"cluster", "drain", "n2"}, 0, `^node n2: draining`, "", `POST /v1/cluster/nodes/n2/drain`},
		{"drain json", []string{"cluster", "drain", "n2", "-o", "json"}, 0,
			`^\{"node":"n2","draining":true,"removed":false\}\n$`, "", `POST /v1/cluster/nodes/n2/drain`},
		{"remove", []string{"cluster", "remove", "n2", "-o", "json"}, 0,
			`^\{"node":"n2","draining":true,"removed":true\}\n$`, "", `DELETE /v1/cluster/nodes/n2`},
		{"remove a live node fails", []string{"cluster", "remove", "n1"}, 1, "",
			"error: condition_failed: node n1 is alive", `DELETE /v1/cluster/nodes/n1`},

		{"cluster alone", []string{"cluster"}, 2, "", "missing subcommand", ""},
		{"cluster unknown", []string{"cluster", "frob"}, 2, "", "unknown command", ""},
		{"status with arg", []string{"cluster", "status", "x"}, 2, "", "Usage:", ""},
		{"split no shard", []string{"cluster", "split"}, 2, "", "Usage:", ""},
		{"split too many", []string{"cluster", "split", "1", "a", "b"}, 2, "", "accepts between 1 and 2 arg(s)", ""},
		{"split bad shard", []string{"cluster", "split", "one"}, 2, "", "SHARD must be a shard id", ""},
		{"split negative shard", []string{"cluster", "split", "--", "-1"}, 2, "", "SHARD must be a shard id", ""},
		{"split empty key", []string{"cluster", "split", "1", ""}, 2, "", "KEY must not be empty", ""},
		{"split bad epoch", []string{"cluster", "split", "1", "--epoch", "-1"}, 2, "", "invalid argument \"-1\" for \"--epoch\"", ""},
		{"transfer one arg", []string{"cluster", "transfer-leader", "1"}, 2, "", "accepts 2 arg(s)", ""},
		{"transfer empty node", []string{"cluster", "transfer-leader", "1", " "}, 2, "", "NODE must be a node id", ""},
		{"drain no node", []string{"cluster", "drain"}, 2, "", "accepts 1 arg(s)", ""},
		{"remove empty node", []string{"cluster", "remove", ""}, 2, "", "NODE must be a node id", ""},
		{"unknown flag", []string{"cluster", "status", "--bogus"}, 2, "", "unknown flag", ""},
		{"bad output", []string{"cluster", "status", "-o", "yaml"}, 2, "", "table or json", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stub, ep := newClusterStub(t)
			out, errOut, code := runCluster(t, append(tc.args, ep)...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if tc.stdout != "" && !regexp.MustCompile(tc.stdout).MatchString(out) {
				t.Errorf("stdout %q does not match %s", out, tc.stdout)
			}
			if !strings.Contains(errOut, tc.inErr) {
				t.Errorf("stderr %q does not contain %q", errOut, tc.inErr)
			}
			if tc.code != 0 && out != "" {
				t.Errorf("failed command wrote to stdout: %q", out)
			}
			var want []string
			if tc.request != "" {
				want = []string{tc.request}
			}
			if got := stub.requests(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("requests = %q, want %q", got, want)
			}
		})
	}
}

func TestClusterUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	for _, args := range [][]string{
		{"cluster", "status"},
		{"cluster", "split", "1", "m"}, // nothing was sent: unreachable, not outcome unknown
		{"cluster", "drain", "n2", "-o", "json"},
	} {
		out, errOut, code := runCluster(t, append(args, "--endpoints", addr, "--timeout", "5s")...)
		if code != 3 || out != "" || !strings.Contains(errOut, "error: unreachable: ") {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
}

func TestClusterTableEdgeCases(t *testing.T) {
	var buf bytes.Buffer
	st := &client.ClusterStatus{
		Nodes:  []client.NodeStatus{{ID: "n1"}},
		Shards: []client.ShardStatus{{ID: 3, Start: "-inf", End: "a b\n", SizeBytes: 5 << 30}},
	}
	if err := writeClusterTables(&buf, st); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"placement leader: unknown", `"-inf"`, `"a b\n"`, "5GiB", "n1  -"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	st.PlacementLeader = "n9"
	buf.Reset()
	_ = writeClusterTables(&buf, st)
	if !strings.Contains(buf.String(), "placement leader: n9 (not in the node list)") {
		t.Errorf("unlisted placement leader:\n%s", buf.String())
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0B", 1023: "1023B", 1024: "1KiB", 1536: "1.5KiB", 64 << 20: "64MiB",
		1<<20 - 1: "1MiB", 3 << 40: "3TiB", 1<<63 - 1: "8EiB",
	} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
