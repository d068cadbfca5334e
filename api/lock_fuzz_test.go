package api

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/cairndb/cairn/lock"
)

// FuzzParseAcquire: any acquire body either yields a command lock.Apply
// accepts as valid (so nothing the edge lets through is refused later as
// invalid_argument, except a limit that differs from the lock's), or a
// client error.
func FuzzParseAcquire(f *testing.F) {
	for _, s := range []string{
		`{"ttl":"15s"}`, `{"ttl":"1s","wait":"1h","owner":"w","limit":128,"mode":"shared","lock_delay":"1m","request_id":"r"}`,
		`{"ttl":"15s","limit":0}`, `{"ttl":"15s","limit":1e3}`, `{"ttl":15}`, `{"ttl":"15s","wait":"-1ns"}`, ``, `null`,
		`{"ttl":"15s","mode":"EXCLUSIVE"}`, `{"ttl":"15s"}{}`, `{"ttl":"9223372036854775807ns"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := parseAcquire("L", body)
		if err != nil {
			checkClientError(t, err)
			return
		}
		if c.Wait > 0 && c.WaiterID == "" {
			c.WaiterID = "generated" // the handler names every acquire
		}
		if _, res := lock.Apply(nil, c, 1, 0, 1); res.Err != nil {
			t.Fatalf("parseAcquire(%q) = %+v, which Apply refuses: %v", body, c, res.Err)
		}
		if _, err := lock.EncodeCommand(c); err != nil {
			t.Fatalf("parseAcquire(%q) = %+v, which does not encode: %v", body, c, err)
		}
	})
}

// FuzzParseToken: any renew or release body yields a positive token or a
// client error.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{`{"token":1}`, `{"token":"1"}`, `{"token":0}`, `{"token":-1}`, `{"token":1.0}`, ``, `{}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		tok, err := parseToken(body)
		if err != nil {
			checkClientError(t, err)
			return
		}
		if tok == 0 {
			t.Fatalf("parseToken(%q) = 0 without an error", body)
		}
	})
}

// FuzzLockPath: any escaped path under /v1/locks/ yields a valid lock name
// (and for POST a known action) or a client error.
func FuzzLockPath(f *testing.F) {
	for _, s := range []string{"jobs/daily", "jobs%2Fdaily/acquire", "x/acquire/release", "%00", "", "/", "%ff/renew", "a%2"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, rawPath string, post bool) {
		method := http.MethodGet
		if post {
			method = http.MethodPost
		}
		p, err := url.PathUnescape(rawPath)
		if err != nil {
			p = rawPath
		}
		r := &http.Request{Method: method, URL: &url.URL{Path: lockPrefix + p, RawPath: lockPrefix + rawPath}}
		name, action, err := lockPath(r)
		if err != nil {
			checkClientError(t, err)
			return
		}
		if verr := validateLockName(name); verr != nil {
			t.Fatalf("lockPath(%q) = %q, an invalid name: %v", rawPath, name, verr)
		}
		if post != (action != "") {
			t.Fatalf("lockPath(%s %q) action %q", method, rawPath, action)
		}
	})
}
