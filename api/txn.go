package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/txn"
)

// POST /v1/txn (docs/api.md "Transactions", txn/DESIGN.md). The body is parsed
// strictly and validated against the operator's limits (Config.TxnLimits)
// before anything is proposed: a bad request is 400 invalid_argument with
// nothing written. A transaction whose keys all live on one shard is one
// raft entry (fsm.OpTxn) proposed on that shard's leader through the routing
// loop; several shards run the two-phase commit (txn_coord.go).

type txnRequestJSON struct {
	Compare   []txnCompareJSON `json:"compare"`
	Success   []txnOpJSON      `json:"success"`
	Failure   []txnOpJSON      `json:"failure"`
	RequestID string           `json:"request_id"`
}

type txnCompareJSON struct {
	Key    *string         `json:"key"`
	Target string          `json:"target"`
	Op     string          `json:"op"`
	Value  json.RawMessage `json:"value"` // a string, a number or a boolean
}

type txnOpJSON struct {
	Op    string       `json:"op"`
	Key   *string      `json:"key"`
	Value *string      `json:"value"`
	TTL   string       `json:"ttl"`
	Fence *fenceClause `json:"fence"`
}

// txnOpResultJSON is one op's result in the answer. get: found, and the key
// as the transaction saw it; put: the written key's indices; delete: deleted.
type txnOpResultJSON struct {
	Op          string  `json:"op"`
	Key         string  `json:"key"`
	Found       *bool   `json:"found,omitempty"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 string  `json:"value_base64,omitempty"`
	CreateIndex uint64  `json:"create_index,omitempty"`
	ModIndex    uint64  `json:"mod_index,omitempty"`
	Version     uint64  `json:"version,omitempty"`
	TTL         string  `json:"ttl,omitempty"`
	Deleted     *int    `json:"deleted,omitempty"`
}

type txnResponseJSON struct {
	Succeeded bool              `json:"succeeded"`
	Results   []txnOpResultJSON `json:"results"`
	Shards    []uint64          `json:"shards"`
	ID        string            `json:"id,omitempty"` // multi-shard transactions: the record's id
	// Replay: the outcome of an earlier attempt with the same request id,
	// answered by a multi-shard coordinator: from its record (its gets are
	// not read again, so Results is empty), or, when that attempt ran on
	// one shard before a split spread the keys, its stored result (Results
	// as it answered them).
	Replay bool `json:"replay,omitempty"`
}

// parseTxn decodes and validates a POST /v1/txn body.
func parseTxn(body []byte, limits txn.Limits) (*txn.Request, error) {
	var in txnRequestJSON
	if err := unmarshalStrict(body, &in); err != nil {
		return nil, err
	}
	req := &txn.Request{RequestID: in.RequestID}
	for i, c := range in.Compare {
		f := fmt.Sprintf("compare[%d]", i)
		if c.Key == nil {
			return nil, invalidf("%s.key is required", f)
		}
		tg, err := txn.ParseTarget(c.Target)
		if err != nil {
			return nil, invalidf("%s.target: %v", f, err)
		}
		op, err := txn.ParseCmpOp(c.Op)
		if err != nil {
			return nil, invalidf("%s.op: %v", f, err)
		}
		v, err := compareValue(c.Value)
		if err != nil {
			return nil, invalidf("%s.value: %v", f, err)
		}
		if err := validateKey([]byte(*c.Key)); err != nil {
			return nil, invalidf("%s.key: %v", f, err)
		}
		req.Compare = append(req.Compare, txn.Compare{Key: []byte(*c.Key), Target: tg, Op: op, Value: v})
	}
	var err error
	if req.Success, err = parseTxnOps("success", in.Success); err != nil {
		return nil, err
	}
	if req.Failure, err = parseTxnOps("failure", in.Failure); err != nil {
		return nil, err
	}
	if err := limits.ValidateRequest(req); err != nil {
		return nil, invalidf("%v", err)
	}
	if req.ReadOnly() {
		// Nothing to apply twice: a retry reads again and answers the
		// values, never a replay without its gets (TestS13Bank's whole-bank
		// read, retried by the client after outcome_unknown).
		req.RequestID = ""
	}
	return req, nil
}

func parseTxnOps(branch string, ops []txnOpJSON) ([]txn.Op, error) {
	out := make([]txn.Op, 0, len(ops))
	for i, o := range ops {
		f := fmt.Sprintf("%s[%d]", branch, i)
		kind, err := txn.ParseOpKind(o.Op)
		if err != nil {
			return nil, invalidf("%s.op: %v", f, err)
		}
		if o.Key == nil {
			return nil, invalidf("%s.key is required", f)
		}
		if err := validateKey([]byte(*o.Key)); err != nil {
			return nil, invalidf("%s.key: %v", f, err)
		}
		op := txn.Op{Kind: kind, Key: []byte(*o.Key)}
		if kind == txn.OpPut && o.Value == nil {
			return nil, invalidf("%s.value is required for a put", f)
		}
		if o.Value != nil {
			if kind != txn.OpPut {
				return nil, invalidf("%s.value: %s takes no value", f, kind)
			}
			op.Value = []byte(*o.Value)
		}
		if o.TTL != "" {
			if op.TTL, err = parseTTL(o.TTL); err != nil {
				return nil, invalidf("%s.ttl: %v", f, err)
			}
		}
		if o.Fence != nil {
			op.Fence = &txn.Fence{Lock: o.Fence.Lock, Token: o.Fence.Token}
		}
		out = append(out, op)
	}
	return out, nil
}

// compareValue reads a compare's value: a JSON string as is, a number as
// its literal, a boolean as "true"/"false".
func compareValue(raw json.RawMessage) ([]byte, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return nil, errors.New("is required")
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, err
		}
		return []byte(s), nil
	case 't', 'f':
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return nil, err
		}
		return []byte(strconv.FormatBool(b)), nil
	}
	var n json.Number
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&n); err != nil {
		return nil, fmt.Errorf("must be a string, a number or a boolean")
	}
	return []byte(n.String()), nil
}

// txnLookup routes a key through the node's range map (txn.Lookup).
func (s *Server) txnLookup(key []byte) (uint64, uint64, error) {
	rng, err := s.lookup(key)
	if err != nil {
		return 0, 0, err
	}
	return rng.ID, rng.Epoch, nil
}

func (s *Server) txnPost(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	req, err := parseTxn(body, s.cfg.TxnLimits)
	if err != nil {
		return err
	}
	rt, err := txn.Route(req, s.txnLookup)
	if err != nil {
		return err
	}
	if !rt.SingleShard() {
		return s.txnMulti(w, r, req, rt)
	}
	err = s.txnOneShard(w, r, body, req)
	s.txnm.outcome(false, err, "")
	return err
}

// txnOneShard proposes the request as one OpTxn entry on the leader of the
// shard that holds all its keys. A range map that changed under the routing
// (a split put the keys on two shards) is routed again; if the keys are
// now on several shards, the transaction runs as a multi-shard one.
func (s *Server) txnOneShard(w http.ResponseWriter, r *http.Request, body []byte, req *txn.Request) error {
	sess, err := parseSession(r.Header.Get(hdrSession))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), writeTimeout)
	defer cancel()
	anchor := txn.AnchorKey(req)
	keys := req.Keys()
	cmd := &fsm.Command{Op: fsm.OpTxn, Key: anchor, Value: txn.EncodeRequest(req), RequestID: req.RequestID}
	var res *fsm.Result
	var rng fsm.Range
	err = s.meetIntents(ctx, func() error {
		return s.route(ctx, routeReq[Replica]{
			rng: func() (fsm.Range, error) {
				rg, err := s.lookup(anchor)
				if err != nil {
					return rg, err
				}
				for _, k := range keys {
					if !rg.Contains(k) {
						return rg, fmt.Errorf("%w: %w", errTxnSpread, errStaleRangeMap)
					}
				}
				return rg, nil
			},
			leader: true,
			remote: func(addr string, _ fsm.Range) error { return s.forward(w, r, body, addr) },
			local: func(rep Replica, rg fsm.Range) error {
				cmd.Epoch = rg.Epoch
				cmd.Time = s.cfg.Clock.Now().UnixNano()
				out, err := rep.Propose(ctx, cmd)
				if err != nil {
					return err
				}
				var ws *fsm.WrongShardError
				if errors.As(out.Err, &ws) || isIntent(out.Err) {
					return out.Err // applied as a no-op: a key left this range, or met an intent
				}
				res, rng = out, rg
				return nil
			},
		})
	})
	if errors.Is(err, errTxnSpread) {
		if rt, rerr := txn.Route(req, s.txnLookup); rerr == nil && !rt.SingleShard() {
			return s.txnMulti(w, r, req, rt)
		}
	}
	if err != nil || res == nil {
		return err // res == nil: forwarded, the answer is written
	}
	sess.observe(rng.ID, res.Index)
	setHeaders(w, rng.ID, res.Index, sess.String())
	if res.Err != nil {
		return res.Err
	}
	if res.Txn == nil {
		return fmt.Errorf("api: txn entry %d returned no transaction result", res.Index)
	}
	out := txnResponseJSON{Succeeded: res.Txn.Succeeded, Shards: []uint64{rng.ID},
		Results: make([]txnOpResultJSON, 0, len(res.Txn.Ops))}
	for _, o := range res.Txn.Ops {
		out.Results = append(out.Results, txnOpResult(o))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// errTxnSpread: the range map now puts the transaction's keys on several
// shards.
var errTxnSpread = errors.New("the transaction's keys are on several shards")

func txnOpResult(o fsm.TxnOpResult) txnOpResultJSON {
	out := txnOpResultJSON{Op: o.Kind.String(), Key: string(o.Key)}
	switch o.Kind {
	case txn.OpGet:
		found := o.KV != nil
		out.Found = &found
		if found {
			kv := toKVJSON(o.KV, false)
			out.Value, out.ValueBase64 = kv.Value, kv.ValueBase64
			out.CreateIndex, out.ModIndex, out.Version, out.TTL = kv.CreateIndex, kv.ModIndex, kv.Version, kv.TTL
		}
	case txn.OpPut:
		if o.KV != nil {
			out.CreateIndex, out.ModIndex, out.Version = o.KV.CreateIndex, o.KV.ModIndex, o.KV.Version
		}
	case txn.OpDelete:
		d := o.Deleted
		out.Deleted = &d
	}
	return out
}
