package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/txn"
)

// TestTxnBadInput is issue 13 item 10: every malformed transaction is 400
// invalid_argument, refused before routing (the backend is never asked for a
// range, so nothing can be proposed or written); a well-formed one gets as
// far as routing (503: this node is not ready).
func TestTxnBadInput(t *testing.T) {
	limits := txn.DefaultLimits()
	limits.MaxOps, limits.MaxBytes = 4, 64
	s := NewServer(Config{Backend: notReadyBackend{t}, TxnLimits: limits})
	big := strings.Repeat("x", 70)
	cases := []struct {
		name, body string
		status     int
	}{
		{"valid", `{"compare":[{"key":"a","target":"value","op":">=","value":"10"}],"success":[{"op":"put","key":"a","value":"0"}]}`, 503},
		{"valid number and bool values", `{"compare":[{"key":"a","target":"mod_index","op":"==","value":0},{"key":"b","target":"exists","op":"!=","value":true}],"success":[{"op":"get","key":"a"}]}`, 503},
		{"empty txn", `{}`, 400},
		{"empty branches", `{"compare":[],"success":[],"failure":[],"request_id":"x"}`, 400},
		{"not json", `{"compare":`, 400},
		{"trailing data", `{"success":[{"op":"get","key":"a"}]} {}`, 400},
		{"unknown top field", `{"success":[{"op":"get","key":"a"}],"then":[]}`, 400},
		{"unknown compare field", `{"compare":[{"key":"a","target":"value","op":"==","value":"1","x":1}]}`, 400},
		{"unknown op field", `{"success":[{"op":"put","key":"a","value":"1","if":{}}]}`, 400},
		{"unknown target", `{"compare":[{"key":"a","target":"lease","op":"==","value":"1"}]}`, 400},
		{"unknown operator", `{"compare":[{"key":"a","target":"value","op":"=~","value":"1"}]}`, 400},
		{"missing operator", `{"compare":[{"key":"a","target":"value","value":"1"}]}`, 400},
		{"missing compare value", `{"compare":[{"key":"a","target":"value","op":"=="}]}`, 400},
		{"object compare value", `{"compare":[{"key":"a","target":"value","op":"==","value":{}}]}`, 400},
		{"index target with text", `{"compare":[{"key":"a","target":"mod_index","op":"==","value":"ten"}]}`, 400},
		{"index target negative", `{"compare":[{"key":"a","target":"version","op":">","value":-1}]}`, 400},
		{"exists with <", `{"compare":[{"key":"a","target":"exists","op":"<","value":"true"}]}`, 400},
		{"exists with text", `{"compare":[{"key":"a","target":"exists","op":"==","value":"yes"}]}`, 400},
		{"compare without key", `{"compare":[{"target":"value","op":"==","value":"1"}]}`, 400},
		{"empty key", `{"success":[{"op":"get","key":""}]}`, 400},
		{"unknown op", `{"success":[{"op":"incr","key":"a"}]}`, 400},
		{"op without key", `{"success":[{"op":"get"}]}`, 400},
		{"put without value", `{"success":[{"op":"put","key":"a"}]}`, 400},
		{"get with value", `{"success":[{"op":"get","key":"a","value":"1"}]}`, 400},
		{"delete with ttl", `{"success":[{"op":"delete","key":"a","ttl":"1s"}]}`, 400},
		{"bad ttl", `{"success":[{"op":"put","key":"a","value":"1","ttl":"soon"}]}`, 400},
		{"get with fence", `{"success":[{"op":"get","key":"a","fence":{"lock":"l","token":1}}]}`, 400},
		{"fence without token", `{"success":[{"op":"put","key":"a","value":"1","fence":{"lock":"l"}}]}`, 400},
		{"duplicate write key", `{"success":[{"op":"put","key":"a","value":"1"},{"op":"delete","key":"a"}]}`, 400},
		{"duplicate write key in failure", `{"failure":[{"op":"put","key":"a","value":"1"},{"op":"put","key":"a","value":"2"}]}`, 400},
		{"over the op limit", `{"compare":[{"key":"a","target":"exists","op":"==","value":"true"}],"success":[{"op":"get","key":"a"},{"op":"get","key":"b"}],"failure":[{"op":"get","key":"c"},{"op":"get","key":"d"}]}`, 400},
		{"over the byte limit", fmt.Sprintf(`{"success":[{"op":"put","key":"a","value":%q}]}`, big), 400},
		{"request id too long", fmt.Sprintf(`{"success":[{"op":"get","key":"a"}],"request_id":%q}`, strings.Repeat("r", 300)), 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/txn", strings.NewReader(tc.body)))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			want := map[int]string{400: "invalid_argument", 503: "unavailable"}[tc.status]
			if env := decodeEnvelope(t, rec.Body.Bytes()); env["code"] != want {
				t.Fatalf("code %v, want %s: %s", env["code"], want, rec.Body)
			}
		})
	}
	// Other methods on the route: 405.
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest(http.MethodPut, "/v1/txn", strings.NewReader(`{}`)))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("PUT /v1/txn: %d %s", rec.Code, rec.Body)
	}
}

func TestTxnLimitsConfig(t *testing.T) {
	bad := txn.DefaultLimits()
	bad.MaxOps = txn.HardMaxOps + 1
	if err := (Config{Backend: notReadyBackend{t}, TxnLimits: bad}).Validate(); err == nil {
		t.Fatal("a limit above the hard bound was accepted")
	}
	if err := (Config{Backend: notReadyBackend{t}}).Validate(); err != nil {
		t.Fatalf("zero limits (defaults): %v", err)
	}
}

// FuzzParseTxn: any POST /v1/txn body either yields a request that passes
// the limits and survives the log encoding, or a client error.
func FuzzParseTxn(f *testing.F) {
	for _, s := range []string{
		`{"compare":[{"key":"a","target":"value","op":">=","value":"10"}],"success":[{"op":"put","key":"a","value":"0","ttl":"1s"}],"failure":[{"op":"get","key":"a"}],"request_id":"r"}`,
		`{"compare":[{"key":"a","target":"exists","op":"==","value":false}],"success":[{"op":"delete","key":"b","fence":{"lock":"l","token":3}}]}`,
		`{"compare":[{"key":"a","target":"mod_index","op":"<","value":12}]}`,
		`{}`, `[]`, `{"success":[{}]}`,
	} {
		f.Add([]byte(s))
	}
	limits := txn.DefaultLimits()
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseTxn(body, limits)
		if err != nil {
			checkClientError(t, err)
			return
		}
		if _, err := txn.DecodeRequest(txn.EncodeRequest(req)); err != nil {
			t.Fatalf("a parsed request does not survive its encoding: %v", err)
		}
	})
}

// TestTxnWireRoundTrip: a participant command's result crosses the wire
// between nodes unchanged.
func TestTxnWireRoundTrip(t *testing.T) {
	in := &fsm.Result{Index: 7, TwoPC: &fsm.TxnCmdResult{Vote: txn.VoteConflict,
		Blocker: &txn.Intent{TxnID: "t", Key: []byte("k"), Access: txn.AccessWrite, Anchor: []byte("a"), Priority: 3},
		Reads:   []fsm.TxnRead{{Key: []byte("k"), KV: &fsm.KV{Key: []byte("k"), Value: []byte("v"), CreateIndex: 1, ModIndex: 2, Version: 3}, Seq: 9}, {Key: []byte("x")}},
		Tokens:  []uint64{4}, Verdict: txn.VerdictOK,
		Record:   &txn.Record{ID: "t", State: txn.Pending, Anchor: []byte("a"), Epoch: 1},
		Written:  []fsm.TxnOpResult{{Kind: txn.OpDelete, Key: []byte("d"), Deleted: 1}},
		Resolved: [][]byte{[]byte("d")},
		OneShard: &fsm.Result{Index: 5, Txn: &fsm.TxnResult{Succeeded: true, Ops: []fsm.TxnOpResult{
			{Kind: txn.OpPut, Key: []byte("p"), KV: &fsm.KV{Key: []byte("p"), CreateIndex: 5, ModIndex: 5, Version: 1}},
			{Kind: txn.OpGet, Key: []byte("g")}}}},
		Stale: &fsm.StaleTokenError{Key: []byte("s"), Lock: "L", Token: 3, Accepted: 4}}}
	w, err := toWire(in)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(w)
	var back txnWireResult
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	out, err := back.result()
	if err != nil || !reflect.DeepEqual(in, out) {
		t.Fatalf("round trip:\n%+v\n%+v %v", in.TwoPC, out.TwoPC, err)
	}
	// A one-shard execution refused by a stale fence: the error crosses.
	st, _ := toWire(&fsm.Result{Index: 4, TwoPC: &fsm.TxnCmdResult{OneShard: &fsm.Result{Index: 2,
		Err: &fsm.StaleTokenError{Key: []byte("k"), Lock: "L", Token: 1, Accepted: 2}}}})
	if r, err := st.result(); err != nil || !errors.As(r.TwoPC.OneShard.Err, new(*fsm.StaleTokenError)) {
		t.Fatalf("stale one-shard result lost: %+v %v", r, err)
	}
	ws, _ := toWire(&fsm.Result{Index: 3, Err: &fsm.WrongShardError{Key: []byte("k")}})
	if r, _ := ws.result(); !errors.As(r.Err, new(*fsm.WrongShardError)) {
		t.Fatalf("wrong shard lost: %+v", r)
	}
}
