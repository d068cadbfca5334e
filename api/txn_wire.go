package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/txn"
)

// The transport of the two-phase commit's participant commands
// (fsm.OpTxnPrepare, OpTxnRecord, OpTxnResolve): txnPropose routes one to the
// leader of the shard owning a key through the routing loop, proposing it
// locally or calling pathTxnPropose on the leader's node (node to node,
// internal/cluster's Call). The answer crosses the wire as txnWireResult.

const pathTxnPropose = "/internal/v1/txn/propose"

type txnProposeRequest struct {
	Key  []byte `json:"key"` // the routing key
	Cmd  []byte `json:"cmd"` // fsm.EncodeCommand
	Hops int    `json:"hops"`
}

// txnWireResult is an fsm.Result of a 2PC command on the wire.
type txnWireResult struct {
	Index      uint64        `json:"index"`
	WrongShard bool          `json:"wrong_shard,omitempty"`
	Invalid    string        `json:"invalid,omitempty"`
	Vote       uint8         `json:"vote,omitempty"`
	Blocker    []byte        `json:"blocker,omitempty"` // txn.EncodeIntent
	Reads      []txnWireRead `json:"reads,omitempty"`
	Tokens     []uint64      `json:"tokens,omitempty"`
	Verdict    uint8         `json:"verdict,omitempty"`
	Record     []byte        `json:"record,omitempty"` // txn.EncodeRecord
	Written    []txnWireRead `json:"written,omitempty"`
	Resolved   [][]byte      `json:"resolved,omitempty"`
	OneShard   []byte        `json:"one_shard,omitempty"` // fsm.EncodeStoredResult (prepare: fsm.TxnCmdResult.OneShard)
	Stale      *txnWireStale `json:"stale,omitempty"`     // decide: a stale fence aborted it
	// Riders, RidersRefused: fsm.TxnCmdResult's (command level 2).
	Riders        int   `json:"riders,omitempty"`
	RidersRefused []int `json:"riders_refused,omitempty"`
}

type txnWireStale struct {
	Key      []byte `json:"key"`
	Lock     string `json:"lock"`
	Token    uint64 `json:"token"`
	Accepted uint64 `json:"accepted"`
}

type txnWireRead struct {
	Key         []byte `json:"key"`
	Found       bool   `json:"found,omitempty"`
	Value       []byte `json:"value,omitempty"`
	CreateIndex uint64 `json:"create_index,omitempty"`
	ModIndex    uint64 `json:"mod_index,omitempty"`
	Version     uint64 `json:"version,omitempty"`
	Kind        uint8  `json:"kind,omitempty"`
	Deleted     int    `json:"deleted,omitempty"`
	Seq         uint64 `json:"seq,omitempty"` // prepare: the index of the entry that laid the intent
}

func toWireRead(key []byte, kv *fsm.KV) txnWireRead {
	r := txnWireRead{Key: key}
	if kv != nil {
		r.Found, r.Value, r.CreateIndex, r.ModIndex, r.Version = true, kv.Value, kv.CreateIndex, kv.ModIndex, kv.Version
	}
	return r
}

func (r txnWireRead) kv() *fsm.KV {
	if !r.Found {
		return nil
	}
	return &fsm.KV{Key: r.Key, Value: r.Value, CreateIndex: r.CreateIndex, ModIndex: r.ModIndex, Version: r.Version}
}

func toWire(res *fsm.Result) (*txnWireResult, error) {
	out := &txnWireResult{Index: res.Index}
	var ws *fsm.WrongShardError
	switch {
	case errors.As(res.Err, &ws):
		out.WrongShard = true
		return out, nil
	case res.Err != nil:
		if errors.Is(res.Err, fsm.ErrInvalidCommand) {
			out.Invalid = res.Err.Error()
			return out, nil
		}
		return nil, res.Err
	case res.TwoPC == nil:
		return nil, fmt.Errorf("api: txn command %d returned no result", res.Index)
	}
	t := res.TwoPC
	out.Vote, out.Tokens, out.Verdict, out.Resolved = uint8(t.Vote), t.Tokens, uint8(t.Verdict), t.Resolved
	out.Riders, out.RidersRefused = t.Riders, t.RidersRefused
	if t.Blocker != nil {
		out.Blocker = txn.EncodeIntent(t.Blocker)
	}
	if t.Record != nil {
		out.Record = txn.EncodeRecord(t.Record)
	}
	if t.OneShard != nil {
		out.OneShard = fsm.EncodeStoredResult(t.OneShard)
	}
	if st := t.Stale; st != nil {
		out.Stale = &txnWireStale{Key: st.Key, Lock: st.Lock, Token: st.Token, Accepted: st.Accepted}
	}
	for _, rd := range t.Reads {
		r := toWireRead(rd.Key, rd.KV)
		r.Seq = rd.Seq
		out.Reads = append(out.Reads, r)
	}
	for _, w := range t.Written {
		r := toWireRead(w.Key, w.KV)
		r.Kind, r.Deleted = uint8(w.Kind), w.Deleted
		out.Written = append(out.Written, r)
	}
	return out, nil
}

func (w *txnWireResult) result() (*fsm.Result, error) {
	res := &fsm.Result{Index: w.Index}
	switch {
	case w.WrongShard:
		res.Err = &fsm.WrongShardError{}
		return res, nil
	case w.Invalid != "":
		res.Err = fmt.Errorf("%w: %s", fsm.ErrInvalidCommand, w.Invalid)
		return res, nil
	}
	t := &fsm.TxnCmdResult{Vote: txn.Vote(w.Vote), Tokens: w.Tokens, Verdict: txn.Verdict(w.Verdict), Resolved: w.Resolved,
		Riders: w.Riders, RidersRefused: w.RidersRefused}
	var err error
	if len(w.Blocker) > 0 {
		if t.Blocker, err = txn.DecodeIntent(w.Blocker); err != nil {
			return nil, err
		}
	}
	if len(w.Record) > 0 {
		if t.Record, err = txn.DecodeRecord(w.Record); err != nil {
			return nil, err
		}
	}
	if len(w.OneShard) > 0 {
		if t.OneShard, err = fsm.DecodeStoredResult(w.OneShard); err != nil {
			return nil, err
		}
	}
	if st := w.Stale; st != nil {
		t.Stale = &fsm.StaleTokenError{Key: st.Key, Lock: st.Lock, Token: st.Token, Accepted: st.Accepted}
	}
	for _, r := range w.Reads {
		t.Reads = append(t.Reads, fsm.TxnRead{Key: r.Key, KV: r.kv(), Seq: r.Seq})
	}
	for _, r := range w.Written {
		t.Written = append(t.Written, fsm.TxnOpResult{Kind: txn.OpKind(r.Kind), Key: r.Key, KV: r.kv(), Deleted: r.Deleted})
	}
	res.TwoPC = t
	return res, nil
}

// txnPropose proposes cmd on the leader of the shard that owns key. A
// result the state machine refused (wrong shard, invalid) is returned as a
// result, not routed again: the coordinator decides. Errors: nothing done
// (unavailable) or outcome unknown.
func (s *Server) txnPropose(ctx context.Context, key []byte, cmd *fsm.Command) (*fsm.Result, error) {
	return s.txnProposeHops(ctx, key, cmd, 0)
}

// txnProposeHops is txnPropose for a call already forwarded hops times: a
// node that does not lead the shard routes it onward, as a forwarded client
// request is, up to cluster.MaxHops.
func (s *Server) txnProposeHops(ctx context.Context, key []byte, cmd *fsm.Command, hops int) (*fsm.Result, error) {
	var res *fsm.Result
	err := s.route(ctx, routeReq[Replica]{
		rng:      func() (fsm.Range, error) { return s.lookup(key) },
		leader:   true,
		fallback: true,
		local: func(rep Replica, rg fsm.Range) error {
			c := *cmd
			c.Epoch = rg.Epoch
			c.Time = s.cfg.Clock.Now().UnixNano()
			out, err := rep.Propose(ctx, &c)
			if err != nil {
				return err
			}
			if ws := (*fsm.WrongShardError)(nil); errors.As(out.Err, &ws) && !sameRange(ws.Range, rg) {
				// This node's range map is behind the shard's own range (a
				// split the map has not caught up with routed the key
				// here): route again once it has, rather than tell the
				// coordinator its routing is wrong when it may be right
				// (TestTxnSplitDuringPrepare aborted so, one run in ten).
				// Applied as a no-op, so proposing again is safe.
				return fmt.Errorf("key %q: shard %d is now %q..%q: %w", key, rg.ID, ws.Range.Start, ws.Range.End, errStaleRangeMap)
			}
			res = out
			return nil
		},
		remote: func(addr string, _ fsm.Range) error {
			b, err := fsm.EncodeCommand(cmd)
			if err != nil {
				return err
			}
			w, err := s.callTxnPropose(ctx, addr, &txnProposeRequest{Key: key, Cmd: b, Hops: hops + 1})
			if err != nil {
				return err
			}
			res, err = w.result()
			return err
		},
	})
	return res, err
}

// callTxnPropose makes one pathTxnPropose call to addr, in binary; a node
// of an older binary (no binary path: 404) gets it as JSON.
func (s *Server) callTxnPropose(ctx context.Context, addr string, q *txnProposeRequest) (*txnWireResult, error) {
	return callBinary(ctx, s, addr, pathTxnProposeBin, pathTxnPropose, q, encodeProposeRequest(q), decodeWireResult)
}

// internalTxnPropose serves pathTxnPropose (JSON) and pathTxnProposeBin
// (binary, answered in binary): propose on this node's leader replica of
// the key's shard (503 when it is not the leader: the caller routes again).
func (s *Server) internalTxnPropose(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	bin := r.URL.Path == pathTxnProposeBin
	var req txnProposeRequest
	if bin {
		req, err = decodeProposeRequest(body)
		if err != nil {
			return invalidf("internal txn propose: %v", err)
		}
	} else if err := unmarshalStrict(body, &req); err != nil {
		return err
	}
	cmd, err := req.command()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
	defer cancel()
	res, err := s.txnProposeHops(ctx, req.Key, cmd, req.Hops)
	if err != nil {
		return err
	}
	out, err := toWire(res)
	if err != nil {
		return err
	}
	if bin {
		writeWire(w, encodeWireResult(out))
		return nil
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// writeWire answers 200 with a binary body (contentTypeWire).
func writeWire(w http.ResponseWriter, b []byte) {
	w.Header().Set("Content-Type", contentTypeWire)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

// command decodes the proposal's command: a participant command of the
// two-phase commit (prepare, record event, resolve), not yet forwarded
// cluster.MaxHops times.
func (q txnProposeRequest) command() (*fsm.Command, error) {
	cmd, err := fsm.DecodeCommand(q.Cmd)
	if err != nil {
		return nil, err
	}
	switch cmd.Op {
	case fsm.OpTxnPrepare, fsm.OpTxnRecord, fsm.OpTxnResolve:
	default:
		return nil, invalidf("internal txn propose: op %v", cmd.Op)
	}
	if q.Hops >= cluster.MaxHops {
		return nil, fmt.Errorf("txn command forwarded %d times: %w", q.Hops, errRemoteUnavailable)
	}
	return cmd, nil
}

// sameRange reports whether a and b hold the same keys: id and bounds (an
// epoch also moves with a membership change, which moves no key).
func sameRange(a, b fsm.Range) bool {
	return a.ID == b.ID && bytes.Equal(a.Start, b.Start) && bytes.Equal(a.End, b.End)
}
