package txn

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

func put(k, v string) Op { return Op{Kind: OpPut, Key: []byte(k), Value: []byte(v)} }
func del(k string) Op    { return Op{Kind: OpDelete, Key: []byte(k)} }
func get(k string) Op    { return Op{Kind: OpGet, Key: []byte(k)} }
func cmpv(k string, t Target, op CmpOp, v string) Compare {
	return Compare{Key: []byte(k), Target: t, Op: op, Value: []byte(v)}
}

// TestValidateRequest: bad input is refused with a typed error naming the
// field (the API maps ErrInvalid to 400 invalid_argument and writes
// nothing); the limits are the operator's, defaulting to 1,000 ops and
// 1 MiB (issue 13 items 7 and 10).
func TestValidateRequest(t *testing.T) {
	l := DefaultLimits()
	if err := l.Validate(); err != nil {
		t.Fatal(err)
	}
	many := func(n int) []Op {
		ops := make([]Op, n)
		for i := range ops {
			ops[i] = get("k" + strings.Repeat("x", i%7) + string(rune('a'+i%26)))
		}
		return ops
	}
	cases := []struct {
		name  string
		req   Request
		field string // "" = valid
	}{
		{"put and compare", Request{Compare: []Compare{cmpv("a", TargetValue, CmpGe, "10")},
			Success: []Op{put("a", "0"), put("b", "10")}, Failure: []Op{get("a")}}, ""},
		{"compares only", Request{Compare: []Compare{cmpv("a", TargetExists, CmpEq, "true")}}, ""},
		{"same key written in each branch", Request{Success: []Op{put("a", "1")}, Failure: []Op{del("a")}}, ""},
		{"get and put of one key", Request{Success: []Op{get("a"), put("a", "1")}}, ""},
		{"exactly 1000 ops", Request{Success: many(1000)}, ""},
		{"empty", Request{}, "txn"},
		{"empty with request id", Request{RequestID: "r1"}, "txn"},
		{"1001 ops", Request{Success: many(1001)}, "ops"},
		{"1000 ops and a compare", Request{Success: many(1000), Compare: []Compare{cmpv("a", TargetValue, CmpEq, "")}}, "ops"},
		{"duplicate write key", Request{Success: []Op{put("a", "1"), del("a")}}, "success[1].key"},
		{"duplicate write key in failure", Request{Failure: []Op{put("b", "1"), put("a", "1"), put("b", "2")}}, "failure[2].key"},
		{"unknown target", Request{Compare: []Compare{{Key: []byte("a"), Target: 9, Op: CmpEq}}}, "compare[0].target"},
		{"unknown operator", Request{Compare: []Compare{{Key: []byte("a"), Target: TargetValue, Op: 0}}}, "compare[0].op"},
		{"mod_index not an integer", Request{Compare: []Compare{cmpv("a", TargetModIndex, CmpEq, "x")}}, "compare[0].value"},
		{"version negative", Request{Compare: []Compare{cmpv("a", TargetVersion, CmpGt, "-1")}}, "compare[0].value"},
		{"exists not a bool", Request{Compare: []Compare{cmpv("a", TargetExists, CmpEq, "yes")}}, "compare[0].value"},
		{"exists with <", Request{Compare: []Compare{cmpv("a", TargetExists, CmpLt, "true")}}, "compare[0].op"},
		{"empty compare key", Request{Compare: []Compare{cmpv("", TargetValue, CmpEq, "1")}}, "compare[0].key"},
		{"unknown op", Request{Success: []Op{{Kind: 7, Key: []byte("a")}}}, "success[0].op"},
		{"empty op key", Request{Success: []Op{put("", "1")}}, "success[0].key"},
		{"key too large", Request{Success: []Op{put(strings.Repeat("k", MaxKeySize+1), "1")}}, "success[0].key"},
		{"value too large", Request{Success: []Op{put("a", strings.Repeat("v", MaxValueSize+1))}}, "success[0].value"},
		{"get with value", Request{Success: []Op{{Kind: OpGet, Key: []byte("a"), Value: []byte("x")}}}, "success[0].value"},
		{"delete with ttl", Request{Success: []Op{{Kind: OpDelete, Key: []byte("a"), TTL: time.Second}}}, "success[0].ttl"},
		{"negative ttl", Request{Success: []Op{{Kind: OpPut, Key: []byte("a"), TTL: -1}}}, "success[0].ttl"},
		{"fenced get", Request{Success: []Op{{Kind: OpGet, Key: []byte("a"), Fence: &Fence{Lock: "l", Token: 1}}}}, "success[0].fence"},
		{"fence without lock", Request{Success: []Op{{Kind: OpPut, Key: []byte("a"), Fence: &Fence{Token: 1}}}}, "success[0].fence.lock"},
		{"fence token 0", Request{Success: []Op{{Kind: OpDelete, Key: []byte("a"), Fence: &Fence{Lock: "l"}}}}, "success[0].fence.token"},
		{"request id too long", Request{Success: []Op{get("a")}, RequestID: strings.Repeat("r", 257)}, "request_id"},
		{"over 1 MiB in total", Request{Success: []Op{put("a", strings.Repeat("v", 600<<10)), put("b", strings.Repeat("v", 600<<10))}}, "txn"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := l.ValidateRequest(&c.req)
			if c.field == "" {
				if err != nil {
					t.Fatalf("valid request refused: %v", err)
				}
				return
			}
			var ie *InvalidError
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &ie) {
				t.Fatalf("got %v, want an *InvalidError", err)
			}
			if ie.Field != c.field {
				t.Fatalf("field %q, want %q (%v)", ie.Field, c.field, err)
			}
		})
	}
}

// TestOperatorLimits: an operator's lower limits apply; limits above the
// hard bounds are refused.
func TestOperatorLimits(t *testing.T) {
	l := DefaultLimits()
	l.MaxOps, l.MaxBytes = 2, 10
	if err := l.ValidateRequest(&Request{Success: []Op{get("a"), get("b"), get("c")}}); !errors.Is(err, ErrInvalid) ||
		!strings.Contains(err.Error(), "limit is 2") {
		t.Fatalf("3 ops under MaxOps 2: %v", err)
	}
	if err := l.ValidateRequest(&Request{Success: []Op{put("a", "0123456789")}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("11 bytes under MaxBytes 10: %v", err)
	}
	for _, bad := range []Limits{{MaxOps: 0, MaxBytes: 1, MaxKeySize: 1, MaxTTL: 1},
		{MaxOps: HardMaxOps + 1, MaxBytes: 1, MaxKeySize: 1, MaxTTL: 1},
		{MaxOps: 1, MaxBytes: HardMaxBytes + 1, MaxKeySize: 1, MaxTTL: 1},
		{MaxOps: 1, MaxBytes: 1, MaxKeySize: MaxKeySize + 1, MaxTTL: 1}} {
		if bad.Validate() == nil {
			t.Fatalf("limits %+v accepted", bad)
		}
	}
}

func TestParseNames(t *testing.T) {
	for _, s := range []string{"value", "mod_index", "create_index", "version", "exists"} {
		tg, err := ParseTarget(s)
		if err != nil || tg.String() != s {
			t.Fatalf("target %q: %v %v", s, tg, err)
		}
	}
	for _, s := range []string{"==", "!=", "<", "<=", ">", ">="} {
		o, err := ParseCmpOp(s)
		if err != nil || o.String() != s {
			t.Fatalf("op %q: %v %v", s, o, err)
		}
	}
	for _, s := range []string{"get", "put", "delete"} {
		k, err := ParseOpKind(s)
		if err != nil || k.String() != s {
			t.Fatalf("op %q: %v %v", s, k, err)
		}
	}
	for _, bad := range []func() error{
		func() error { _, err := ParseTarget("lease"); return err },
		func() error { _, err := ParseCmpOp("=<"); return err },
		func() error { _, err := ParseOpKind("range"); return err },
	} {
		if err := bad(); !errors.Is(err, ErrInvalid) {
			t.Fatalf("unknown name: %v", err)
		}
	}
}

func TestEval(t *testing.T) {
	present := func(v string) KeyState {
		return KeyState{Exists: true, Value: []byte(v), CreateIndex: 5, ModIndex: 9, Version: 3}
	}
	absent := KeyState{}
	cases := []struct {
		c    Compare
		s    KeyState
		want bool
	}{
		{cmpv("a", TargetValue, CmpGe, "10"), present("10"), true},
		{cmpv("a", TargetValue, CmpLt, "10"), present("9"), true},      // integers: 9 < 10
		{cmpv("a", TargetValue, CmpLt, "10"), present("-3"), true},     // negative integers
		{cmpv("a", TargetValue, CmpGt, "a10"), present("a9"), true},    // bytes: "a9" > "a10"
		{cmpv("a", TargetValue, CmpLt, "10"), present("9x"), false},    // one side not an integer: bytes, "9x" > "10"
		{cmpv("a", TargetValue, CmpEq, "007"), present("7"), true},     // equal as integers
		{cmpv("a", TargetValue, CmpEq, ""), present(""), true},         // empty value exists
		{cmpv("a", TargetValue, CmpEq, ""), absent, false},             // absent: value compares fail (etcd)
		{cmpv("a", TargetValue, CmpNe, "x"), absent, false},            // ... whatever the operator
		{cmpv("a", TargetModIndex, CmpEq, "0"), absent, true},          // absent: mod_index 0
		{cmpv("a", TargetModIndex, CmpEq, "9"), present("v"), true},    //
		{cmpv("a", TargetModIndex, CmpLt, "10"), present("v"), true},   //
		{cmpv("a", TargetCreateIndex, CmpEq, "5"), present("v"), true}, //
		{cmpv("a", TargetCreateIndex, CmpGt, "0"), absent, false},      //
		{cmpv("a", TargetVersion, CmpEq, "0"), absent, true},           //
		{cmpv("a", TargetVersion, CmpGe, "3"), present("v"), true},     //
		{cmpv("a", TargetVersion, CmpNe, "3"), present("v"), false},    //
		{cmpv("a", TargetExists, CmpEq, "true"), present(""), true},    //
		{cmpv("a", TargetExists, CmpEq, "true"), absent, false},        //
		{cmpv("a", TargetExists, CmpNe, "true"), absent, true},         //
		{cmpv("a", TargetExists, CmpEq, "false"), absent, true},        //
		{cmpv("a", TargetModIndex, CmpEq, "18446744073709551615"), absent, false},
	}
	for i, c := range cases {
		if got := Eval(c.c, c.s); got != c.want {
			t.Errorf("case %d: %s %s %s %q on %+v = %v, want %v", i, c.c.Key, c.c.Target, c.c.Op, c.c.Value, c.s, got, c.want)
		}
	}
}

func TestExecute(t *testing.T) {
	state := map[string]KeyState{"a": {Exists: true, Value: []byte("10"), ModIndex: 4, Version: 1, CreateIndex: 4}}
	look := func(k []byte) KeyState { return state[string(k)] }
	r := &Request{
		Compare: []Compare{cmpv("a", TargetValue, CmpGe, "10"), cmpv("b", TargetExists, CmpEq, "false")},
		Success: []Op{put("a", "0"), get("a"), put("b", "10"), del("c")},
		Failure: []Op{get("a")},
	}
	out := Execute(r, look)
	if !out.Succeeded || len(out.Writes) != 3 || len(out.Results) != 4 {
		t.Fatalf("outcome %+v", out)
	}
	if string(out.Results[1].State.Value) != "10" {
		t.Fatalf("get in the branch sees the state before the transaction: %+v", out.Results[1])
	}
	if !out.Writes[2].Delete || !bytes.Equal(out.Writes[2].Key, []byte("c")) {
		t.Fatalf("writes %+v", out.Writes)
	}
	state["a"] = KeyState{Exists: true, Value: []byte("9")}
	out = Execute(r, look)
	if out.Succeeded || len(out.Writes) != 0 || string(out.Results[0].State.Value) != "9" {
		t.Fatalf("failure branch: %+v", out)
	}
}

// TestIDForRequest: a retried request maps to the same transaction (I7),
// different requests to different ones, within the id limit.
func TestIDForRequest(t *testing.T) {
	a, b := IDForRequest("t-17"), IDForRequest("t-18")
	if a != IDForRequest("t-17") || a == b || len(a) > MaxIDSize || a[0] != 'r' {
		t.Fatalf("ids %q %q", a, b)
	}
	// A request id that starts with a time (cairn's clients: "%012x.") gives
	// an id that starts with that time, so later requests sort after earlier
	// ones and a shard's records and tombstones append.
	early, late := IDForRequest("0005f1e2d3c4.c1-9"), IDForRequest("0005f1e2d3c5.c1-1")
	if early != IDForRequest("0005f1e2d3c4.c1-9") || len(early) != len(a) || len(late) != len(a) ||
		early[:13] != "r0005f1e2d3c4" || !(early < late) {
		t.Fatalf("time-prefixed ids %q %q", early, late)
	}
	if x, y := IDForRequest("0005f1e2d3c4.c1-1"), IDForRequest("0005f1e2d3c4.c1-2"); x == y || x[:13] != y[:13] {
		t.Fatalf("same time, different requests: %q %q", x, y)
	}
	// Not a time: 12 hex digits without the dot, or upper case.
	for _, rid := range []string{"0005f1e2d3c4x", "0005F1E2D3C4.c1-1", "0005f1e2d3c4", "0005f1e2d3cg.c1-1"} {
		sum := sha256.Sum256([]byte(rid))
		if got, want := IDForRequest(rid), "r"+hex.EncodeToString(sum[:20]); got != want {
			t.Errorf("IDForRequest(%q) = %q, want the hash-only %q", rid, got, want)
		}
	}
}
