package bench

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/cairndb/cairn/client"
)

// Target is a system under test.
//
// Conn is called once per client, from one goroutine, before the measured
// phase; Close after every Conn is done with. Describe may be called at any
// time before Close and may contact the system (it should give up quickly).
type Target interface {
	// Name is the system's name in reports: "cairn", "etcd", "etcd-native".
	Name() string
	Endpoints() []string
	// Conn returns the connection client i uses. Connections may share
	// resources (an HTTP transport); each is used by one goroutine.
	Conn(i int) (Conn, error)
	Close() error
}

// Describer is an optional capability of a Target: facts about the system
// that label a report (the number of shards, for cairn).
type Describer interface {
	Describe(ctx context.Context) map[string]string
}

// Conn is one client's view of a target. Put and Get each make one request
// and no retry, so that every operation costs the same on every target and
// failures show in the report instead of in the latency.
//
// Errors carry a code: return an *OpError, a *client.Error, or an error that
// ErrorCode classifies. Get of a key that does not exist is an error with
// code not_found.
type Conn interface {
	Put(ctx context.Context, key, value string) error
	Get(ctx context.Context, key string) error
}

// OpError is a failed operation with the code the report groups it under.
type OpError struct {
	Code string
	Err  error
}

func (e *OpError) Error() string {
	if e.Err == nil {
		return e.Code
	}
	return e.Code + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }

// Codes ErrorCode gives errors that carry none.
const (
	CodeUnreachable      = client.CodeUnreachable
	CodeDeadlineExceeded = client.CodeDeadlineExceeded
	CodeCanceled         = client.CodeCanceled
	CodeNotFound         = client.CodeNotFound
	CodeOther            = "error"
)

// ErrorCode returns the code err is reported under: the stable API code for
// cairn's errors (docs/api.md), the gRPC code name for etcd's, or one of the codes
// above.
func ErrorCode(err error) string {
	var oe *OpError
	var ce *client.Error
	var ne net.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &oe):
		return oe.Code
	case errors.As(err, &ce):
		return ce.Code
	case errors.Is(err, context.DeadlineExceeded):
		return CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return CodeCanceled
	case errors.As(err, &ne):
		if ne.Timeout() {
			return CodeDeadlineExceeded
		}
		return CodeUnreachable
	}
	return CodeOther
}

// NewHTTPClient returns the HTTP client both HTTP targets use, so that cairn
// and etcd's gateway are driven through the same transport: keep-alive
// connections, enough idle ones that no client ever waits for one or dials
// again, no proxy (loopback benchmarks must not detour through $HTTP_PROXY),
// no overall timeout (each operation carries its own context).
//
// The idle pool is bounded per host only: a routed client sends each request
// to the leader of its key's shard, so every one of the clients may keep an
// idle connection to every node. A total cap below clients × nodes (it was
// 2 × clients) closed connections that were about to be reused and made the
// clients dial new ones all run long: hundreds of TCP handshakes, server
// goroutines and TIME-WAIT sockets per second, measured as load on the
// system (TestHTTPClientKeepsConnections).
func NewHTTPClient(clients int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0, // no total cap: MaxIdleConnsPerHost bounds each node's
		MaxIdleConnsPerHost: max(clients, 16),
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}}
}
