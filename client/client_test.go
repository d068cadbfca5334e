package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cairndb/cairn/client/clienttest"
	"github.com/cairndb/cairn/txn"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newFake starts a fake server and a fast-retrying client for it.
func newFake(t *testing.T, mod ...func(*Config)) (*clienttest.Server, *Client) {
	t.Helper()
	f := clienttest.NewServer()
	t.Cleanup(f.Close)
	return f, mustClient(t, []string{f.Addr()}, mod...)
}

func mustClient(t *testing.T, endpoints []string, mod ...func(*Config)) *Client {
	t.Helper()
	// Routing off: these tests script every answer of one endpoint and count
	// requests; routing (route_test.go) would add range map fetches.
	cfg := Config{Endpoints: endpoints, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond, ClientID: "t",
		DisableRouting: true}
	for _, m := range mod {
		m(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func noRetries(c *Config) { c.MaxRetries = -1 }

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func requestIDs(f *clienttest.Server) []string {
	var ids []string
	for _, r := range f.Requests() {
		ids = append(ids, r.RequestID)
	}
	return ids
}

// Invariant I7: every retry of one logical write carries the same request id,
// and the write is applied once.
func TestRetryUnavailableReusesRequestID(t *testing.T) {
	f, c := newFake(t)
	f.InjectFaults(clienttest.FaultUnavailable, clienttest.FaultOverloaded, clienttest.FaultUnavailable)
	res, err := c.Put(ctxT(t), "a", "1")
	if err != nil {
		t.Fatal(err)
	}
	if res.ModIndex == 0 || res.Index == 0 || res.Version != 1 {
		t.Errorf("result = %+v", res)
	}
	ids := requestIDs(f)
	if len(ids) != 4 {
		t.Fatalf("requests = %d, want 4", len(ids))
	}
	for _, id := range ids {
		if id != ids[0] || id == "" {
			t.Fatalf("request ids differ across retries: %q", ids)
		}
	}
	if n := f.Applied(ids[0]); n != 1 {
		t.Errorf("applied %d times, want 1", n)
	}
	// A second logical write gets a fresh id.
	if _, err := c.Put(ctxT(t), "a", "2"); err != nil {
		t.Fatal(err)
	}
	if ids2 := requestIDs(f); ids2[len(ids2)-1] == ids[0] {
		t.Errorf("second write reused request id %q", ids[0])
	}
}

func TestNoRetryOnConflict(t *testing.T) {
	f, c := newFake(t)
	f.Set("a", "old")
	_, err := c.Put(ctxT(t), "a", "new", IfAbsent())
	if !errors.Is(err, ErrConditionFailed) {
		t.Fatalf("err = %v, want condition_failed", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusConflict || e.Current == nil || e.Current.Value != "old" {
		t.Errorf("error = %#v, want status 409 with current value", e)
	}
	if errors.Is(err, ErrOutcomeUnknown) {
		t.Error("a definite failure matched ErrOutcomeUnknown")
	}
	if n := len(f.Requests()); n != 1 {
		t.Errorf("requests = %d, want 1 (no retry on 409)", n)
	}

	_, err = c.Get(ctxT(t), "missing")
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("get missing: err = %v, want not_found", err)
	}
}

// Invariant I7: a timeout is reported as outcome unknown, never as failure.
func TestOutcomeUnknown(t *testing.T) {
	cases := []struct {
		name    string
		retries int // MaxRetries
		faults  []clienttest.Fault
		write   func(context.Context, *Client) error
		wantErr bool // want ErrOutcomeUnknown; else success
		applied int
	}{
		{"504 no retries", -1, []clienttest.Fault{clienttest.FaultTimeoutAfterApply}, put, true, 1},
		{"reset after send no retries", -1, []clienttest.Fault{clienttest.FaultResetAfterApply}, put, true, 1},
		{"reset before apply no retries", -1, []clienttest.Fault{clienttest.FaultResetBeforeApply}, put, true, 0},
		{"500 no retries", -1, []clienttest.Fault{clienttest.FaultInternal}, put, true, 0},
		{"delete reset no retries", -1, []clienttest.Fault{clienttest.FaultResetAfterApply}, del, true, 1},
		{"504 then retried", 5, []clienttest.Fault{clienttest.FaultTimeoutAfterApply}, put, false, 1},
		{"reset then retried", 5, []clienttest.Fault{clienttest.FaultResetAfterApply}, put, false, 1},
		{"504 then 503 until exhausted", 2, []clienttest.Fault{clienttest.FaultTimeoutBeforeApply,
			clienttest.FaultUnavailable, clienttest.FaultUnavailable}, put, true, 0},
		{"504 every time", 3, []clienttest.Fault{clienttest.FaultTimeoutAfterApply, clienttest.FaultTimeoutAfterApply,
			clienttest.FaultTimeoutAfterApply, clienttest.FaultTimeoutAfterApply}, put, true, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, c := newFake(t, func(c *Config) { c.MaxRetries = tc.retries })
			f.Set("k", "v0")
			f.InjectFaults(tc.faults...)
			err := tc.write(ctxT(t), c)
			if tc.wantErr != errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("err = %v, want outcome unknown: %v", err, tc.wantErr)
			}
			if !tc.wantErr && err != nil {
				t.Fatalf("err = %v", err)
			}
			ids := requestIDs(f)
			for _, id := range ids {
				if id != ids[0] {
					t.Fatalf("request ids differ across retries: %q", ids)
				}
			}
			if n := f.Applied(ids[0]); n != tc.applied {
				t.Errorf("applied %d times, want %d", n, tc.applied)
			}
		})
	}
}

func put(ctx context.Context, c *Client) error {
	_, err := c.Put(ctx, "k", "v1")
	return err
}

func del(ctx context.Context, c *Client) error {
	_, err := c.Delete(ctx, "k")
	return err
}

// A write whose context ends after it was sent has an unknown outcome.
func TestOutcomeUnknownOnContextEnd(t *testing.T) {
	f, c := newFake(t)
	f.InjectFaults(clienttest.FaultHangAfterApply)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Put(ctx, "k", "v")
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want outcome unknown and deadline exceeded", err)
	}
	if n := f.Applied(requestIDs(f)[0]); n != 1 {
		t.Errorf("applied %d, want 1", n)
	}
	// A read cut short the same way is just a deadline.
	f.InjectFaults(clienttest.FaultHangAfterApply)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	_, err = c.Get(ctx2, "k")
	if errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("read err = %v, want deadline exceeded only", err)
	}
}

func TestReadsRetryFreely(t *testing.T) {
	f, c := newFake(t)
	f.Set("a", "1")
	f.InjectFaults(clienttest.FaultResetAfterApply, clienttest.FaultTimeoutBeforeApply, clienttest.FaultUnavailable)
	kv, err := c.Get(ctxT(t), "a")
	if err != nil || kv.Value != "1" {
		t.Fatalf("get = %+v, %v", kv, err)
	}
	if n := len(f.Requests()); n != 4 {
		t.Errorf("requests = %d, want 4", n)
	}
}

// A write without a request id is not resent once it may have been applied.
func TestDoNonIdempotentWrite(t *testing.T) {
	f, c := newFake(t)
	f.InjectFaults(clienttest.FaultResetAfterApply)
	_, err := c.Do(ctxT(t), Request{Method: http.MethodPut, Path: "/v1/kv/x", Body: map[string]string{"value": "1"}}, nil)
	if !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("err = %v, want outcome unknown", err)
	}
	if n := len(f.Requests()); n != 1 {
		t.Errorf("requests = %d, want 1", n)
	}
	// But it is retried on a refusal, which applied nothing.
	f.InjectFaults(clienttest.FaultUnavailable)
	if _, err := c.Do(ctxT(t), Request{Method: http.MethodPut, Path: "/v1/kv/x", Body: map[string]string{"value": "1"}}, nil); err != nil {
		t.Fatal(err)
	}
}

func TestEndpointRotation(t *testing.T) {
	f := clienttest.NewServer()
	t.Cleanup(f.Close)
	f.Set("a", "1")
	c := mustClient(t, []string{deadAddr(t), f.Addr()}, noRetries)
	for i := range 3 {
		kv, err := c.Get(ctxT(t), "a")
		if err != nil || kv.Value != "1" {
			t.Fatalf("get %d = %+v, %v", i, kv, err)
		}
	}
	if i, _ := c.endpoint(); i != 1 {
		t.Errorf("current endpoint = %d, want 1 (the live one)", i)
	}
	// A write rotates the same way, and a connection refused is not ambiguous.
	if _, err := c.Put(ctxT(t), "b", "2"); err != nil {
		t.Fatal(err)
	}
}

func TestUnreachable(t *testing.T) {
	c := mustClient(t, []string{deadAddr(t), deadAddr(t)}, func(c *Config) { c.MaxRetries = 2 })
	_, err := c.Get(ctxT(t), "a")
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("get: err = %v, want unreachable", err)
	}
	_, err = c.Put(ctxT(t), "a", "1")
	if !errors.Is(err, ErrUnreachable) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("put: err = %v, want unreachable and not outcome unknown (nothing was sent)", err)
	}
}

func TestContextDeadlineKeepsLastError(t *testing.T) {
	f, c := newFake(t, func(c *Config) { c.MaxRetries = 1000 })
	faults := make([]clienttest.Fault, 1000)
	for i := range faults {
		faults[i] = clienttest.FaultUnavailable
	}
	f.InjectFaults(faults...)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Get(ctx, "a")
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want deadline exceeded wrapping unavailable", err)
	}
	if errors.Is(err, ErrOutcomeUnknown) {
		t.Error("a read reported outcome unknown")
	}
}

func TestKeyEscaping(t *testing.T) {
	f, c := newFake(t)
	for _, tc := range []struct{ key, path string }{
		{"a/b c%", "/v1/kv/a%2Fb%20c%25"},
		{"..", "/v1/kv/%2E%2E"},
		{"/lead", "/v1/kv/%2Flead"},
		{"ü?#&", "/v1/kv/%C3%BC%3F%23&"},
	} {
		if _, err := c.Put(ctxT(t), tc.key, "v:"+tc.key); err != nil {
			t.Fatalf("put %q: %v", tc.key, err)
		}
		reqs := f.Requests()
		if got := reqs[len(reqs)-1].EscapedPath; got != tc.path {
			t.Errorf("put %q: path %q, want %q", tc.key, got, tc.path)
		}
		kv, err := c.Get(ctxT(t), tc.key)
		if err != nil || kv.Key != tc.key || kv.Value != "v:"+tc.key {
			t.Errorf("get %q = %+v, %v", tc.key, kv, err)
		}
	}
	if _, err := c.Get(ctxT(t), ""); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("empty key: err = %v", err)
	}
}

func TestSessionRoundTrip(t *testing.T) {
	f, c := newFake(t)
	if tok := c.SessionToken(); tok != "" {
		t.Fatalf("token before any call = %q", tok)
	}
	if _, err := c.Put(ctxT(t), "a", "1"); err != nil {
		t.Fatal(err)
	}
	// The server's token after the first write: shard 1 at index 1, in the
	// server's format (api/session.go: "s1." and base64url of "1:1").
	tok := c.SessionToken()
	if want := "s1." + base64.RawURLEncoding.EncodeToString([]byte("1:1")); tok != want {
		t.Fatalf("token = %q, want %q", tok, want)
	}
	if _, err := c.Get(ctxT(t), "a", Session()); err != nil {
		t.Fatal(err)
	}
	reqs := f.Requests()
	last := reqs[len(reqs)-1]
	if last.Session != tok || last.Query.Get("consistency") != "session" {
		t.Errorf("session read sent token %q consistency %q", last.Session, last.Query.Get("consistency"))
	}
	if reqs[0].Session != "" {
		t.Errorf("first request sent token %q", reqs[0].Session)
	}
	// Error answers carry a token too.
	if _, err := c.Get(ctxT(t), "missing", Stale(2*time.Second)); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	reqs = f.Requests()
	if q := reqs[len(reqs)-1].Query; q.Get("consistency") != "stale" || q.Get("max_staleness") != "2s" {
		t.Errorf("stale read query = %v", q)
	}
}

func TestPutOptions(t *testing.T) {
	f, c := newFake(t)
	r1, err := c.Put(ctxT(t), "a", "1", WithTTL(30*time.Second), WithRequestID("mine-1"))
	if err != nil {
		t.Fatal(err)
	}
	if f.Applied("mine-1") != 1 {
		t.Error("WithRequestID not used")
	}
	r2, err := c.Put(ctxT(t), "a", "2", IfModIndex(r1.ModIndex), WithPrev(), WithFence("jobs/daily", 7))
	if err != nil {
		t.Fatal(err)
	}
	if r2.Prev == nil || r2.Prev.Value != "1" || r2.Version != 2 {
		t.Errorf("put result = %+v", r2)
	}
	if _, err := c.Put(ctxT(t), "a", "3", IfValue("nope")); !errors.Is(err, ErrConditionFailed) {
		t.Errorf("if value: err = %v", err)
	}
	if _, err := c.Delete(ctxT(t), "a", IfModIndex(r1.ModIndex)); !errors.Is(err, ErrConditionFailed) {
		t.Errorf("delete if_mod_index stale: err = %v", err)
	}
	n, err := c.Delete(ctxT(t), "a", IfModIndex(r2.ModIndex))
	if err != nil || n != 1 {
		t.Errorf("delete = %d, %v", n, err)
	}
	if n, err := c.Delete(ctxT(t), "a"); err != nil || n != 0 {
		t.Errorf("delete again = %d, %v", n, err)
	}
	// A value that is not UTF-8 goes raw, and the raw form has no condition
	// or fence: refused before anything is sent (test/ round-trips binary
	// values through the real server).
	before := len(f.Requests())
	if _, err := c.Put(ctxT(t), "bin", "\xff\xfe", IfValue("x")); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("binary value with a condition: err = %v", err)
	}
	if n := len(f.Requests()); n != before {
		t.Errorf("a refused binary put sent %d requests", n-before)
	}
}

func TestScanAllPages(t *testing.T) {
	for _, lastKey := range []bool{false, true} {
		t.Run(fmt.Sprintf("next_is_last_key=%v", lastKey), func(t *testing.T) {
			f, c := newFake(t)
			f.NextIsLastKey = lastKey
			var want []string
			for i := range 25 {
				k := fmt.Sprintf("k/%02d", i)
				f.Set(k, "v")
				want = append(want, k)
			}
			f.Set("k0", "outside the prefix")
			f.Set("j", "before")
			var got []string
			err := c.ScanAll(ctxT(t), ScanOptions{Prefix: "k/", Limit: 10, KeysOnly: true}, func(kv KV) error {
				got = append(got, kv.Key)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("keys = %v\nwant   %v", got, want)
			}
			reqs := f.Requests()
			if len(reqs) < 3 || len(reqs) > 4 {
				t.Errorf("scan requests = %d, want 3 (or 4 when next is the last key)", len(reqs))
			}
			if q := reqs[1].Query; q.Get("end") != "k0" || q.Get("keys_only") != "1" || q.Get("limit") != "10" {
				t.Errorf("continuation query = %v", q)
			}
		})
	}
}

func TestScanAllStop(t *testing.T) {
	f, c := newFake(t)
	for i := range 5 {
		f.Set(fmt.Sprint(i), "v")
	}
	n := 0
	err := c.ScanAll(ctxT(t), ScanOptions{Limit: 2}, func(KV) error {
		n++
		if n == 3 {
			return ErrStopScan
		}
		return nil
	})
	if err != nil || n != 3 {
		t.Errorf("n = %d, err = %v", n, err)
	}
}

func TestPrefixEnd(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"a", "b"},
		{"k/", "k0"},
		{"a\x7f", "a\u0080"},
		{"a\U0010FFFF", "b"},
		{"\U0010FFFF", ""},
		{"\uD7FF", "\uE000"},
		{"a\xff", "b"},
		{"\xff\xff", ""},
	} {
		if got := prefixEnd(tc.in); got != tc.want {
			t.Errorf("prefixEnd(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestConfig(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New with no endpoints succeeded")
	}
	c, err := New(Config{Endpoints: []string{" http://h:1/ "}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, base := c.endpoint(); base != "http://h:1" {
		t.Errorf("endpoint = %q", base)
	}
	if c.maxRetries != 5 {
		t.Errorf("default retries = %d", c.maxRetries)
	}
	c2, _ := New(Config{Endpoints: []string{"h:1"}})
	defer c2.Close()
	if c.NewRequestID() == c2.NewRequestID() {
		t.Error("two clients generated the same request id")
	}
	// Ids sort by time across clients (the server's dedup tree stays
	// append-ordered): an id made later never sorts before one made earlier.
	first := c.NewRequestID()
	time.Sleep(2 * time.Microsecond)
	if second := c2.NewRequestID(); second <= first {
		t.Errorf("request id %q made after %q sorts before it", second, first)
	}
}

// TestNewRequestIDFormat: the id is what fmt.Sprintf("%012x.%s-%d", micros,
// prefix, counter) gives, as it was before NewRequestID stopped using fmt.
func TestNewRequestIDFormat(t *testing.T) {
	c, err := New(Config{Endpoints: []string{"h:1"}, ClientID: "w7"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 1; i <= 3; i++ {
		before := uint64(time.Now().UnixMicro()) & (1<<48 - 1)
		id := c.NewRequestID()
		after := uint64(time.Now().UnixMicro()) & (1<<48 - 1)
		var micros uint64
		var prefix string
		if _, err := fmt.Sscanf(id, "%012x.%s", &micros, &prefix); err != nil {
			t.Fatalf("id %q: %v", id, err)
		}
		if micros < before || micros > after {
			t.Errorf("id %q: time %d not in [%d, %d]", id, micros, before, after)
		}
		want := fmt.Sprintf("%012x.%s-%d", micros, c.idPrefix, i)
		if id != want {
			t.Errorf("id %q, want %q", id, want)
		}
	}
}

// TestRequestIDsGiveTimeOrderedTxnIDs: the server keeps the time a request
// id starts with at the front of the transaction id it derives
// (txn.IDForRequest), so a shard's records and tombstones append; that
// holds only while this client writes the time the way the server reads it.
func TestRequestIDsGiveTimeOrderedTxnIDs(t *testing.T) {
	c, err := New(Config{Endpoints: []string{"h:1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	first := c.NewRequestID()
	time.Sleep(2 * time.Microsecond)
	second := c.NewRequestID()
	a, b := txn.IDForRequest(first), txn.IDForRequest(second)
	if a[1:13] != first[:12] || b[1:13] != second[:12] || !(a < b) {
		t.Fatalf("request ids %q, %q gave transaction ids %q, %q: not led by their time, in order", first, second, a, b)
	}
}

// TestDecodeBody: the pooled decode of a 2xx answer reads what
// json.Decoder.Decode read: the first value, whatever follows it.
func TestDecodeBody(t *testing.T) {
	type v struct {
		A int `json:"a"`
	}
	for _, tc := range []struct {
		body string
		want int
		ok   bool
	}{
		{`{"a":1}`, 1, true},
		{"{\"a\":2}\n", 2, true},
		{`{"a":3} trailing`, 3, true},
		{``, 0, false},
		{`{"a":`, 0, false},
		{`{"a":"x"}`, 0, false},
	} {
		var got v
		err := decodeBody(strings.NewReader(tc.body), &got)
		var want v
		werr := json.NewDecoder(strings.NewReader(tc.body)).Decode(&want)
		if (err == nil) != tc.ok || (werr == nil) != tc.ok || got.A != tc.want || got != want {
			t.Errorf("%q: got %+v, %v; Decoder %+v, %v", tc.body, got, err, want, werr)
		}
	}
}
