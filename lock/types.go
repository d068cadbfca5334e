// Package lock is the core of cairn's lock service: the lock record, the
// commands that change it and their deterministic apply, the fencing token
// rule (invariant I9), the leader-only lease countdowns (invariant I10) and
// the record and command encodings. It has no I/O: fsm/ stores records and
// calls Apply from its apply loop, shard/ runs the Tracker on the leader.
package lock

import (
	"bytes"
	"errors"
	"fmt"
	"time"
)

// Limits checked by Apply (and by the API edge before proposing). They bound
// the size of a record, which is rewritten whole on every change.
const (
	MaxNameSize     = 256 // bytes; equals fsm's fence lock name limit so every lock can fence
	MaxOwnerSize    = 128 // bytes
	MaxWaiterIDSize = 256 // bytes; equals fsm's request id limit
	MaxLimit        = 128 // semaphore size
	MaxHolders      = 128 // holders of any mode (bounds shared holders too)
	MaxWaiters      = 256 // queued acquires per lock
	MinTTL          = time.Second
	MaxTTL          = 24 * time.Hour
	MaxWait         = time.Hour
	MaxLockDelay    = time.Minute
	// MaxRecordSize bounds an encoded Record within the limits above
	// (TestMaxRecordSize); fsm's snapshot reader accepts values to 4 MiB.
	MaxRecordSize = 256 << 10
)

// Mode is how a holder holds the lock. The zero value is exclusive so the
// encodings can omit it.
type Mode uint8

const (
	// Exclusive holders exclude shared ones; up to Limit of them hold the
	// lock together (Limit 1 is a mutex, Limit N a semaphore).
	Exclusive Mode = 0
	// Shared holders exclude exclusive ones and admit each other, up to
	// MaxHolders (a readers-writer lock).
	Shared Mode = 1
)

func (m Mode) String() string {
	switch m {
	case Exclusive:
		return "exclusive"
	case Shared:
		return "shared"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Holder is one grant of a lock. Sequence numbers (Token, GrantSeq,
// RenewSeq) are in the lock sequence space seq = base+index (see Apply),
// which never goes back for a name, not raw raft indices.
type Holder struct {
	Token     uint64        // fencing token (invariant I9)
	Owner     string        // informational, from the acquire
	Mode      Mode          // Exclusive or Shared
	TTL       time.Duration // lease length; the leader counts it down (I10)
	LockDelay time.Duration // applied to the lock if this lease expires (not if released)
	WaiterID  string        // the acquire's request id: makes a retried acquire idempotent, lets CancelWait undo a grant nobody received
	GrantSeq  uint64        // seq of the entry that granted it
	RenewSeq  uint64        // seq of the grant or of the last renew; Expire must name it
}

// Waiter is a queued acquire. Waiters are granted strictly in order.
type Waiter struct {
	ID        string        // the acquire's request id
	Owner     string        // becomes Holder.Owner
	Mode      Mode          // requested mode
	TTL       time.Duration // lease length once granted
	LockDelay time.Duration // becomes Holder.LockDelay
	Deadline  int64         // proposer wall clock, unix ns: the wait ends here (ExpireWaiters)
	Seq       uint64        // seq of the entry that queued it (informational)
}

// Record is the replicated state of one lock name. A name with no record
// is free and has never been granted since its record was last dropped;
// Apply returns a nil record when nothing needs remembering, and the token
// rule keeps tokens increasing across that (lock/DESIGN.md "Sequence numbers and tokens").
type Record struct {
	Name      string
	Limit     int      // exclusive holders allowed together; fixed while the record has holders or waiters
	Holders   []Holder // in grant order, so tokens increase along the slice
	Waiters   []Waiter // FIFO
	LastToken uint64   // highest token ever granted for the name while this record lived
	// DelaySeq is the seq of the Expire that started a lock delay (0: none);
	// nothing is granted until EndDelay names it. The delay's length runs on
	// the leader's monotonic clock (Tracker), not on a stored wall time.
	DelaySeq uint64
	Delay    time.Duration
	// ChangeSeq is the seq of the last change to Holders: the "index" of a
	// status answer and what a blocking status (wait_index) compares.
	ChangeSeq uint64
}

// Held reports whether the lock has at least one holder.
func (r *Record) Held() bool { return r != nil && len(r.Holders) > 0 }

// Mode returns the mode of the current holders (Exclusive when free).
func (r *Record) Mode() Mode {
	if r != nil && len(r.Holders) > 0 {
		return r.Holders[0].Mode
	}
	return Exclusive
}

// Holder returns the holder with token, or nil.
func (r *Record) Holder(token uint64) *Holder {
	if r == nil {
		return nil
	}
	for i := range r.Holders {
		if r.Holders[i].Token == token {
			return &r.Holders[i]
		}
	}
	return nil
}

// Clone returns a deep copy.
func (r *Record) Clone() *Record {
	if r == nil {
		return nil
	}
	c := *r
	c.Holders = append([]Holder(nil), r.Holders...)
	c.Waiters = append([]Waiter(nil), r.Waiters...)
	if len(c.Holders) == 0 {
		c.Holders = nil
	}
	if len(c.Waiters) == 0 {
		c.Waiters = nil
	}
	return &c
}

// Command is one lock operation, applied by Apply. The concrete types are
// Acquire, Renew, Release, Expire, CancelWait, ExpireWaiters and EndDelay.
// Commands from clients are Acquire, Renew, Release and CancelWait; the
// others are proposed by the shard leader only (Tracker).
type Command interface {
	Kind() Kind
	LockName() string
}

// Kind numbers the commands in their encoding. Part of the log format:
// never renumber, only append. fsm may map them to its ops 32..47.
type Kind uint8

const (
	KindAcquire       Kind = 1
	KindRenew         Kind = 2
	KindRelease       Kind = 3
	KindExpire        Kind = 4
	KindCancelWait    Kind = 5
	KindExpireWaiters Kind = 6
	KindEndDelay      Kind = 7
)

func (k Kind) String() string {
	switch k {
	case KindAcquire:
		return "acquire"
	case KindRenew:
		return "renew"
	case KindRelease:
		return "release"
	case KindExpire:
		return "expire"
	case KindCancelWait:
		return "cancel_wait"
	case KindExpireWaiters:
		return "expire_waiters"
	case KindEndDelay:
		return "end_delay"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Acquire asks for a grant. Wait 0 is TryLock: granted now or lock_held.
// Otherwise an acquire that cannot be granted now is queued until
// now+Wait (in the proposer's clock) and granted in arrival order.
type Acquire struct {
	Name      string
	Owner     string
	TTL       time.Duration
	Wait      time.Duration
	Mode      Mode
	Limit     int // 1 for a mutex; must equal the record's while it has holders or waiters
	LockDelay time.Duration
	WaiterID  string // the request id; required when Wait > 0
}

// Renew restarts the lease of the holder with Token.
type Renew struct {
	Name  string
	Token uint64
}

// Release ends the grant with Token. No lock delay follows a release.
type Release struct {
	Name  string
	Token uint64
}

// Expire ends the grant with Token if it was not renewed since RenewSeq:
// proposed by the leader when its countdown for that lease ran out (I10).
type Expire struct {
	Name     string
	Token    uint64
	RenewSeq uint64
}

// CancelWait removes the waiter WaiterID (its request ended). If that
// waiter was granted already, the grant is released: its requester gave up
// without learning the token.
type CancelWait struct {
	Name     string
	WaiterID string
}

// ExpireWaiters removes the waiters whose deadline is at or before the
// command's time. Proposed by the leader.
type ExpireWaiters struct {
	Name string
}

// EndDelay ends the lock delay started by the Expire at DelaySeq and grants
// waiters. Proposed by the leader once the delay ran on its clock.
type EndDelay struct {
	Name     string
	DelaySeq uint64
}

func (Acquire) Kind() Kind       { return KindAcquire }
func (Renew) Kind() Kind         { return KindRenew }
func (Release) Kind() Kind       { return KindRelease }
func (Expire) Kind() Kind        { return KindExpire }
func (CancelWait) Kind() Kind    { return KindCancelWait }
func (ExpireWaiters) Kind() Kind { return KindExpireWaiters }
func (EndDelay) Kind() Kind      { return KindEndDelay }

func (c Acquire) LockName() string       { return c.Name }
func (c Renew) LockName() string         { return c.Name }
func (c Release) LockName() string       { return c.Name }
func (c Expire) LockName() string        { return c.Name }
func (c CancelWait) LockName() string    { return c.Name }
func (c ExpireWaiters) LockName() string { return c.Name }
func (c EndDelay) LockName() string      { return c.Name }

// Status says what a command did.
type Status uint8

const (
	StatusNone      Status = 0 // nothing changed (a stale Expire, an unknown waiter, ...), or an error
	StatusGranted   Status = 1 // Acquire: granted now (Result.Token)
	StatusQueued    Status = 2 // Acquire: queued (Result.WaiterID, Result.Position)
	StatusRenewed   Status = 3
	StatusReleased  Status = 4 // Release, or CancelWait of a waiter already granted
	StatusExpired   Status = 5 // Expire took effect
	StatusCancelled Status = 6 // CancelWait removed a waiter; ExpireWaiters removed at least one
	StatusDelayEnd  Status = 7
)

// Result is what Apply reports. Granted lists every grant the entry made,
// including waiters served after a release: the node that holds a waiting
// request answers it from here.
type Result struct {
	Status   Status
	Token    uint64        // the token granted, renewed, released or expired
	TTL      time.Duration // Acquire granted, Renew: the lease length
	WaiterID string        // Acquire queued
	Position int           // Acquire queued: 0 is the head of the queue
	Granted  []Holder      // grants made by this entry, in token order
	Removed  []string      // ids of waiters that left the queue without a grant
	Err      *Error        // nil on success
}

// Code is the stable machine-readable code of an error (docs/api.md's table).
type Code string

const (
	CodeInvalidArgument Code = "invalid_argument"
	CodeLockHeld        Code = "lock_held"
	CodeLockLost        Code = "lock_lost"
)

// Sentinel errors for errors.Is; an *Error matches the one with its code.
var (
	ErrInvalidArgument = &Error{Code: CodeInvalidArgument, Msg: "invalid argument"}
	ErrLockHeld        = &Error{Code: CodeLockHeld, Msg: "lock held"}
	ErrLockLost        = &Error{Code: CodeLockLost, Msg: "lock lost"}
)

// Error is a deterministic refusal: every replica returns the same one for
// the same entry, and the record is unchanged. For lock_held, Owner and
// Token name the oldest current holder (0 when the lock is free but delayed
// or has waiters ahead).
type Error struct {
	Code  Code
	Msg   string
	Owner string
	Token uint64
}

// Error is the message alone: the code travels beside it (the API's error
// envelope, a client's "code: message"), so it is not repeated in the text.
func (e *Error) Error() string { return e.Msg }

// Is matches any *Error with the same code, so errors.Is(err, ErrLockLost)
// works on a wrapped Result.Err.
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code
}

func invalid(format string, args ...any) *Error {
	return &Error{Code: CodeInvalidArgument, Msg: fmt.Sprintf(format, args...)}
}

// ValidName checks a lock name: 1..MaxNameSize bytes without NUL (fsm's
// fence keys are lock 0x00 key).
func ValidName(name string) *Error {
	if len(name) == 0 || len(name) > MaxNameSize {
		return invalid("lock name must be 1..%d bytes, got %d", MaxNameSize, len(name))
	}
	if bytes.IndexByte([]byte(name), 0) >= 0 {
		return invalid("lock name must not contain NUL")
	}
	return nil
}
