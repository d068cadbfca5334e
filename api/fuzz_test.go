package api

import (
	"bytes"
	"encoding/json"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cairndb/cairn/fsm"
)

// checkClientError fails unless err is one the error table answers with a
// 4xx: a parser of outside input never produces a 5xx.
func checkClientError(t *testing.T, err error) {
	t.Helper()
	if status, code, _ := errorStatus(err); status < 400 || status >= 500 {
		t.Fatalf("parse error %q maps to %d %s; want a client error", err, status, code)
	}
}

// FuzzParsePut: any body, as JSON or raw bytes, with any query either yields
// a put of the given key within the limits, or a client error.
func FuzzParsePut(f *testing.F) {
	seeds := []struct {
		body  string
		octet bool
		query string
	}{
		{`{"value":"1"}`, false, ""},
		{`{"value":""}`, false, "prev=1"},
		{`{"value":"1","ttl":"30s","if":{"mod_index":15},"request_id":"c1-000042"}`, false, ""},
		{`{"value":"1","if":{"absent":true},"fence":{"lock":"jobs/daily","token":4711}}`, false, ""},
		{`{"value":"1","if":{"value":"0"}}`, false, ""},
		{`{"value":"1","if":{"absent":false}}`, false, ""},
		{`{"value":"1","if":{"mod_index":1,"absent":true}}`, false, ""},
		{`{"value":"1","fence":{"lock":"","token":1}}`, false, ""},
		{`{"value":"1"}]`, false, ""},
		{`{"value":"\u00e9\ud800"}`, false, ""},
		{`{"value":1}`, false, ""},
		{"\x00\xff raw", true, "ttl=1m&request_id=r"},
		{"", true, "ttl=0s"},
		{"x", true, "ttl=9999999999h"},
	}
	for _, s := range seeds {
		f.Add([]byte(s.body), s.octet, s.query, "k")
	}
	f.Add([]byte(`{"value":"v"}`), false, "", "a/b\xff")
	f.Fuzz(func(t *testing.T, body []byte, octet bool, rawQuery, key string) {
		r := &http.Request{Method: http.MethodPut, URL: &url.URL{Path: "/v1/kv/k", RawQuery: rawQuery}, Header: http.Header{}}
		if octet {
			r.Header.Set("Content-Type", "application/octet-stream")
		} else {
			r.Header.Set("Content-Type", "application/json")
		}
		cmd, err := parsePut(r, []byte(key), body)
		if err != nil {
			checkClientError(t, err)
			return
		}
		if cmd.Op != fsm.OpPut || string(cmd.Key) != key {
			t.Fatalf("command op %v key %q; want a put of %q", cmd.Op, cmd.Key, key)
		}
		if len(cmd.Value) > fsm.MaxValueSize || len(cmd.RequestID) > 256 {
			t.Fatalf("value %d bytes, request_id %d bytes: over the limits", len(cmd.Value), len(cmd.RequestID))
		}
		if cmd.TTL != 0 && (cmd.TTL < time.Second || cmd.TTL > 365*24*time.Hour) {
			t.Fatalf("ttl %v out of range", cmd.TTL)
		}
		if cmd.Fence != nil && (cmd.Fence.Lock == "" || cmd.Fence.Token == 0) {
			t.Fatalf("fence %+v accepted", cmd.Fence)
		}
		if c := cmd.Cond; c != nil {
			switch c.Kind {
			case fsm.CondModIndex, fsm.CondAbsent, fsm.CondValue:
			default:
				t.Fatalf("condition kind %d", c.Kind)
			}
		}
		if octet {
			if !bytes.Equal(cmd.Value, body) || cmd.Cond != nil || cmd.Fence != nil {
				t.Fatalf("octet-stream put %+v; want the body verbatim as the value", cmd)
			}
			return
		}
		// An accepted JSON body starts with a JSON object whose "value" is the
		// command's value. (Only its first value: trailing "]" or "}" is
		// accepted today, see TestParsePutKnownBugs.)
		var loose struct {
			Value *string `json:"value"`
		}
		if err := json.NewDecoder(bytes.NewReader(body)).Decode(&loose); err != nil || loose.Value == nil {
			t.Fatalf("accepted body %q has no JSON value (%v)", body, err)
		}
		if *loose.Value != string(cmd.Value) {
			t.Fatalf("value %q; body says %q", cmd.Value, *loose.Value)
		}
		if !utf8.Valid(cmd.Value) {
			t.Fatalf("JSON value %q is not UTF-8", cmd.Value)
		}
	})
}

// FuzzParseSession: any token either is rejected as invalid_argument or
// parses to a session that String encodes back to itself.
func FuzzParseSession(f *testing.F) {
	for _, s := range []string{
		"", sessionPrefix, session{1: 15, 4: 9}.String(), session{1<<64 - 1: 1}.String(),
		encodeToken("1:15,1:9"), encodeToken("3:0"), encodeToken("1:"), encodeToken("01:007"),
		"s1.!!", "s2.MToy", sessionPrefix + "MTo+",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		s, err := parseSession(tok)
		if err != nil {
			if _, code, _ := errorStatus(err); code != "invalid_argument" {
				t.Fatalf("parse(%q): %v maps to %s; want invalid_argument", tok, err, code)
			}
			return
		}
		for id, idx := range s {
			if idx == 0 {
				t.Fatalf("parse(%q) kept a zero index for shard %d", tok, id)
			}
		}
		again, err := parseSession(s.String())
		if err != nil {
			t.Fatalf("parse(%q) = %v, but its String %q does not parse: %v", tok, s, s.String(), err)
		}
		if !maps.Equal(again, s) {
			t.Fatalf("parse(%q) = %v; parse(String()) = %v", tok, s, again)
		}
	})
}

// FuzzParseScan: any query either is a client error or describes a
// non-empty key range with a limit in 1..maxScanLimit; a prefix scan covers
// exactly the keys with that prefix.
func FuzzParseScan(f *testing.F) {
	for _, q := range []string{
		"", "prefix=jobs/", "prefix=%FF%FF", "prefix=a%FF&limit=5", "start=a&end=b", "start=b&end=a", "start=a&end=a",
		"end=m&keys_only=1", "limit=0", "limit=10001", "limit=-3", "prefix=p&start=a", "prefix=p&start=pq",
		"consistency=stale&max_staleness=250ms", "consistency=x", "start=%ZZ", "a;b=c",
	} {
		f.Add(q, "probe")
	}
	f.Fuzz(func(t *testing.T, rawQuery, probe string) {
		q, _ := url.ParseQuery(rawQuery) // on error, the values parsed so far
		req, err := parseScan(q)
		if err != nil {
			if _, code, _ := errorStatus(err); code != "invalid_argument" {
				t.Fatalf("parseScan(%q): %v maps to %s; want invalid_argument", rawQuery, err, code)
			}
			return
		}
		if req.limit < 1 || req.limit > maxScanLimit {
			t.Fatalf("parseScan(%q): limit %d", rawQuery, req.limit)
		}
		if len(req.end) > 0 && bytes.Compare(req.start, req.end) >= 0 {
			t.Fatalf("parseScan(%q): empty range [%q, %q)", rawQuery, req.start, req.end)
		}
		if p := q.Get("prefix"); p != "" {
			// Without start: exactly the keys with the prefix. With start
			// (a continuation): exactly those from start on.
			k := []byte(probe)
			in := bytes.Compare(k, req.start) >= 0 && (len(req.end) == 0 || bytes.Compare(k, req.end) < 0)
			want := strings.HasPrefix(probe, p) && probe >= q.Get("start")
			if in != want {
				t.Fatalf("prefix %q start %q: key %q in [%q, %q) is %v", p, q.Get("start"), probe, req.start, req.end, in)
			}
		}
	})
}

// FuzzKeyFromPath: the key is the decoded path element after /v1/kv/, and is
// accepted exactly when it is a valid key.
func FuzzKeyFromPath(f *testing.F) {
	for _, s := range []string{"a", "a/b", "a%2Fb", "%2F%2F", "%2E%2E", "100%25", "%ff", "%C3%A9", "", "a?b", "%zz", "a%00b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// As sent on the wire: a request target parsed from the request line.
		if u, err := url.ParseRequestURI("/v1/kv/" + s); err == nil {
			k, err := keyFromPath(&http.Request{Method: http.MethodGet, URL: u})
			checkKey(t, u.Path[len("/v1/kv/"):], k, err)
		}
		// As a client builds it: any key, escaped with url.PathEscape.
		u := &url.URL{Path: "/v1/kv/" + s}
		if esc, err := url.ParseRequestURI("/v1/kv/" + url.PathEscape(s)); err == nil {
			u = esc
		}
		k, err := keyFromPath(&http.Request{Method: http.MethodGet, URL: u})
		checkKey(t, s, k, err)
	})
}

// checkKey checks keyFromPath's answer for a path whose key is want.
func checkKey(t *testing.T, want string, got []byte, err error) {
	t.Helper()
	valid := want != "" && len(want) <= fsm.MaxKeySize && utf8.ValidString(want)
	switch {
	case err != nil && valid:
		t.Fatalf("key %q rejected: %v", want, err)
	case err != nil:
		if _, code, _ := errorStatus(err); code != "invalid_argument" {
			t.Fatalf("key %q: %v maps to %s; want invalid_argument", want, err, code)
		}
	case !valid:
		t.Fatalf("invalid key %q accepted as %q", want, got)
	case string(got) != want:
		t.Fatalf("key %q; want %q", got, want)
	}
}
