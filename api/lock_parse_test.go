package api

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/lock"
)

// Bad input to the lock routes (issue 12 item 9): every case is
// invalid_argument with a message naming what is wrong, decided before
// anything is proposed, so the lock's state is untouched
// (TestLockAPIBadInputLeavesStateUntouched shows that on a cluster).

func TestParseAcquire(t *testing.T) {
	long := strings.Repeat("o", lock.MaxOwnerSize+1)
	tests := []struct {
		name    string
		body    string
		want    lock.Acquire // checked when wantErr is ""
		wantErr string       // substring of the message
	}{
		{"minimal", `{"ttl":"15s"}`, lock.Acquire{Name: "L", TTL: 15 * time.Second, Limit: 1}, ""},
		{"everything", `{"ttl":"1s","wait":"1h","owner":"w3","limit":128,"mode":"exclusive","lock_delay":"1m","request_id":"r1"}`,
			lock.Acquire{Name: "L", TTL: time.Second, Wait: time.Hour, Owner: "w3", Limit: 128, LockDelay: time.Minute, WaiterID: "r1"}, ""},
		{"shared", `{"ttl":"24h","mode":"shared","wait":"0s"}`, lock.Acquire{Name: "L", TTL: 24 * time.Hour, Mode: lock.Shared, Limit: 1}, ""},
		{"ttl missing", `{}`, lock.Acquire{}, `"ttl" is required`},
		{"empty body", ``, lock.Acquire{}, `"ttl" is required`},
		{"ttl too short", `{"ttl":"999ms"}`, lock.Acquire{}, "ttl 999ms not in [1s, 24h0m0s]"},
		{"ttl too long", `{"ttl":"24h1s"}`, lock.Acquire{}, "ttl 24h0m1s not in"},
		{"ttl not a duration", `{"ttl":"15"}`, lock.Acquire{}, `bad ttl "15"`},
		{"ttl a number", `{"ttl":15}`, lock.Acquire{}, "ttl must be a JSON string"},
		{"wait negative", `{"ttl":"15s","wait":"-1s"}`, lock.Acquire{}, "wait -1s not in [0s, 1h0m0s]"},
		{"wait too long", `{"ttl":"15s","wait":"61m"}`, lock.Acquire{}, "wait 1h1m0s not in"},
		{"lock_delay too long", `{"ttl":"15s","lock_delay":"61s"}`, lock.Acquire{}, "lock_delay 1m1s not in [0s, 1m0s]"},
		{"lock_delay negative", `{"ttl":"15s","lock_delay":"-1s"}`, lock.Acquire{}, "lock_delay -1s not in"},
		{"limit 0", `{"ttl":"15s","limit":0}`, lock.Acquire{}, "limit 0 not in [1, 128]"},
		{"limit negative", `{"ttl":"15s","limit":-3}`, lock.Acquire{}, "limit -3 not in"},
		{"limit too big", `{"ttl":"15s","limit":129}`, lock.Acquire{}, "limit 129 not in"},
		{"limit a string", `{"ttl":"15s","limit":"2"}`, lock.Acquire{}, "limit must be an integer"},
		{"limit fractional", `{"ttl":"15s","limit":1.5}`, lock.Acquire{}, "limit must be an integer"},
		{"unknown mode", `{"ttl":"15s","mode":"read"}`, lock.Acquire{}, `unknown mode "read"`},
		{"unknown field", `{"ttl":"15s","tll":"1s"}`, lock.Acquire{}, `unknown field "tll"`},
		{"owner too long", `{"ttl":"15s","owner":"` + long + `"}`, lock.Acquire{}, "owner is 129 bytes"},
		{"request id too long", `{"ttl":"15s","request_id":"` + strings.Repeat("r", 257) + `"}`, lock.Acquire{}, "request_id is 257 bytes"},
		{"not an object", `[1]`, lock.Acquire{}, "malformed JSON"},
		{"trailing data", `{"ttl":"15s"} {}`, lock.Acquire{}, "trailing data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseAcquire("L", []byte(tt.body))
			if tt.wantErr != "" {
				assertInvalid(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("parseAcquire(%s): %v", tt.body, err)
			}
			if got != tt.want {
				t.Errorf("parseAcquire(%s) = %+v; want %+v", tt.body, got, tt.want)
			}
		})
	}
}

func TestParseToken(t *testing.T) {
	tests := []struct {
		body    string
		want    uint64
		wantErr string
	}{
		{`{"token":4711}`, 4711, ""},
		{`{"token":18446744073709551615}`, 1<<64 - 1, ""},
		{`{"token":"4711"}`, 0, "token must be a positive integer (a JSON number), got a JSON string"},
		{`{"token":0}`, 0, "token must be a positive integer, not 0"},
		{`{"token":-1}`, 0, "token must be a positive integer"},
		{`{"token":1.5}`, 0, "token must be a positive integer"},
		{`{"token":18446744073709551616}`, 0, "token must be a positive integer"},
		{`{}`, 0, `"token" is required`},
		{``, 0, `"token" is required`},
		{`{"token":null}`, 0, `"token" is required`},
		{`{"token":1,"owner":"x"}`, 0, `unknown field "owner"`},
		{`{"token":1`, 0, "malformed JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			got, err := parseToken([]byte(tt.body))
			if tt.wantErr != "" {
				assertInvalid(t, err, tt.wantErr)
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("parseToken(%s) = %d, %v; want %d", tt.body, got, err, tt.want)
			}
		})
	}
}

func TestLockPath(t *testing.T) {
	tests := []struct {
		method, path string
		name         string
		action       lockAction
		wantErr      string
	}{
		{"GET", "/v1/locks/jobs/daily", "jobs/daily", "", ""},
		{"GET", "/v1/locks/jobs%2Fdaily", "jobs/daily", "", ""},
		{"GET", "/v1/locks/x/acquire", "x/acquire", "", ""}, // a GET names the lock by the whole path
		{"POST", "/v1/locks/jobs/daily/acquire", "jobs/daily", actionAcquire, ""},
		{"POST", "/v1/locks/a%2Facquire/renew", "a/acquire", actionRenew, ""},
		{"POST", "/v1/locks/x/acquire/release", "x/acquire", actionRelease, ""},
		{"POST", "/v1/locks/a%20b/acquire", "a b", actionAcquire, ""},
		{"POST", "/v1/locks/..%2F../acquire", "../..", actionAcquire, ""},
		{"GET", "/v1/locks/", "", "", "lock name must be 1..256 bytes, got 0"},
		{"POST", "/v1/locks//acquire", "", "", "lock name must be 1..256 bytes, got 0"},
		{"GET", "/v1/locks/" + strings.Repeat("n", lock.MaxNameSize+1), "", "", "lock name must be 1..256 bytes, got 257"},
		{"GET", "/v1/locks/" + strings.Repeat("n", lock.MaxNameSize), strings.Repeat("n", lock.MaxNameSize), "", ""},
		{"GET", "/v1/locks/a%00b", "", "", "must not contain NUL"},
		{"GET", "/v1/locks/%ff", "", "", "UTF-8"},
		{"POST", "/v1/locks/x/steal", "", "", `unknown lock action "steal"`},
		{"POST", "/v1/locks/x", "", "", "needs an action"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, "http://x"+tt.path, nil)
			name, action, err := lockPath(r)
			if tt.wantErr != "" {
				assertInvalid(t, err, tt.wantErr)
				return
			}
			if err != nil || name != tt.name || action != tt.action {
				t.Errorf("lockPath = %q, %q, %v; want %q, %q", name, action, err, tt.name, tt.action)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		query   string
		want    statusRequest
		wantErr string
	}{
		{"", statusRequest{wait: defaultStatusWait}, ""},
		{"wait_index=7", statusRequest{waitIndex: 7, wait: defaultStatusWait}, ""},
		{"wait_index=7&wait=2s", statusRequest{waitIndex: 7, wait: 2 * time.Second}, ""},
		{"wait_index=0&wait=0s", statusRequest{wait: 0}, ""},
		{"wait_index=-1", statusRequest{}, `bad wait_index "-1"`},
		{"wait_index=x", statusRequest{}, `bad wait_index "x"`},
		{"wait_index=1&wait=2h", statusRequest{}, "wait 2h0m0s not in [0s, 1h0m0s]"},
		{"wait_index=1&wait=soon", statusRequest{}, `bad wait "soon"`},
		{"wait=2s", statusRequest{}, "give wait_index too"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, _ := url.ParseQuery(tt.query)
			got, err := parseStatus(q)
			if tt.wantErr != "" {
				assertInvalid(t, err, tt.wantErr)
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("parseStatus(%s) = %+v, %v; want %+v", tt.query, got, err, tt.want)
			}
		})
	}
}

func TestParseLockList(t *testing.T) {
	tests := []struct {
		query             string
		start, end        string
		limit             int
		wantErr           string
		startOnly, endAny bool
	}{
		{query: "", limit: defaultLockList},
		{query: "prefix=jobs/", start: "jobs/", end: "jobs0", limit: defaultLockList},
		{query: "prefix=jobs/&start=jobs/b", start: "jobs/b", end: "jobs0", limit: defaultLockList},
		{query: "start=a&end=m&limit=5", start: "a", end: "m", limit: 5},
		{query: "limit=99999999999999999999", limit: maxLockList},
		{query: "limit=0", wantErr: `bad limit "0"`},
		{query: "limit=-1", wantErr: `bad limit "-1"`},
		{query: "prefix=jobs/&start=x", wantErr: "does not begin with prefix"},
		{query: "start=m&end=a", wantErr: "start must sort before end"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, _ := url.ParseQuery(tt.query)
			got, err := parseLockList(q)
			if tt.wantErr != "" {
				assertInvalid(t, err, tt.wantErr)
				return
			}
			if err != nil || string(got.start) != tt.start || string(got.end) != tt.end || got.limit != tt.limit {
				t.Errorf("parseLockList(%s) = %q %q %d, %v; want %q %q %d", tt.query, got.start, got.end, got.limit, err,
					tt.start, tt.end, tt.limit)
			}
		})
	}
}

func TestParseFenceQuery(t *testing.T) {
	tests := []struct {
		query   string
		lock    string
		token   uint64
		wantErr string
	}{
		{"", "", 0, ""},
		{"fence_lock=jobs/daily&fence_token=4711", "jobs/daily", 4711, ""},
		{"fence_lock=jobs", "", 0, "needs both fence_lock and fence_token"},
		{"fence_token=3", "", 0, "needs both fence_lock and fence_token"},
		{"fence_lock=&fence_token=3", "", 0, "needs both"},
		{"fence_lock=l&fence_token=0", "", 0, `bad fence_token "0"`},
		{"fence_lock=l&fence_token=-2", "", 0, `bad fence_token "-2"`},
		{"fence_lock=l&fence_token=x", "", 0, `bad fence_token "x"`},
		{"fence_lock=" + strings.Repeat("l", 257) + "&fence_token=1", "", 0, "bad fence_lock"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			q, _ := url.ParseQuery(tt.query)
			got, err := parseFenceQuery(q)
			if tt.wantErr != "" {
				assertInvalid(t, err, tt.wantErr)
				return
			}
			switch {
			case err != nil:
				t.Fatal(err)
			case tt.lock == "" && got != nil:
				t.Errorf("fence %+v; want none", got)
			case tt.lock != "" && (got == nil || got.Lock != tt.lock || got.Token != tt.token):
				t.Errorf("fence %+v; want %s:%d", got, tt.lock, tt.token)
			}
		})
	}
}

// assertInvalid checks err answers 400 invalid_argument with a message
// containing want.
func assertInvalid(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want invalid_argument containing %q", want)
	}
	if status, code, _ := errorStatus(err); status != http.StatusBadRequest || code != "invalid_argument" {
		t.Errorf("%v answers %d %s; want 400 invalid_argument", err, status, code)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("message %q; want it to contain %q", err, want)
	}
	var inv *invalidArgument
	if !errors.As(err, &inv) {
		t.Errorf("%v is not the edge's invalidArgument", err)
	}
}
