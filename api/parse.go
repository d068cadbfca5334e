package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/lock"
)

// maxBody bounds every request body: the largest value plus JSON overhead
// (a value may need up to 6 bytes per byte when escaped).
const maxBody = 6*fsm.MaxValueSize + 64<<10

// keyFromPath recovers the key after /v1/kv/ from the escaped path, so a key
// may contain '/' sent as %2F.
func keyFromPath(r *http.Request) ([]byte, error) {
	p := r.URL.EscapedPath()
	const prefix = "/v1/kv/"
	if !strings.HasPrefix(p, prefix) {
		return nil, invalidf("key path must start with %s", prefix)
	}
	k, err := url.PathUnescape(p[len(prefix):])
	if err != nil {
		return nil, invalidf("bad key escaping: %v", err)
	}
	return []byte(k), validateKey([]byte(k))
}

func validateKey(k []byte) error {
	switch {
	case len(k) == 0:
		return invalidf("key must not be empty")
	case len(k) > fsm.MaxKeySize:
		return invalidf("key is %d bytes; the limit is %d", len(k), fsm.MaxKeySize)
	case !utf8.Valid(k):
		return invalidf("key must be valid UTF-8")
	}
	return nil
}

// readBody reads a bounded request body. A body that stops before its end
// (cut short, malformed chunking, or not received within the body bound,
// see Server.ServeHTTP) is the client's error, never an internal one.
func readBody(r *http.Request) ([]byte, error) {
	b, err := readAll(http.MaxBytesReader(nil, r.Body, maxBody), r.ContentLength)
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return b, nil
	case errors.As(err, &mbe):
		return nil, fmt.Errorf("%w: the request body is over the limit of %d bytes", errTooLarge, maxBody)
	}
	return nil, invalidf("incomplete request body (%d bytes read): %v", len(b), err)
}

// readAll is io.ReadAll with a first buffer sized for a body of n bytes
// (the request's Content-Length; -1 when unknown) and its EOF.
func readAll(rd io.Reader, n int64) ([]byte, error) {
	size := 512
	if n >= 0 && n < maxBody {
		size = int(n) + 1
	}
	b := make([]byte, 0, size)
	for {
		m, err := rd.Read(b[len(b):cap(b)])
		b = b[:len(b)+m]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // let append pick the next size
		}
	}
}

// decodeStrict returns a JSON decoder that rejects unknown fields.
func decodeStrict(r io.Reader) *json.Decoder {
	d := json.NewDecoder(r)
	d.DisallowUnknownFields()
	return d
}

// unmarshalStrict decodes exactly one JSON value with no unknown fields.
func unmarshalStrict(b []byte, v any) error {
	d := decodeStrict(bytes.NewReader(b))
	if err := d.Decode(v); err != nil {
		return invalidf("malformed JSON body: %v", err)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return invalidf("malformed JSON body: trailing data after the JSON value")
	}
	return nil
}

type putRequest struct {
	Value     *string      `json:"value"`
	TTL       string       `json:"ttl"`
	If        *ifClause    `json:"if"`
	Fence     *fenceClause `json:"fence"`
	RequestID string       `json:"request_id"`
}

type ifClause struct {
	ModIndex *uint64 `json:"mod_index"`
	Absent   *bool   `json:"absent"`
	Value    *string `json:"value"`
}

type fenceClause struct {
	Lock  string `json:"lock"`
	Token uint64 `json:"token"`
}

// parsePut builds the put command from the body: JSON, or the raw value with
// Content-Type application/octet-stream (options then come from the query).
func parsePut(r *http.Request, key, body []byte) (*fsm.Command, error) {
	cmd := &fsm.Command{Op: fsm.OpPut, Key: key, Time: time.Now().UnixNano()}
	q := r.URL.Query()
	cmd.Prev = isTrue(q.Get("prev"))
	if isOctetStream(r.Header.Get("Content-Type")) {
		cmd.Value = body
		cmd.RequestID = q.Get("request_id")
		if t := q.Get("ttl"); t != "" {
			d, err := parseTTL(t)
			if err != nil {
				return nil, err
			}
			cmd.TTL = d
		}
		return cmd, validateCommand(cmd)
	}
	for _, name := range []string{"ttl", "request_id"} {
		if q.Has(name) {
			// Not applied from the query to a JSON put: refused rather than
			// silently ignored.
			return nil, invalidf("query parameter %q applies to a binary put (Content-Type application/octet-stream); a JSON put carries it in the body", name)
		}
	}
	var req putRequest
	if err := unmarshalStrict(body, &req); err != nil {
		return nil, err
	}
	if req.Value == nil {
		return nil, invalidf(`"value" is required`)
	}
	cmd.Value = []byte(*req.Value)
	cmd.RequestID = req.RequestID
	if req.TTL != "" {
		d, err := parseTTL(req.TTL)
		if err != nil {
			return nil, err
		}
		cmd.TTL = d
	}
	if req.If != nil {
		c, err := req.If.condition()
		if err != nil {
			return nil, err
		}
		cmd.Cond = c
	}
	if req.Fence != nil {
		f := req.Fence
		if f.Lock == "" || len(f.Lock) > 256 || strings.ContainsRune(f.Lock, 0) || f.Token == 0 {
			return nil, invalidf(`"fence" needs a lock name of 1..256 bytes without NUL and a positive token`)
		}
		cmd.Fence = &fsm.Fence{Lock: req.Fence.Lock, Token: req.Fence.Token}
	}
	return cmd, validateCommand(cmd)
}

// isOctetStream reports a binary body; media types compare case-insensitively.
func isOctetStream(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/octet-stream"
}

func (c *ifClause) condition() (*fsm.Condition, error) {
	n := 0
	var cond fsm.Condition
	if c.ModIndex != nil {
		n++
		cond = fsm.Condition{Kind: fsm.CondModIndex, ModIndex: *c.ModIndex}
	}
	if c.Absent != nil {
		if !*c.Absent {
			return nil, invalidf(`"if": {"absent": false} is not a condition; use mod_index or value`)
		}
		n++
		cond = fsm.Condition{Kind: fsm.CondAbsent}
	}
	if c.Value != nil {
		n++
		cond = fsm.Condition{Kind: fsm.CondValue, Value: []byte(*c.Value)}
	}
	if n != 1 {
		return nil, invalidf(`"if" takes exactly one of mod_index, absent, value`)
	}
	return &cond, nil
}

func parseTTL(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, invalidf("bad ttl %q: %v", s, err)
	}
	if d < time.Second || d > 365*24*time.Hour {
		return 0, invalidf("ttl %s out of range 1s..8760h", d)
	}
	return d, nil
}

func validateCommand(c *fsm.Command) error {
	// A value over its limit is too_large, as a body over its limit is
	// (docs/api.md, "Conventions"); names (keys, request ids) over theirs
	// are invalid_argument.
	if len(c.Value) > fsm.MaxValueSize {
		return fmt.Errorf("%w: value is %d bytes; the limit is %d", errTooLarge, len(c.Value), fsm.MaxValueSize)
	}
	if c.Cond != nil && len(c.Cond.Value) > fsm.MaxValueSize {
		return fmt.Errorf("%w: if.value is %d bytes; the limit is %d", errTooLarge, len(c.Cond.Value), fsm.MaxValueSize)
	}
	if len(c.RequestID) > 256 {
		return invalidf("request_id is %d bytes; the limit is 256", len(c.RequestID))
	}
	return nil
}

// parseDelete builds a delete command from the query.
func parseDelete(r *http.Request, key []byte) (*fsm.Command, error) {
	q := r.URL.Query()
	cmd := &fsm.Command{Op: fsm.OpDelete, Key: key, Time: time.Now().UnixNano(), RequestID: q.Get("request_id")}
	cmd.Prev = isTrue(q.Get("prev"))
	if s := q.Get("if_mod_index"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, invalidf("bad if_mod_index %q", s)
		}
		cmd.Cond = &fsm.Condition{Kind: fsm.CondModIndex, ModIndex: n}
	}
	f, err := parseFenceQuery(q)
	if err != nil {
		return nil, err
	}
	cmd.Fence = f
	return cmd, validateCommand(cmd)
}

// parseFenceQuery reads ?fence_lock=L&fence_token=T (a fenced DELETE or a
// fenced read, invariant I11): both or neither; nil when neither.
func parseFenceQuery(q url.Values) (*fsm.Fence, error) {
	l, t := q.Get("fence_lock"), q.Get("fence_token")
	if !q.Has("fence_lock") && !q.Has("fence_token") {
		return nil, nil
	}
	if l == "" || t == "" {
		return nil, invalidf("a fence needs both fence_lock and fence_token")
	}
	if err := lock.ValidName(l); err != nil {
		return nil, invalidf("bad fence_lock: %s", err.Msg)
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil || n == 0 {
		return nil, invalidf("bad fence_token %q: want a positive integer", t)
	}
	return &fsm.Fence{Lock: l, Token: n}, nil
}

// isTrue reads the older yes-or-no query parameters (prev, raw, keys_only)
// leniently: anything but "1" or "true" is false, as clients rely on.
func isTrue(s string) bool { return s == "1" || s == "true" }

// flagParam reads a newer yes-or-no query parameter strictly: absent, "",
// "0" and "false" are false; "1" and "true" are true; anything else is
// invalid_argument rather than a silent false.
func flagParam(q url.Values, name string) (bool, error) {
	switch v := q.Get(name); v {
	case "", "0", "false":
		return false, nil
	case "1", "true":
		return true, nil
	default:
		return false, invalidf("%s must be true or false, not %q", name, v)
	}
}

// readOptions are the query options of a read.
type readOptions struct {
	consistency  string
	maxStaleness time.Duration
}

// checkQuery parses the raw query and refuses a parameter that is not in
// accepted, given twice, or a query that does not parse, so a misspelt
// parameter (?prefx=) is an error rather than silently ignored, as unknown
// JSON fields are.
func checkQuery(rawQuery string, accepted []string, route string) error {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return invalidf("malformed query %q: %v", rawQuery, err)
	}
	for _, name := range slices.Sorted(maps.Keys(q)) { // the same message every time
		vs := q[name]
		if !slices.Contains(accepted, name) {
			if len(accepted) == 0 {
				return invalidf("unknown query parameter %q: %s takes none", name, route)
			}
			return invalidf("unknown query parameter %q: %s takes %s", name, route, strings.Join(accepted, ", "))
		}
		if len(vs) > 1 {
			return invalidf("query parameter %q given %d times", name, len(vs))
		}
	}
	return nil
}

func parseReadOptions(q url.Values) (readOptions, error) {
	o := readOptions{consistency: q.Get("consistency"), maxStaleness: 5 * time.Second}
	switch o.consistency {
	case "":
		o.consistency = "linearizable"
	case "linearizable", "session", "stale":
	default:
		return o, invalidf("consistency %q: want linearizable, session or stale", o.consistency)
	}
	if s := q.Get("max_staleness"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return o, invalidf("bad max_staleness %q", s)
		}
		o.maxStaleness = d
	}
	return o, nil
}
