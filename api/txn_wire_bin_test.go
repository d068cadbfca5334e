package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/internal/wire"
)

// randWireResult is a txnWireResult with every field drawn at random
// (empty byte fields nil, as both decoders give them back).
func randWireResult(r *rand.Rand) *txnWireResult {
	bs := func() []byte {
		if r.IntN(3) == 0 {
			return nil
		}
		b := make([]byte, 1+r.IntN(40))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return b
	}
	u := func() uint64 {
		switch r.IntN(3) {
		case 0:
			return 0
		case 1:
			return uint64(r.IntN(300))
		}
		return r.Uint64()
	}
	read := func() txnWireRead {
		return txnWireRead{Key: append([]byte("k"), bs()...), Found: r.IntN(2) == 0, Value: bs(),
			CreateIndex: u(), ModIndex: u(), Version: u(), Kind: uint8(r.IntN(4)),
			Deleted: r.IntN(5) - 2, Seq: u()}
	}
	w := &txnWireResult{Index: u(), WrongShard: r.IntN(2) == 0, Vote: uint8(r.IntN(4)), Blocker: bs(),
		Verdict: uint8(r.IntN(4)), Record: bs(), OneShard: bs()}
	if r.IntN(2) == 0 {
		w.Invalid = fmt.Sprintf("invalid: %x", bs()) // text: JSON would replace bytes that are not UTF-8
	}
	for range r.IntN(4) {
		w.Reads = append(w.Reads, read())
	}
	for range r.IntN(4) {
		w.Written = append(w.Written, read())
	}
	for range r.IntN(4) {
		w.Tokens = append(w.Tokens, u()) // zeros too: a token list keeps them
	}
	for range r.IntN(3) {
		w.Resolved = append(w.Resolved, bs()) // nil too: an empty entry keeps its place
	}
	if r.IntN(2) == 0 {
		w.Stale = &txnWireStale{Key: append([]byte("s"), bs()...), Lock: "lock", Token: u(), Accepted: u()}
	}
	if r.IntN(2) == 0 {
		w.Riders = 1 + r.IntN(txnResolveBatchMax)
		for i := range w.Riders {
			if r.IntN(4) == 0 {
				w.RidersRefused = append(w.RidersRefused, i)
			}
		}
	}
	return w
}

// TestTxnWireBinaryRoundTrip: every message of the binary calls decodes to
// what was encoded, and to what the JSON of the same message decodes to (the
// two forms carry the same calls).
func TestTxnWireBinaryRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		res := randWireResult(r)
		got, err := decodeWireResult(encodeWireResult(res))
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !reflect.DeepEqual(got, res) {
			t.Fatalf("%d: result\n got %+v\nwant %+v", i, got, res)
		}
		j, _ := json.Marshal(res)
		var viaJSON txnWireResult
		if err := json.Unmarshal(j, &viaJSON); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, &viaJSON) {
			t.Fatalf("%d: binary and JSON differ\nbinary %+v\n  JSON %+v", i, got, &viaJSON)
		}

		var answers []txnProposeBatchAnswer
		for range 1 + r.IntN(4) {
			switch r.IntN(3) {
			case 0:
				answers = append(answers, txnProposeBatchAnswer{Result: randWireResult(r)})
			case 1:
				answers = append(answers, txnProposeBatchAnswer{Result: &txnWireResult{}}) // present, every field zero
			default:
				answers = append(answers, txnProposeBatchAnswer{Error: "boom", Code: "unavailable", Status: 503,
					SendAlone: r.IntN(2) == 0})
			}
		}
		gotA, err := decodeBatchAnswers(encodeBatchAnswers(answers))
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !reflect.DeepEqual(gotA, answers) {
			t.Fatalf("%d: answers\n got %+v\nwant %+v", i, gotA, answers)
		}

		q := txnProposeBatchRequest{}
		for range 1 + r.IntN(4) {
			q.Items = append(q.Items, txnProposeRequest{Key: []byte{'k', byte(r.IntN(256))}, Cmd: []byte{1, 2, byte(r.IntN(256))},
				Hops: r.IntN(3)})
		}
		gotQ, err := decodeProposeBatchRequest(encodeProposeBatchRequest(&q))
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !reflect.DeepEqual(gotQ, q) {
			t.Fatalf("%d: request\n got %+v\nwant %+v", i, gotQ, q)
		}
		one, err := decodeProposeRequest(encodeProposeRequest(&q.Items[0]))
		if err != nil || !reflect.DeepEqual(one, q.Items[0]) {
			t.Fatalf("%d: single request %+v %v, want %+v", i, one, err, q.Items[0])
		}
	}
}

// TestTxnWireBinarySkipsUnknownFields: a field a newer writer added is
// skipped, so a node reads the calls of a newer one mid-upgrade.
func TestTxnWireBinarySkipsUnknownFields(t *testing.T) {
	res := &txnWireResult{Index: 7, Reads: []txnWireRead{{Key: []byte("a"), Found: true, Value: []byte("v")}}}
	b := encodeWireResult(res)
	b = wire.AppendUint(b, 99, 5)              // a varint field 99
	b = wire.AppendBytes(b, 98, []byte("xyz")) // a bytes field 98
	got, err := decodeWireResult(b)
	if err != nil || !reflect.DeepEqual(got, res) {
		t.Fatalf("%+v %v, want %+v", got, err, res)
	}
}

// FuzzTxnWireBinaryDecode: no input makes a decoder panic, and what decodes
// encodes to something that decodes to the same.
func FuzzTxnWireBinaryDecode(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 8 {
		f.Add(encodeWireResult(randWireResult(r)))
		f.Add(encodeBatchAnswers([]txnProposeBatchAnswer{{Result: randWireResult(r)}, {Error: "e", Status: 503}}))
	}
	f.Add(encodeProposeBatchRequest(&txnProposeBatchRequest{Items: []txnProposeRequest{{Key: []byte("k"), Cmd: []byte{1}, Hops: 1}}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if res, err := decodeWireResult(b); err == nil {
			again, err := decodeWireResult(encodeWireResult(res))
			if err != nil || !reflect.DeepEqual(again, res) {
				t.Fatalf("result re-encoded: %+v %v, want %+v", again, err, res)
			}
		}
		if a, err := decodeBatchAnswers(b); err == nil {
			again, err := decodeBatchAnswers(encodeBatchAnswers(a))
			if err != nil || !reflect.DeepEqual(again, a) {
				t.Fatalf("answers re-encoded: %+v %v, want %+v", again, err, a)
			}
		}
		if q, err := decodeProposeBatchRequest(b); err == nil {
			again, err := decodeProposeBatchRequest(encodeProposeBatchRequest(&q))
			if err != nil || !reflect.DeepEqual(again, q) {
				t.Fatalf("request re-encoded: %+v %v, want %+v", again, err, q)
			}
		}
	})
}

// TestTxnWireBinaryPinned: the bytes of each message are fixed. Nodes of
// different binaries exchange them (and skip fields they do not know), so
// a renumbered field would pass every round trip and still break a mixed
// cluster; this fails instead.
func TestTxnWireBinaryPinned(t *testing.T) {
	res := &txnWireResult{Index: 300, WrongShard: true, Invalid: "bad", Vote: 1, Blocker: []byte{0xb},
		Reads: []txnWireRead{{Key: []byte("k"), Found: true, Value: []byte("v"), CreateIndex: 2, ModIndex: 3,
			Version: 4, Kind: 1, Deleted: -1, Seq: 5}},
		Tokens: []uint64{0, 7}, Verdict: 2, Record: []byte{0xc}, Written: []txnWireRead{{Key: []byte("w")}},
		Resolved: [][]byte{nil, []byte("r")}, OneShard: []byte{0xd},
		Stale: &txnWireStale{Key: []byte("s"), Lock: "l", Token: 8, Accepted: 9}, Riders: 3, RidersRefused: []int{0, 2}}
	for name, c := range map[string]struct {
		got  []byte
		want string
	}{
		"result": {encodeWireResult(res), "08ac0210011a036261642001" + "2a010b" +
			"3214" + "0a016b" + "1001" + "1a0176" + "2002" + "2803" + "3004" + "3801" + "4001" + "4805" +
			"3a020007" + "4002" + "4a010c" + "5203" + "0a0177" + "5a00" + "5a0172" + "62010d" +
			"6a0a" + "0a0173" + "12016c" + "1808" + "2009" + "7003" + "7a020002"},
		"request": {encodeProposeBatchRequest(&txnProposeBatchRequest{Items: []txnProposeRequest{{Key: []byte("k"), Cmd: []byte{1}, Hops: 2}}}),
			"0a08" + "0a016b" + "120101" + "1802"},
		"answers": {encodeBatchAnswers([]txnProposeBatchAnswer{{Result: &txnWireResult{Index: 1}}, {Error: "e", Code: "c", Status: 503, SendAlone: true}}),
			"0a04" + "0a020801" + "0a0b" + "120165" + "1a0163" + "20f703" + "2801"},
	} {
		if got := fmt.Sprintf("%x", c.got); got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", name, got, c.want)
		}
	}
}

// TestTxnWireBinaryRefusesOverByte: a vote, verdict or kind that does not
// fit its byte is malformed, as it is in JSON, not cut to 255.
func TestTxnWireBinaryRefusesOverByte(t *testing.T) {
	for _, b := range [][]byte{
		wire.AppendUint(nil, 4, 256),                           // vote
		wire.AppendUint(nil, 8, 256),                           // verdict
		wire.AppendBytes(nil, 6, wire.AppendUint(nil, 7, 256)), // a read's kind
	} {
		if res, err := decodeWireResult(b); err == nil {
			t.Errorf("%x decoded: %+v", b, res)
		}
	}
}

// TestPathNotServed: only the answer of a node that has no such route sends
// a call again as JSON; another 404 is an answer like any other.
func TestPathNotServed(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{cluster.Decode(404, cluster.ErrorDetail{Code: "not_found", Message: "not found: no route for POST /internal/v2/txn/propose"}), true},
		{cluster.Decode(404, cluster.ErrorDetail{Code: "not_found", Message: "transaction \"t1\": not found"}), false},
		{cluster.Decode(404, cluster.ErrorDetail{}), false},
		{cluster.Decode(503, cluster.ErrorDetail{Code: "unavailable", Message: "no route for it"}), false},
		{errors.New("no route for"), false},
	} {
		if got := pathNotServed(c.err); got != c.want {
			t.Errorf("pathNotServed(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
