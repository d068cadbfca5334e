package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/cairndb/cairn/shard"
)

// Errors that cross the wire between nodes, or that the client itself
// produces. The API's error table (api/errors.go) maps each to its status
// and code; Decode is that table's inverse (TestErrorTableRoundTrip in api).
var (
	// ErrInvalidArgument: the request was malformed (400 invalid_argument).
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: 404 not_found.
	ErrNotFound = errors.New("not found")
	// ErrConditionFailed: a precondition did not hold (409 condition_failed).
	ErrConditionFailed = errors.New("precondition failed")
	// ErrStaleToken: a fencing token was older than one accepted (409 stale_token).
	ErrStaleToken = errors.New("stale fencing token")
	// ErrTxnAborted: the transaction was aborted (409 txn_aborted); retry
	// it as a new transaction.
	ErrTxnAborted = errors.New("transaction aborted")
	// ErrLockHeld: the lock was held and the acquire could not wait
	// longer (409 lock_held).
	ErrLockHeld = errors.New("lock held")
	// ErrLockLost: renew or release with a token that no longer holds the
	// lock (410 lock_lost).
	ErrLockLost = errors.New("lock lost")
	// ErrTooLarge: 413 too_large.
	ErrTooLarge = errors.New("request body too large")
	// ErrMethod: 405 method_not_allowed.
	ErrMethod = errors.New("method not allowed")
	// ErrRemoteInternal: the other node failed in a way it did not classify
	// (500 internal).
	ErrRemoteInternal = errors.New("remote node failed")

	// ErrTooManyHops: the request was already forwarded MaxHops times.
	// Nothing was sent.
	ErrTooManyHops = errors.New("request forwarded too many times; the cluster is changing leaders")
	// ErrNoRoute: no node can be asked (no replica, no known meta leader).
	// Nothing was sent.
	ErrNoRoute = errors.New("no reachable replica for the shard")
	// ErrPeerUnreachable: the node could not be dialed, so nothing was
	// sent; the request may be routed again.
	ErrPeerUnreachable = errors.New("peer unreachable")
	// ErrRemoteUnavailable: the other node answered 503 — nothing was
	// written there — so the request may be routed again.
	ErrRemoteUnavailable = errors.New("remote node unavailable")
	// ErrForwardFailed: the request was sent and the connection failed
	// before the answer arrived. For anything but a read its outcome is
	// unknown (it wraps shard.ErrOutcomeUnknown): it may have been applied.
	ErrForwardFailed = fmt.Errorf("forwarding to the shard leader failed: %w", shard.ErrOutcomeUnknown)
)

// Failed reports whether err proves that nothing was done: the call may be
// made again, on this node or another. It is false for an outcome_unknown
// error and for a definite answer (not found, condition failed, ...).
func Failed(err error) bool {
	return errors.Is(err, ErrPeerUnreachable) || errors.Is(err, ErrRemoteUnavailable) ||
		errors.Is(err, ErrNoRoute) || errors.Is(err, ErrTooManyHops)
}

// ErrorBody is the JSON error envelope every node answers with (docs/api.md,
// "Errors"). Current is kept raw: its shape belongs to the API.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the envelope's body.
type ErrorDetail struct {
	Code      string          `json:"code"`
	Message   string          `json:"message"`
	Retryable bool            `json:"retryable"`
	Current   json.RawMessage `json:"current,omitempty"`
	// Holder names the lock's holder in a lock_held answer, raw.
	Holder json.RawMessage `json:"holder,omitempty"`
}

// RemoteError is another node's error answer. It unwraps to the error the
// code stands for, so errors.Is and the API's table treat it as the error
// the other node started from.
type RemoteError struct {
	Status  int
	Code    string
	Message string
	// Current is the key's current state a failed condition carried, raw.
	Current json.RawMessage
	// Holder is the holder a lock_held answer named, raw.
	Holder json.RawMessage
	err    error
}

func (e *RemoteError) Error() string { return "remote node: " + e.Message }

// Unwrap returns the typed error the code stands for.
func (e *RemoteError) Unwrap() error { return e.err }

// codes is the inverse of the API's error table: code to the error it was
// made from. A code not listed (from a newer node) counts as unavailable.
var codes = map[string]error{
	"invalid_argument":   ErrInvalidArgument,
	"not_found":          ErrNotFound,
	"condition_failed":   ErrConditionFailed,
	"stale_token":        ErrStaleToken,
	"txn_aborted":        ErrTxnAborted,
	"lock_held":          ErrLockHeld,
	"lock_lost":          ErrLockLost,
	"too_large":          ErrTooLarge,
	"method_not_allowed": ErrMethod,
	"outcome_unknown":    shard.ErrOutcomeUnknown,
	"unavailable":        ErrRemoteUnavailable,
	"internal":           ErrRemoteInternal,
}

// Decode turns another node's error answer back into the typed error it came
// from. It is the one place that does.
func Decode(status int, d ErrorDetail) error {
	err, ok := codes[d.Code]
	switch {
	case ok:
	case status == http.StatusServiceUnavailable:
		err = ErrRemoteUnavailable
	default:
		err = shard.ErrUnavailable
		d.Message = fmt.Sprintf("answered %d %s: %s", status, d.Code, d.Message)
	}
	return &RemoteError{Status: status, Code: d.Code, Message: d.Message, Current: d.Current, Holder: d.Holder, err: err}
}

// decodeResponse reads an error answer (at most MaxErrorBody bytes).
func decodeResponse(resp *http.Response) error {
	var eb ErrorBody
	_ = json.NewDecoder(io.LimitReader(resp.Body, MaxErrorBody)).Decode(&eb)
	return Decode(resp.StatusCode, eb.Error)
}

// DecodeResponse reads resp's error envelope and decodes it (tests, and
// callers holding a raw response).
func DecodeResponse(resp *http.Response) error { return decodeResponse(resp) }
