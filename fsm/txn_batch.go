package fsm

import (
	"encoding/binary"
	"fmt"

	"github.com/cairndb/cairn/internal/wire"
)

// Prepares in one entry (OpTxnBatch, command level 3).
//
// A shard's leader that receives several prepares at once (a shared
// node-to-node call, api/txn_propose_batch.go) proposes them as one entry:
// raft's cost per entry (the proposal's future, the log record, its
// replication and the apply call, on every replica) is paid once for all of
// them. The entry applies each command exactly as an entry of its own at the
// same index would, in order, with its own range check, riders and result.
//
// Only prepares may share an entry. Sharing the index is safe for them
// because a prepare writes no value: it places intents, and a committed
// write takes its intent's prepare index as mod_index only when resolved,
// so two writes that would share a mod_index would need two write intents
// on one key from one entry, and the second of those conflicts with the
// first (it votes no). A record or a one-shard transaction writes values at
// the entry's index, so two of them on one key would give two versions one
// mod_index: they are refused here (the item's result is ErrInvalidCommand)
// and never proposed so.

// MaxTxnBatchSize bounds an OpTxnBatch's encoded commands: a proposer
// splits what would not fit.
const MaxTxnBatchSize = maxTxnCommandSize

// MaxTxnBatchItems bounds the commands of one OpTxnBatch.
const MaxTxnBatchItems = 256

const txnBatchFormat = 1

// EncodeTxnBatch is the Value of an OpTxnBatch of the encoded commands cmds
// (EncodeCommand's output each).
func EncodeTxnBatch(cmds [][]byte) []byte {
	n := 1
	for _, c := range cmds {
		n += len(c) + 2*binary.MaxVarintLen64
	}
	b := make([]byte, 1, n)
	b[0] = txnBatchFormat
	for _, c := range cmds {
		b = wire.AppendBytesAlways(b, 1, c)
	}
	return b
}

// DecodeTxnBatch returns the encoded commands of an OpTxnBatch's Value. They
// alias v.
func DecodeTxnBatch(v []byte) ([][]byte, error) {
	if len(v) == 0 || v[0] != txnBatchFormat {
		return nil, fmt.Errorf("%w: txn batch format", ErrInvalidCommand)
	}
	var cmds [][]byte
	err := walkFields(v[1:], func(field, wt, _ uint64, p []byte) error {
		if field != 1 {
			return nil
		}
		if err := wantType(field, wt, wire.TypeBytes); err != nil {
			return err
		}
		if len(cmds) == MaxTxnBatchItems {
			return fmt.Errorf("%w: txn batch of more than %d commands", ErrInvalidCommand, MaxTxnBatchItems)
		}
		cmds = append(cmds, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(cmds) == 0 {
		return nil, fmt.Errorf("%w: empty txn batch", ErrInvalidCommand)
	}
	return cmds, nil
}

// txnBatch applies an OpTxnBatch: each prepare as an entry of its own at
// index would be; anything else in it is answered ErrInvalidCommand and applies
// nothing.
func (c *applyCtx) txnBatch(cmd *Command, index uint64) (*Result, error) {
	cmds, err := DecodeTxnBatch(cmd.Value)
	if err != nil {
		return &Result{Index: index, Err: err}, nil
	}
	out := &Result{Index: index, Items: make([]*Result, len(cmds))}
	for i, b := range cmds {
		one, err := decodeCommand(b)
		if err != nil {
			out.Items[i] = &Result{Index: index, Err: err}
			continue
		}
		if one.Op != OpTxnPrepare {
			out.Items[i] = &Result{Index: index, Err: fmt.Errorf("%w: a txn batch holds prepares only, not %v", ErrInvalidCommand, one.Op)}
			continue
		}
		r, err := c.applyDecoded(one, index)
		if err != nil {
			return nil, err
		}
		out.Items[i] = r
	}
	return out, nil
}
