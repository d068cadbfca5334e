package api

import (
	"encoding/base64"
	"maps"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// testRand returns a seeded source and logs the seed so a failure can be
// replayed.
func testRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return rand.New(rand.NewPCG(seed, seed))
}

// randSession returns a session of up to n shards. Indexes are positive: a
// zero index is the same as no entry and is not kept (see observe).
func randSession(rng *rand.Rand, n int) session {
	s := session{}
	for range rng.IntN(n + 1) {
		var id, idx uint64
		switch rng.IntN(3) {
		case 0:
			id, idx = rng.Uint64N(8), 1+rng.Uint64N(100)
		case 1:
			id, idx = rng.Uint64N(1000), 1+rng.Uint64N(1<<40)
		default:
			id, idx = rng.Uint64(), max(1, rng.Uint64())
		}
		s[id] = idx
	}
	return s
}

func encodeToken(raw string) string {
	return sessionPrefix + base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func TestSessionRoundTrip(t *testing.T) {
	rng := testRand(t)
	for i := range 2000 {
		s := randSession(rng, 1+i%40)
		tok := s.String()
		if !strings.HasPrefix(tok, sessionPrefix) {
			t.Fatalf("token %q lacks prefix %q", tok, sessionPrefix)
		}
		got, err := parseSession(tok)
		if err != nil {
			t.Fatalf("parse(%v.String() = %q): %v", s, tok, err)
		}
		if !maps.Equal(got, s) {
			t.Fatalf("parse(%q) = %v; want %v", tok, got, s)
		}
		if again := got.String(); again != tok {
			t.Fatalf("String is not canonical: %q then %q", tok, again)
		}
	}
}

func TestSessionMergeIsElementwiseMax(t *testing.T) {
	rng := testRand(t)
	for range 1000 {
		a, b := randSession(rng, 10), randSession(rng, 10)
		// Share some shards so max is exercised, not only union.
		for id := range a {
			if rng.IntN(2) == 0 {
				b[id] = max(1, rng.Uint64N(2*a[id]+1))
			}
		}
		want := session{}
		for id := range a {
			want[id] = max(a[id], b[id])
		}
		for id := range b {
			want[id] = max(a[id], b[id])
		}
		bBefore := maps.Clone(b)
		got := maps.Clone(a)
		got.merge(b)
		if !maps.Equal(got, want) {
			t.Fatalf("%v merge %v = %v; want %v", a, b, got, want)
		}
		if !maps.Equal(b, bBefore) {
			t.Fatalf("merge changed its argument: %v, was %v", b, bBefore)
		}
		// Commutative: the order sessions are merged in does not matter.
		other := maps.Clone(b)
		other.merge(a)
		if !maps.Equal(other, want) {
			t.Fatalf("%v merge %v = %v; want %v", b, a, other, want)
		}
	}
}

// TestSessionObserveNeverGoesBack: a token only moves forward, which is what
// makes reads monotonic.
func TestSessionObserveNeverGoesBack(t *testing.T) {
	s := session{}
	s.observe(1, 10)
	s.observe(1, 5)
	s.observe(2, 0)
	if want := (session{1: 10}); !maps.Equal(s, want) {
		t.Errorf("session %v; want %v", s, want)
	}
}

func TestParseSession(t *testing.T) {
	tests := []struct {
		name string
		tok  string
		want session // nil = invalid_argument
	}{
		{"empty token", "", session{}},
		{"prefix only", sessionPrefix, session{}},
		{"one shard", encodeToken("1:15"), session{1: 15}},
		{"several shards", encodeToken("1:15,4:9,2:100"), session{1: 15, 2: 100, 4: 9}},
		{"duplicate shard keeps the max", encodeToken("1:15,1:9,1:20"), session{1: 20}},
		{"zero index is no entry", encodeToken("3:0"), session{}},
		{"max uint64", encodeToken("18446744073709551615:18446744073709551615"),
			session{1<<64 - 1: 1<<64 - 1}},
		{"leading zeros", encodeToken("01:007"), session{1: 7}},

		{"bad prefix", "s2." + base64.RawURLEncoding.EncodeToString([]byte("1:1")), nil},
		{"no prefix", base64.RawURLEncoding.EncodeToString([]byte("1:1")), nil},
		{"prefix without dot", "s1", nil},
		{"bad base64", sessionPrefix + "!!!", nil},
		{"padded base64", sessionPrefix + base64.URLEncoding.EncodeToString([]byte("1:10")), nil},
		{"standard alphabet", sessionPrefix + "MTo+", nil},
		{"pair without colon", encodeToken("1"), nil},
		{"empty pair", encodeToken("1:1,,2:2"), nil},
		{"trailing comma", encodeToken("1:1,"), nil},
		{"missing shard", encodeToken(":1"), nil},
		{"missing index", encodeToken("1:"), nil},
		{"two colons", encodeToken("1:2:3"), nil},
		{"negative", encodeToken("-1:2"), nil},
		{"plus sign", encodeToken("+1:2"), nil},
		{"not a number", encodeToken("a:b"), nil},
		{"spaces", encodeToken("1: 2"), nil},
		{"overflow", encodeToken("1:18446744073709551616"), nil},
		{"huge", sessionPrefix + strings.Repeat("A", 64<<10), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseSession(tt.tok)
			if tt.want == nil {
				wantCode(t, err, "invalid_argument")
				return
			}
			if err != nil {
				t.Fatalf("parse(%q): %v", tt.tok, err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("parse(%q) = %v; want %v", tt.tok, got, tt.want)
			}
		})
	}
}

// TestEmptySessionString: setHeaders sends the empty session's token when a
// request had none, and it must parse back to the empty session.
func TestEmptySessionString(t *testing.T) {
	tok := session{}.String()
	if tok != sessionPrefix {
		t.Errorf("empty session token %q; want %q", tok, sessionPrefix)
	}
	s, err := parseSession(tok)
	if err != nil || len(s) != 0 {
		t.Errorf("parse(%q) = %v, %v; want an empty session", tok, s, err)
	}
}

// TestSessionTokenFromManyShardsParses: a token the server hands out must be
// accepted back. String does not bound the token, while parseSession rejects
// anything over 64 KiB, so a client that has touched enough shards (a full
// scan of a cluster with ~1,000+ shards observes every one) gets a token every
// later request fails on with invalid_argument.
func TestSessionTokenFromManyShardsParses(t *testing.T) {
	s := session{}
	for id := range uint64(2000) {
		s[1<<63+id] = 1<<63 + id
	}
	tok := s.String()
	if _, err := parseSession(tok); err != nil {
		t.Fatalf("a %d-byte token from String is rejected: %v", len(tok), err)
	}
}
