package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Response headers of docs/api.md.
const (
	HeaderShard   = "X-Cairn-Shard"
	HeaderIndex   = "X-Cairn-Index"
	HeaderSession = "X-Cairn-Session"
)

// Request is one logical call made through Do.
type Request struct {
	Method string // GET and HEAD are reads; every other method is a write
	// Path is the already escaped path, e.g. "/v1/kv/" + EscapeKey(key). It is
	// sent exactly as given.
	Path  string
	Query url.Values
	Body  any // encoded as JSON when non-nil
	// RawBody, when non-nil and Body is nil, is sent as is with Content-Type
	// application/octet-stream (a put of a value that is not UTF-8).
	RawBody []byte
	// Idempotent marks a write that carries a request id (in its body or
	// query), so that sending it again cannot apply it twice (invariant I7).
	// Such a write is retried even when an attempt may have reached the
	// server. A write without it is retried only when no attempt can have been
	// applied.
	Idempotent bool
	// RouteKey is the key a single-key write or linearizable read is about.
	// When set, and routing is on, the request goes straight to the leader of
	// the key's shard as the client's range cache knows it (route.go).
	RouteKey string
}

// Meta describes the answer to a successful call.
type Meta struct {
	Status   int
	Endpoint string // base URL that answered
	Shard    string // X-Cairn-Shard
	Index    uint64 // X-Cairn-Index: the index a read reflects, or a write's index
	Session  string // X-Cairn-Session
	Header   http.Header
}

// Do sends req with the client's retry, endpoint rotation, session and error
// handling, and decodes a 2xx JSON body into out (unless out is nil). Every
// call of this package goes through it; packages built on the client (locks,
// transactions, cluster admin) should too.
//
// Errors are *Error. A write that may have been applied but whose outcome the
// client could not learn is reported as outcome_unknown (ErrOutcomeUnknown),
// never as a plain failure: an attempt that ended in 504, in a connection
// failure after the request was sent, in a 5xx other than 503, or in the
// caller's context ending after the request was sent.
func (c *Client) Do(ctx context.Context, req Request, out any) (*Meta, error) {
	if req.Method == "" {
		req.Method = http.MethodGet
	}
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = json.Marshal(req.Body); err != nil {
			return nil, &Error{Code: CodeInvalidArgument, Message: "encode request: " + err.Error(), err: err}
		}
	} else if req.RawBody != nil {
		body = req.RawBody
	}
	r := retrier{c: c, req: &req, write: req.Method != http.MethodGet && req.Method != http.MethodHead}
	route := c.routes != nil && req.RouteKey != ""
	for {
		if err := ctx.Err(); err != nil {
			return nil, r.contextError(err)
		}
		i, base := c.endpoint()
		routed := false
		if route {
			if b := c.routes.lookup(req.RouteKey); b != "" {
				base, routed = b, true
			}
		}
		meta, sent, err := c.attempt(ctx, base, &req, body, out)
		if err == nil {
			if route {
				c.routes.observe(req.RouteKey, meta.Header)
			}
			return meta, nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			// The attempt was cut short by the context; its own error says
			// no more than ctxErr, so r.last keeps the previous attempt's.
			r.ambiguous = r.ambiguous || (r.write && sent)
			return nil, r.contextError(ctxErr)
		}
		if routed {
			// The rest of this call goes through the configured endpoints,
			// which route it themselves.
			route = false
			var apiErr *Error
			if !errors.As(err, &apiErr) || apiErr.Status == 0 {
				c.routes.unreachable(base)
				if !sent {
					continue // nothing reached the server: move on at once
				}
			}
		}
		next, final := r.judge(i, !routed, sent, err)
		if final != nil {
			return nil, final
		}
		if next == retryNow {
			continue
		}
		if r.retries >= c.maxRetries {
			return nil, r.exhausted()
		}
		r.retries++
		d := c.backoff(r.retries)
		c.log.Debug("cairn client: retrying", "method", req.Method, "path", req.Path,
			"retry", r.retries, "after", d, "err", err)
		if err := sleep(ctx, d); err != nil {
			return nil, r.contextError(err)
		}
	}
}

type verdict int

const (
	retryNow   verdict = iota // another endpoint, no wait, not counted
	retryLater                // after a backoff; counts against MaxRetries
)

// retrier holds the state of one logical call across its attempts.
type retrier struct {
	c     *Client
	req   *Request
	write bool
	// ambiguous: some attempt of this write may have been applied.
	ambiguous bool
	last      error
	// transport: the last error was a connection failure, not an answer.
	transport bool
	retries   int
	// down counts consecutive endpoints that could not be connected to.
	down int
}

// judge classifies the failed attempt on endpoint i (configured: false when
// the attempt went to a routed leader instead). It returns a non-nil error
// when the call must end now.
func (r *retrier) judge(i uint32, configured, sent bool, err error) (verdict, error) {
	r.last = err
	var apiErr *Error
	if !errors.As(err, &apiErr) || apiErr.Status == 0 {
		// No answer: a connection failure.
		r.transport = true
		if configured {
			r.c.rotate(i)
		}
		if !sent {
			r.down++
			if r.down < len(r.c.endpoints) {
				return retryNow, nil
			}
			r.down = 0
			return retryLater, nil
		}
		r.down = 0
		if r.write {
			r.ambiguous = true
			if !r.req.Idempotent {
				return 0, r.outcomeUnknown()
			}
		}
		return retryLater, nil
	}
	r.transport = false
	r.down = 0
	switch {
	case !r.write && apiErr.Status < 300:
		// A read whose 2xx body could not be read (cut off, say): ask again.
		return retryLater, nil
	case apiErr.Code == CodeUnavailable || apiErr.Code == CodeOverloaded:
		// Refused before being applied: safe to retry any request.
		return retryLater, nil
	case apiErr.Code == CodeOutcomeUnknown || apiErr.Status >= 500:
		if !r.write {
			if apiErr.Code == CodeOutcomeUnknown || apiErr.Retryable {
				return retryLater, nil
			}
			return 0, apiErr
		}
		r.ambiguous = true
		if r.req.Idempotent && (apiErr.Code == CodeOutcomeUnknown || apiErr.Retryable) {
			return retryLater, nil
		}
		return 0, r.outcomeUnknown()
	default:
		// A definite answer. After an ambiguous attempt it is still the truth:
		// the retry carried the same request id, and the server answers a
		// duplicate with the original outcome (invariant I7).
		apiErr.replay = r.ambiguous
		return 0, apiErr
	}
}

// exhausted is the error when retries ran out.
func (r *retrier) exhausted() error {
	if r.write && r.ambiguous {
		return r.outcomeUnknown()
	}
	if r.transport {
		return &Error{
			Code:      CodeUnreachable,
			Message:   fmt.Sprintf("no endpoint answered after %d retries: %v", r.retries, r.last),
			Retryable: true,
			err:       r.last,
		}
	}
	return r.last
}

func (r *retrier) outcomeUnknown() error {
	var apiErr *Error
	if errors.As(r.last, &apiErr) && apiErr.Code == CodeOutcomeUnknown {
		return apiErr
	}
	return &Error{
		Status:    http.StatusGatewayTimeout,
		Code:      CodeOutcomeUnknown,
		Message:   fmt.Sprintf("%s %s may or may not have been applied: %v", r.req.Method, r.req.Path, r.last),
		Retryable: r.req.Idempotent,
		err:       r.last,
	}
}

// contextError is the error when the caller's context ends: outcome unknown
// for a write that may have been applied, else the context's own error. Both
// wrap the context error and the last attempt's error.
func (r *retrier) contextError(ctxErr error) error {
	cause := ctxErr
	if r.last != nil {
		cause = errors.Join(ctxErr, r.last)
	}
	if r.write && r.ambiguous {
		return &Error{
			Status:  http.StatusGatewayTimeout,
			Code:    CodeOutcomeUnknown,
			Message: fmt.Sprintf("%s %s may or may not have been applied: %v", r.req.Method, r.req.Path, cause),
			err:     cause,
		}
	}
	code := CodeCanceled
	if errors.Is(ctxErr, context.DeadlineExceeded) {
		code = CodeDeadlineExceeded
	}
	msg := ctxErr.Error()
	if r.last != nil {
		msg += "; last error: " + r.last.Error()
	}
	return &Error{Code: code, Message: msg, err: cause}
}

// attempt sends the request once to base. sent reports whether the request
// may have reached the server: it is false only when the failure happened
// before the request headers were written, so the server cannot have acted.
func (c *Client) attempt(ctx context.Context, base string, req *Request, body []byte, out any) (_ *Meta, sent bool, _ error) {
	u := base + req.Path
	if len(req.Query) > 0 {
		u += "?" + req.Query.Encode()
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	var wrote atomic.Bool
	trace := &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }}
	hreq, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), req.Method, u, rd)
	if err != nil {
		return nil, false, &Error{Status: http.StatusBadRequest, Code: CodeInvalidArgument, Message: err.Error(), err: err}
	}
	// The keys are canonical already and the value slices are never written
	// to (the transport only reads them): no Header.Set per request.
	hreq.Header["Accept"] = hdrJSON
	if body != nil {
		if req.Body == nil && req.RawBody != nil {
			hreq.Header["Content-Type"] = hdrOctets
		} else {
			hreq.Header["Content-Type"] = hdrJSON
		}
	}
	if tok := c.SessionToken(); tok != "" {
		hreq.Header[HeaderSession] = []string{tok}
	}
	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, wrote.Load(), err
	}
	defer resp.Body.Close()
	meta := &Meta{
		Status:   resp.StatusCode,
		Endpoint: base,
		Shard:    resp.Header.Get(HeaderShard),
		Session:  resp.Header.Get(HeaderSession),
		Header:   resp.Header,
	}
	meta.Index, _ = strconv.ParseUint(resp.Header.Get(HeaderIndex), 10, 64)
	c.noteSession(meta.Session)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		return meta, true, decodeError(resp.StatusCode, b)
	}
	if out != nil {
		if err := decodeBody(resp.Body, out); err != nil {
			// The server answered 2xx, so a write was applied: say so
			// instead of reporting a failure or an unknown outcome.
			return meta, true, &Error{
				Status:  resp.StatusCode,
				Code:    CodeInternal,
				Message: fmt.Sprintf("%s %s answered %d but the body could not be decoded: %v", req.Method, req.Path, resp.StatusCode, err),
				err:     err,
			}
		}
		return meta, true, nil // decodeBody read the body to its end
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // lets the connection be reused
	return meta, true, nil
}

var (
	hdrJSON   = []string{"application/json"}
	hdrOctets = []string{"application/octet-stream"}
)

// bodyBufs holds the buffers decodeBody reads answers into.
var bodyBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// decodeBody decodes the first JSON value of a 2xx body into out, as
// json.Decoder.Decode would, reading the body through a pooled buffer
// instead of a new decoder and its buffer per answer.
func decodeBody(body io.Reader, out any) error {
	buf := bodyBufs.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 64<<10 { // keep the pool from pinning a large page
			bodyBufs.Put(buf)
		}
	}()
	if _, err := buf.ReadFrom(body); err != nil {
		return err
	}
	b := buf.Bytes()
	// One value and nothing but white space after it is what the server
	// sends; anything after the first value is ignored, as Decode did.
	if err := json.Unmarshal(b, out); err != nil {
		var syn *json.SyntaxError
		if !errors.As(err, &syn) {
			return err
		}
		return json.NewDecoder(bytes.NewReader(b)).Decode(out)
	}
	return nil
}

// backoff is the wait before retry n (1-based): exponential from BackoffMin,
// capped at BackoffMax, with "equal jitter" so that many clients refused at
// the same moment do not come back together.
func (c *Client) backoff(n int) time.Duration {
	d := c.backoffMax
	if n-1 < 30 {
		if e := c.backoffMin << (n - 1); e > 0 && e < d {
			d = e
		}
	}
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
