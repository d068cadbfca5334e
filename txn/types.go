// Package txn is the pure core of cairn's transactions: the request model
// and its validation, compare evaluation, splitting a transaction by shard,
// the replicated intent and transaction record with their encodings, the
// record's transition function, intent resolution, and the coordinator's
// next step as a function of what it knows (decide, then execute). It does
// no I/O and reads no clock: fsm/ stores records and intents and calls these
// functions inside its apply, shard/ and api/ execute the coordinator's
// actions. txn/DESIGN.md describes the protocol.
package txn

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"
)

// Target is what a Compare reads from a key.
type Target uint8

// Targets. Values are part of the command encoding: never renumber.
const (
	TargetValue       Target = 1
	TargetModIndex    Target = 2
	TargetCreateIndex Target = 3
	TargetVersion     Target = 4
	TargetExists      Target = 5
)

var targetNames = map[Target]string{
	TargetValue: "value", TargetModIndex: "mod_index", TargetCreateIndex: "create_index",
	TargetVersion: "version", TargetExists: "exists",
}

func (t Target) String() string {
	if s, ok := targetNames[t]; ok {
		return s
	}
	return fmt.Sprintf("target(%d)", uint8(t))
}

// ParseTarget reads an API target name ("value", "mod_index", ...).
// An unknown name is an *InvalidError.
func ParseTarget(s string) (Target, error) {
	for t, n := range targetNames {
		if n == s {
			return t, nil
		}
	}
	return 0, invalidf("compare.target", "unknown target %q (one of value, mod_index, create_index, version, exists)", s)
}

// CmpOp is a compare operator.
type CmpOp uint8

// Operators. Values are part of the command encoding: never renumber.
const (
	CmpEq CmpOp = 1 // ==
	CmpNe CmpOp = 2 // !=
	CmpLt CmpOp = 3 // <
	CmpLe CmpOp = 4 // <=
	CmpGt CmpOp = 5 // >
	CmpGe CmpOp = 6 // >=
)

var cmpNames = map[CmpOp]string{CmpEq: "==", CmpNe: "!=", CmpLt: "<", CmpLe: "<=", CmpGt: ">", CmpGe: ">="}

func (o CmpOp) String() string {
	if s, ok := cmpNames[o]; ok {
		return s
	}
	return fmt.Sprintf("cmp(%d)", uint8(o))
}

// ParseCmpOp reads an API operator ("==", "!=", "<", "<=", ">", ">=").
func ParseCmpOp(s string) (CmpOp, error) {
	for o, n := range cmpNames {
		if n == s {
			return o, nil
		}
	}
	return 0, invalidf("compare.op", "unknown operator %q (one of == != < <= > >=)", s)
}

// OpKind is the kind of a branch operation.
type OpKind uint8

// Operation kinds. Values are part of the command encoding: never renumber.
const (
	OpGet    OpKind = 1
	OpPut    OpKind = 2
	OpDelete OpKind = 3
)

var opNames = map[OpKind]string{OpGet: "get", OpPut: "put", OpDelete: "delete"}

func (k OpKind) String() string {
	if s, ok := opNames[k]; ok {
		return s
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// ParseOpKind reads an API op name ("get", "put", "delete").
func ParseOpKind(s string) (OpKind, error) {
	for k, n := range opNames {
		if n == s {
			return k, nil
		}
	}
	return 0, invalidf("op", "unknown op %q (one of get, put, delete)", s)
}

// IsWrite reports whether the operation changes its key.
func (k OpKind) IsWrite() bool { return k == OpPut || k == OpDelete }

// Compare is one condition of a transaction. Value is the API's string: a
// byte string for TargetValue, a decimal integer for the index targets,
// "true" or "false" for TargetExists.
type Compare struct {
	Key    []byte
	Target Target
	Op     CmpOp
	Value  []byte
}

// Fence names the lock and token a write is made under (invariant I11); the
// shard's fence check applies to every write op of a transaction.
type Fence struct {
	Lock  string
	Token uint64
}

// Op is one operation of a branch.
type Op struct {
	Kind  OpKind
	Key   []byte
	Value []byte        // OpPut only
	TTL   time.Duration // OpPut only; 0: no TTL
	Fence *Fence        // OpPut and OpDelete; nil: unfenced
}

// Request is a transaction as the API receives it: if every Compare holds,
// Success runs, else Failure. RequestID makes a retry exactly-once
// (invariant I7).
type Request struct {
	Compare   []Compare
	Success   []Op
	Failure   []Op
	RequestID string
}

// Branch returns the operations of the branch taken.
func (r *Request) Branch(succeeded bool) []Op {
	if succeeded {
		return r.Success
	}
	return r.Failure
}

// ReadOnly reports whether neither branch writes: such a transaction
// changes nothing, so a retry may simply run again (its request id asks for
// no exactly-once, and a replay, which carries no gets, would answer less).
func (r *Request) ReadOnly() bool {
	for _, br := range [][]Op{r.Success, r.Failure} {
		for _, o := range br {
			if o.Kind.IsWrite() {
				return false
			}
		}
	}
	return true
}

// Keys returns every distinct key the request touches (compares, reads and
// writes of both branches), in first-appearance order: compares, then
// success, then failure.
func (r *Request) Keys() [][]byte {
	seen := map[string]bool{}
	var out [][]byte
	add := func(k []byte) {
		if !seen[string(k)] {
			seen[string(k)] = true
			out = append(out, k)
		}
	}
	for _, c := range r.Compare {
		add(c.Key)
	}
	for _, o := range r.Success {
		add(o.Key)
	}
	for _, o := range r.Failure {
		add(o.Key)
	}
	return out
}

// Access is how a transaction uses a key; it decides the intent it places.
type Access uint8

const (
	// AccessRead: compared or read (get) only. A read intent is shared with
	// other readers and excludes writers.
	AccessRead Access = 1
	// AccessWrite: written by an op of either branch. A write intent
	// excludes everyone else.
	AccessWrite Access = 2
)

func (a Access) String() string {
	switch a {
	case AccessRead:
		return "read"
	case AccessWrite:
		return "write"
	}
	return fmt.Sprintf("access(%d)", uint8(a))
}

// KeyAccess returns the access the request needs on each of its keys: write
// if any op of either branch writes it (the branch is not known before the
// compares are evaluated, so both branches' writes are locked), else read.
func (r *Request) KeyAccess() map[string]Access {
	m := map[string]Access{}
	for _, c := range r.Compare {
		m[string(c.Key)] = max(m[string(c.Key)], AccessRead)
	}
	for _, br := range [][]Op{r.Success, r.Failure} {
		for _, o := range br {
			a := AccessRead
			if o.Kind.IsWrite() {
				a = AccessWrite
			}
			m[string(o.Key)] = max(m[string(o.Key)], a)
		}
	}
	return m
}

// IDForRequest derives a transaction id from a client's request id, so a
// retry of the same request finds the same record (invariant I7): "r" and
// 40 hex digits. A request id that starts with a time in hex, as cairn's
// clients write them ("%012x." and the rest: client.NewRequestID), keeps
// those 12 digits first and adds 28 of its SHA-256; any other gets 40 digits
// of its SHA-256. Time first makes the ids of concurrent transactions
// neighbours, so a shard's records and tombstones, keyed by id, grow at their
// right edge: one page per batch instead of one page per transaction (each
// random insert materialized a leaf of about a hundred tombstones). Without
// a request id the coordinator picks an id of its own (of at most MaxIDSize
// bytes, not starting with "r"; time first too).
func IDForRequest(requestID string) string {
	sum := sha256.Sum256([]byte(requestID))
	if timePrefixed(requestID) {
		return "r" + requestID[:12] + hex.EncodeToString(sum[:14])
	}
	return "r" + hex.EncodeToString(sum[:20])
}

// timePrefixed reports whether id starts with 12 lowercase hex digits and a
// dot.
func timePrefixed(id string) bool {
	if len(id) < 13 || id[12] != '.' {
		return false
	}
	for i := range 12 {
		if c := id[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
