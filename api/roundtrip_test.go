package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/lock"
	"github.com/cairndb/cairn/shard"
)

// TestErrorTableRoundTrip: every row of errorTable survives a trip between
// nodes. An error written by writeError on one node and decoded by
// internal/cluster on another maps to the same status, code and retryable
// flag, keeps its message, and a failed condition keeps its current value.
// Before issue 11 a remote condition_failed, stale_token, too_large or
// method_not_allowed came back as 503 unavailable: a retryable error in place
// of a definite answer.
func TestErrorTableRoundTrip(t *testing.T) {
	cur := &fsm.KV{Key: []byte("a"), Value: []byte("1"), CreateIndex: 3, ModIndex: 7, Version: 2}
	// One or more samples per row, keyed by the row's code; a row added to
	// the table without a sample here fails the test.
	samples := map[string][]error{
		"invalid_argument": {invalidf("bad ttl %q", "x"), fmt.Errorf("%w: key size 0", fsm.ErrInvalidCommand),
			&lock.Error{Code: lock.CodeInvalidArgument, Msg: "limit 2 does not match the lock's limit 1"}},
		"not_found": {fmt.Errorf("key %q: %w", "a", errNotFound)},
		"condition_failed": {&fsm.ConditionError{Key: []byte("a"), Current: cur}, &fsm.ConditionError{Key: []byte("a")},
			fmt.Errorf("%w: node n2 holds replicas", errConflict)},
		"stale_token": {&fsm.StaleTokenError{Key: []byte("a"), Lock: "l", Token: 3, Accepted: 4}},
		"lock_held": {&lock.Error{Code: lock.CodeLockHeld, Msg: "lock \"a\" is not available", Owner: "w1", Token: 9},
			&lock.Error{Code: lock.CodeLockHeld, Msg: "lock \"a\" is delayed"}},
		"lock_lost":          {&lock.Error{Code: lock.CodeLockLost, Msg: "token 3 does not hold lock \"a\""}},
		"too_large":          {errTooLarge, &http.MaxBytesError{Limit: 10}},
		"txn_aborted":        {fmt.Errorf("transaction t1 aborted (pushed): %w", errTxnAborted)},
		"method_not_allowed": {fmt.Errorf("%w: PATCH /v1/kv/x", errMethod)},
		"outcome_unknown": {shard.ErrOutcomeUnknown, errForwardFailed,
			fmt.Errorf("shard 1: %w: %w", shard.ErrOutcomeUnknown, context.DeadlineExceeded)},
		"unavailable": {shard.ErrUnavailable, &shard.NotLeaderError{Group: 1, LeaderID: "n2"}, errNotReady,
			errTooManyHops, errNoRoute, errPeerUnreachable, errRemoteUnavailable, errStaleRangeMap,
			&fsm.WrongShardError{Key: []byte("z")}, fmt.Errorf("shard 1: %w", context.DeadlineExceeded)},
		"internal": {errors.New("boom")},
	}
	for _, row := range errorTable {
		if len(samples[row.code]) == 0 {
			t.Errorf("error table row %d %s has no round-trip sample", row.status, row.code)
		}
	}
	for code, errs := range samples {
		for _, sent := range errs {
			t.Run(code+"/"+sent.Error(), func(t *testing.T) {
				w := httptest.NewRecorder()
				writeError(w, sent)
				got := cluster.DecodeResponse(w.Result())
				s1, c1, r1 := errorStatus(sent)
				s2, c2, r2 := errorStatus(got)
				if c1 != code {
					t.Fatalf("sample %v maps to %s, filed under %s", sent, c1, code)
				}
				if s1 != s2 || c1 != c2 || r1 != r2 {
					t.Errorf("sent %d %s %v, decoded as %d %s %v (%v)", s1, c1, r1, s2, c2, r2, got)
				}
				if !strings.Contains(got.Error(), sent.Error()) {
					t.Errorf("decoded message %q lost %q", got, sent)
				}
				// Written again by this node, the answer is the one the other
				// node gave, "current" included.
				w1, w2 := httptest.NewRecorder(), httptest.NewRecorder()
				writeError(w1, sent)
				writeError(w2, got)
				d1, d2 := decodeEnvelope(t, w1.Body.Bytes()), decodeEnvelope(t, w2.Body.Bytes())
				if !jsonEqual(d1["current"], d2["current"]) || !jsonEqual(d1["holder"], d2["holder"]) || d1["code"] != d2["code"] {
					t.Errorf("passed on as %v; the other node answered %v", d2, d1)
				}
			})
		}
	}
}
