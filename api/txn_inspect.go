package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/txn"
)

// GET /v1/txn/{id}: a multi-shard transaction's record and its intents per
// shard. The record's shard is not known from the id (it lives beside the
// anchor key), so every shard's leader is asked, linearizably
// (pathTxnInspect on the leader's node); then the shards that own the
// participants' keys are asked for the intents on them.

const pathTxnInspect = "/internal/v1/txn/inspect"

type txnInspectRequest struct {
	Shard uint64   `json:"shard"`
	ID    string   `json:"id"`
	Keys  [][]byte `json:"keys,omitempty"`
}

type txnInspectAnswer struct {
	Record  []byte   `json:"record,omitempty"`  // txn.EncodeRecord
	Intents [][]byte `json:"intents,omitempty"` // txn.EncodeIntent, of this transaction
}

type txnIntentJSON struct {
	Key    string `json:"key"`
	Access string `json:"access"`
}

type txnRecordJSON struct {
	ID        string                     `json:"id"`
	State     string                     `json:"state"`
	Anchor    string                     `json:"anchor"`
	Shards    []uint64                   `json:"shards"`
	Succeeded bool                       `json:"succeeded"`
	Cause     string                     `json:"cause,omitempty"`
	RequestID string                     `json:"request_id,omitempty"`
	Writes    int                        `json:"writes"`
	Forgotten bool                       `json:"forgotten,omitempty"` // committed, every participant resolved: dropped after the dedup window
	Intents   map[string][]txnIntentJSON `json:"intents"`             // shard id -> this transaction's intents there
}

// inspectShard reads shard's part on its leader.
func (s *Server) inspectShard(ctx context.Context, q txnInspectRequest) (*txnInspectAnswer, error) {
	var out *txnInspectAnswer
	err := s.route(ctx, routeReq[Replica]{
		rng: func() (fsm.Range, error) {
			if rng, ok := s.rangeByID(q.Shard); ok {
				return rng, nil
			}
			return fsm.Range{}, fmt.Errorf("shard %d: %w", q.Shard, errNotFound)
		},
		leader: true,
		local: func(rep Replica, _ fsm.Range) error {
			a, err := s.inspectLocal(ctx, rep, q)
			out = a
			return err
		},
		remote: func(addr string, _ fsm.Range) error {
			var a txnInspectAnswer
			if err := s.peers.Call(ctx, addr, http.MethodPost, pathTxnInspect, q, &a); err != nil {
				return err
			}
			out = &a
			return nil
		},
	})
	return out, err
}

func (s *Server) inspectLocal(ctx context.Context, rep Replica, q txnInspectRequest) (*txnInspectAnswer, error) {
	if _, err := rep.LinearizableRead(ctx); err != nil {
		return nil, err
	}
	a := &txnInspectAnswer{}
	rec, _, err := rep.FSM().TxnRecord(q.ID)
	if err != nil {
		return nil, err
	}
	if rec != nil {
		a.Record = txn.EncodeRecord(rec)
	}
	ins, err := rep.FSM().TxnIntents(q.Keys)
	if err != nil {
		return nil, err
	}
	for i := range ins {
		if ins[i].TxnID == q.ID {
			a.Intents = append(a.Intents, txn.EncodeIntent(&ins[i]))
		}
	}
	return a, nil
}

func (s *Server) internalTxnInspect(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	var q txnInspectRequest
	if err := unmarshalStrict(body, &q); err != nil {
		return err
	}
	rep, ok := s.rt.replica(q.Shard)
	if !ok || !rep.IsLeader() {
		return fmt.Errorf("shard %d: not the leader here: %w", q.Shard, errRemoteUnavailable)
	}
	a, err := s.inspectLocal(r.Context(), rep, q)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, a)
	return nil
}

func (s *Server) txnInspect(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if id == "" || len(id) > txn.MaxIDSize {
		return invalidf("transaction id of %d bytes (1..%d)", len(id), txn.MaxIDSize)
	}
	if !s.be.Ready() {
		return errNotReady
	}
	ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
	defer cancel()
	var rec *txn.Record
	for _, rng := range s.be.Ranges() {
		a, err := s.inspectShard(ctx, txnInspectRequest{Shard: rng.ID, ID: id})
		if errors.Is(err, errNotFound) {
			continue // the range left the map meanwhile
		}
		if err != nil {
			return err
		}
		if len(a.Record) > 0 {
			if rec, err = txn.DecodeRecord(a.Record); err != nil {
				return err
			}
			break
		}
	}
	if rec == nil {
		return fmt.Errorf("transaction %q: %w", id, errNotFound)
	}
	out := txnRecordJSON{ID: rec.ID, State: rec.State.String(), Anchor: string(rec.Anchor), Succeeded: rec.Succeeded,
		Cause: rec.Cause.String(), RequestID: rec.RequestID, Writes: len(rec.WriteSet), Forgotten: rec.Forgotten,
		Intents: map[string][]txnIntentJSON{}}
	byShard := map[uint64][][]byte{}
	for _, p := range rec.Participants {
		out.Shards = append(out.Shards, p.Shard)
		for _, k := range p.Keys {
			rng, err := s.lookup(k.Key)
			if err != nil {
				return err
			}
			byShard[rng.ID] = append(byShard[rng.ID], k.Key)
		}
	}
	for sh, keys := range byShard {
		a, err := s.inspectShard(ctx, txnInspectRequest{Shard: sh, ID: id, Keys: keys})
		if err != nil {
			return err
		}
		list := []txnIntentJSON{}
		for _, b := range a.Intents {
			in, err := txn.DecodeIntent(b)
			if err != nil {
				return err
			}
			list = append(list, txnIntentJSON{Key: string(in.Key), Access: in.Access.String()})
		}
		out.Intents[fmt.Sprint(sh)] = list
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
