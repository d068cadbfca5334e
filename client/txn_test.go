package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestTxnBuilder: the builder sends docs/api.md's body (compares with typed
// values, both branches, ttl and fence, one request id reused by a retry of
// the same Txn), and decodes typed results and errors.
func TestTxnBuilder(t *testing.T) {
	var bodies []map[string]any
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		bodies = append(bodies, m)
		w.Header().Set("Content-Type", "application/json")
		if status != http.StatusOK {
			w.WriteHeader(status)
			_, _ = io.WriteString(w, `{"error":{"code":"txn_aborted","message":"pushed","retryable":false}}`)
			return
		}
		_, _ = io.WriteString(w, `{"succeeded":true,"shards":[1,2],"id":"t1","results":[
			{"op":"get","key":"a","found":true,"value":"10","create_index":1,"mod_index":2,"version":3},
			{"op":"get","key":"x","found":false},
			{"op":"put","key":"b","mod_index":9,"version":2,"create_index":4},
			{"op":"delete","key":"c","deleted":1}]}`)
	}))
	t.Cleanup(srv.Close)
	c := mustClient(t, []string{strings.TrimPrefix(srv.URL, "http://")}, func(cfg *Config) { cfg.DisableRouting = true })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tx := c.Txn().If(Compare("a", TargetValue, ">=", 10), Compare("b", TargetExists, "==", false),
		Compare("a", TargetModIndex, "<", uint64(7))).
		Then(OpGet("a"), OpGet("x"), OpPut("b", "v", TxnTTL(time.Minute), TxnFence("L", 4)), OpDelete("c")).
		Else(OpGet("a"))
	res, err := tx.Commit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Succeeded || res.ID != "t1" || len(res.Results) != 4 || res.Results[0].KV == nil ||
		res.Results[0].KV.Value != "10" || res.Results[1].Found || res.Results[2].ModIndex != 9 || res.Results[3].Deleted != 1 {
		t.Fatalf("decoded %+v", res)
	}
	b := bodies[0]
	cmp := b["compare"].([]any)
	if cmp[0].(map[string]any)["value"] != "10" || cmp[1].(map[string]any)["value"] != "false" || cmp[2].(map[string]any)["value"] != "7" {
		t.Fatalf("compares sent %v", cmp)
	}
	put := b["success"].([]any)[2].(map[string]any)
	if put["ttl"] != "1m0s" || put["fence"].(map[string]any)["token"] != 4.0 || b["request_id"] == "" {
		t.Fatalf("body sent %v", b)
	}
	if _, err := tx.Commit(ctx); err != nil || bodies[1]["request_id"] != b["request_id"] {
		t.Fatalf("a second Commit of the same Txn must reuse its request id: %v", err)
	}
	status = http.StatusConflict
	if _, err := c.Txn().Then(OpPut("a", "1")).Commit(ctx); !errors.Is(err, ErrTxnAborted) {
		t.Fatalf("txn_aborted: %v", err)
	}
}

// TestTxnCommitRetry: CommitRetry runs a transaction aborted by a conflict
// again as a new one (a new request id each time: the aborted one's id
// would answer "aborted" again), up to its attempts; any other error, and
// the last attempt's abort, end it; a plain Commit never retries an abort.
func TestTxnCommitRetry(t *testing.T) {
	var ids []string
	aborts := 0 // how many answers are txn_aborted before a success
	code := "txn_aborted"
	var answer func(n int, w http.ResponseWriter) bool // when set, answers the n-th request itself
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct {
			RequestID string `json:"request_id"`
		}
		_ = json.NewDecoder(r.Body).Decode(&m)
		ids = append(ids, m.RequestID)
		w.Header().Set("Content-Type", "application/json")
		if answer != nil && answer(len(ids), w) {
			return
		}
		if len(ids) <= aborts {
			w.WriteHeader(http.StatusConflict)
			_, _ = io.WriteString(w, `{"error":{"code":"`+code+`","message":"no","retryable":false}}`)
			return
		}
		_, _ = io.WriteString(w, `{"succeeded":true,"shards":[1,2],"id":"t1"}`)
	}))
	t.Cleanup(srv.Close)
	c := mustClient(t, []string{strings.TrimPrefix(srv.URL, "http://")}, func(cfg *Config) {
		cfg.DisableRouting = true
		cfg.BackoffMin, cfg.BackoffMax = time.Millisecond, 2*time.Millisecond
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	distinct := func() bool {
		seen := map[string]bool{}
		for _, id := range ids {
			if id == "" || seen[id] {
				return false
			}
			seen[id] = true
		}
		return true
	}

	aborts = 2
	tx := c.Txn().Then(OpPut("a", "1"), OpPut("z", "1")).WithRequestID("app-7")
	res, err := tx.CommitRetry(ctx, 5)
	if err != nil || !res.Succeeded || len(ids) != 3 || !distinct() {
		t.Fatalf("two aborts then a commit: %+v %v, request ids %q", res, err, ids)
	}
	// Each attempt's id derives from the first, which the caller chose.
	if ids[0] != "app-7" || ids[1] != "app-7/2" || ids[2] != "app-7/3" || tx.RequestID() != "app-7/3" {
		t.Fatalf("request ids %q, last %q", ids, tx.RequestID())
	}

	ids, aborts = nil, 10
	if _, err := c.Txn().Then(OpPut("a", "1")).CommitRetry(ctx, 3); !errors.Is(err, ErrTxnAborted) || len(ids) != 3 || !distinct() {
		t.Fatalf("aborted every time: %v after %d attempts (want 3), request ids %q", err, len(ids), ids)
	}

	ids = nil
	if _, err := c.Txn().Then(OpPut("a", "1")).Commit(ctx); !errors.Is(err, ErrTxnAborted) || len(ids) != 1 {
		t.Fatalf("Commit retried an abort: %v after %d attempts", err, len(ids))
	}

	// An abort answering a request id sent twice (the first send's outcome
	// was unknown) may be a replay's answer: returned, never run again.
	ids, aborts, code = nil, 2, "outcome_unknown"
	answer = func(n int, w http.ResponseWriter) bool {
		if n == 1 {
			w.WriteHeader(http.StatusGatewayTimeout)
			_, _ = io.WriteString(w, `{"error":{"code":"outcome_unknown","message":"timed out","retryable":false}}`)
			return true
		}
		w.WriteHeader(http.StatusConflict)
		_, _ = io.WriteString(w, `{"error":{"code":"txn_aborted","message":"aborted","retryable":false}}`)
		return true
	}
	if _, err := c.Txn().Then(OpPut("a", "1")).CommitRetry(ctx, 5); !errors.Is(err, ErrTxnAborted) || len(ids) != 2 || ids[0] != ids[1] {
		t.Fatalf("an abort after an unknown outcome must end it: %v after %d sends %q", err, len(ids), ids)
	}
	answer = nil

	ids, code = nil, "condition_failed"
	if _, err := c.Txn().Then(OpPut("a", "1")).CommitRetry(ctx, 5); !errors.Is(err, ErrConditionFailed) || len(ids) != 1 {
		t.Fatalf("another error must end it: %v after %d attempts", err, len(ids))
	}
}
