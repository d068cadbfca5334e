package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/shard"
)

// Errors owned by the API edge. Errors from lower layers are mapped in
// errorStatus, the one table from error to HTTP status and stable code.
var (
	errNotFound    = errors.New("not found")
	errNotReady    = errors.New("node is not ready: cluster not formed or range map unknown")
	errUnhealthy   = errors.New("node is unhealthy, restart it")
	errTooManyHops = errors.New("request forwarded too many times; the cluster is changing leaders")
	errNoRoute     = errors.New("no reachable replica for the shard")
	errMethod      = errors.New("method not allowed")
	// errTooLarge: a value or a request body over its size limit.
	errTooLarge      = errors.New("too large")
	errForwardFailed = errors.New("forwarding to the shard leader failed")
	// errPeerUnreachable: the node a request was forwarded to could not be
	// dialed, so nothing was sent; the request may be routed again.
	errPeerUnreachable = errors.New("peer unreachable")
	// errRemoteUnavailable: another node answered 503 — nothing was
	// written there — so the request may be routed again.
	errRemoteUnavailable = errors.New("remote node unavailable")
	// errConflict: the request's precondition on cluster state does not hold.
	errConflict = errors.New("precondition failed")
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
}

// errorStatus is the single table from error to HTTP status and code.
func errorStatus(err error) (status int, code string, retryable bool) {
	var (
		inv  *invalidArgument
		cond *fsm.ConditionError
		st   *fsm.StaleTokenError
		ws   *fsm.WrongShardError
		nl   *shard.NotLeaderError
		mbe  *http.MaxBytesError
	)
	switch {
	case errors.As(err, &inv), errors.Is(err, fsm.ErrInvalidCommand):
		return http.StatusBadRequest, "invalid_argument", false
	case errors.Is(err, errNotFound):
		return http.StatusNotFound, "not_found", false
	case errors.As(err, &cond), errors.Is(err, errConflict):
		return http.StatusConflict, "condition_failed", false
	case errors.As(err, &st):
		return http.StatusConflict, "stale_token", false
	case errors.Is(err, errTooLarge), errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "too_large", false
	case errors.Is(err, errMethod):
		return http.StatusMethodNotAllowed, "method_not_allowed", false
	case errors.Is(err, shard.ErrOutcomeUnknown), errors.Is(err, errForwardFailed):
		return http.StatusGatewayTimeout, "outcome_unknown", true
	case errors.As(err, &ws), errors.As(err, &nl), errors.Is(err, shard.ErrUnavailable),
		errors.Is(err, errNotReady), errors.Is(err, errUnhealthy), errors.Is(err, errTooManyHops), errors.Is(err, errNoRoute), errors.Is(err, errPeerUnreachable),
		errors.Is(err, errStaleRangeMap), errors.Is(err, errRemoteUnavailable),
		errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "unavailable", true
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
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
