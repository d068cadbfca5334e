package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
	"unicode/utf8"
)

// KV is a key and its value with metadata, as docs/api.md describes it.
type KV struct {
	Key         string `json:"key"`
	Value       string `json:"value"`
	CreateIndex uint64 `json:"create_index"`
	ModIndex    uint64 `json:"mod_index"`
	Version     uint64 `json:"version"`
	Lease       string `json:"lease"`
	TTL         string `json:"ttl,omitempty"` // the TTL the key was written with, if any
	// Index is the Raft index the read reflects (X-Cairn-Index). Set by Get;
	// zero in scan results and in PutResult.Prev.
	Index uint64 `json:"-"`
}

// UnmarshalJSON reads a key-value answer; a value that is not UTF-8
// arrives as value_base64 and is decoded into Value.
func (kv *KV) UnmarshalJSON(b []byte) error {
	type plain KV
	var w struct {
		plain
		ValueBase64 *string `json:"value_base64"`
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*kv = KV(w.plain)
	if w.ValueBase64 != nil {
		v, err := base64.StdEncoding.DecodeString(*w.ValueBase64)
		if err != nil {
			return fmt.Errorf("client: value_base64 of %q: %w", kv.Key, err)
		}
		kv.Value = string(v)
	}
	return nil
}

// PutResult is the answer to a Put.
type PutResult struct {
	Key      string `json:"key"`
	ModIndex uint64 `json:"mod_index"`
	Version  uint64 `json:"version"`
	Prev     *KV    `json:"prev,omitempty"` // with WithPrev, when the key existed
	Index    uint64 `json:"-"`              // the write's Raft index (X-Cairn-Index)
}

// ScanOptions selects a scan: a Prefix, or the range [Start, End) (End ""
// means the end of the keyspace).
type ScanOptions struct {
	Prefix       string
	Start, End   string
	Limit        int // per page; 0 means the server's default (1000); the server caps it
	KeysOnly     bool
	Consistency  Consistency
	MaxStaleness time.Duration // with ConsistencyStale
}

// ScanPage is one page of a scan. When More is set, Next is where the
// following page starts.
type ScanPage struct {
	KVs   []KV   `json:"kvs"`
	More  bool   `json:"more"`
	Next  string `json:"next,omitempty"`
	Index uint64 `json:"-"`
}

// EscapeKey returns key as one escaped path element for "/v1/kv/{key}".
//
// A key may contain '/', so the whole key is escaped as a single segment
// (url.PathEscape: '/' becomes %2F, ' ' %20, '%' %25). The server must recover
// the key from r.URL.EscapedPath() (or RawPath) and unescape it, not from the
// decoded r.URL.Path, where "a%2Fb" and "a/b" look alike. The keys "." and
// ".." are escaped too (%2E), so that no proxy on the way takes them for
// dot segments; cairn itself never cleans a key's path (docs/api.md).
func EscapeKey(key string) string {
	switch key {
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	return url.PathEscape(key)
}

func kvPath(key string) string { return "/v1/kv/" + EscapeKey(key) }

func checkKey(key string) error {
	if key == "" {
		return &Error{Status: http.StatusBadRequest, Code: CodeInvalidArgument, Message: "empty key"}
	}
	return nil
}

// Get returns the key's current value, or an error matching ErrNotFound.
func (c *Client) Get(ctx context.Context, key string, opts ...ReadOption) (*KV, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	var rc readConfig
	for _, o := range opts {
		o(&rc)
	}
	req := Request{
		Method: http.MethodGet,
		Path:   kvPath(key),
		Query:  readQuery(nil, rc.consistency, rc.maxStaleness),
	}
	if rc.fence != nil {
		if rc.consistency != ConsistencyDefault && rc.consistency != ConsistencyLinearizable {
			return nil, &Error{Status: http.StatusBadRequest, Code: CodeInvalidArgument,
				Message: "a fenced read goes through Raft: it cannot be a " + string(rc.consistency) + " read"}
		}
		req.Query = fenceQuery(req.Query, rc.fence)
	}
	if rc.consistency == ConsistencyDefault || rc.consistency == ConsistencyLinearizable {
		// Only the leader answers these; session and stale reads are
		// served by whichever replica the request reaches.
		req.RouteKey = key
	}
	var kv KV
	meta, err := c.Do(ctx, req, &kv)
	if err != nil {
		return nil, err
	}
	kv.Index = meta.Index
	return &kv, nil
}

func readQuery(q url.Values, level Consistency, maxStaleness time.Duration) url.Values {
	if level == ConsistencyDefault {
		return q
	}
	if q == nil {
		q = url.Values{}
	}
	q.Set("consistency", string(level))
	if level == ConsistencyStale && maxStaleness > 0 {
		q.Set("max_staleness", maxStaleness.String())
	}
	return q
}

type putBody struct {
	Value     string `json:"value"`
	TTL       string `json:"ttl,omitempty"`
	If        *putIf `json:"if,omitempty"`
	Fence     *fence `json:"fence,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// putIf is exactly one of the three forms of docs/api.md.
type putIf struct {
	ModIndex *uint64 `json:"mod_index,omitempty"`
	Absent   bool    `json:"absent,omitempty"`
	Value    *string `json:"value,omitempty"`
}

type fence struct {
	Lock  string `json:"lock"`
	Token uint64 `json:"token"`
}

// fenceQuery adds the fence of a DELETE or fenced GET (docs/api.md, "Locks").
func fenceQuery(q url.Values, f *fence) url.Values {
	if q == nil {
		q = url.Values{}
	}
	q.Set("fence_lock", f.Lock)
	q.Set("fence_token", strconv.FormatUint(f.Token, 10))
	return q
}

// Put writes value under key. Conditions that do not hold give an error
// matching ErrConditionFailed (with Error.Current when the server sent it).
// Each call carries one request id, reused on every retry, so the write is
// applied at most once (invariant I7); when the client cannot learn whether it
// was applied the error matches ErrOutcomeUnknown.
func (c *Client) Put(ctx context.Context, key, value string, opts ...PutOption) (*PutResult, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	pc := putConfig{body: putBody{Value: value}}
	for _, o := range opts {
		o.applyPut(&pc)
	}
	if pc.body.RequestID == "" {
		pc.body.RequestID = c.NewRequestID()
	}
	var q url.Values
	if pc.prev {
		q = url.Values{"prev": {"1"}}
	}
	req := Request{
		Method:     http.MethodPut,
		Path:       kvPath(key),
		Query:      q,
		Body:       &pc.body,
		Idempotent: true,
		RouteKey:   key,
	}
	if !utf8.ValidString(value) {
		// JSON would silently replace the invalid bytes: send the value
		// raw, with the options docs/api.md allows there in the query.
		if pc.body.If != nil || pc.body.Fence != nil {
			return nil, &Error{Status: http.StatusBadRequest, Code: CodeInvalidArgument,
				Message: "a value that is not valid UTF-8 cannot carry a condition or a fence (the raw put form has neither)"}
		}
		if q == nil {
			q = url.Values{}
		}
		q.Set("request_id", pc.body.RequestID)
		if pc.body.TTL != "" {
			q.Set("ttl", pc.body.TTL)
		}
		req.Query, req.Body, req.RawBody = q, nil, []byte(value)
	}
	var res PutResult
	meta, err := c.Do(ctx, req, &res)
	if err != nil {
		return nil, err
	}
	res.Index = meta.Index
	return &res, nil
}

// Delete removes key and returns how many keys were deleted (0 when it did
// not exist). Request ids and outcome reporting are as for Put.
func (c *Client) Delete(ctx context.Context, key string, opts ...DeleteOption) (deleted int, err error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	var dc deleteConfig
	for _, o := range opts {
		o.applyDelete(&dc)
	}
	if dc.requestID == "" {
		dc.requestID = c.NewRequestID()
	}
	q := url.Values{"request_id": {dc.requestID}}
	if dc.ifModIndex != nil {
		q.Set("if_mod_index", strconv.FormatUint(*dc.ifModIndex, 10))
	}
	if dc.fence != nil {
		q = fenceQuery(q, dc.fence)
	}
	var res struct {
		Deleted int `json:"deleted"`
	}
	if _, err := c.Do(ctx, Request{Method: http.MethodDelete, Path: kvPath(key), Query: q, Idempotent: true, RouteKey: key}, &res); err != nil {
		return 0, err
	}
	return res.Deleted, nil
}

// Scan returns one page of keys in byte order.
func (c *Client) Scan(ctx context.Context, opts ScanOptions) (*ScanPage, error) {
	q := url.Values{}
	if opts.Prefix != "" {
		q.Set("prefix", opts.Prefix)
	}
	if opts.Start != "" {
		q.Set("start", opts.Start)
	}
	if opts.End != "" {
		q.Set("end", opts.End)
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.KeysOnly {
		q.Set("keys_only", "1")
	}
	q = readQuery(q, opts.Consistency, opts.MaxStaleness)
	var page ScanPage
	meta, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/kv", Query: q}, &page)
	if err != nil {
		return nil, err
	}
	page.Index = meta.Index
	return &page, nil
}

// ErrStopScan may be returned by a ScanAll callback to end the scan early;
// ScanAll then returns nil.
var ErrStopScan = errors.New("client: stop scan")

// ScanAll calls fn for every key selected by opts, in byte order, following
// ScanPage.Next until the last page. An error from fn ends the scan and is
// returned (except ErrStopScan). Each page is read on its own: the scan as a
// whole is not a snapshot (docs/architecture.md, "Consistency offered").
func (c *Client) ScanAll(ctx context.Context, opts ScanOptions, fn func(KV) error) error {
	var last string // greatest key delivered
	delivered := false
	for {
		page, err := c.Scan(ctx, opts)
		if err != nil {
			return err
		}
		progressed := false
		for _, kv := range page.KVs {
			// Skip keys already delivered, whether the server's "next" is the
			// first key of the next page or the last key of this one.
			if delivered && kv.Key <= last {
				continue
			}
			last, delivered, progressed = kv.Key, true, true
			if err := fn(kv); err != nil {
				if errors.Is(err, ErrStopScan) {
					return nil
				}
				return err
			}
		}
		if !page.More {
			return nil
		}
		next := page.Next
		if next == "" && delivered {
			next = last
		}
		if !progressed && next <= opts.Start {
			return &Error{Code: CodeUnknown, Message: fmt.Sprintf("scan makes no progress at %q", next)}
		}
		// Continue as a plain range [next, end of the prefix). The server
		// also takes ?prefix=P&start=next (docs/api.md); the range form
		// works with older servers too.
		if opts.Prefix != "" {
			if end := prefixEnd(opts.Prefix); opts.End == "" || (end != "" && end < opts.End) {
				opts.End = end
			}
			opts.Prefix = ""
		}
		opts.Start = next
		if opts.End != "" && opts.Start >= opts.End {
			return nil // nothing left in range; the server would refuse start >= end
		}
	}
}

// prefixEnd returns the smallest key greater than every key starting with p,
// or "" when there is none. For valid UTF-8 it increments the last code point
// (skipping surrogates), so the bound is itself valid UTF-8 and sorts
// correctly in byte order, since UTF-8 byte order is code point order.
func prefixEnd(p string) string {
	if !utf8.ValidString(p) {
		b := []byte(p)
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] < 0xff {
				b[i]++
				return string(b[:i+1])
			}
		}
		return ""
	}
	for p != "" {
		r, size := utf8.DecodeLastRuneInString(p)
		p = p[:len(p)-size]
		switch {
		case r == utf8.MaxRune:
			continue
		case r == 0xD7FF:
			r = 0xE000
		default:
			r++
		}
		return p + string(r)
	}
	return ""
}
