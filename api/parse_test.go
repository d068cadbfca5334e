package api

import (
	"bytes"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/fsm"
)

// putReq returns a PUT request for /v1/kv/k with the given query and
// Content-Type ("" for none).
func putReq(t *testing.T, rawQuery, contentType string) *http.Request {
	t.Helper()
	r := httptest.NewRequest(http.MethodPut, "/v1/kv/k?"+rawQuery, nil)
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	return r
}

// wantCode checks that err maps to the given API code ("" means no error).
func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if code == "" {
		if err != nil {
			t.Fatalf("unexpected error %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("no error; want %s", code)
	}
	if _, got, _ := errorStatus(err); got != code {
		t.Fatalf("error %q maps to %s; want %s", err, got, code)
	}
}

func u64(v uint64) *uint64 { return &v }

func TestParsePutJSON(t *testing.T) {
	bigValue := `{"value":"` + strings.Repeat("v", fsm.MaxValueSize+1) + `"}`
	maxValue := `{"value":"` + strings.Repeat("v", fsm.MaxValueSize) + `"}`
	tests := []struct {
		name  string
		body  string
		code  string // "" = success
		check func(t *testing.T, c *fsm.Command)
	}{
		{name: "value", body: `{"value":"1"}`, check: func(t *testing.T, c *fsm.Command) {
			if string(c.Value) != "1" || c.TTL != 0 || c.Cond != nil || c.Fence != nil || c.RequestID != "" || c.Prev {
				t.Errorf("command %+v; want a plain put of 1", c)
			}
		}},
		{name: "empty string value", body: `{"value":""}`, check: func(t *testing.T, c *fsm.Command) {
			if len(c.Value) != 0 {
				t.Errorf("value %q; want empty", c.Value)
			}
		}},
		{name: "escaped value", body: `{"value":"a\u0000\n\u00e9"}`, check: func(t *testing.T, c *fsm.Command) {
			if string(c.Value) != "a\x00\n\u00e9" {
				t.Errorf("value %q", c.Value)
			}
		}},
		{name: "value at the limit", body: maxValue, check: func(t *testing.T, c *fsm.Command) {
			if len(c.Value) != fsm.MaxValueSize {
				t.Errorf("value is %d bytes; want %d", len(c.Value), fsm.MaxValueSize)
			}
		}},
		// docs/api.md: a value over its limit is 413 too_large, as a body over
		// the limit is (issue 11 item 9: one code for "too large"; it was 400).
		{name: "value over the limit", body: bigValue, code: "too_large"},
		{name: "value missing", body: `{}`, code: "invalid_argument"},
		{name: "value null", body: `{"value":null}`, code: "invalid_argument"},
		{name: "value not a string", body: `{"value":1}`, code: "invalid_argument"},
		{name: "empty body", body: ``, code: "invalid_argument"},
		{name: "not JSON", body: `value=1`, code: "invalid_argument"},
		{name: "array", body: `[{"value":"1"}]`, code: "invalid_argument"},
		{name: "unknown field", body: `{"value":"1","vaule":"2"}`, code: "invalid_argument"},
		{name: "unknown field in if", body: `{"value":"1","if":{"mod_index":1,"x":1}}`, code: "invalid_argument"},
		{name: "unknown field in fence", body: `{"value":"1","fence":{"lock":"l","token":1,"x":1}}`, code: "invalid_argument"},
		{name: "trailing object", body: `{"value":"1"}{"value":"2"}`, code: "invalid_argument"},
		{name: "trailing garbage", body: `{"value":"1"} x`, code: "invalid_argument"},
		{name: "trailing whitespace", body: "{\"value\":\"1\"}\n\t ", check: func(t *testing.T, c *fsm.Command) {
			if string(c.Value) != "1" {
				t.Errorf("value %q", c.Value)
			}
		}},

		{name: "ttl", body: `{"value":"1","ttl":"30s"}`, check: func(t *testing.T, c *fsm.Command) {
			if c.TTL != 30*time.Second {
				t.Errorf("ttl %v; want 30s", c.TTL)
			}
		}},
		{name: "ttl empty means none", body: `{"value":"1","ttl":""}`, check: func(t *testing.T, c *fsm.Command) {
			if c.TTL != 0 {
				t.Errorf("ttl %v; want 0", c.TTL)
			}
		}},
		{name: "ttl lower bound", body: `{"value":"1","ttl":"1s"}`},
		{name: "ttl upper bound", body: `{"value":"1","ttl":"8760h"}`},
		{name: "ttl below 1s", body: `{"value":"1","ttl":"999ms"}`, code: "invalid_argument"},
		{name: "ttl zero", body: `{"value":"1","ttl":"0s"}`, code: "invalid_argument"},
		{name: "ttl negative", body: `{"value":"1","ttl":"-5s"}`, code: "invalid_argument"},
		{name: "ttl over a year", body: `{"value":"1","ttl":"8760h1ns"}`, code: "invalid_argument"},
		{name: "ttl overflow", body: `{"value":"1","ttl":"9999999999999h"}`, code: "invalid_argument"},
		{name: "ttl without unit", body: `{"value":"1","ttl":"30"}`, code: "invalid_argument"},
		{name: "ttl as number", body: `{"value":"1","ttl":30}`, code: "invalid_argument"},

		{name: "if mod_index", body: `{"value":"1","if":{"mod_index":15}}`, check: func(t *testing.T, c *fsm.Command) {
			if c.Cond == nil || c.Cond.Kind != fsm.CondModIndex || c.Cond.ModIndex != 15 {
				t.Errorf("cond %+v; want mod_index 15", c.Cond)
			}
		}},
		{name: "if mod_index 0", body: `{"value":"1","if":{"mod_index":0}}`, check: func(t *testing.T, c *fsm.Command) {
			if c.Cond == nil || c.Cond.Kind != fsm.CondModIndex || c.Cond.ModIndex != 0 {
				t.Errorf("cond %+v; want mod_index 0", c.Cond)
			}
		}},
		{name: "if mod_index negative", body: `{"value":"1","if":{"mod_index":-1}}`, code: "invalid_argument"},
		{name: "if absent", body: `{"value":"1","if":{"absent":true}}`, check: func(t *testing.T, c *fsm.Command) {
			if c.Cond == nil || c.Cond.Kind != fsm.CondAbsent {
				t.Errorf("cond %+v; want absent", c.Cond)
			}
		}},
		{name: "if absent false", body: `{"value":"1","if":{"absent":false}}`, code: "invalid_argument"},
		{name: "if value", body: `{"value":"1","if":{"value":"0"}}`, check: func(t *testing.T, c *fsm.Command) {
			if c.Cond == nil || c.Cond.Kind != fsm.CondValue || string(c.Cond.Value) != "0" {
				t.Errorf("cond %+v; want value 0", c.Cond)
			}
		}},
		{name: "if empty value", body: `{"value":"1","if":{"value":""}}`, check: func(t *testing.T, c *fsm.Command) {
			if c.Cond == nil || c.Cond.Kind != fsm.CondValue || len(c.Cond.Value) != 0 {
				t.Errorf("cond %+v; want empty value", c.Cond)
			}
		}},
		{name: "if none", body: `{"value":"1","if":{}}`, code: "invalid_argument"},
		{name: "if null", body: `{"value":"1","if":null}`, check: func(t *testing.T, c *fsm.Command) {
			if c.Cond != nil {
				t.Errorf("cond %+v; want none", c.Cond)
			}
		}},
		{name: "if mod_index and absent", body: `{"value":"1","if":{"mod_index":1,"absent":true}}`, code: "invalid_argument"},
		{name: "if mod_index and value", body: `{"value":"1","if":{"mod_index":1,"value":"x"}}`, code: "invalid_argument"},
		{name: "if absent and value", body: `{"value":"1","if":{"absent":true,"value":"x"}}`, code: "invalid_argument"},
		{name: "if all three", body: `{"value":"1","if":{"mod_index":1,"absent":true,"value":"x"}}`, code: "invalid_argument"},

		{name: "fence", body: `{"value":"1","fence":{"lock":"jobs/daily","token":4711}}`, check: func(t *testing.T, c *fsm.Command) {
			if c.Fence == nil || c.Fence.Lock != "jobs/daily" || c.Fence.Token != 4711 {
				t.Errorf("fence %+v; want jobs/daily 4711", c.Fence)
			}
		}},
		{name: "fence without lock", body: `{"value":"1","fence":{"token":1}}`, code: "invalid_argument"},
		{name: "fence with token 0", body: `{"value":"1","fence":{"lock":"l","token":0}}`, code: "invalid_argument"},
		{name: "fence without token", body: `{"value":"1","fence":{"lock":"l"}}`, code: "invalid_argument"},
		{name: "fence negative token", body: `{"value":"1","fence":{"lock":"l","token":-1}}`, code: "invalid_argument"},
		{name: "fence and if", body: `{"value":"1","if":{"absent":true},"fence":{"lock":"l","token":2}}`,
			check: func(t *testing.T, c *fsm.Command) {
				if c.Cond == nil || c.Fence == nil {
					t.Errorf("command %+v; want both a condition and a fence", c)
				}
			}},

		{name: "request_id", body: `{"value":"1","request_id":"c1-000042"}`, check: func(t *testing.T, c *fsm.Command) {
			if c.RequestID != "c1-000042" {
				t.Errorf("request_id %q", c.RequestID)
			}
		}},
		{name: "request_id at the limit", body: `{"value":"1","request_id":"` + strings.Repeat("r", 256) + `"}`},
		{name: "request_id over the limit", body: `{"value":"1","request_id":"` + strings.Repeat("r", 257) + `"}`,
			code: "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, ct := range []string{"", "application/json", "application/json; charset=utf-8"} {
				cmd, err := parsePut(putReq(t, "", ct), []byte("k"), []byte(tt.body))
				wantCode(t, err, tt.code)
				if tt.code == "too_large" && !errors.Is(err, errTooLarge) {
					t.Fatalf("error %v does not wrap errTooLarge", err)
				}
				if err != nil {
					continue
				}
				if cmd.Op != fsm.OpPut || string(cmd.Key) != "k" || cmd.Time == 0 {
					t.Fatalf("command %+v; want a put of key k with a proposer time", cmd)
				}
				if tt.check != nil {
					tt.check(t, cmd)
				}
			}
		})
	}
}

func TestParsePutOctetStream(t *testing.T) {
	tests := []struct {
		name  string
		query string
		ct    string
		body  []byte
		code  string
		check func(t *testing.T, c *fsm.Command)
	}{
		{name: "raw bytes", body: []byte{0x00, 0xff, '{', '}'}, check: func(t *testing.T, c *fsm.Command) {
			if !bytes.Equal(c.Value, []byte{0x00, 0xff, '{', '}'}) {
				t.Errorf("value %x", c.Value)
			}
		}},
		{name: "JSON-looking body is the value", body: []byte(`{"value":"1","ttl":"5s"}`), check: func(t *testing.T, c *fsm.Command) {
			if string(c.Value) != `{"value":"1","ttl":"5s"}` || c.TTL != 0 {
				t.Errorf("command %+v; want the body verbatim and no ttl", c)
			}
		}},
		{name: "empty body", body: nil, check: func(t *testing.T, c *fsm.Command) {
			if len(c.Value) != 0 {
				t.Errorf("value %q; want empty", c.Value)
			}
		}},
		{name: "content type parameters", ct: "application/octet-stream; foo=bar", body: []byte("x"),
			check: func(t *testing.T, c *fsm.Command) {
				if string(c.Value) != "x" {
					t.Errorf("value %q", c.Value)
				}
			}},
		{name: "ttl and request_id from the query", query: "ttl=30s&request_id=r-1", body: []byte("x"),
			check: func(t *testing.T, c *fsm.Command) {
				if c.TTL != 30*time.Second || c.RequestID != "r-1" {
					t.Errorf("command %+v; want ttl 30s request_id r-1", c)
				}
			}},
		{name: "bad ttl in the query", query: "ttl=forever", body: []byte("x"), code: "invalid_argument"},
		{name: "ttl below 1s in the query", query: "ttl=10ms", body: []byte("x"), code: "invalid_argument"},
		{name: "request_id over the limit", query: "request_id=" + strings.Repeat("r", 257), body: []byte("x"),
			code: "invalid_argument"},
		{name: "value at the limit", body: bytes.Repeat([]byte{0xfe}, fsm.MaxValueSize)},
		{name: "value over the limit", body: bytes.Repeat([]byte{0xfe}, fsm.MaxValueSize+1), code: "too_large"}, // was 400, see TestParsePutJSON
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct := tt.ct
			if ct == "" {
				ct = "application/octet-stream"
			}
			cmd, err := parsePut(putReq(t, tt.query, ct), []byte("k"), tt.body)
			wantCode(t, err, tt.code)
			if tt.code == "too_large" && !errors.Is(err, errTooLarge) {
				t.Fatalf("error %v does not wrap errTooLarge", err)
			}
			if err != nil {
				return
			}
			if cmd.Op != fsm.OpPut || string(cmd.Key) != "k" || cmd.Cond != nil || cmd.Fence != nil {
				t.Fatalf("command %+v; want an unconditional put of key k", cmd)
			}
			if tt.check != nil {
				tt.check(t, cmd)
			}
		})
	}
}

func TestParsePutPrev(t *testing.T) {
	tests := []struct {
		query string
		want  bool
	}{
		{"", false},
		{"prev=1", true},
		{"prev=true", true},
		{"prev=0", false},
		{"prev=false", false},
		{"prev=", false},
		{"prev=yes", false},
	}
	for _, tt := range tests {
		for _, ct := range []string{"application/json", "application/octet-stream"} {
			t.Run(tt.query+"/"+ct, func(t *testing.T) {
				body := []byte(`{"value":"1"}`)
				cmd, err := parsePut(putReq(t, tt.query, ct), []byte("k"), body)
				if err != nil {
					t.Fatal(err)
				}
				if cmd.Prev != tt.want {
					t.Errorf("Prev = %v; want %v", cmd.Prev, tt.want)
				}
			})
		}
	}
}

func TestParseDelete(t *testing.T) {
	tests := []struct {
		name  string
		query string
		code  string
		cond  *uint64 // expected if_mod_index; nil = unconditional
		reqID string
		prev  bool
	}{
		{name: "plain"},
		{name: "if_mod_index", query: "if_mod_index=16", cond: u64(16)},
		{name: "if_mod_index 0", query: "if_mod_index=0", cond: u64(0)},
		{name: "if_mod_index max", query: "if_mod_index=18446744073709551615", cond: u64(1<<64 - 1)},
		{name: "if_mod_index empty means none", query: "if_mod_index="},
		{name: "if_mod_index overflow", query: "if_mod_index=18446744073709551616", code: "invalid_argument"},
		{name: "if_mod_index negative", query: "if_mod_index=-1", code: "invalid_argument"},
		{name: "if_mod_index signed", query: "if_mod_index=%2B1", code: "invalid_argument"},
		{name: "if_mod_index not a number", query: "if_mod_index=abc", code: "invalid_argument"},
		{name: "if_mod_index hex", query: "if_mod_index=0x10", code: "invalid_argument"},
		{name: "request_id", query: "request_id=d-7", reqID: "d-7"},
		{name: "request_id at the limit", query: "request_id=" + strings.Repeat("r", 256), reqID: strings.Repeat("r", 256)},
		{name: "request_id over the limit", query: "request_id=" + strings.Repeat("r", 257), code: "invalid_argument"},
		{name: "everything", query: "if_mod_index=3&request_id=d-8&prev=1", cond: u64(3), reqID: "d-8", prev: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodDelete, "/v1/kv/k?"+tt.query, nil)
			cmd, err := parseDelete(r, []byte("k"))
			wantCode(t, err, tt.code)
			if err != nil {
				return
			}
			if cmd.Op != fsm.OpDelete || string(cmd.Key) != "k" || cmd.Value != nil || cmd.Time == 0 {
				t.Fatalf("command %+v; want a delete of key k", cmd)
			}
			switch {
			case tt.cond == nil && cmd.Cond != nil:
				t.Errorf("cond %+v; want none", cmd.Cond)
			case tt.cond != nil && (cmd.Cond == nil || cmd.Cond.Kind != fsm.CondModIndex || cmd.Cond.ModIndex != *tt.cond):
				t.Errorf("cond %+v; want mod_index %d", cmd.Cond, *tt.cond)
			}
			if cmd.RequestID != tt.reqID || cmd.Prev != tt.prev {
				t.Errorf("request_id %q prev %v; want %q %v", cmd.RequestID, cmd.Prev, tt.reqID, tt.prev)
			}
		})
	}
}

func TestKeyFromPath(t *testing.T) {
	tests := []struct {
		name   string
		target string // request target as sent on the wire
		want   string
		code   string
	}{
		{name: "plain", target: "/v1/kv/a", want: "a"},
		{name: "slash sent as is", target: "/v1/kv/a/b/c", want: "a/b/c"},
		{name: "slash escaped", target: "/v1/kv/a%2Fb", want: "a/b"},
		{name: "slash escaped lower case", target: "/v1/kv/a%2fb", want: "a/b"},
		{name: "escaped slashes next to each other", target: "/v1/kv/%2F%2Fa%2F", want: "//a/"},
		{name: "mixed", target: "/v1/kv/a/b%2Fc", want: "a/b/c"},
		{name: "dots escaped", target: "/v1/kv/%2E%2E", want: ".."},
		{name: "percent", target: "/v1/kv/100%25", want: "100%"},
		{name: "plus stays plus", target: "/v1/kv/a+b", want: "a+b"},
		{name: "space", target: "/v1/kv/a%20b", want: "a b"},
		{name: "question mark escaped", target: "/v1/kv/a%3Fb?consistency=stale", want: "a?b"},
		{name: "utf-8", target: "/v1/kv/%C3%A9t%C3%A9", want: "\u00e9t\u00e9"},
		{name: "nul byte", target: "/v1/kv/a%00b", want: "a\x00b"},
		{name: "key at the limit", target: "/v1/kv/" + strings.Repeat("k", fsm.MaxKeySize), want: strings.Repeat("k", fsm.MaxKeySize)},
		{name: "escaped key at the limit", target: "/v1/kv/" + strings.Repeat("%2F", fsm.MaxKeySize), want: strings.Repeat("/", fsm.MaxKeySize)},
		{name: "empty key", target: "/v1/kv/", code: "invalid_argument"},
		{name: "key over the limit", target: "/v1/kv/" + strings.Repeat("k", fsm.MaxKeySize+1), code: "invalid_argument"},
		{name: "invalid utf-8", target: "/v1/kv/%ff", code: "invalid_argument"},
		{name: "invalid utf-8 inside", target: "/v1/kv/a%C3b", code: "invalid_argument"},
		{name: "other prefix", target: "/v1/kvx", code: "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tt.target, nil)
			k, err := keyFromPath(r)
			wantCode(t, err, tt.code)
			if err == nil && string(k) != tt.want {
				t.Errorf("key %q; want %q", k, tt.want)
			}
		})
	}
}

// TestKeyFromPathURL covers URLs built in process rather than parsed from a
// request line, where Path and RawPath may disagree.
func TestKeyFromPathURL(t *testing.T) {
	tests := []struct {
		name string
		url  url.URL
		want string
		code string
	}{
		// A RawPath that is not an encoding of Path is ignored, so the escape
		// is never applied twice: the key is the decoded path.
		{name: "percent in decoded path", url: url.URL{Path: "/v1/kv/%zz"}, want: "%zz"},
		{name: "raw path disagrees", url: url.URL{Path: "/v1/kv/a/b", RawPath: "/v1/kv/zzz"}, want: "a/b"},
		{name: "raw path agrees", url: url.URL{Path: "/v1/kv/a/b", RawPath: "/v1/kv/a%2Fb"}, want: "a/b"},
		{name: "bad raw escape ignored", url: url.URL{Path: "/v1/kv/a", RawPath: "/v1/kv/%zz"}, want: "a"},
		{name: "invalid utf-8 in path", url: url.URL{Path: "/v1/kv/\xff"}, code: "invalid_argument"},
		{name: "no prefix", url: url.URL{Path: "/v2/kv/a"}, code: "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := tt.url
			k, err := keyFromPath(&http.Request{Method: http.MethodGet, URL: &u})
			wantCode(t, err, tt.code)
			if err == nil && string(k) != tt.want {
				t.Errorf("key %q; want %q", k, tt.want)
			}
		})
	}
}

func TestParseReadOptions(t *testing.T) {
	tests := []struct {
		query       string
		consistency string
		staleness   time.Duration
		code        string
	}{
		{query: "", consistency: "linearizable", staleness: 5 * time.Second},
		{query: "consistency=linearizable", consistency: "linearizable", staleness: 5 * time.Second},
		{query: "consistency=session", consistency: "session", staleness: 5 * time.Second},
		{query: "consistency=stale", consistency: "stale", staleness: 5 * time.Second},
		{query: "consistency=stale&max_staleness=250ms", consistency: "stale", staleness: 250 * time.Millisecond},
		{query: "consistency=stale&max_staleness=1h", consistency: "stale", staleness: time.Hour},
		{query: "consistency=", consistency: "linearizable", staleness: 5 * time.Second},
		{query: "max_staleness=", consistency: "linearizable", staleness: 5 * time.Second},
		{query: "consistency=Stale", code: "invalid_argument"},
		{query: "consistency=strong", code: "invalid_argument"},
		{query: "consistency=stale&max_staleness=0s", code: "invalid_argument"},
		{query: "consistency=stale&max_staleness=-1s", code: "invalid_argument"},
		{query: "consistency=stale&max_staleness=5", code: "invalid_argument"},
		{query: "consistency=stale&max_staleness=soon", code: "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, err := url.ParseQuery(tt.query)
			if err != nil {
				t.Fatal(err)
			}
			o, err := parseReadOptions(q)
			wantCode(t, err, tt.code)
			if err == nil && (o.consistency != tt.consistency || o.maxStaleness != tt.staleness) {
				t.Errorf("options %+v; want %s %v", o, tt.consistency, tt.staleness)
			}
		})
	}
}

func TestReadBody(t *testing.T) {
	tests := []struct {
		name string
		size int
		code string
	}{
		{"empty", 0, ""},
		{"at the limit", maxBody, ""},
		{"over the limit", maxBody + 1, "too_large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPut, "/v1/kv/k", bytes.NewReader(make([]byte, tt.size)))
			b, err := readBody(r)
			wantCode(t, err, tt.code)
			if err == nil && len(b) != tt.size {
				t.Errorf("read %d bytes; want %d", len(b), tt.size)
			}
		})
	}
}

// TestParsePutStrictness: trailing data after the JSON body is rejected and
// media types compare case-insensitively.
func TestParsePutStrictness(t *testing.T) {
	t.Run("trailing closing bracket", func(t *testing.T) {
		// unmarshalStrict asks Decoder.More for trailing data, and More is
		// false when the next byte is ']' or '}'.
		for _, body := range []string{`{"value":"1"}]`, `{"value":"1"}}`, `{"value":"1"} ]]]`} {
			_, err := parsePut(putReq(t, "", "application/json"), []byte("k"), []byte(body))
			if err == nil {
				t.Fatalf("body %q with trailing data is accepted", body)
			}
			wantCode(t, err, "invalid_argument")
		}
	})
	t.Run("media type is case-insensitive", func(t *testing.T) {
		// RFC 9110 section 8.3.1: type and subtype are case-insensitive.
		cmd, err := parsePut(putReq(t, "", "Application/Octet-Stream"), []byte("k"), []byte("raw"))
		if err != nil || string(cmd.Value) != "raw" {
			t.Fatalf("Content-Type Application/Octet-Stream is read as JSON: %v", err)
		}
	})
}
