package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Locks (docs/api.md, "Locks"). A lock named N lives in the shard that owns
// the key N, so its calls are routed by the name like a key's. Every grant
// carries a fencing token (invariant I9); a holder sends it on every write it
// protects (WithFence, FencedRead), and the store refuses a write with a
// token below one it already accepted on the key (invariant I11).

// Limits of the Locks API that the client checks before sending (the server
// checks them too; lock/ owns the numbers).
const (
	DefaultLockTTL = 15 * time.Second
	// MaxLockWait is the longest wait the server accepts in one acquire.
	MaxLockWait = time.Hour
)

// LockOptions configure an acquire.
type LockOptions struct {
	// TTL is the lease: a holder that does not renew within it loses the
	// lock (invariant I10). 0 means DefaultLockTTL; the server accepts 1s..24h.
	TTL time.Duration
	// Wait is how long the acquire may wait in the lock's queue. For Lock,
	// 0 means as long as ctx allows, at most MaxLockWait; TryLock never waits.
	// AcquireLock sends it as is (0: try once).
	Wait time.Duration
	// Owner is a free-form label shown in status answers and in lock_held
	// errors (a host name, a worker id).
	Owner string
	// Limit > 1 makes a semaphore of up to Limit exclusive holders, each with
	// its own token. 0 means 1. Every acquire of a lock in use must send the
	// lock's current limit.
	Limit int
	// Shared asks for shared mode: any number of shared holders together, or
	// one exclusive holder.
	Shared bool
	// LockDelay keeps the lock ungranted for this long after this holder's
	// lease expires (not after a release), so its late writes drain first.
	LockDelay time.Duration
	// LeaseMargin is how long before the lease's end on this process's
	// monotonic clock Lock considers the lock lost when renewals fail: the
	// lease is taken to end at (send time of the last successful acquire or
	// renew) + TTL - LeaseMargin. It covers clock rate differences and the
	// time the holder needs to stop. 0 means TTL/10; it must be below
	// 2/3 of TTL, since renewals run every TTL/3.
	LeaseMargin time.Duration
}

func (o LockOptions) ttl() time.Duration {
	if o.TTL == 0 {
		return DefaultLockTTL
	}
	return o.TTL
}

func (o LockOptions) margin() time.Duration {
	if o.LeaseMargin == 0 {
		return o.ttl() / 10
	}
	return o.LeaseMargin
}

func (o LockOptions) check() error {
	switch {
	case o.TTL < 0, o.Wait < 0, o.Limit < 0, o.LockDelay < 0, o.LeaseMargin < 0:
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidArgument, Message: "negative lock option"}
	case o.Wait > MaxLockWait:
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidArgument, Message: fmt.Sprintf("wait %v over the maximum %v", o.Wait, MaxLockWait)}
	case o.margin() >= o.ttl()*2/3:
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidArgument,
			Message: fmt.Sprintf("lease margin %v must be below 2/3 of the ttl %v", o.margin(), o.ttl())}
	}
	return nil
}

// LockGrant is the answer to an acquire.
type LockGrant struct {
	Name  string
	Token uint64 // the fencing token (invariant I9)
	TTL   time.Duration
	Owner string
	// Sent is when this process sent the acquire that was granted (its
	// monotonic clock): the lease cannot have started before it.
	Sent time.Time
}

// LockHolder is one holder in a status answer.
type LockHolder struct {
	Token     uint64        `json:"token"`
	Owner     string        `json:"owner"`
	Mode      string        `json:"mode,omitempty"`
	ExpiresIn time.Duration `json:"-"` // the leader's remaining countdown
}

// LockInfo is a lock's state: the answer to LockStatus, WatchLock and
// ListLocks. Token and Owner are those of the oldest holder.
type LockInfo struct {
	Name    string       `json:"name"`
	Held    bool         `json:"held"`
	Token   uint64       `json:"token,omitempty"`
	Owner   string       `json:"owner,omitempty"`
	Waiters int          `json:"waiters"`
	Holders []LockHolder `json:"holders"` // in grant order
	// Index is the lock's change sequence: pass it to WatchLock to wait for
	// the next change of holders.
	Index uint64 `json:"index"`
	Limit int    `json:"limit,omitempty"`
	Mode  string `json:"mode,omitempty"`
}

// ExpiresIn is the oldest holder's remaining lease on the leader, 0 when
// the lock is free.
func (li *LockInfo) ExpiresIn() time.Duration {
	if len(li.Holders) == 0 {
		return 0
	}
	return li.Holders[0].ExpiresIn
}

// UnmarshalJSON reads expires_in, a Go duration string ("11.2s").
func (h *LockHolder) UnmarshalJSON(b []byte) error {
	type plain LockHolder
	var w struct {
		plain
		ExpiresIn string `json:"expires_in"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*h = LockHolder(w.plain)
	d, err := parseDurationField("expires_in", w.ExpiresIn)
	h.ExpiresIn = d
	return err
}

// MarshalJSON writes expires_in as a Go duration string, as the API does.
func (h LockHolder) MarshalJSON() ([]byte, error) {
	type plain LockHolder
	return json.Marshal(struct {
		plain
		ExpiresIn string `json:"expires_in,omitempty"`
	}{plain(h), durationField(h.ExpiresIn)})
}

func durationField(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func parseDurationField(name, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("client: %s %q: %w", name, s, err)
	}
	return d, nil
}

func lockPath(name, op string) string {
	p := "/v1/locks/" + EscapeKey(name)
	if op != "" {
		p += "/" + op
	}
	return p
}

func checkLockName(name string) error {
	if name == "" {
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidArgument, Message: "empty lock name"}
	}
	return nil
}

type acquireBody struct {
	TTL       string `json:"ttl"`
	Wait      string `json:"wait"`
	Owner     string `json:"owner,omitempty"`
	Limit     int    `json:"limit,omitempty"`
	Mode      string `json:"mode,omitempty"`
	LockDelay string `json:"lock_delay,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// tokenBody is the body of a renew or release.
type tokenBody struct {
	Token uint64 `json:"token"`
}

// AcquireLock sends one acquire and returns the grant; nothing renews it (see
// Lock for a lock that renews itself). opts.Wait is sent as is: 0 tries
// once. A lock held past the wait gives an error matching ErrLockHeld, whose
// LockHolder names the holder. The acquire carries a request id, reused on
// every retry, so a retried acquire returns the same grant instead of a
// second one.
func (c *Client) AcquireLock(ctx context.Context, name string, opts LockOptions) (*LockGrant, error) {
	if err := checkLockName(name); err != nil {
		return nil, err
	}
	if err := opts.check(); err != nil {
		return nil, err
	}
	body := acquireBody{
		TTL:       opts.ttl().String(),
		Wait:      opts.Wait.String(),
		Owner:     opts.Owner,
		RequestID: c.NewRequestID(),
	}
	if opts.Limit > 1 {
		body.Limit = opts.Limit
	}
	if opts.Shared {
		body.Mode = "shared"
	}
	if opts.LockDelay > 0 {
		body.LockDelay = opts.LockDelay.String()
	}
	var res struct {
		Name  string `json:"name"`
		Token uint64 `json:"token"`
		TTL   string `json:"ttl"`
		Owner string `json:"owner"`
	}
	sent := time.Now()
	if _, err := c.Do(ctx, Request{Method: http.MethodPost, Path: lockPath(name, "acquire"), Body: &body,
		Idempotent: true, RouteKey: name}, &res); err != nil {
		return nil, err
	}
	g := &LockGrant{Name: res.Name, Token: res.Token, Owner: res.Owner, TTL: opts.ttl(), Sent: sent}
	if g.Name == "" {
		g.Name = name
	}
	if d, err := time.ParseDuration(res.TTL); err == nil && d > 0 {
		g.TTL = d
	}
	if g.Token == 0 {
		return nil, &Error{Status: http.StatusOK, Code: CodeInternal, Message: "acquire answered without a token"}
	}
	return g, nil
}

// RenewLock restarts the lease of the grant with token and returns its TTL.
// A token that no longer holds the lock gives an error matching ErrLockLost.
func (c *Client) RenewLock(ctx context.Context, name string, token uint64) (time.Duration, error) {
	if err := checkLockName(name); err != nil {
		return 0, err
	}
	var res struct {
		TTL string `json:"ttl"`
	}
	// A renew is safe to send twice: Idempotent lets Do retry it after an
	// attempt whose answer was lost.
	if _, err := c.Do(ctx, Request{Method: http.MethodPost, Path: lockPath(name, "renew"),
		Body: &tokenBody{Token: token}, Idempotent: true, RouteKey: name}, &res); err != nil {
		return 0, err
	}
	d, _ := time.ParseDuration(res.TTL)
	return d, nil
}

// ReleaseLock gives up the grant with token. A token that no longer holds
// the lock gives an error matching ErrLockLost.
func (c *Client) ReleaseLock(ctx context.Context, name string, token uint64) error {
	if err := checkLockName(name); err != nil {
		return err
	}
	var res struct {
		Released bool `json:"released"`
	}
	// Not Idempotent: a retry of a release that was applied would answer
	// lock_lost, which would misreport a clean release.
	_, err := c.Do(ctx, Request{Method: http.MethodPost, Path: lockPath(name, "release"),
		Body: &tokenBody{Token: token}, RouteKey: name}, &res)
	return err
}

// LockStatus returns the lock's state (a linearizable read on the leader).
func (c *Client) LockStatus(ctx context.Context, name string) (*LockInfo, error) {
	return c.WatchLock(ctx, name, 0, 0)
}

// WatchLock is a blocking status query: it returns when the lock's holders
// change after index (a LockInfo.Index from an earlier answer; 0 for a lock
// never used) or when wait runs out (then with the unchanged state). wait 0
// is a plain status query that returns at once.
func (c *Client) WatchLock(ctx context.Context, name string, index uint64, wait time.Duration) (*LockInfo, error) {
	if err := checkLockName(name); err != nil {
		return nil, err
	}
	var q url.Values
	if wait > 0 {
		q = url.Values{"wait_index": {strconv.FormatUint(index, 10)}, "wait": {wait.String()}}
	}
	var li LockInfo
	if _, err := c.Do(ctx, Request{Method: http.MethodGet, Path: lockPath(name, ""), Query: q, RouteKey: name}, &li); err != nil {
		return nil, err
	}
	if li.Name == "" {
		li.Name = name
	}
	return &li, nil
}

// ListLocks returns the locks whose names start with prefix ("" for all),
// in name order, following the server's pages.
func (c *Client) ListLocks(ctx context.Context, prefix string) ([]LockInfo, error) {
	var all []LockInfo
	start := ""
	for page := 0; ; page++ {
		q := url.Values{}
		if prefix != "" {
			q.Set("prefix", prefix)
		}
		if start != "" {
			q.Set("start", start)
		}
		var res struct {
			Locks []LockInfo `json:"locks"`
			More  bool       `json:"more"`
			Next  string     `json:"next"`
		}
		if _, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/locks", Query: q}, &res); err != nil {
			return nil, err
		}
		for _, li := range res.Locks {
			if len(all) > 0 && li.Name <= all[len(all)-1].Name {
				continue // a page that starts where the last one ended
			}
			all = append(all, li)
		}
		if !res.More {
			return all, nil
		}
		if res.Next == "" || res.Next <= start {
			return nil, &Error{Code: CodeUnknown, Message: fmt.Sprintf("lock list makes no progress at %q", res.Next)}
		}
		start = res.Next
	}
}

// LockHolderOf returns the holder a lock_held error names (owner and token),
// and false for any other error or when the server named none.
func LockHolderOf(err error) (owner string, token uint64, ok bool) {
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeLockHeld || e.Details == nil {
		return "", 0, false
	}
	fields := e.Details
	// The holder's fields may sit in the error object or in a "holder"
	// object inside it.
	if raw, has := fields["holder"]; has {
		var h map[string]json.RawMessage
		if json.Unmarshal(raw, &h) == nil {
			fields = h
		}
	}
	okT := json.Unmarshal(fields["token"], &token) == nil && token > 0
	_ = json.Unmarshal(fields["owner"], &owner)
	return owner, token, okT
}
