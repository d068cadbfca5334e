// Package client is the embedded Go client of cairn: it speaks the HTTP JSON
// API of docs/api.md with retries, endpoint rotation, idempotent writes, session
// tokens, and a range cache that sends writes and linearizable reads straight
// to the shard leader (route.go). Locks that renew themselves, with fencing
// tokens for the writes they protect, are in lock.go and lock_held.go.
package client

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Client. Start from DefaultConfig; New fills zero fields
// with the defaults.
type Config struct {
	// Endpoints are "host:port" (or "http://host:port") of any cairn nodes; any
	// node serves any request. They are tried in order, and the client moves
	// to the next one when a connection fails.
	Endpoints []string
	// HTTPClient is used for every request. Nil means a client owned by this
	// Client with keep-alives tuned for many concurrent callers; Close releases
	// its idle connections.
	HTTPClient *http.Client
	// MaxRetries is how many times a call is retried after a retryable error
	// (unavailable, overloaded, connection failure, and outcome_unknown for
	// reads and for writes that carry a request id). 0 means the default, 5;
	// a negative value disables retries.
	MaxRetries int
	// BackoffMin and BackoffMax bound the exponential backoff between retries;
	// each wait is jittered between half and all of its nominal value.
	// Defaults 20ms and 1s.
	BackoffMin, BackoffMax time.Duration
	// ClientID prefixes the request ids generated for writes. Default random.
	// A random per-Client suffix is always added so two processes (or one
	// restarted process) with the same ClientID never reuse an id within the
	// server's dedup window, which would silently drop a write (invariant I7).
	ClientID string
	// Logger receives retry and rotation events at debug level. Nil discards.
	Logger *slog.Logger
	// DisableRouting sends every request to the configured endpoints, which
	// forward it to the shard leader. By default writes and linearizable
	// reads go straight to the leader, found in a cache of the range map
	// (see route.go); the nodes it names need not be in Endpoints.
	DisableRouting bool
	// Knobs are test hooks; nil in production.
	Knobs *Knobs
}

// Knobs are hooks for tests of what the client does under faults. Each is
// nil by default and costs nothing then.
type Knobs struct {
	// SkipLockRenew, when it returns true, makes a held Lock's background
	// renewer skip this renewal as if it never got through (a paused or
	// partitioned holder): the lease then runs out on the server, and Lost
	// fires when it would have on the client's clock.
	SkipLockRenew func(name string, token uint64) bool
}

// DefaultConfig is a Config for a node on this machine with the docs/api.md defaults.
func DefaultConfig() Config {
	return Config{
		Endpoints:  []string{"127.0.0.1:7070"},
		MaxRetries: 5,
		BackoffMin: 20 * time.Millisecond,
		BackoffMax: time.Second,
	}
}

// Validate reports a configuration New cannot use.
func (c Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("client: no endpoints")
	}
	for _, ep := range c.Endpoints {
		if strings.TrimSpace(ep) == "" {
			return errors.New("client: empty endpoint")
		}
	}
	if c.BackoffMin < 0 || c.BackoffMax < 0 || (c.BackoffMax > 0 && c.BackoffMin > c.BackoffMax) {
		return fmt.Errorf("client: bad backoff bounds %v..%v", c.BackoffMin, c.BackoffMax)
	}
	return nil
}

// Client is safe for concurrent use by many goroutines.
type Client struct {
	endpoints  []string // base URLs: scheme://host:port, no trailing slash
	cur        atomic.Uint32
	http       *http.Client
	ownsHTTP   bool
	maxRetries int
	backoffMin time.Duration
	backoffMax time.Duration
	log        *slog.Logger

	idPrefix string
	seq      atomic.Uint64

	mu      sync.Mutex
	session string // latest X-Cairn-Session received

	routes *routeCache // nil when routing is disabled
	knobs  Knobs
}

// New returns a Client. It does not contact the cluster.
func New(cfg Config) (*Client, error) {
	def := DefaultConfig()
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = def.MaxRetries
	} else if cfg.MaxRetries < 0 {
		cfg.MaxRetries = 0
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = def.BackoffMin
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = max(def.BackoffMax, cfg.BackoffMin)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{
		http:       cfg.HTTPClient,
		maxRetries: cfg.MaxRetries,
		backoffMin: cfg.BackoffMin,
		backoffMax: cfg.BackoffMax,
		log:        cfg.Logger,
	}
	for _, ep := range cfg.Endpoints {
		ep = strings.TrimRight(strings.TrimSpace(ep), "/")
		if !strings.Contains(ep, "://") {
			ep = "http://" + ep
		}
		c.endpoints = append(c.endpoints, ep)
	}
	if c.http == nil {
		c.http = &http.Client{Transport: newTransport()}
		c.ownsHTTP = true
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Knobs != nil {
		c.knobs = *cfg.Knobs
	}
	nonce := randomHex(4)
	if cfg.ClientID == "" {
		c.idPrefix = "c" + nonce
	} else {
		c.idPrefix = cfg.ClientID + "." + nonce
	}
	if !cfg.DisableRouting {
		c.routes = newRouteCache(c)
	}
	return c, nil
}

func newTransport() *http.Transport {
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		// A short dial timeout so a dead first endpoint costs little before
		// the client rotates to the next one.
		DialContext:           (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		// cairn never compresses its answers: no Accept-Encoding header on
		// every request for the server to parse.
		DisableCompression: true,
	}
}

// Close releases the idle connections of a client-owned HTTP client. Calls
// made after Close still work (they open new connections).
func (c *Client) Close() error {
	if c.routes != nil {
		c.routes.close()
	}
	if c.ownsHTTP {
		c.http.CloseIdleConnections()
	}
	return nil
}

// SessionToken returns the latest X-Cairn-Session token received, "" before
// the first answer. It is sent back on every request, which is what gives
// Session() reads read-your-writes and monotonic reads.
//
// The token is opaque to the client, so it keeps the most recently received
// one and relies on the server to merge the token it was sent into the one it
// returns. For one goroutine's sequential calls that is exact. With concurrent
// calls, a response that overtakes another can replace a token carrying a
// concurrent write's index; a caller that needs read-your-writes across
// goroutines should order those calls.
func (c *Client) SessionToken() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

func (c *Client) noteSession(tok string) {
	if tok == "" {
		return
	}
	c.mu.Lock()
	c.session = tok
	c.mu.Unlock()
}

// NewRequestID returns a fresh request id: the time in microseconds as 12
// fixed-width hex digits, then the client's prefix and a counter. A logical
// write uses one id for all its attempts (invariant I7).
//
// The time prefix is for the server's sake, not for uniqueness (the prefix
// and counter give that): every replica keeps a dedup record per request id
// in a B+tree keyed by the id, and ids that sort by time land together at the
// tree's right edge, where a batch of writes from many clients touches one or
// two pages instead of one page each. The clock is never trusted for anything
// else; a wrong clock only costs that locality.
func (c *Client) NewRequestID() string {
	// As fmt.Sprintf("%012x.%s-%d", ...) would write it, without fmt's cost
	// on every write.
	t := uint64(time.Now().UnixMicro()) & (1<<48 - 1)
	b := make([]byte, 0, 12+1+len(c.idPrefix)+1+20)
	for shift := 44; shift >= 0; shift -= 4 {
		b = append(b, hexDigits[(t>>uint(shift))&0xf])
	}
	b = append(b, '.')
	b = append(b, c.idPrefix...)
	b = append(b, '-')
	b = strconv.AppendUint(b, c.seq.Add(1), 10)
	return string(b)
}

const hexDigits = "0123456789abcdef"

// endpoint returns the index and base URL of the endpoint to use now.
func (c *Client) endpoint() (uint32, string) {
	i := c.cur.Load() % uint32(len(c.endpoints))
	return i, c.endpoints[i]
}

// rotate moves past endpoint i after a connection failure. The CAS makes
// concurrent callers that saw the same failure move on only once.
func (c *Client) rotate(i uint32) {
	next := (i + 1) % uint32(len(c.endpoints))
	if c.cur.CompareAndSwap(i, next) && next != i {
		c.log.Debug("cairn client: rotating endpoint", "from", c.endpoints[i], "to", c.endpoints[next])
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
