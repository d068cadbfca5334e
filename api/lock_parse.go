package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cairndb/cairn/lock"
)

// lockPrefix starts every lock route; the lock name follows, percent-encoded
// like a key (it may contain '/'), then /acquire, /renew or /release for the
// POST routes.
const lockPrefix = "/v1/locks/"

// Bounds of the lock routes that lock/ does not own.
const (
	defaultStatusWait = 30 * time.Second // a blocking status without "wait"
	defaultLockList   = 1000
	maxLockList       = 1000
)

// lockAction is the last path segment of a POST lock route.
type lockAction string

const (
	actionAcquire lockAction = "acquire"
	actionRenew   lockAction = "renew"
	actionRelease lockAction = "release"
)

// lockPath splits a lock route's escaped path into the lock name and, for
// POST, the action. A GET names the lock by the whole rest of the path (a
// lock may be called "x/acquire"); a POST's action is the last segment, so
// a name ending in "/acquire" is sent with that slash escaped or followed
// by the action: POST /v1/locks/x/acquire/acquire.
func lockPath(r *http.Request) (name string, action lockAction, err error) {
	p := r.URL.EscapedPath()
	if !strings.HasPrefix(p, lockPrefix) {
		return "", "", invalidf("lock path must start with %s", lockPrefix)
	}
	rest := p[len(lockPrefix):]
	if r.Method == http.MethodPost {
		i := strings.LastIndexByte(rest, '/')
		if i < 0 {
			return "", "", invalidf("POST %s{name} needs an action: %s{name}/acquire, /renew or /release", lockPrefix, lockPrefix)
		}
		switch a := lockAction(rest[i+1:]); a {
		case actionAcquire, actionRenew, actionRelease:
			action, rest = a, rest[:i]
		default:
			return "", "", invalidf("unknown lock action %q: want acquire, renew or release", rest[i+1:])
		}
	}
	name, err = url.PathUnescape(rest)
	if err != nil {
		return "", "", invalidf("bad lock name escaping: %v", err)
	}
	return name, action, validateLockName(name)
}

// validateLockName checks a lock name at the edge: lock.ValidName's rule
// (1..MaxNameSize bytes, no NUL), and valid UTF-8 like a key, since names
// are JSON strings in every answer. A lock is routed by its name as a key,
// so it must also be a valid key.
func validateLockName(name string) error {
	if err := lock.ValidName(name); err != nil {
		return invalidf("bad lock name: %s", err.Msg)
	}
	if err := validateKey([]byte(name)); err != nil {
		return invalidf("bad lock name: %v", err)
	}
	return nil
}

// acquireRequest is the body of POST /v1/locks/{name}/acquire.
type acquireRequest struct {
	TTL       string  `json:"ttl"`
	Wait      *string `json:"wait"`
	Owner     string  `json:"owner"`
	Limit     *int64  `json:"limit"`
	Mode      string  `json:"mode"`
	LockDelay string  `json:"lock_delay"`
	// RequestID names the acquire: a retry with the same id gets the same
	// grant or place in the queue (lock/DESIGN.md "Retries"). A waiting
	// acquire without one gets a generated id.
	RequestID string `json:"request_id"`
}

// tokenRequest is the body of renew and release.
type tokenRequest struct {
	Token *uint64 `json:"token"`
}

// parseAcquire builds the Acquire command from the body. Every bound of
// lock.Apply is checked here too, so bad input never reaches the log and
// the lock is untouched (issue 12 item 9).
func parseAcquire(name string, body []byte) (lock.Acquire, error) {
	var req acquireRequest
	if err := unmarshalLock(body, &req); err != nil {
		return lock.Acquire{}, err
	}
	c := lock.Acquire{Name: name, Owner: req.Owner, Limit: 1, WaiterID: req.RequestID}
	var err error
	if req.TTL == "" {
		return c, invalidf(`"ttl" is required (a duration in [%s, %s], e.g. "15s")`, lock.MinTTL, lock.MaxTTL)
	}
	if c.TTL, err = parseLockDuration("ttl", req.TTL, lock.MinTTL, lock.MaxTTL); err != nil {
		return c, err
	}
	if req.Wait != nil {
		if c.Wait, err = parseLockDuration("wait", *req.Wait, 0, lock.MaxWait); err != nil {
			return c, err
		}
	}
	if req.LockDelay != "" {
		if c.LockDelay, err = parseLockDuration("lock_delay", req.LockDelay, 0, lock.MaxLockDelay); err != nil {
			return c, err
		}
	}
	if req.Limit != nil {
		if *req.Limit < 1 || *req.Limit > lock.MaxLimit {
			return c, invalidf("limit %d not in [1, %d]", *req.Limit, lock.MaxLimit)
		}
		c.Limit = int(*req.Limit)
	}
	switch req.Mode {
	case "", "exclusive":
		c.Mode = lock.Exclusive
	case "shared":
		c.Mode = lock.Shared
	default:
		return c, invalidf("unknown mode %q: want exclusive or shared", req.Mode)
	}
	if len(c.Owner) > lock.MaxOwnerSize {
		return c, invalidf("owner is %d bytes; the limit is %d", len(c.Owner), lock.MaxOwnerSize)
	}
	if len(c.WaiterID) > lock.MaxWaiterIDSize {
		return c, invalidf("request_id is %d bytes; the limit is %d", len(c.WaiterID), lock.MaxWaiterIDSize)
	}
	return c, nil
}

// parseToken reads the token of a renew or release body: a positive
// integer as a JSON number ("4711" as a string is refused, not guessed at).
func parseToken(body []byte) (uint64, error) {
	var req tokenRequest
	if err := unmarshalLock(body, &req); err != nil {
		return 0, err
	}
	if req.Token == nil {
		return 0, invalidf(`"token" is required: the fencing token the acquire returned`)
	}
	if *req.Token == 0 {
		return 0, invalidf("token must be a positive integer, not 0")
	}
	return *req.Token, nil
}

// unmarshalLock decodes a lock body strictly, with messages that name the
// field a client got wrong. An empty body is an empty object.
func unmarshalLock(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	err := unmarshalStrict(body, v)
	if err == nil {
		return nil
	}
	// unmarshalStrict wraps the decoder's error in its message only; decode
	// again to see the typed one.
	d := decodeStrict(bytes.NewReader(body))
	var te *json.UnmarshalTypeError
	if errors.As(d.Decode(v), &te) {
		switch te.Field {
		case "token":
			return invalidf("token must be a positive integer (a JSON number), got a JSON %s", te.Value)
		case "limit":
			return invalidf("limit must be an integer in [1, %d] (a JSON number), got a JSON %s", lock.MaxLimit, te.Value)
		case "ttl", "wait", "lock_delay", "owner", "mode", "request_id":
			return invalidf("%s must be a JSON string, got a JSON %s", te.Field, te.Value)
		}
	}
	return err
}

// parseLockDuration parses a Go duration and checks it is in [lo, hi].
func parseLockDuration(field, s string, lo, hi time.Duration) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, invalidf("bad %s %q: %v", field, s, err)
	}
	if d < lo || d > hi {
		return 0, invalidf("%s %s not in [%s, %s]", field, d, lo, hi)
	}
	return d, nil
}

// statusRequest is the query of GET /v1/locks/{name}.
type statusRequest struct {
	waitIndex uint64        // 0: answer now
	wait      time.Duration // with waitIndex: how long to block at most
}

func parseStatus(q url.Values) (statusRequest, error) {
	req := statusRequest{wait: defaultStatusWait}
	if s := q.Get("wait_index"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return req, invalidf("bad wait_index %q: want a non-negative integer, the index of an earlier answer", s)
		}
		req.waitIndex = n
	}
	if s := q.Get("wait"); s != "" {
		if !q.Has("wait_index") {
			return req, invalidf("wait applies to a blocking status: give wait_index too")
		}
		d, err := parseLockDuration("wait", s, 0, lock.MaxWait)
		if err != nil {
			return req, err
		}
		req.wait = d
	}
	return req, nil
}

// lockListRequest is the query of GET /v1/locks.
type lockListRequest struct {
	start, end []byte // [start, end); empty end = +infinity
	limit      int
}

// parseLockList reads prefix (or start/end, which the list's parts on other
// nodes and a "next" continuation use) and limit, like a key scan.
func parseLockList(q url.Values) (lockListRequest, error) {
	var req lockListRequest
	sr, err := parseScan(url.Values{"prefix": q["prefix"], "start": q["start"], "end": q["end"]})
	if err != nil {
		return req, err
	}
	req.start, req.end, req.limit = sr.start, sr.end, defaultLockList
	if s := q.Get("limit"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) || n == 0 {
			return req, invalidf("bad limit %q: want a positive integer (capped at %d)", s, maxLockList)
		}
		req.limit = int(min(n, maxLockList))
	}
	return req, nil
}
