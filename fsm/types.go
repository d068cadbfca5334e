// Package fsm is the replicated state machine of one shard: command encoding,
// deterministic apply over bbolt, snapshots and the key-range check.
package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/cairndb/cairn/lock"
)

// Limits enforced on every command, by the API edge and again by the decoder.
const (
	MaxKeySize   = 4 << 10 // 4 KiB
	MaxValueSize = 1 << 20 // 1 MiB
)

// Op is the type of a replicated command. Values are part of the on-disk log
// format: never renumber, only append.
type Op uint8

const (
	OpPut    Op = 1 // write Key=Value, optionally conditional, fenced, with a TTL
	OpDelete Op = 2 // delete Key, optionally conditional on ModIndex
	OpExpire Op = 3 // leader-proposed TTL expiry: delete Key iff its mod_index == ModIndex
	OpNoop   Op = 4 // changes nothing; a new leader commits one so its term has an applied entry (ReadIndex)
	// OpTxn runs a one-shard transaction (txn.EncodeRequest in Value) as
	// one entry: compares, the branch taken, fences and dedup in one bbolt
	// transaction (fsm/txn.go, txn/DESIGN.md). Key is the transaction's
	// anchor key; every key of the request is range-checked.
	OpTxn Op = 5
	// OpTxnPrepare, OpTxnRecord and OpTxnResolve are the participant's
	// commands of a multi-shard transaction (fsm/txn2pc.go): Value is
	// EncodeTxnCommand, Key a key of this shard (the anchor for a record).
	OpTxnPrepare Op = 6
	OpTxnRecord  Op = 7
	OpTxnResolve Op = 8
	// OpTxnBatch carries several OpTxnPrepare commands in one entry
	// (EncodeTxnBatch in Value; command level 3): each is applied exactly as
	// it would be as an entry of its own at this index, in order, and
	// answered in Result.Items. One entry instead of one per prepare saves
	// raft's per-entry cost (fsm/txn_batch.go, txn/DESIGN.md "Prepares in
	// one entry"). No key: each command is range-checked on its own.
	OpTxnBatch Op = 9
	// 10..15 reserved for transactions (txn/).
	// OpSplit splits the range at Key: this replica keeps [Start, Key) and
	// hands [Key, End) to a new range ChildID whose replicas are Servers.
	// Every replica applies it at the same index from the same data, so every
	// replica builds the same child (shard/DESIGN.md "Splits").
	OpSplit Op = 16
	// 17..31 reserved for range changes (merge) issued by placement/.
	// 32..47 reserved for locks and leases (lock/).
	// OpLock applies one lock.Command (lock.EncodeCommand in Value) to the
	// record of the lock named Key, in bucket `locks` (lock/DESIGN.md).
	// Time is the proposer's wall clock, lock.Apply's now.
	OpLock Op = 32
	// 33 reserved.
	// OpFencedGet reads Key through raft and registers Fence on it like a
	// fenced write would (refused with *StaleTokenError under a higher
	// token): every later write with a lower token is refused (I11).
	OpFencedGet Op = 34
	// OpRaiseBase raises the group's lock token base to at least the
	// 8-byte big-endian floor in Value (bases never go down): every lock
	// sequence number, and so every token, the group gives after it is above
	// the floor. A restore into a new cluster proposes it on every shard with
	// the floor its backup recorded (lock/DESIGN.md "restore into a new
	// cluster"). No key: it is about the whole range.
	OpRaiseBase Op = 35
)

func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	case OpExpire:
		return "expire"
	case OpNoop:
		return "noop"
	case OpTxn:
		return "txn"
	case OpTxnPrepare:
		return "txn_prepare"
	case OpTxnRecord:
		return "txn_record"
	case OpTxnResolve:
		return "txn_resolve"
	case OpTxnBatch:
		return "txn_batch"
	case OpSplit:
		return "split"
	case OpLock:
		return "lock"
	case OpFencedGet:
		return "fenced_get"
	case OpRaiseBase:
		return "raise_base"
	}
	return fmt.Sprintf("op(%d)", uint8(o))
}

// CondKind selects what a Condition compares.
type CondKind uint8

const (
	CondNone     CondKind = 0
	CondModIndex CondKind = 1 // the key's mod_index equals ModIndex (0 means the key is absent)
	CondAbsent   CondKind = 2 // the key does not exist
	CondValue    CondKind = 3 // the key exists and its value equals Value
)

// Condition is the `if` of a compare-and-set.
type Condition struct {
	Kind     CondKind
	ModIndex uint64
	Value    []byte
}

// Fence names the lock and fencing token a write is made under (invariant I11).
type Fence struct {
	Lock  string
	Token uint64
}

// Command is one replicated operation. Everything apply needs is inside it:
// the proposer chooses Time and TTLs so apply never reads a clock (invariant I3).
type Command struct {
	Op        Op
	RequestID string // optional idempotency key (invariant I7)
	Epoch     uint64 // range epoch the proposer routed with (invariant I5); 0 for internal commands
	Time      int64  // proposer's wall clock, unix nanoseconds; used only for the dedup window
	Key       []byte
	Value     []byte
	TTL       time.Duration // OpPut: the key is expired by the leader after this long; 0 = no TTL
	Cond      *Condition    // OpPut, OpDelete
	Fence     *Fence        // OpPut, OpDelete
	Prev      bool          // return the previous kv in Result.Prev
	ModIndex  uint64        // OpExpire: expected mod_index
	ChildID   uint64        // OpSplit: the new range's id
	Servers   []Server      // OpSplit: the child group's raft configuration (the parent's)
}

// Server is one member of a raft configuration, as a split hands it on.
type Server struct {
	ID      string
	Address string
	Voter   bool
}

// KV is a stored key with its metadata.
type KV struct {
	Key         []byte
	Value       []byte
	CreateIndex uint64
	ModIndex    uint64
	Version     uint64
	TTL         time.Duration
	Lease       string
}

// Result is what Apply returns for a command (as interface{} through raft).
type Result struct {
	Index   uint64        // log index of the command that produced this result (the original one for a dedup hit)
	KV      *KV           // OpPut: the written key's metadata (Value omitted); OpFencedGet: the key with its value, nil if absent
	Prev    *KV           // previous kv when Command.Prev was set and the key existed
	Deleted int           // OpDelete, OpExpire: 1 if a key was removed
	Err     error         // nil, *ConditionError, *WrongShardError, *StaleTokenError, ErrInvalidCommand
	Lock    *LockResult   // OpLock: what lock.Apply did (nil when Err is set)
	Txn     *TxnResult    // OpTxn: the branch taken and each op's result (nil when Err is set)
	TwoPC   *TxnCmdResult // OpTxnPrepare, OpTxnRecord, OpTxnResolve (nil when Err is set)
	Items   []*Result     // OpTxnBatch: each command's result, in order (nil when Err is set)
}

// LockResult is the outcome of an OpLock entry. Result.Err inside it is a
// deterministic refusal (lock_held, lock_lost, invalid_argument) with the
// record unchanged; Record is the record after the entry, nil when the lock
// is free and its record was dropped. Record is shared with the OnLock
// event of the same entry: read it, never modify it.
type LockResult struct {
	Result lock.Result
	Record *lock.Record
	Seq    uint64 // base+index of the entry: the lock sequence number (lock/DESIGN.md)
}

// Range is a shard's key range: [Start, End). An empty End means +infinity.
//
// Its JSON is persisted (the meta group's log and snapshots, the durability
// sidecar): the keys are explicit and are the Go names cf3dc0d wrote without
// tags. Never change a key; a renamed field keeps its tag (fsm/DESIGN.md
// "Persisted formats"). In bbolt and snapshots it is encodeRange instead.
type Range struct {
	ID       uint64   `json:"ID"`
	Start    []byte   `json:"Start"`
	End      []byte   `json:"End"`
	Epoch    uint64   `json:"Epoch"`
	Replicas []string `json:"Replicas"` // node ids, informational for the FSM
}

// Contains reports whether key falls inside the range.
func (r Range) Contains(key []byte) bool {
	if bytes.Compare(key, r.Start) < 0 {
		return false
	}
	return len(r.End) == 0 || bytes.Compare(key, r.End) < 0
}

// ErrInvalidCommand is returned for a command that cannot be decoded or is
// malformed (unknown op, oversized key). It is deterministic: every replica
// rejects the same entry the same way.
var ErrInvalidCommand = errors.New("invalid command")

// WrongShardError rejects a key outside the shard's current range (invariant I5).
type WrongShardError struct {
	Key   []byte
	Range Range
}

func (e *WrongShardError) Error() string {
	return fmt.Sprintf("key %q is outside shard %d range [%q, %q) at epoch %d",
		e.Key, e.Range.ID, e.Range.Start, e.Range.End, e.Range.Epoch)
}

// ConditionError reports that a compare-and-set condition did not hold.
// Current is the key's current state, nil when absent.
type ConditionError struct {
	Key     []byte
	Current *KV
}

func (e *ConditionError) Error() string {
	if e.Current == nil {
		return fmt.Sprintf("condition failed on key %q: key is absent", e.Key)
	}
	return fmt.Sprintf("condition failed on key %q: mod_index is %d", e.Key, e.Current.ModIndex)
}

// StaleTokenError rejects a fenced write whose token is below one already
// accepted for the same lock on the same key (invariant I11).
type StaleTokenError struct {
	Key      []byte
	Lock     string
	Token    uint64
	Accepted uint64
}

func (e *StaleTokenError) Error() string {
	return fmt.Sprintf("stale fencing token %d for lock %q on key %q: token %d already accepted",
		e.Token, e.Lock, e.Key, e.Accepted)
}

// StaleEpochError rejects a range change decided at an epoch the range has
// since left (another split or membership change came first).
type StaleEpochError struct {
	Epoch uint64 // the epoch the command was decided at
	Range Range  // the range now
}

func (e *StaleEpochError) Error() string {
	return fmt.Sprintf("range %d is at epoch %d, the change was decided at epoch %d", e.Range.ID, e.Range.Epoch, e.Epoch)
}

// TTLEntry is a key with a time to live, as the leader's expiry timer needs it.
type TTLEntry struct {
	Key      []byte
	ModIndex uint64
	TTL      time.Duration
}
