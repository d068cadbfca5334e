package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/lock"
	"github.com/cairndb/cairn/shard"
)

// Errors owned by the API edge. Errors from lower layers are mapped in
// errorStatus, the one table from error to HTTP status and stable code.
var (
	errNotReady  = errors.New("node is not ready: cluster not formed or range map unknown")
	errUnhealthy = errors.New("node is unhealthy, restart it")
	// Errors that cross the wire are defined once, in internal/cluster,
	// which decodes another node's answer back into them.
	errNotFound    = cluster.ErrNotFound
	errTooManyHops = cluster.ErrTooManyHops
	errNoRoute     = cluster.ErrNoRoute
	errMethod      = cluster.ErrMethod
	errTooLarge    = cluster.ErrTooLarge
	// errForwardFailed: a forwarded request was sent and its connection
	// failed before the answer: outcome unknown (wraps shard.ErrOutcomeUnknown).
	errForwardFailed = cluster.ErrForwardFailed
	// errPeerUnreachable: the node a request was forwarded to could not be
	// dialed, so nothing was sent; the request may be routed again.
	errPeerUnreachable = cluster.ErrPeerUnreachable
	// errRemoteUnavailable: another node answered 503 — nothing was
	// written there — so the request may be routed again.
	errRemoteUnavailable = cluster.ErrRemoteUnavailable
	// errConflict: the request's precondition on cluster state does not hold.
	errConflict = cluster.ErrConditionFailed
)

// invalidArgument is a client error with a message meant for the user.
type invalidArgument struct{ msg string }

func (e *invalidArgument) Error() string { return e.msg }

func invalidf(format string, args ...any) error {
	return &invalidArgument{msg: fmt.Sprintf(format, args...)}
}

// errorBody is the JSON error envelope of docs/api.md ("Conventions").
type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code      string  `json:"code"`
	Message   string  `json:"message"`
	Retryable bool    `json:"retryable"`
	Current   *kvJSON `json:"current,omitempty"`
	// Holder names the lock's oldest holder in a lock_held answer (absent
	// when the lock is free but delayed, or waiters are ahead).
	Holder *holderRef `json:"holder,omitempty"`
}

// holderRef is the holder a lock_held answer names.
type holderRef struct {
	Owner string `json:"owner"`
	Token uint64 `json:"token"`
}

// errorRow is one row of the error table: the errors it matches, and the
// status, stable code and retryable flag they answer with.
type errorRow struct {
	status    int
	code      string
	retryable bool
	match     func(error) bool
}

// errorTable is the single table from error to HTTP status and code, first
// match wins. internal/cluster.Decode is its inverse: an error answer from
// another node decodes to an error that maps to the same row
// (TestErrorTableRoundTrip). An error no row matches is 500 internal.
var errorTable = []errorRow{
	{http.StatusBadRequest, "invalid_argument", false, func(err error) bool {
		var inv *invalidArgument
		return errors.As(err, &inv) || errors.Is(err, fsm.ErrInvalidCommand) || errors.Is(err, cluster.ErrInvalidArgument) ||
			errors.Is(err, lock.ErrInvalidArgument)
	}},
	{http.StatusNotFound, "not_found", false, func(err error) bool { return errors.Is(err, errNotFound) }},
	{http.StatusConflict, "condition_failed", false, func(err error) bool {
		var cond *fsm.ConditionError
		var se *fsm.StaleEpochError
		return errors.As(err, &cond) || errors.Is(err, errConflict) || errors.As(err, &se)
	}},
	{http.StatusConflict, "stale_token", false, func(err error) bool {
		var st *fsm.StaleTokenError
		return errors.As(err, &st) || errors.Is(err, cluster.ErrStaleToken)
	}},
	{http.StatusConflict, "txn_aborted", false, func(err error) bool { return errors.Is(err, cluster.ErrTxnAborted) }},
	{http.StatusConflict, "lock_held", false, func(err error) bool {
		return errors.Is(err, lock.ErrLockHeld) || errors.Is(err, cluster.ErrLockHeld)
	}},
	{http.StatusGone, "lock_lost", false, func(err error) bool {
		return errors.Is(err, lock.ErrLockLost) || errors.Is(err, cluster.ErrLockLost)
	}},
	{http.StatusRequestEntityTooLarge, "too_large", false, func(err error) bool {
		var mbe *http.MaxBytesError
		return errors.Is(err, errTooLarge) || errors.As(err, &mbe)
	}},
	{http.StatusMethodNotAllowed, "method_not_allowed", false, func(err error) bool { return errors.Is(err, errMethod) }},
	// errForwardFailed wraps shard.ErrOutcomeUnknown. This row comes before
	// unavailable: Propose wraps the context's error next to it.
	{http.StatusGatewayTimeout, "outcome_unknown", true, func(err error) bool { return errors.Is(err, shard.ErrOutcomeUnknown) }},
	{http.StatusServiceUnavailable, "unavailable", true, func(err error) bool {
		var (
			ws *fsm.WrongShardError
			nl *shard.NotLeaderError
		)
		return errors.As(err, &ws) || errors.As(err, &nl) || errors.Is(err, shard.ErrUnavailable) ||
			errors.Is(err, errNotReady) || errors.Is(err, errUnhealthy) || errors.Is(err, errTooManyHops) ||
			errors.Is(err, errNoRoute) || errors.Is(err, errPeerUnreachable) ||
			errors.Is(err, errStaleRangeMap) || errors.Is(err, errRemoteUnavailable) ||
			errors.Is(err, context.DeadlineExceeded) || isIntent(err)
	}},
}

// errorStatus maps err through errorTable.
func errorStatus(err error) (status int, code string, retryable bool) {
	for _, row := range errorTable {
		if row.match(err) {
			return row.status, row.code, row.retryable
		}
	}
	return http.StatusInternalServerError, "internal", false
}

// writeError writes err in the envelope of docs/api.md.
func writeError(w http.ResponseWriter, err error) {
	status, code, retryable := errorStatus(err)
	body := errorBody{Error: errorDetail{Code: code, Message: err.Error(), Retryable: retryable}}
	var cond *fsm.ConditionError
	if errors.As(err, &cond) && cond.Current != nil {
		kv := toKVJSON(cond.Current, false)
		body.Error.Current = &kv
	}
	var le *lock.Error
	if errors.As(err, &le) && le.Code == lock.CodeLockHeld && le.Token != 0 {
		body.Error.Holder = &holderRef{Owner: le.Owner, Token: le.Token}
	}
	var re *cluster.RemoteError
	if errors.As(err, &re) && len(re.Current) > 0 {
		var kv kvJSON
		if json.Unmarshal(re.Current, &kv) == nil {
			body.Error.Current = &kv // another node's failed condition, passed on
		}
	}
	if re != nil && len(re.Holder) > 0 {
		var h holderRef
		if json.Unmarshal(re.Holder, &h) == nil {
			body.Error.Holder = &h // another node's lock_held, passed on
		}
	}
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
