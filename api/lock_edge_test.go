package api

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// TestLockBadInputRefusedAtEdge: bad input to every lock route is 400
// invalid_argument before anything is routed (issue 12 item 9). The node is
// not ready, so a request that passed parsing would answer 503: the good
// twin of each case shows the refusal is the validation's, not routing's.
func TestLockBadInputRefusedAtEdge(t *testing.T) {
	tests := []struct {
		method, target, body string
		want                 string // message substring; "" for the accepted twins (503)
	}{
		{"POST", "/v1/locks//acquire", `{"ttl":"15s"}`, "lock name must be 1..256 bytes"},
		{"POST", "/v1/locks/" + strings.Repeat("n", 257) + "/acquire", `{"ttl":"15s"}`, "got 257"},
		{"POST", "/v1/locks/a/acquire", `{"ttl":"500ms"}`, "ttl 500ms not in"},
		{"POST", "/v1/locks/a/acquire", `{"ttl":"25h"}`, "ttl 25h0m0s not in"},
		{"POST", "/v1/locks/a/acquire", `{"ttl":"15s","wait":"-1s"}`, "wait -1s not in"},
		{"POST", "/v1/locks/a/acquire", `{"ttl":"15s","wait":"2h"}`, "wait 2h0m0s not in"},
		{"POST", "/v1/locks/a/acquire", `{"ttl":"15s","lock_delay":"2m"}`, "lock_delay 2m0s not in"},
		{"POST", "/v1/locks/a/acquire", `{"ttl":"15s","limit":0}`, "limit 0 not in"},
		{"POST", "/v1/locks/a/acquire", `{"ttl":"15s","limit":129}`, "limit 129 not in"},
		{"POST", "/v1/locks/a/acquire", `{"ttl":"15s","mode":"rw"}`, `unknown mode "rw"`},
		{"POST", "/v1/locks/a/acquire", `{"ttl":"15s","ownr":"x"}`, `unknown field "ownr"`},
		{"POST", "/v1/locks/a/renew", `{"token":"7"}`, "token must be a positive integer"},
		{"POST", "/v1/locks/a/renew", `{"token":0}`, "not 0"},
		{"POST", "/v1/locks/a/release", `{"token":-7}`, "token must be a positive integer"},
		{"POST", "/v1/locks/a/release", `{}`, `"token" is required`},
		{"POST", "/v1/locks/a/steal", `{"token":7}`, `unknown lock action "steal"`},
		{"GET", "/v1/locks/a?wait_index=x", "", `bad wait_index "x"`},
		{"GET", "/v1/locks/a?wait_index=1&wait=2h", "", "wait 2h0m0s not in"},
		{"GET", "/v1/locks?limit=0", "", `bad limit "0"`},
		{"GET", "/v1/kv/k?fence_lock=a&fence_token=0", "", `bad fence_token "0"`},
		{"GET", "/v1/kv/k?fence_lock=a&fence_token=3&consistency=stale", "", "a fenced read goes through raft"},
		{"DELETE", "/v1/kv/k?fence_lock=a", "", "needs both fence_lock and fence_token"},
		{"DELETE", "/v1/kv/k?fence_lock=a&fence_token=1.5", "", `bad fence_token "1.5"`},

		{"POST", "/v1/locks/a/acquire", `{"ttl":"1s","wait":"1h","limit":128,"lock_delay":"1m","mode":"exclusive"}`, ""},
		{"POST", "/v1/locks/a/renew", `{"token":7}`, ""},
		{"GET", "/v1/locks/a?wait_index=0&wait=1h", "", ""},
		{"GET", "/v1/locks?limit=1", "", ""},
		{"GET", "/v1/kv/k?fence_lock=a&fence_token=3&consistency=linearizable", "", ""},
		{"DELETE", "/v1/kv/k?fence_lock=a&fence_token=1", "", ""},
	}
	s := NewServer(Config{Backend: notReadyBackend{t}})
	defer s.Close()
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target+" "+tt.body, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.target, strings.NewReader(tt.body))
			if tt.body != "" {
				r.Header.Set("Content-Type", "application/json")
			}
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			if tt.want == "" {
				if w.Code != 503 {
					t.Errorf("status %d (%s); want 503 from routing: the request is valid", w.Code, w.Body)
				}
				return
			}
			d := decodeEnvelope(t, w.Body.Bytes())
			msg, _ := d["message"].(string)
			if w.Code != 400 || d["code"] != "invalid_argument" || !strings.Contains(msg, tt.want) {
				t.Errorf("%d %v; want 400 invalid_argument containing %q", w.Code, d, tt.want)
			}
		})
	}
}

// TestLockRoutesMethods: a lock path with a method it does not take is 405
// method_not_allowed in the envelope, never a redirect or a 404; a name that
// looks like a path ("..", "//") is taken as it is, not cleaned.
func TestLockRoutesMethods(t *testing.T) {
	tests := []struct {
		method, target string
		status         int
		code           string
	}{
		{"PUT", "/v1/locks/a", 405, "method_not_allowed"},
		{"DELETE", "/v1/locks/a/acquire", 405, "method_not_allowed"},
		{"POST", "/v1/locks", 405, "method_not_allowed"},
		{"DELETE", "/v1/locks", 405, "method_not_allowed"},
		{"GET", "/v1/locks/a/../b", 503, "unavailable"}, // a status of lock "a/../b": parsed, then routing
		{"GET", "/v1/locks//a", 503, "unavailable"},
		{"HEAD", "/v1/locks/a", 503, ""},
		{"POST", "/v1/locks/a/../acquire", 400, "invalid_argument"}, // no body: ttl is required
	}
	s := NewServer(Config{Backend: notReadyBackend{t}})
	defer s.Close()
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.target, nil)
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			if w.Code != tt.status {
				t.Fatalf("status %d (%s); want %d", w.Code, w.Body, tt.status)
			}
			if tt.code != "" {
				if d := decodeEnvelope(t, w.Body.Bytes()); d["code"] != tt.code {
					t.Errorf("code %v; want %s", d["code"], tt.code)
				}
			}
		})
	}
}
