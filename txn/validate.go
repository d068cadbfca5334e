package txn

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// ErrInvalid is wrapped by every *InvalidError: a request the API must
// answer with 400 invalid_argument, having written nothing.
var ErrInvalid = errors.New("txn: invalid request")

// InvalidError says which part of a request is wrong and why.
type InvalidError struct {
	Field  string // where: "compare[2].op", "success[0].key", "ops", ...
	Reason string // human-readable, with the limit when one was crossed
}

func (e *InvalidError) Error() string { return fmt.Sprintf("txn: %s: %s", e.Field, e.Reason) }

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *InvalidError) Unwrap() error { return ErrInvalid }

func invalidf(field, format string, args ...any) error {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Limits bounds a transaction; the operator sets them (DefaultLimits
// otherwise). Key and value bounds equal fsm's (MaxKeySize, MaxValueSize),
// restated here because txn/ does not import fsm/ (fsm will import txn).
type Limits struct {
	MaxOps       int           // compares + ops of both branches
	MaxBytes     int           // sum of key and value bytes of compares and ops
	MaxKeySize   int           // per key
	MaxValueSize int           // per value
	MaxTTL       time.Duration // per put
}

// Hard bounds no operator setting may exceed: they keep one prepare or one
// record inside a raft entry and fsm's value limit.
const (
	HardMaxOps       = 10_000
	HardMaxBytes     = 4 << 20
	MaxKeySize       = 4 << 10 // = fsm.MaxKeySize
	MaxValueSize     = 1 << 20 // = fsm.MaxValueSize
	MaxRequestIDSize = 256     // = fsm's request id limit
	MaxFenceLockSize = 256     // = lock.MaxNameSize
)

// DefaultLimits are well above etcd's 128 ops per transaction.
func DefaultLimits() Limits {
	return Limits{MaxOps: 1000, MaxBytes: 1 << 20, MaxKeySize: MaxKeySize, MaxValueSize: MaxValueSize,
		MaxTTL: 30 * 24 * time.Hour}
}

// Validate checks the limits themselves.
func (l Limits) Validate() error {
	switch {
	case l.MaxOps < 1 || l.MaxOps > HardMaxOps:
		return fmt.Errorf("txn: MaxOps %d not in [1, %d]", l.MaxOps, HardMaxOps)
	case l.MaxBytes < 1 || l.MaxBytes > HardMaxBytes:
		return fmt.Errorf("txn: MaxBytes %d not in [1, %d]", l.MaxBytes, HardMaxBytes)
	case l.MaxKeySize < 1 || l.MaxKeySize > MaxKeySize:
		return fmt.Errorf("txn: MaxKeySize %d not in [1, %d]", l.MaxKeySize, MaxKeySize)
	case l.MaxValueSize < 0 || l.MaxValueSize > MaxValueSize:
		return fmt.Errorf("txn: MaxValueSize %d not in [0, %d]", l.MaxValueSize, MaxValueSize)
	case l.MaxTTL <= 0:
		return fmt.Errorf("txn: MaxTTL %v must be positive", l.MaxTTL)
	}
	return nil
}

// Validate checks a request against the limits and returns the first
// problem as an *InvalidError (errors.Is(err, ErrInvalid)). A request that
// passes is safe to split, encode and evaluate. Rules:
//   - at least one compare or op (an empty transaction is refused);
//   - known targets, operators and op kinds; index targets compare with a
//     decimal integer, exists with "true"/"false" and only == or !=;
//   - keys non-empty and within MaxKeySize, values within MaxValueSize;
//     only put has a value or a TTL, get has no fence, a fence names a lock
//     and a positive token;
//   - no key written twice in one branch (as etcd refuses duplicate keys);
//   - at most MaxOps compares plus ops and MaxBytes key and value bytes.
func (l Limits) ValidateRequest(r *Request) error {
	n := len(r.Compare) + len(r.Success) + len(r.Failure)
	if n == 0 {
		return invalidf("txn", "empty transaction: no compare and no op")
	}
	if n > l.MaxOps {
		return invalidf("ops", "%d compares and ops; the limit is %d", n, l.MaxOps)
	}
	if len(r.RequestID) > MaxRequestIDSize {
		return invalidf("request_id", "%d bytes; the limit is %d", len(r.RequestID), MaxRequestIDSize)
	}
	total := 0
	for i := range r.Compare {
		c := &r.Compare[i]
		f := fmt.Sprintf("compare[%d]", i)
		if err := l.checkKey(f, c.Key); err != nil {
			return err
		}
		if err := checkCompare(f, c); err != nil {
			return err
		}
		if len(c.Value) > l.MaxValueSize {
			return invalidf(f+".value", "%d bytes; the limit is %d", len(c.Value), l.MaxValueSize)
		}
		total += len(c.Key) + len(c.Value)
	}
	for _, br := range []struct {
		name string
		ops  []Op
	}{{"success", r.Success}, {"failure", r.Failure}} {
		written := map[string]int{}
		for i := range br.ops {
			o := &br.ops[i]
			f := fmt.Sprintf("%s[%d]", br.name, i)
			if err := l.checkOp(f, o); err != nil {
				return err
			}
			if o.Kind.IsWrite() {
				if j, dup := written[string(o.Key)]; dup {
					return invalidf(f+".key", "key %q is written twice in one branch (also by %s[%d])",
						o.Key, br.name, j)
				}
				written[string(o.Key)] = i
			}
			total += len(o.Key) + len(o.Value)
		}
	}
	if total > l.MaxBytes {
		return invalidf("txn", "%d bytes of keys and values; the limit is %d", total, l.MaxBytes)
	}
	return nil
}

func (l Limits) checkKey(f string, k []byte) error {
	if len(k) == 0 {
		return invalidf(f+".key", "empty key")
	}
	if len(k) > l.MaxKeySize {
		return invalidf(f+".key", "%d bytes; the limit is %d", len(k), l.MaxKeySize)
	}
	return nil
}

func checkCompare(f string, c *Compare) error {
	if _, ok := targetNames[c.Target]; !ok {
		return invalidf(f+".target", "unknown target %d", c.Target)
	}
	if _, ok := cmpNames[c.Op]; !ok {
		return invalidf(f+".op", "unknown operator %d", c.Op)
	}
	switch c.Target {
	case TargetModIndex, TargetCreateIndex, TargetVersion:
		if _, err := strconv.ParseUint(string(c.Value), 10, 64); err != nil {
			return invalidf(f+".value", "%s compares with a non-negative integer, not %q", c.Target, c.Value)
		}
	case TargetExists:
		if _, err := parseBool(c.Value); err != nil {
			return invalidf(f+".value", "exists compares with \"true\" or \"false\", not %q", c.Value)
		}
		if c.Op != CmpEq && c.Op != CmpNe {
			return invalidf(f+".op", "exists takes == or !=, not %s", c.Op)
		}
	}
	return nil
}

func (l Limits) checkOp(f string, o *Op) error {
	if _, ok := opNames[o.Kind]; !ok {
		return invalidf(f+".op", "unknown op %d", o.Kind)
	}
	if err := l.checkKey(f, o.Key); err != nil {
		return err
	}
	if o.Kind != OpPut && len(o.Value) > 0 {
		return invalidf(f+".value", "%s takes no value", o.Kind)
	}
	if len(o.Value) > l.MaxValueSize {
		return invalidf(f+".value", "%d bytes; the limit is %d", len(o.Value), l.MaxValueSize)
	}
	if o.TTL != 0 && o.Kind != OpPut {
		return invalidf(f+".ttl", "%s takes no ttl", o.Kind)
	}
	if o.TTL < 0 || o.TTL > l.MaxTTL {
		return invalidf(f+".ttl", "%v not in [0, %v]", o.TTL, l.MaxTTL)
	}
	if o.Fence != nil {
		if o.Kind == OpGet {
			return invalidf(f+".fence", "get takes no fence (a fenced read is GET /v1/kv with fence_lock)")
		}
		if o.Fence.Lock == "" || len(o.Fence.Lock) > MaxFenceLockSize {
			return invalidf(f+".fence.lock", "lock name of %d bytes not in [1, %d]", len(o.Fence.Lock), MaxFenceLockSize)
		}
		if o.Fence.Token == 0 {
			return invalidf(f+".fence.token", "token must be positive")
		}
	}
	return nil
}

func parseBool(b []byte) (bool, error) {
	switch string(b) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, errors.New("not a bool")
}
