package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/wire"
	"github.com/cairndb/cairn/shard"
	"github.com/cairndb/cairn/txn"
)

// TestProposeBatch: one shared call to a (fake) leader of another node
// answers each prepare; a prepare whose answer did not fit ("send alone")
// and one the leader did nothing with are sent again on their own; an
// unknown outcome stays unknown (not sent twice); a prepare whose
// coordinator left before the call is not sent; every prepare is answered
// exactly once.
func TestProposeBatch(t *testing.T) {
	for _, jsonOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("jsonOnly=%v", jsonOnly), func(t *testing.T) { testProposeBatch(t, jsonOnly) })
	}
}

func testProposeBatch(t *testing.T, jsonOnly bool) {
	var mu sync.Mutex
	var sizes []int
	singles := map[string]int{}
	mode := map[string]string{"b": "alone", "c": "nothing-done", "d": "unknown"}
	s, hits := fakePrepareLeader(t, jsonOnly, func(q txnProposeBatchRequest) txnProposeBatchResponse {
		mu.Lock()
		sizes = append(sizes, len(q.Items))
		mu.Unlock()
		out := txnProposeBatchResponse{Items: make([]txnProposeBatchAnswer, len(q.Items))}
		for i, it := range q.Items {
			switch mode[string(it.Key)] {
			case "alone":
				out.Items[i] = txnProposeBatchAnswer{SendAlone: true}
			case "nothing-done":
				out.Items[i] = batchAnswerError(&shard.NotLeaderError{})
			case "unknown":
				out.Items[i] = batchAnswerError(fmt.Errorf("propose: %w", shard.ErrOutcomeUnknown))
			default:
				out.Items[i] = txnProposeBatchAnswer{Result: &txnWireResult{Index: 10, Vote: uint8(txn.VoteYes)}}
			}
		}
		return out
	}, func(q txnProposeRequest) txnWireResult {
		mu.Lock()
		singles[string(q.Key)]++
		mu.Unlock()
		return txnWireResult{Index: 20, Vote: uint8(txn.VoteYes)}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	left, leave := context.WithCancel(ctx)
	leave()
	item := func(ctx context.Context, key string) *proposeItem { return testPrepareItem(t, ctx, "t1", key) }
	items := []*proposeItem{item(ctx, "a"), item(ctx, "b"), item(ctx, "c"), item(ctx, "d"), item(left, "e")}
	s.proposeBatch(ctx, items)

	want := map[string]struct {
		index uint64 // 10: the shared call's answer, 20: a single call's
		err   error
	}{"a": {10, nil}, "b": {20, nil}, "c": {20, nil}, "d": {0, shard.ErrOutcomeUnknown}, "e": {0, context.Canceled}}
	for _, it := range items {
		k := string(it.key)
		var err error
		select {
		case err = <-it.done:
		case <-time.After(5 * time.Second): // single calls after a shared one run in the background
			t.Fatalf("%s: not answered", k)
		}
		select {
		case <-it.done:
			t.Fatalf("%s: answered twice", k)
		default:
		}
		w := want[k]
		switch {
		case w.err != nil && !errors.Is(err, w.err):
			t.Errorf("%s: error %v, want %v", k, err, w.err)
		case w.err == nil && (err != nil || it.res == nil || it.res.Index != w.index):
			t.Errorf("%s: %+v %v, want index %d", k, it.res, err, w.index)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(sizes) != "[4]" {
		t.Errorf("shared calls of %v prepares, want one of 4 (the one whose coordinator left is not sent)", sizes)
	}
	if fmt.Sprint(singles) != "map[b:1 c:1]" {
		t.Errorf("single calls %v, want b and c once each (d's outcome is unknown: not sent again)", singles)
	}
	// Binary first; a node of an older binary answers 404 there, and gets
	// every call again as JSON.
	want2 := map[string]int{pathTxnProposeBatchBin: 1, pathTxnProposeBin: 2}
	if jsonOnly {
		want2[pathTxnProposeBatch], want2[pathTxnPropose] = 1, 2
	}
	if got := hits(); !maps.Equal(got, want2) {
		t.Errorf("calls per path %v, want %v", got, want2)
	}
}

// TestProposeBatchSinglesDoNotHoldTheQueue: the single call of a prepare
// whose answer did not fit in a shared call ("send alone": a megabyte value)
// runs in the background, so the shard's next shared call does not wait for
// it: proposeBatch returns while that single call is still in flight, and
// the prepare is answered when it ends.
func TestProposeBatchSinglesDoNotHoldTheQueue(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	s, _ := fakePrepareLeader(t, false, func(q txnProposeBatchRequest) txnProposeBatchResponse {
		out := txnProposeBatchResponse{Items: make([]txnProposeBatchAnswer, len(q.Items))}
		for i, it := range q.Items {
			out.Items[i] = txnProposeBatchAnswer{Result: &txnWireResult{Index: 10, Vote: uint8(txn.VoteYes)}}
			if string(it.Key) == "big" {
				out.Items[i] = txnProposeBatchAnswer{SendAlone: true}
			}
		}
		return out
	}, func(txnProposeRequest) txnWireResult {
		<-release // a slow single call: a large answer, a loaded leader
		return txnWireResult{Index: 20, Vote: uint8(txn.VoteYes)}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	item := func(key string) *proposeItem { return testPrepareItem(t, ctx, "t-"+key, key) }
	small, big := item("small"), item("big")
	returned := make(chan struct{})
	go func() {
		s.proposeBatch(ctx, []*proposeItem{small, big})
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(3 * time.Second):
		t.Fatal("proposeBatch waited for the single call of the prepare sent alone: the queue behind it waits too")
	}
	if err := <-small.done; err != nil || small.res.Index != 10 {
		t.Fatalf("the prepare answered by the shared call: %+v %v", small.res, err)
	}
	select {
	case err := <-big.done:
		t.Fatalf("the prepare sent alone was answered before its call ended: %v", err)
	default:
	}
	release <- struct{}{}
	select {
	case err := <-big.done:
		if err != nil || big.res.Index != 20 {
			t.Fatalf("the prepare sent alone: %+v %v", big.res, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the prepare sent alone was not answered after its call ended")
	}
}

// TestProposeBatchRefusesBadInput: the shared-call path refuses an empty
// batch, one over the bound and one holding a command that is not a
// participant command, with 400 invalid_argument, before proposing any.
func TestProposeBatchRefusesBadInput(t *testing.T) {
	s := NewServer(Config{Backend: remoteOnlyBackend{notReadyBackend{t}, map[string]string{}}, RouteWait: 100 * time.Millisecond})
	defer s.Close()
	put, err := fsm.EncodeCommand(&fsm.Command{Op: fsm.OpPut, Key: []byte("k"), Value: []byte("v")})
	if err != nil {
		t.Fatal(err)
	}
	prep, err := fsm.EncodeCommand(&fsm.Command{Op: fsm.OpTxnPrepare, Key: []byte("k"),
		Value: fsm.EncodeTxnCommand(&fsm.TxnCommand{ID: "t1", Keys: []txn.KeyIntent{{Key: []byte("k"), Access: txn.AccessWrite}}})})
	if err != nil {
		t.Fatal(err)
	}
	many := make([]txnProposeRequest, txnResolveBatchMax+1)
	for i := range many {
		many[i] = txnProposeRequest{Key: []byte("k"), Cmd: prep}
	}
	for name, items := range map[string][]txnProposeRequest{
		"empty":    {},
		"too many": many,
		"a put":    {{Key: []byte("k"), Cmd: prep}, {Key: []byte("k"), Cmd: put}},
		"garbage":  {{Key: []byte("k"), Cmd: []byte{0xff, 0x01}}},
	} {
		body, _ := json.Marshal(txnProposeBatchRequest{Items: items})
		bin := encodeProposeBatchRequest(&txnProposeBatchRequest{Items: items})
		refused(t, s, name, pathTxnProposeBatch, "application/json", body)
		refused(t, s, name+" (binary)", pathTxnProposeBatchBin, contentTypeWire, bin)
	}
	// Bytes that are no binary message, on both binary paths.
	for name, body := range map[string][]byte{
		"truncated":  encodeProposeBatchRequest(&txnProposeBatchRequest{Items: []txnProposeRequest{{Key: []byte("k"), Cmd: prep}}})[:5],
		"wire type":  {1<<3 | wire.TypeVarint, 1}, // field 1 (an item, or the key) as a varint: both messages carry it as bytes
		"bad varint": {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	} {
		refused(t, s, name+" (batch)", pathTxnProposeBatchBin, contentTypeWire, body)
		refused(t, s, name+" (single)", pathTxnProposeBin, contentTypeWire, body)
	}
}

// refused posts body to path and wants 400 invalid_argument with a message.
func refused(t *testing.T, s *Server, name, path, ctype string, body []byte) {
	t.Helper()
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(string(body)))
	r.Header.Set("Content-Type", ctype)
	s.ServeHTTP(w, r)
	var got struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal(w.Body.Bytes(), &got)
	if w.Code != http.StatusBadRequest || got.Error.Code != "invalid_argument" || got.Error.Message == "" {
		t.Errorf("%s: %d %s", name, w.Code, w.Body.String())
	}
}

// fakePrepareLeader is a server whose every shard is led by a fake node that
// answers shared prepare calls with batch and single ones with single, in
// binary and in JSON; jsonOnly makes it a node of an older binary, which
// serves the JSON paths only. The returned function counts the calls made
// per path.
func fakePrepareLeader(t *testing.T, jsonOnly bool, batch func(txnProposeBatchRequest) txnProposeBatchResponse,
	single func(txnProposeRequest) txnWireResult) (*Server, func() map[string]int) {
	t.Helper()
	var mu sync.Mutex
	hits := map[string]int{}
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		bin := r.Header.Get("Content-Type") == contentTypeWire
		switch {
		case r.URL.Path == pathTxnProposeBatch && !bin:
			var q txnProposeBatchRequest
			if err := json.Unmarshal(body, &q); err != nil {
				t.Errorf("batch body: %v", err)
			}
			writeJSON(w, http.StatusOK, batch(q))
		case r.URL.Path == pathTxnPropose && !bin:
			var q txnProposeRequest
			if err := json.Unmarshal(body, &q); err != nil {
				t.Errorf("single body: %v", err)
			}
			writeJSON(w, http.StatusOK, single(q))
		case r.URL.Path == pathTxnProposeBatchBin && bin && !jsonOnly:
			q, err := decodeProposeBatchRequest(body)
			if err != nil {
				t.Errorf("binary batch body: %v", err)
			}
			out := batch(q)
			writeWire(w, encodeBatchAnswers(out.Items))
		case r.URL.Path == pathTxnProposeBin && bin && !jsonOnly:
			q, err := decodeProposeRequest(body)
			if err != nil {
				t.Errorf("binary single body: %v", err)
			}
			out := single(q)
			writeWire(w, encodeWireResult(&out))
		default:
			// As cairn answers a path it does not serve.
			writeJSON(w, http.StatusNotFound, map[string]any{"error": map[string]string{"code": "not_found",
				"message": fmt.Sprintf("not found: no route for %s %s", r.Method, r.URL.Path)}})
		}
	}))
	addr := strings.TrimPrefix(leader.URL, "http://")
	s := NewServer(Config{Backend: remoteOnlyBackend{notReadyBackend{t}, map[string]string{"n2": addr, "n3": addr}},
		RouteWait: 300 * time.Millisecond})
	t.Cleanup(func() {
		s.Close()
		leader.Close()
	})
	return s, func() map[string]int {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(hits)
	}
}

// testPrepareItem is a queued prepare of transaction id on key.
func testPrepareItem(t *testing.T, ctx context.Context, id, key string) *proposeItem {
	t.Helper()
	cmd := &fsm.Command{Op: fsm.OpTxnPrepare, Key: []byte(key),
		Value: fsm.EncodeTxnCommand(&fsm.TxnCommand{ID: id, Keys: []txn.KeyIntent{{Key: []byte(key), Access: txn.AccessWrite}}})}
	enc, err := fsm.EncodeCommand(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return &proposeItem{ctx: ctx, key: []byte(key), cmd: cmd, enc: enc, done: make(chan error, 1)}
}
