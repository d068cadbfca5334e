package txn

import (
	"bytes"
	"cmp"
	"strconv"
	"time"
)

// KeyState is what a compare or a get sees of one key. An absent key has
// Exists false and every other field zero.
type KeyState struct {
	Exists      bool
	Value       []byte
	CreateIndex uint64
	ModIndex    uint64
	Version     uint64
}

// Eval reports whether c holds for the key's state. c must have passed
// ValidateRequest. Rules:
//   - value: integers when both the stored value and c.Value parse as
//     base-10 int64, else byte strings (bytes.Compare). On an absent key a
//     value compare is false whatever the operator, as in etcd: an absent
//     key has no value, and "absent" and "empty" must not be confused (use
//     the exists target to test presence).
//   - mod_index, create_index, version: unsigned integers; an absent key
//     has 0 for each (as in etcd), so mod_index == 0 means "absent".
//   - exists: == or != against true/false.
func Eval(c Compare, s KeyState) bool {
	switch c.Target {
	case TargetValue:
		if !s.Exists {
			return false
		}
		return holds(c.Op, compareValues(s.Value, c.Value))
	case TargetModIndex, TargetCreateIndex, TargetVersion:
		want, err := strconv.ParseUint(string(c.Value), 10, 64)
		if err != nil {
			return false
		}
		have := s.ModIndex
		switch c.Target {
		case TargetCreateIndex:
			have = s.CreateIndex
		case TargetVersion:
			have = s.Version
		}
		if !s.Exists {
			have = 0
		}
		return holds(c.Op, cmp.Compare(have, want))
	case TargetExists:
		want, err := parseBool(c.Value)
		if err != nil {
			return false
		}
		eq := s.Exists == want
		return (c.Op == CmpEq && eq) || (c.Op == CmpNe && !eq)
	}
	return false
}

// compareValues orders a stored value against a compare's value: as
// integers when both parse, else as bytes.
func compareValues(have, want []byte) int {
	hi, herr := strconv.ParseInt(string(have), 10, 64)
	wi, werr := strconv.ParseInt(string(want), 10, 64)
	if herr == nil && werr == nil {
		return cmp.Compare(hi, wi)
	}
	return bytes.Compare(have, want)
}

func holds(op CmpOp, c int) bool {
	switch op {
	case CmpEq:
		return c == 0
	case CmpNe:
		return c != 0
	case CmpLt:
		return c < 0
	case CmpLe:
		return c <= 0
	case CmpGt:
		return c > 0
	case CmpGe:
		return c >= 0
	}
	return false
}

// Write is one write of the branch taken: what a shard applies when the
// transaction commits. Delete is a delete (Value empty); TTL and Fence as in
// the Op.
type Write struct {
	Key    []byte
	Value  []byte
	Delete bool
	TTL    time.Duration
	Fence  *Fence
}

// Writes returns the writes of a branch, in op order.
func Writes(ops []Op) []Write {
	var ws []Write
	for _, o := range ops {
		if o.Kind.IsWrite() {
			ws = append(ws, Write{Key: o.Key, Value: o.Value, Delete: o.Kind == OpDelete, TTL: o.TTL, Fence: o.Fence})
		}
	}
	return ws
}

// OpResult is the outcome of one op of the branch taken. For a get, State
// is the key as it was before the transaction, even after a put of the same
// key earlier in the branch. That differs from etcd, where a get after a
// put in one transaction sees the put: here a multi-shard transaction reads
// under its intents before any write applies, and a one-shard one behaves
// the same so the two cannot differ (the client knows what it wrote). For
// writes, the shard fills in the indices it applied.
type OpResult struct {
	Kind  OpKind
	Key   []byte
	State KeyState // get: the key before the transaction
}

// Outcome is a transaction evaluated against one consistent state: which
// branch runs, what its gets return, and what it writes.
type Outcome struct {
	Succeeded bool
	Results   []OpResult
	Writes    []Write
}

// Execute evaluates a validated request against one consistent view of its
// keys (state returns a key's state; it is called only for keys of the
// request). It is the whole of a one-shard transaction, run inside one raft
// entry's apply, and the decision step of a multi-shard one, run by the
// coordinator over the states its prepares returned under intents.
func Execute(r *Request, state func(key []byte) KeyState) Outcome {
	ok := true
	for _, c := range r.Compare {
		if !Eval(c, state(c.Key)) {
			ok = false
			break
		}
	}
	ops := r.Branch(ok)
	out := Outcome{Succeeded: ok, Results: make([]OpResult, len(ops)), Writes: Writes(ops)}
	for i, o := range ops {
		out.Results[i] = OpResult{Kind: o.Kind, Key: o.Key}
		if o.Kind == OpGet {
			out.Results[i].State = state(o.Key)
		}
	}
	return out
}
