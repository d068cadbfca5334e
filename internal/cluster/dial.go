package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/cairndb/cairn/internal/clock"
)

// Forwarding dial policy. A request must never wait out a dead peer: every
// node-to-node dial (forwarded requests, scan parts, internal calls) is bounded
// by Config.DialTimeout, name resolution included, and a peer that could not
// be dialed is skipped for Config.UnreachableFor, so the requests behind the
// first one fail over at once instead of each paying the timeout again. Under
// docker's DNS, resolving a dead container's name hangs for the resolver's
// whole timeout (10s): that was the first forwarded write after a kill.

// ErrDialTimeout: the dial did not complete within Config.DialTimeout.
var ErrDialTimeout = errors.New("dial timed out")

// unreachable remembers peers whose last dial failed.
type unreachable struct {
	ttl   time.Duration
	clock clock.Clock

	mu    sync.Mutex
	until map[string]time.Time
}

func newUnreachable(ttl time.Duration, c clock.Clock) *unreachable {
	return &unreachable{ttl: ttl, clock: c, until: map[string]time.Time{}}
}

func (u *unreachable) mark(addr string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.until[addr] = u.clock.Now().Add(u.ttl)
}

func (u *unreachable) clear(addr string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	delete(u.until, addr)
}

// down reports whether addr failed a dial within the last ttl.
func (u *unreachable) down(addr string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	t, ok := u.until[addr]
	if ok && u.clock.Now().After(t) {
		delete(u.until, addr)
		return false
	}
	return ok
}

// boundedDial wraps dial: at most timeout per attempt, failures recorded in
// u, and every failure reported as a dial error (*net.OpError, Op "dial"), so
// forward knows nothing was sent.
func boundedDial(dial func(ctx context.Context, network, addr string) (net.Conn, error), timeout time.Duration,
	u *unreachable) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		c, err := dial(dctx, network, addr)
		if err == nil {
			u.clear(addr)
			return c, nil
		}
		if ctx.Err() == nil {
			// The request is still wanted: the peer failed, not the caller.
			u.mark(addr)
		}
		if dctx.Err() != nil && ctx.Err() == nil {
			err = fmt.Errorf("%w after %v: %w", ErrDialTimeout, timeout, err)
		}
		var op *net.OpError
		if !errors.As(err, &op) || op.Op != "dial" {
			err = &net.OpError{Op: "dial", Net: network, Err: err}
		}
		return nil, err
	}
}
