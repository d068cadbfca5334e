package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestLockHolderOf reads the holder a lock_held answer names, in the
// docs/api.md form ("holder" object) and beside the code.
func TestLockHolderOf(t *testing.T) {
	cases := []struct {
		name  string
		body  string
		owner string
		token uint64
		ok    bool
	}{
		{"holder object", `{"error":{"code":"lock_held","message":"m","holder":{"owner":"w3","token":4711}}}`, "w3", 4711, true},
		{"beside the code", `{"error":{"code":"lock_held","message":"m","owner":"w3","token":12}}`, "w3", 12, true},
		{"no holder (delayed or queued)", `{"error":{"code":"lock_held","message":"m"}}`, "", 0, false},
		{"another code", `{"error":{"code":"lock_lost","message":"m","holder":{"owner":"w3","token":1}}}`, "", 0, false},
		{"token as a string", `{"error":{"code":"lock_held","holder":{"owner":"w3","token":"9"}}}`, "", 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := fmt.Errorf("wrapped: %w", decodeError(409, []byte(tc.body)))
			owner, token, ok := LockHolderOf(err)
			if ok != tc.ok || token != tc.token || (ok && owner != tc.owner) {
				t.Fatalf("LockHolderOf = %q, %d, %v; want %q, %d, %v", owner, token, ok, tc.owner, tc.token, tc.ok)
			}
		})
	}
	if _, _, ok := LockHolderOf(errors.New("plain")); ok {
		t.Fatal("a plain error names no holder")
	}
}

// TestLockInfoJSON decodes a status answer of docs/api.md and writes it back
// with durations as Go duration strings.
func TestLockInfoJSON(t *testing.T) {
	body := `{"name":"jobs/daily","held":true,"token":4711,"owner":"worker-3","expires_in":"11.2s","waiters":2,
	  "holders":[{"token":4711,"owner":"worker-3","mode":"exclusive","expires_in":"11.2s"}],"index":90,"limit":1,"mode":"exclusive"}`
	var li LockInfo
	if err := json.Unmarshal([]byte(body), &li); err != nil {
		t.Fatal(err)
	}
	if li.Name != "jobs/daily" || !li.Held || li.Token != 4711 || li.Waiters != 2 || li.Index != 90 ||
		len(li.Holders) != 1 || li.ExpiresIn() != 11200*time.Millisecond || li.Holders[0].Mode != "exclusive" {
		t.Fatalf("decoded %+v", li)
	}
	b, err := json.Marshal(li)
	if err != nil {
		t.Fatal(err)
	}
	var back LockInfo
	if err := json.Unmarshal(b, &back); err != nil || back.ExpiresIn() != li.ExpiresIn() || back.Token != li.Token {
		t.Fatalf("round trip %s: %+v, %v", b, back, err)
	}
	if err := json.Unmarshal([]byte(`{"holders":[{"token":1,"expires_in":"soon"}]}`), &li); err == nil {
		t.Fatal("a bad expires_in should not decode")
	}
}

// TestLockOptionsCheck: options the client refuses before sending.
func TestLockOptionsCheck(t *testing.T) {
	bad := []LockOptions{
		{TTL: -time.Second},
		{Wait: -time.Second},
		{Wait: MaxLockWait + time.Second},
		{Limit: -1},
		{TTL: 3 * time.Second, LeaseMargin: 2 * time.Second},
	}
	for _, o := range bad {
		if err := o.check(); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%+v: %v, want invalid_argument", o, err)
		}
	}
	if err := (LockOptions{TTL: 3 * time.Second, LeaseMargin: time.Second}).check(); err != nil {
		t.Errorf("a margin below 2/3 of the ttl: %v", err)
	}
	if m := (LockOptions{}).margin(); m != DefaultLockTTL/10 {
		t.Errorf("default margin %v, want ttl/10", m)
	}
}

// FuzzLockInfoJSON: a status answer is outside input; decoding never panics,
// and what decodes encodes and decodes to the same durations.
func FuzzLockInfoJSON(f *testing.F) {
	f.Add(`{"name":"a","held":true,"token":1,"holders":[{"token":1,"owner":"o","mode":"shared","expires_in":"1.5s"}],"index":3}`)
	f.Add(`{"holders":[{"expires_in":"-1h"}]}`)
	f.Add(`{"holders":null}`)
	f.Fuzz(func(t *testing.T, s string) {
		var li LockInfo
		if json.Unmarshal([]byte(s), &li) != nil {
			return
		}
		b, err := json.Marshal(li)
		if err != nil {
			t.Fatalf("marshal %+v: %v", li, err)
		}
		var back LockInfo
		if err := json.Unmarshal(b, &back); err != nil || back.ExpiresIn() != li.ExpiresIn() || len(back.Holders) != len(li.Holders) {
			t.Fatalf("round trip of %q: %s -> %+v, %v", s, b, back, err)
		}
	})
}
