package cluster

import (
	"github.com/cairndb/cairn/internal/clock"

	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/cairndb/cairn/shard"
)

// Policy for every node-to-node call.
const (
	// HeaderHops counts how many times a request has been forwarded.
	HeaderHops = "X-Cairn-Hops"
	// MaxHops bounds forwarding: a request forwarded this many times is
	// refused with ErrTooManyHops (leaders are moving faster than it).
	MaxHops = 3
	// MaxErrorBody bounds an error answer read from another node.
	MaxErrorBody = 1 << 20
	// MaxResponseBody bounds a JSON answer read from another node (a scan
	// part of up to 10000 keys of up to 1 MiB each would not fit; a part
	// that large is refused rather than held in memory).
	MaxResponseBody = 256 << 20
)

// Config configures a Client.
type Config struct {
	// Dial connects to other nodes; nil = net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// DialTimeout bounds each dial, name resolution included. Default 1s.
	DialTimeout time.Duration
	// UnreachableFor is how long a peer that could not be dialed is
	// reported Down. Default 1s.
	UnreachableFor time.Duration
	// CallTimeout bounds a call whose context has no deadline, the answer's
	// body included, so a peer that accepts and never answers cannot hold a
	// caller forever. Default 30s (longer than any server-side bound: a
	// write's 10s, RouteWait's 3s).
	CallTimeout time.Duration
	// Clock decides how long a peer stays reported Down; nil = the real
	// clock.
	Clock clock.Clock
}

// Client makes node-to-node calls. It is safe for concurrent use.
type Client struct {
	http        *http.Client
	down        *unreachable
	callTimeout time.Duration
}

// New returns a client.
func New(cfg Config) *Client {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = time.Second
	}
	if cfg.UnreachableFor <= 0 {
		cfg.UnreachableFor = time.Second
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 30 * time.Second
	}
	dial := cfg.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	down := newUnreachable(cfg.UnreachableFor, cfg.Clock)
	return &Client{
		http: &http.Client{Transport: &http.Transport{
			DialContext: boundedDial(dial, cfg.DialTimeout, down), MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second,
		}},
		down:        down,
		callTimeout: cfg.CallTimeout,
	}
}

// bound gives ctx the client's CallTimeout when it has no deadline.
func (c *Client) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.callTimeout)
}

// cancelOnClose cancels the call's context once its answer is read.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// Down reports whether a dial to addr failed within the last UnreachableFor:
// routing skips it.
func (c *Client) Down(addr string) bool { return c.down.down(addr) }

// Close releases idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Hops returns how many times the request carrying h was forwarded.
func Hops(h http.Header) int {
	n, _ := strconv.Atoi(h.Get(HeaderHops))
	return n
}

// do sends req and classifies a transport failure: a failed dial means
// nothing was sent (ErrPeerUnreachable); a failure after that is
// shard.ErrUnavailable for a read and ErrForwardFailed (outcome unknown) for
// anything else.
func (c *Client) do(req *http.Request, what string) (*http.Response, error) {
	resp, err := c.http.Do(req)
	if err == nil {
		return resp, nil
	}
	var op *net.OpError
	switch {
	case errors.As(err, &op) && op.Op == "dial":
		return nil, fmt.Errorf("%s: %w: %w", what, ErrPeerUnreachable, err)
	case req.Method == http.MethodGet:
		return nil, fmt.Errorf("%s: %w: %w", what, errReadFailed, err)
	}
	return nil, fmt.Errorf("%s: %w: %w", what, ErrForwardFailed, err)
}

// errReadFailed: a read's connection failed after it was sent. Nothing was
// written, and the read may not be routed again blindly (the deadline may be
// spent): it answers unavailable.
var errReadFailed = errUnavailable("read from another node failed")

// Forward sends one hop of a client's request to addr: method, the request
// URI, the body, and the headers listed. It refuses a request that has
// already made MaxHops hops. The caller copies the answer and closes its
// body. A 503 answer to a request this node received from a client (hop 0)
// is returned as ErrRemoteUnavailable (503 is never used for a write that
// may have happened), so the caller may route again.
func (c *Client) Forward(r *http.Request, body []byte, addr string, headers ...string) (*http.Response, error) {
	hops := Hops(r.Header)
	if hops >= MaxHops {
		return nil, ErrTooManyHops
	}
	ctx, cancel := c.bound(r.Context())
	req, err := http.NewRequestWithContext(ctx, r.Method, "http://"+addr+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, err
	}
	for _, h := range headers {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req.Header.Set(HeaderHops, strconv.Itoa(hops+1))
	resp, err := c.do(req, "forward to "+addr)
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	if resp.StatusCode == http.StatusServiceUnavailable && hops == 0 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, MaxErrorBody))
		resp.Body.Close()
		return nil, fmt.Errorf("forward to %s: %w", addr, ErrRemoteUnavailable)
	}
	return resp, nil
}

// Get reads a JSON answer from another node for a client request r (a scan
// part on a shard this node cannot serve): the hop counts as a forward of r,
// and the headers listed are passed on. An error answer is decoded.
func (c *Client) Get(ctx context.Context, r *http.Request, addr, uri string, out any, headers ...string) (http.Header, error) {
	hops := Hops(r.Header)
	if hops >= MaxHops {
		return nil, ErrTooManyHops
	}
	ctx, cancel := c.bound(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+uri, nil)
	if err != nil {
		return nil, err
	}
	for _, h := range headers {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	req.Header.Set(HeaderHops, strconv.Itoa(hops+1))
	resp, err := c.do(req, "scan part on "+addr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, decodeResponse(resp)
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, MaxResponseBody))
	dec.DisallowUnknownFields()
	return resp.Header, dec.Decode(out)
}

// Call makes one internal call (JSON in, JSON out) to the node at addr. An
// error answer is decoded; a transport failure is classified as in Forward.
func (c *Client) Call(ctx context.Context, addr, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	return c.call(ctx, addr, method, path, "application/json", body, func(r io.Reader) error {
		if out == nil {
			return nil
		}
		return json.NewDecoder(io.LimitReader(r, MaxResponseBody)).Decode(out)
	})
}

// CallBytes makes one internal call whose body and answer are bytes of
// contentType (a binary form of a JSON call): in goes as it is, the answer
// body is returned whole, up to MaxResponseBody. Errors as in Call: an
// error answer is the JSON error envelope, decoded.
func (c *Client) CallBytes(ctx context.Context, addr, path, contentType string, in []byte) ([]byte, error) {
	var out []byte
	err := c.call(ctx, addr, http.MethodPost, path, contentType, bytes.NewReader(in), func(r io.Reader) error {
		b, err := io.ReadAll(io.LimitReader(r, MaxResponseBody+1))
		if err != nil {
			return fmt.Errorf("node %s: reading the answer: %w", addr, err)
		}
		if len(b) > MaxResponseBody {
			return fmt.Errorf("node %s: answer over %d bytes", addr, MaxResponseBody)
		}
		out = b
		return nil
	})
	return out, err
}

// call sends one internal call and hands a 200 answer's body to read; any
// other status is decoded as an error answer.
func (c *Client) call(ctx context.Context, addr, method, path, contentType string, body io.Reader, read func(io.Reader) error) error {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.do(req, "node "+addr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeResponse(resp)
	}
	return read(resp.Body)
}

func errUnavailable(msg string) error { return fmt.Errorf("%s: %w", msg, shard.ErrUnavailable) }
