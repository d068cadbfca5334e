package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/lock"
	"github.com/cairndb/cairn/shard"
)

// TestErrorStatus checks the one table from error to HTTP status and code
// (docs/api.md, "Conventions"), for each error the server can produce today, bare and
// wrapped on the way up with %w.
func TestErrorStatus(t *testing.T) {
	dialErr := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	readErr := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	tests := []struct {
		name      string
		err       error
		status    int
		code      string
		retryable bool
	}{
		{"invalid argument", invalidf("bad ttl %q", "x"), 400, "invalid_argument", false},
		{"fsm invalid command", fmt.Errorf("%w: key size 0", fsm.ErrInvalidCommand), 400, "invalid_argument", false},
		{"not found", errNotFound, 404, "not_found", false},
		{"not found, key message", fmt.Errorf("key %q: %w", "a", errNotFound), 404, "not_found", false},
		{"condition failed", &fsm.ConditionError{Key: []byte("a")}, 409, "condition_failed", false},
		{"condition failed with current", &fsm.ConditionError{Key: []byte("a"), Current: &fsm.KV{Key: []byte("a"), ModIndex: 7}},
			409, "condition_failed", false},
		{"stale token", &fsm.StaleTokenError{Key: []byte("a"), Lock: "l", Token: 3, Accepted: 4}, 409, "stale_token", false},
		{"lock held", &lock.Error{Code: lock.CodeLockHeld, Msg: "held", Owner: "w", Token: 4}, 409, "lock_held", false},
		{"lock lost", &lock.Error{Code: lock.CodeLockLost, Msg: "lost"}, 410, "lock_lost", false},
		{"lock invalid argument", &lock.Error{Code: lock.CodeInvalidArgument, Msg: "limit"}, 400, "invalid_argument", false},
		{"lock held from another node", cluster.ErrLockHeld, 409, "lock_held", false},
		{"lock lost from another node", cluster.ErrLockLost, 410, "lock_lost", false},
		{"too large", errTooLarge, 413, "too_large", false},
		{"too large, value limit", fmt.Errorf("%w: value is %d bytes", errTooLarge, fsm.MaxValueSize+1), 413, "too_large", false},
		{"max bytes error", &http.MaxBytesError{Limit: 10}, 413, "too_large", false},
		{"method not allowed", fmt.Errorf("%w: PATCH /v1/kv/x", errMethod), 405, "method_not_allowed", false},
		{"outcome unknown", shard.ErrOutcomeUnknown, 504, "outcome_unknown", true},
		// Propose wraps the context's error next to ErrOutcomeUnknown: the
		// outcome row must win over the deadline's unavailable row.
		{"outcome unknown with deadline", fmt.Errorf("shard 1: %w: %w", shard.ErrOutcomeUnknown, context.DeadlineExceeded),
			504, "outcome_unknown", true},
		{"forward failed", errForwardFailed, 504, "outcome_unknown", true},
		{"forward failed after connect", fmt.Errorf("forward to n2: %w: %w", errForwardFailed, readErr), 504, "outcome_unknown", true},
		// An internal routing outcome: the client may simply retry.
		{"wrong shard", &fsm.WrongShardError{Key: []byte("z"), Range: fsm.Range{ID: 2, Start: []byte("a"), End: []byte("m")}},
			503, "unavailable", true},
		{"not leader", &shard.NotLeaderError{Group: 1, LeaderID: "n2"}, 503, "unavailable", true},
		{"shard unavailable", shard.ErrUnavailable, 503, "unavailable", true},
		{"replica has no state yet", fmt.Errorf("shard 2: %w", shard.ErrNoState), 503, "unavailable", true},
		{"replica too stale", fmt.Errorf("shard 1: lagging: %w", shard.ErrTooStale), 503, "unavailable", true},
		{"no leader, context canceled", fmt.Errorf("shard 1 has no leader: %w: %w", shard.ErrUnavailable, context.Canceled),
			503, "unavailable", true},
		{"not ready", errNotReady, 503, "unavailable", true},
		// Another node can serve it: its raft log works.
		{"unhealthy", fmt.Errorf("%w: %w", errUnhealthy, shard.ErrLogFailed), 503, "unavailable", true},
		{"too many hops", errTooManyHops, 503, "unavailable", true},
		{"no route", fmt.Errorf("shard 3: %w", errNoRoute), 503, "unavailable", true},
		{"peer unreachable", fmt.Errorf("forward to n2: %w: %w", errPeerUnreachable, dialErr), 503, "unavailable", true},
		{"propose deadline before apply", fmt.Errorf("shard 1: %w", context.DeadlineExceeded), 503, "unavailable", true},
		{"unknown", errors.New("boom"), 500, "internal", false},
		{"unknown io error", io.ErrUnexpectedEOF, 500, "internal", false},
	}
	for _, tt := range tests {
		for _, wrapped := range []bool{false, true} {
			name, err := tt.name, tt.err
			if wrapped {
				name, err = name+"/wrapped", fmt.Errorf("put %q: %w", "k", tt.err)
			}
			t.Run(name, func(t *testing.T) {
				status, code, retryable := errorStatus(err)
				if status != tt.status || code != tt.code || retryable != tt.retryable {
					t.Errorf("errorStatus(%v) = %d %s %v; want %d %s %v",
						err, status, code, retryable, tt.status, tt.code, tt.retryable)
				}
			})
		}
	}
}

// TestRemoteErrorKeepsCode checks that another node's error answer, turned
// back into an error by cluster.Decode, maps to the code the remote sent (or to
// unavailable for codes a scan part cannot carry back).
func TestRemoteErrorKeepsCode(t *testing.T) {
	tests := []struct {
		code      string
		wantCode  string
		retryable bool
	}{
		{"invalid_argument", "invalid_argument", false},
		{"not_found", "not_found", false},
		{"outcome_unknown", "outcome_unknown", true},
		{"unavailable", "unavailable", true},
		{"internal", "internal", false},
		{"lock_held", "lock_held", false},
		{"lock_lost", "lock_lost", false},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			err := cluster.Decode(599, cluster.ErrorDetail{Code: tt.code, Message: "remote says no"})
			_, code, retryable := errorStatus(err)
			if code != tt.wantCode || retryable != tt.retryable {
				t.Errorf("remote %s -> %s retryable=%v; want %s retryable=%v", tt.code, code, retryable, tt.wantCode, tt.retryable)
			}
			if !strings.Contains(err.Error(), "remote says no") {
				t.Errorf("message %q lost the remote's message", err)
			}
		})
	}
}

// TestWriteError checks the envelope of docs/api.md:
// {"error":{"code","message","retryable"}}, plus "current" for a failed
// condition on a key that exists.
func TestWriteError(t *testing.T) {
	cur := &fsm.KV{Key: []byte("a"), Value: []byte("1"), CreateIndex: 12, ModIndex: 15, Version: 2}
	binary := &fsm.KV{Key: []byte("b"), Value: []byte{0xff, 0x00}, CreateIndex: 3, ModIndex: 4, Version: 1}
	tests := []struct {
		name        string
		err         error
		status      int
		code        string
		retryable   bool
		wantCurrent map[string]any // nil: no "current" field
	}{
		{"not found", fmt.Errorf("key %q: %w", "a", errNotFound), 404, "not_found", false, nil},
		{"unavailable", shard.ErrUnavailable, 503, "unavailable", true, nil},
		{"condition, key absent", &fsm.ConditionError{Key: []byte("a")}, 409, "condition_failed", false, nil},
		{"condition, current", &fsm.ConditionError{Key: []byte("a"), Current: cur}, 409, "condition_failed", false,
			map[string]any{"key": "a", "value": "1", "create_index": 12.0, "mod_index": 15.0, "version": 2.0, "lease": ""}},
		{"condition wrapped, current", fmt.Errorf("shard 1: %w", &fsm.ConditionError{Key: []byte("a"), Current: cur}),
			409, "condition_failed", false,
			map[string]any{"key": "a", "value": "1", "create_index": 12.0, "mod_index": 15.0, "version": 2.0, "lease": ""}},
		{"lock held names the holder", &lock.Error{Code: lock.CodeLockHeld, Msg: "lock \"a\" is not available", Owner: "w1", Token: 9},
			409, "lock_held", false, nil},
		{"condition, binary current", &fsm.ConditionError{Key: []byte("b"), Current: binary}, 409, "condition_failed", false,
			map[string]any{"key": "b", "value_base64": "/wA=", "create_index": 3.0, "mod_index": 4.0, "version": 1.0, "lease": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			writeError(w, tt.err)
			if w.Code != tt.status {
				t.Errorf("status %d; want %d", w.Code, tt.status)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q; want application/json", ct)
			}
			detail := decodeEnvelope(t, w.Body.Bytes())
			if detail["code"] != tt.code || detail["retryable"] != tt.retryable || detail["message"] != tt.err.Error() {
				t.Errorf("error = %v; want code %s retryable %v message %q", detail, tt.code, tt.retryable, tt.err.Error())
			}
			cur, hasCurrent := detail["current"]
			switch {
			case tt.wantCurrent == nil && hasCurrent:
				t.Errorf("unexpected current %v", cur)
			case tt.wantCurrent != nil && !jsonEqual(cur, tt.wantCurrent):
				t.Errorf("current = %v; want %v", cur, tt.wantCurrent)
			}
		})
	}
}

// decodeEnvelope decodes an error body and checks it has exactly the fields
// of docs/api.md's envelope; it returns the inner "error" object.
func decodeEnvelope(t *testing.T, body []byte) map[string]any {
	t.Helper()
	var env map[string]any
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	if len(env) != 1 {
		t.Fatalf("envelope %v: want exactly one top-level field \"error\"", env)
	}
	detail, ok := env["error"].(map[string]any)
	if !ok {
		t.Fatalf("envelope %v: \"error\" is not an object", env)
	}
	for _, f := range []string{"code", "message", "retryable"} {
		if _, ok := detail[f]; !ok {
			t.Errorf("envelope %v lacks error.%s", env, f)
		}
	}
	for f := range detail {
		switch f {
		case "code", "message", "retryable", "current", "holder":
		default:
			t.Errorf("envelope %v has unexpected field error.%s", env, f)
		}
	}
	return detail
}

func jsonEqual(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

// TestWriteErrorLockHeldNamesHolder: a lock_held answer names the holder's
// owner and token (docs/api.md's error table), also when it is passed on
// from another node; a lock_held without a holder (free but delayed, or
// waiters ahead) has none.
func TestWriteErrorLockHeldNamesHolder(t *testing.T) {
	held := &lock.Error{Code: lock.CodeLockHeld, Msg: `lock "a" is not available`, Owner: "w1", Token: 9}
	w := httptest.NewRecorder()
	writeError(w, fmt.Errorf("shard 1: %w", held))
	d := decodeEnvelope(t, w.Body.Bytes())
	if want := map[string]any{"owner": "w1", "token": 9.0}; !jsonEqual(d["holder"], want) {
		t.Errorf("holder %v; want %v", d["holder"], want)
	}
	if d["message"] != `shard 1: lock "a" is not available` {
		t.Errorf("message %q: the code is the envelope's, not repeated in the message", d["message"])
	}
	w2 := httptest.NewRecorder()
	writeError(w2, cluster.DecodeResponse(w.Result()))
	if d2 := decodeEnvelope(t, w2.Body.Bytes()); !jsonEqual(d2["holder"], d["holder"]) || d2["code"] != "lock_held" {
		t.Errorf("passed on as %v; want %v", d2, d)
	}
	w3 := httptest.NewRecorder()
	writeError(w3, &lock.Error{Code: lock.CodeLockHeld, Msg: "delayed"})
	if d3 := decodeEnvelope(t, w3.Body.Bytes()); d3["holder"] != nil {
		t.Errorf("holder %v on a lock_held without one", d3["holder"])
	}
}
