// The lock service as the lock workloads see it (issue 12), and its HTTP implementation over the Locks
// routes of docs/api.md.

package test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"
)

// LockAcquire is one acquire's parameters (docs/api.md, Locks). Zero Limit means 1.
type LockAcquire struct {
	TTL    time.Duration
	Wait   time.Duration
	Owner  string
	Limit  int
	Shared bool // mode "shared"; false is "exclusive"
}

// LockInfo is what a status read shows.
type LockInfo struct {
	Held    bool
	Token   uint64 // the oldest holder's
	Waiters int
	Holders []uint64
}

// LockService is the lock service and the fenced store the lock workloads drive. Implementations must be
// safe for concurrent use. Errors: a *LockHeldError for 409 lock_held, ErrLockLost for 410 lock_lost,
// ErrStaleToken for 409 stale_token, an error wrapping ErrDefinite for any other answer that guarantees
// nothing took effect (400, 404, ...); anything else is an unknown outcome.
type LockService interface {
	Acquire(ctx context.Context, name string, req LockAcquire) (token uint64, err error)
	Renew(ctx context.Context, name string, token uint64) error
	Release(ctx context.Context, name string, token uint64) error
	Status(ctx context.Context, name string) (LockInfo, error)
	// Get reads key; with a fence (token > 0) it is a fenced read (I11) through raft.
	Get(ctx context.Context, key, lock string, token uint64) (value string, found bool, err error)
	// Put writes key; with a fence (token > 0) it is a fenced write (I11).
	Put(ctx context.Context, key, value, lock string, token uint64) error
}

// The errors of a LockService.
var (
	ErrLockLost   = errors.New("lock_lost")
	ErrStaleToken = errors.New("stale_token")
	ErrDefinite   = errors.New("refused, nothing took effect")
)

// LockHeldError is a 409 lock_held answer; Token is the holder it names (0: none named).
type LockHeldError struct{ Token uint64 }

func (e *LockHeldError) Error() string { return fmt.Sprintf("lock_held (holder token %d)", e.Token) }

// LockOutcomeOf maps a LockService error to the lock model's output. refused reports a definite refusal
// that did nothing (ErrDefinite, ErrStaleToken); out is then empty.
func LockOutcomeOf(err error) (out LockOutput, refused bool) {
	var held *LockHeldError
	switch {
	case err == nil:
		return LockOutput{OK: true}, false
	case errors.As(err, &held):
		return LockOutput{Held: true, HeldBy: held.Token}, false
	case errors.Is(err, ErrLockLost):
		return LockOutput{Lost: true}, false
	case errors.Is(err, ErrDefinite), errors.Is(err, ErrStaleToken):
		return LockOutput{}, true
	default:
		return LockOutput{Unknown: true}, false
	}
}

// HTTPLocks is a LockService over the HTTP API of a cluster. Client i of a workload talks to Addrs[i %
// len(Addrs)] (the node forwards to the lock's leader); Addr picks it.
type HTTPLocks struct {
	Addrs func() []string
}

// ClusterLocks is an HTTPLocks over c's nodes, down or not (a call to a node that is down is refused).
func ClusterLocks(c *Cluster) HTTPLocks { return HTTPLocks{Addrs: c.HTTPAddrs} }

// LiveLocks is an HTTPLocks over c's running nodes.
func LiveLocks(c *Cluster) HTTPLocks {
	return HTTPLocks{Addrs: func() []string {
		var out []string
		for _, h := range c.running() {
			out = append(out, h.HTTPAddr)
		}
		return out
	}}
}

// node returns the address for a call: the owner string ends in the client's number, which spreads
// clients over nodes.
func (h HTTPLocks) node(ctx context.Context) string {
	addrs := h.Addrs()
	i, _ := ctx.Value(clientKey{}).(int)
	return addrs[i%len(addrs)]
}

type clientKey struct{}

// WithClient tags ctx with a workload client's number, which HTTPLocks uses to pick that client's node.
func WithClient(ctx context.Context, i int) context.Context {
	return context.WithValue(ctx, clientKey{}, i)
}

func lockError(res *HTTPResult, err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w: %v", ErrDefinite, err) // the node is down: nothing was sent
	}
	if err != nil {
		return err // no answer: unknown
	}
	if res.Status == http.StatusOK {
		return nil
	}
	switch code := res.Code(); {
	case code == "lock_held":
		var eb struct {
			Error struct {
				Holder *struct {
					Token uint64 `json:"token"`
				} `json:"holder"`
			} `json:"error"`
		}
		_ = res.JSON(&eb)
		he := &LockHeldError{}
		if eb.Error.Holder != nil {
			he.Token = eb.Error.Holder.Token
		}
		return he
	case code == "lock_lost":
		return ErrLockLost
	case code == "stale_token":
		return ErrStaleToken
	case res.Status == http.StatusBadRequest, res.Status == http.StatusNotFound,
		res.Status == http.StatusRequestEntityTooLarge, code == "condition_failed",
		code == "unavailable":
		// docs/api.md's error table: 503 unavailable (no leader, no quorum, not ready) is a refusal;
		// a write that may have committed is 504 outcome_unknown.
		return fmt.Errorf("%w: %v", ErrDefinite, res)
	default:
		return fmt.Errorf("outcome unknown: %v", res) // 504, 500, 429: may or may not have taken effect
	}
}

// Acquire implements LockService.
func (h HTTPLocks) Acquire(ctx context.Context, name string, req LockAcquire) (uint64, error) {
	body := map[string]any{"ttl": req.TTL.String(), "wait": req.Wait.String(), "owner": req.Owner}
	if req.Limit > 1 {
		body["limit"] = req.Limit
	}
	if req.Shared {
		body["mode"] = "shared"
	}
	res, err := Do(ctx, http.MethodPost, h.node(ctx), lockURL(name, "acquire"), body)
	if err := lockError(res, err); err != nil {
		return 0, err
	}
	var g struct {
		Token uint64 `json:"token"`
	}
	if err := res.JSON(&g); err != nil || g.Token == 0 {
		return 0, fmt.Errorf("acquire answered %v: no token", res)
	}
	return g.Token, nil
}

// Renew implements LockService.
func (h HTTPLocks) Renew(ctx context.Context, name string, token uint64) error {
	res, err := Do(ctx, http.MethodPost, h.node(ctx), lockURL(name, "renew"), map[string]uint64{"token": token})
	return lockError(res, err)
}

// Release implements LockService.
func (h HTTPLocks) Release(ctx context.Context, name string, token uint64) error {
	res, err := Do(ctx, http.MethodPost, h.node(ctx), lockURL(name, "release"), map[string]uint64{"token": token})
	return lockError(res, err)
}

// Status implements LockService.
func (h HTTPLocks) Status(ctx context.Context, name string) (LockInfo, error) {
	res, err := Do(ctx, http.MethodGet, h.node(ctx), lockURL(name, ""), nil)
	if err := lockError(res, err); err != nil {
		return LockInfo{}, err
	}
	var st struct {
		Held    bool   `json:"held"`
		Token   uint64 `json:"token"`
		Waiters int    `json:"waiters"`
		Holders []struct {
			Token uint64 `json:"token"`
		} `json:"holders"`
	}
	if err := res.JSON(&st); err != nil {
		return LockInfo{}, fmt.Errorf("status answered %v: %w", res, err)
	}
	info := LockInfo{Held: st.Held, Token: st.Token, Waiters: st.Waiters}
	for _, h := range st.Holders {
		info.Holders = append(info.Holders, h.Token)
	}
	return info, nil
}

// Get implements LockService.
func (h HTTPLocks) Get(ctx context.Context, key, lock string, token uint64) (string, bool, error) {
	path := KVPath(key)
	if token > 0 {
		path += "?fence_lock=" + url.QueryEscape(lock) + "&fence_token=" + strconv.FormatUint(token, 10)
	}
	res, err := Do(ctx, http.MethodGet, h.node(ctx), path, nil)
	if err == nil && res.Status == http.StatusNotFound && res.Code() == "not_found" {
		return "", false, nil
	}
	if err := lockError(res, err); err != nil {
		return "", false, err
	}
	var kv struct {
		Value string `json:"value"`
	}
	if err := res.JSON(&kv); err != nil {
		return "", false, fmt.Errorf("get answered %v: %w", res, err)
	}
	return kv.Value, true, nil
}

// Put implements LockService.
func (h HTTPLocks) Put(ctx context.Context, key, value, lock string, token uint64) error {
	body := map[string]any{"value": value}
	if token > 0 {
		body["fence"] = map[string]any{"lock": lock, "token": token}
	}
	res, err := Do(ctx, http.MethodPut, h.node(ctx), KVPath(key), body)
	return lockError(res, err)
}

// lockURL is the API path of a lock action ("" for the status), as the lock API tests' LockPath.
func lockURL(name, action string) string {
	p := "/v1/locks/" + url.PathEscape(name)
	if action != "" {
		p += "/" + action
	}
	return p
}
