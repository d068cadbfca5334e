package fsm

import (
	"fmt"

	"github.com/cairndb/cairn/internal/wire"
	"github.com/cairndb/cairn/txn"
)

// One-shard transactions (txn/DESIGN.md "One shard: one raft entry"): an
// OpTxn entry carries a txn.Request. Its apply range-checks every key,
// evaluates the compares against the state the entry sees, picks the
// branch, reads its gets, checks the fence of every write (one stale token
// refuses the whole transaction, nothing written), then applies the writes:
// all in the batch's bbolt transaction, so the transaction is exactly as
// atomic as a single put (I1) and its reads as linearizable (I2). A request
// id goes through the dedup window like a put's (I7), and the stored result
// carries the gets' values, so a retry gets the original answer.

// maxTxnCommandSize bounds an OpTxn's encoded request: the hard byte limit
// of a transaction plus the encoding's per-op overhead at the hard op limit.
// It bounds a 2PC command's Value too (MaxTxnCommandSize).
const maxTxnCommandSize = txn.HardMaxBytes + 64*txn.HardMaxOps

// MaxTxnCommandSize is the largest Value a transaction command may carry
// (EncodeCommand refuses a larger one): a coordinator that adds riders to a
// command keeps it under this.
const MaxTxnCommandSize = maxTxnCommandSize

// TxnResult is the outcome of an OpTxn entry that ran: which branch, and the
// result of each of its ops in order.
type TxnResult struct {
	Succeeded bool
	Ops       []TxnOpResult
}

// TxnOpResult is one op's result. Get: KV is the key with its value as the
// transaction saw it (before its own writes), nil when absent. Put: KV is
// the written key's metadata (no value). Delete: Deleted is 1 when a key was
// removed.
type TxnOpResult struct {
	Kind    txn.OpKind
	Key     []byte
	KV      *KV
	Deleted int
}

// txn applies an OpTxn. Deterministic (I3): it reads only the entry and the
// stored state.
func (c *applyCtx) txn(cmd *Command, index uint64) (*Result, error) {
	req, err := txn.DecodeRequest(cmd.Value)
	if err != nil {
		return &Result{Index: index, Err: fmt.Errorf("%w: %v", ErrInvalidCommand, err)}, nil
	}
	for _, k := range req.Keys() {
		if !c.rng.Contains(k) {
			return &Result{Index: index, Err: &WrongShardError{Key: cloneBytes(k), Range: cloneRange(c.rng)}}, nil
		}
	}
	// Intents of multi-shard transactions: a key written here conflicts
	// with any of them, a key only read with write intents.
	access := req.KeyAccess()
	for _, k := range req.Keys() { // in request order: the error is deterministic (I3)
		ie, err := c.conflictOn("", access[string(k)], k)
		if err != nil {
			return nil, err
		}
		if ie != nil {
			return &Result{Index: index, Err: ie}, nil
		}
	}
	seen := map[string]*KV{} // the state before the transaction
	var loadErr error
	state := func(key []byte) txn.KeyState {
		kv, ok := seen[string(key)]
		if !ok {
			kv, err = c.load(key)
			if err != nil && loadErr == nil {
				loadErr = err
			}
			seen[string(key)] = kv
		}
		return keyState(kv)
	}
	out := txn.Execute(req, state)
	if loadErr != nil {
		return nil, loadErr
	}
	// Every fence before any write: a stale token refuses the whole
	// transaction with nothing written (I11).
	for _, w := range out.Writes {
		if w.Fence == nil {
			continue
		}
		_, stale, err := c.checkFence(&Command{Key: w.Key, Fence: &Fence{Lock: w.Fence.Lock, Token: w.Fence.Token}})
		if err != nil {
			return nil, err
		}
		if stale != nil {
			return &Result{Index: index, Err: stale}, nil
		}
	}
	tr := &TxnResult{Succeeded: out.Succeeded}
	for _, o := range req.Branch(out.Succeeded) {
		r := TxnOpResult{Kind: o.Kind, Key: o.Key}
		wc := &Command{Key: o.Key, Value: o.Value, TTL: o.TTL}
		if o.Fence != nil {
			wc.Fence = &Fence{Lock: o.Fence.Lock, Token: o.Fence.Token}
		}
		switch o.Kind {
		case txn.OpGet:
			r.KV = seen[string(o.Key)]
		case txn.OpPut:
			wc.Op = OpPut
			// A key the compares or gets loaded is still as loaded: no op
			// before this one wrote it (DecodeRequest refuses a key written
			// twice in a branch, TestTxnDuplicateWriteRefused), so put over
			// it without reading it again.
			var res *Result
			if cur, ok := seen[string(o.Key)]; ok {
				res, err = c.putOver(wc, index, cur)
			} else {
				res, err = c.put(wc, index)
			}
			if err != nil {
				return nil, err
			}
			if res.Err != nil { // cannot happen: fences were checked above, no condition
				return nil, fmt.Errorf("fsm: txn put %q refused after its checks: %w", o.Key, res.Err)
			}
			r.KV = res.KV
		case txn.OpDelete:
			wc.Op = OpDelete
			res, err := c.del(wc, index)
			if err != nil {
				return nil, err
			}
			if res.Err != nil {
				return nil, fmt.Errorf("fsm: txn delete %q refused after its checks: %w", o.Key, res.Err)
			}
			r.Deleted = res.Deleted
		}
		tr.Ops = append(tr.Ops, r)
	}
	return &Result{Index: index, Txn: tr}, nil
}

// keyState is what a compare sees of a stored kv (nil: absent).
func keyState(kv *KV) txn.KeyState {
	if kv == nil {
		return txn.KeyState{}
	}
	return txn.KeyState{Exists: true, Value: kv.Value, CreateIndex: kv.CreateIndex, ModIndex: kv.ModIndex,
		Version: kv.Version}
}

// Field numbers of a stored TxnResult (inside a dedup result, field resTxn).
const (
	txnResSucceeded = 1
	txnResOp        = 2 // repeated

	txnOpKind    = 1
	txnOpKey     = 2
	txnOpKV      = 3
	txnOpDeleted = 4
)

func appendTxnResult(b []byte, tr *TxnResult) []byte {
	if tr.Succeeded {
		b = wire.AppendUint(b, txnResSucceeded, 1)
	}
	for _, o := range tr.Ops {
		var ob []byte
		ob = wire.AppendUint(ob, txnOpKind, uint64(o.Kind))
		ob = wire.AppendBytes(ob, txnOpKey, o.Key)
		if o.KV != nil {
			ob = appendNestedKV(ob, txnOpKV, o.KV)
		}
		ob = wire.AppendUint(ob, txnOpDeleted, uint64(o.Deleted))
		b = wire.AppendBytesAlways(b, txnResOp, ob)
	}
	return b
}

func decodeTxnResult(b []byte) (*TxnResult, error) {
	tr := &TxnResult{}
	err := walkFields(b, func(field, wt, v uint64, p []byte) error {
		switch field {
		case txnResSucceeded:
			tr.Succeeded = v != 0
		case txnResOp:
			var o TxnOpResult
			err := walkFields(p, func(field, wt, v uint64, p []byte) error {
				var err error
				switch field {
				case txnOpKind:
					o.Kind = txn.OpKind(min(v, 255))
				case txnOpKey:
					o.Key = cloneBytes(p)
				case txnOpKV:
					o.KV, err = decodeKV(p)
				case txnOpDeleted:
					o.Deleted = int(min(v, 1))
				}
				return err
			})
			if err != nil {
				return err
			}
			tr.Ops = append(tr.Ops, o)
		}
		return nil
	})
	return tr, err
}
