package api

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/txn"
)

// levelBackend is remoteOnlyBackend at a cluster command level.
type levelBackend struct {
	remoteOnlyBackend
	level int
}

func (b levelBackend) ClusterLevel() int { return b.level }

// TestRidersTakeAndSettle (txn/DESIGN.md "Riders"): a host takes its shard's
// queued resolutions and forgets only at command level 2; an answer that
// counts them all completes their waiters; a failed host, or an answer
// without the count (a replica that knows no riders), puts them back in
// their queues, their waiters still waiting; a host whose encoding with its
// riders would pass fsm.MaxTxnCommandSize goes without them.
func TestRidersTakeAndSettle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, level := range []int{1, 2} {
		s := NewServer(Config{Backend: levelBackend{remoteOnlyBackend{notReadyBackend{t}, nil}, level}})
		t.Cleanup(func() { s.Close() })
		value := make([]byte, 10<<10)
		rec := &txn.Record{ID: "r1", State: txn.Committed, Anchor: []byte("k"), WriteSet: []txn.Write{{Key: []byte("k"), Value: value}}}
		ri := &resolveItem{id: "r1", keys: []txn.KeyIntent{{Key: []byte("k"), Access: txn.AccessWrite}}, rec: rec, itemAnswer: itemAnswer{done: make(chan error, 1)}}
		fi := &forgetItem{rec: &txn.Record{ID: "f1", State: txn.Committed, Anchor: []byte("k")}, itemAnswer: itemAnswer{done: make(chan error, 1)}}
		// Queued on shard 1 (remoteOnlyBackend's only range), a drainer
		// marked running so nothing sends them but a host.
		s.txnres.queue, s.txnres.running = map[uint64][]*resolveItem{1: {ri}}, map[uint64]bool{1: true}
		s.txnfgt.queue, s.txnfgt.running = map[uint64][]*forgetItem{1: {fi}}, map[uint64]bool{1: true}
		queued := func() int { return len(s.txnres.queue[1]) + len(s.txnfgt.queue[1]) }
		host := func() *fsm.TxnCommand {
			return &fsm.TxnCommand{ID: "h", Keys: []txn.KeyIntent{{Key: []byte("k"), Access: txn.AccessWrite}}}
		}
		waiting := func() bool {
			select {
			case err := <-ri.done:
				t.Fatalf("resolution answered %v", err)
			case err := <-fi.done:
				t.Fatalf("forget answered %v", err)
			default:
			}
			return true
		}

		tc := host()
		v, rd := s.withRiders(ctx, 1, tc)
		got, err := fsm.DecodeTxnCommand(v)
		if err != nil {
			t.Fatal(err)
		}
		if level < ridersLevel {
			if rd != nil || len(got.Riders) != 0 || queued() != 2 {
				t.Fatalf("level %d: took %d riders", level, len(got.Riders))
			}
			continue
		}
		if rd == nil || len(got.Riders) != 2 || got.Riders[0].ID != "r1" || got.Riders[1].Event.Kind != txn.EvForget || queued() != 0 {
			t.Fatalf("took %d riders, %d left queued", len(got.Riders), queued())
		}
		// The host failed: back in the queues, still waiting.
		rd.settle(ctx, s, nil, errors.New("no leader"))
		if queued() != 2 || !waiting() {
			t.Fatalf("after a failed host: %d queued", queued())
		}
		// Answered without the count: the same.
		_, rd = s.withRiders(ctx, 1, host())
		rd.settle(ctx, s, &fsm.Result{TwoPC: &fsm.TxnCmdResult{}}, nil)
		if queued() != 2 || !waiting() {
			t.Fatalf("after an answer without the count: %d queued", queued())
		}
		// A host that would not fit with them goes alone.
		big := host()
		for n := len(fsm.EncodeTxnCommand(big)); n < fsm.MaxTxnCommandSize-len(value)/2; n += 4000 + 4 {
			big.Unlocked = append(big.Unlocked, bytes.Repeat([]byte{'u'}, 4000))
		}
		if n := len(fsm.EncodeTxnCommand(big)); n > fsm.MaxTxnCommandSize || n < fsm.MaxTxnCommandSize-len(value) {
			t.Fatalf("the big host is %d bytes, want just under %d less %d", n, fsm.MaxTxnCommandSize, len(value)/2)
		}
		v, rd = s.withRiders(ctx, 1, big)
		if rd != nil || len(v) > fsm.MaxTxnCommandSize || len(big.Riders) != 0 || queued() != 2 || !waiting() {
			t.Fatalf("oversized host: %d bytes, riders %v, %d queued", len(v), rd != nil, queued())
		}
		// Counted and applied: answered.
		_, rd = s.withRiders(ctx, 1, host())
		rd.settle(ctx, s, &fsm.Result{TwoPC: &fsm.TxnCmdResult{Riders: 2}}, nil)
		if err := awaitItem(ctx, ri.done); err != nil {
			t.Fatalf("resolution: %v", err)
		}
		if err := awaitItem(ctx, fi.done); err != nil {
			t.Fatalf("forget: %v", err)
		}
		if queued() != 0 {
			t.Fatalf("%d left queued", queued())
		}
	}
}

// TestResolveThenContinues (txn/DESIGN.md "Riders", no goroutine per
// transaction): a resolution and a forget queued with continuations
// (resolveThen, forgetThen) ride a host like any other; a failed host puts
// them back without calling anyone; the answer that counts them calls each
// continuation exactly once, with no error. The resolution carries its
// record trimmed to its keys (txn.Record.ForKeys): the other key's value
// and the participants stay home.
func TestResolveThenContinues(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := NewServer(Config{Backend: levelBackend{remoteOnlyBackend{notReadyBackend{t}, nil}, ridersLevel}})
	t.Cleanup(func() { s.Close() })
	// A drainer marked running on shard 1 (remoteOnlyBackend's only range):
	// nothing sends the queues but a host.
	s.txnres.queue, s.txnres.running = map[uint64][]*resolveItem{}, map[uint64]bool{1: true}
	s.txnfgt.queue, s.txnfgt.running = map[uint64][]*forgetItem{}, map[uint64]bool{1: true}
	rec := &txn.Record{ID: "r1", State: txn.Committed, Anchor: []byte("k"),
		WriteSet: []txn.Write{{Key: []byte("k"), Value: []byte("mine")}, {Key: []byte("other"), Value: bytes.Repeat([]byte{'o'}, 1000)}},
		Participants: []txn.Participant{{Shard: 1, Keys: []txn.KeyIntent{{Key: []byte("k"), Access: txn.AccessWrite}}},
			{Shard: 2, Keys: []txn.KeyIntent{{Key: []byte("other"), Access: txn.AccessWrite}}}}}
	var resolved, forgot []error
	s.resolveThen("r1", []txn.KeyIntent{{Key: []byte("k"), Access: txn.AccessWrite}}, rec, func(err error) { resolved = append(resolved, err) })
	s.forgetThen(rec, func(err error) { forgot = append(forgot, err) })
	if len(s.txnres.queue[1]) != 1 || len(s.txnfgt.queue[1]) != 1 || resolved != nil || forgot != nil {
		t.Fatalf("queued %d resolutions and %d forgets, answered %v %v", len(s.txnres.queue[1]), len(s.txnfgt.queue[1]), resolved, forgot)
	}
	host := func() *fsm.TxnCommand {
		return &fsm.TxnCommand{ID: "h", Keys: []txn.KeyIntent{{Key: []byte("k"), Access: txn.AccessWrite}}}
	}
	v, rd := s.withRiders(ctx, 1, host())
	got, err := fsm.DecodeTxnCommand(v)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Riders) != 2 {
		t.Fatalf("host: %d riders, want 2", len(got.Riders))
	}
	if r := got.Riders[0].Record; r == nil || len(r.WriteSet) != 1 || string(r.WriteSet[0].Value) != "mine" || r.Participants != nil || r.State != txn.Committed {
		t.Fatalf("the resolution rides with record %+v; want its own write only", r)
	}
	rd.settle(ctx, s, nil, errors.New("no leader"))
	if resolved != nil || forgot != nil || len(s.txnres.queue[1]) != 1 || len(s.txnfgt.queue[1]) != 1 {
		t.Fatalf("after a failed host: answered %v %v", resolved, forgot)
	}
	_, rd = s.withRiders(ctx, 1, host())
	rd.settle(ctx, s, &fsm.Result{TwoPC: &fsm.TxnCmdResult{Riders: 2}}, nil)
	if len(resolved) != 1 || resolved[0] != nil || len(forgot) != 1 || forgot[0] != nil {
		t.Fatalf("after the counted answer: resolution %v, forget %v; want one nil each", resolved, forgot)
	}
}
