package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTxnCommand: cairn txn -f FILE sends the file's transaction with a
// request id added, prints the branch and results, and exits 1 when the
// failure branch ran; bad usage exits 2.
func TestTxnCommand(t *testing.T) {
	var got map[string]json.RawMessage
	succeeded := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/txn" {
			http.NotFound(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &got)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"succeeded": succeeded, "shards": []int{1, 4}, "id": "tx1",
			"results": []map[string]any{{"op": "get", "key": "a", "found": true, "value": "10", "mod_index": 3, "version": 1},
				{"op": "put", "key": "b", "mod_index": 9, "version": 2}}})
	}))
	t.Cleanup(srv.Close)
	ep := "--endpoints=" + strings.TrimPrefix(srv.URL, "http://")
	file := filepath.Join(t.TempDir(), "t.json")
	if err := os.WriteFile(file, []byte(`{"success":[{"op":"get","key":"a"},{"op":"put","key":"b","value":"1"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCommand(newTxnCmd, ep, "txn", "-f", file)
	if code != 0 || !strings.Contains(out, "branch: success") || !strings.Contains(out, `get a: "10"`) ||
		!strings.Contains(out, "put b: mod_index=9") || !strings.Contains(out, "id: tx1") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	if len(got["request_id"]) < 3 || len(got["success"]) == 0 {
		t.Fatalf("sent %v: want the file's transaction with a request id", got)
	}
	succeeded = false
	if _, _, code := runCommand(newTxnCmd, ep, "txn", "-f", file, "-o", "json"); code != 1 {
		t.Fatalf("failure branch: exit %d, want 1", code)
	}
	for _, args := range [][]string{{"txn"}, {"txn", "-f", filepath.Join(t.TempDir(), "missing")}, {"txn", "inspect"}} {
		if _, _, code := runCommand(newTxnCmd, append([]string{ep}, args...)...); code != 2 {
			t.Fatalf("%v: exit %d, want 2", args, code)
		}
	}
}
