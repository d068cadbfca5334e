package fsm

import (
	"bytes"
	"fmt"
	"time"

	"github.com/cairndb/cairn/internal/wire"
	"github.com/cairndb/cairn/lock"
)

// commandFormat is the first byte of every encoded command. A replica that
// meets a version it does not know rejects the entry (deterministically, on
// every replica) rather than guessing at its meaning.
const commandFormat = 1

// Limits on fields that types.go does not pin. They bound what a crafted
// entry can make a replica allocate or store.
const (
	maxRequestIDSize = 256
	maxLockNameSize  = 256
)

// Field numbers of Command. Part of the log format: never renumber or reuse.
const (
	cmdOp        = 1
	cmdRequestID = 2
	cmdEpoch     = 3
	cmdTime      = 4
	cmdKey       = 5
	cmdValue     = 6
	cmdTTL       = 7
	cmdCond      = 8
	cmdFence     = 9
	cmdPrev      = 10
	cmdModIndex  = 11
	cmdChildID   = 12
	cmdServer    = 13 // repeated: id 0x00 address 0x00 voter-byte

	condKind     = 1
	condModIndex = 2
	condValue    = 3

	fenceLock  = 1
	fenceToken = 2
)

// EncodeCommand validates c against the limits and encodes it for the Raft
// log. Errors wrap ErrInvalidCommand.
func EncodeCommand(c *Command) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil command", ErrInvalidCommand)
	}
	if err := validateCommand(c); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 32+len(c.Key)+len(c.Value)+len(c.RequestID))
	b = append(b, commandFormat)
	b = wire.AppendUint(b, cmdOp, uint64(c.Op))
	b = wire.AppendBytes(b, cmdRequestID, []byte(c.RequestID))
	b = wire.AppendUint(b, cmdEpoch, c.Epoch)
	b = wire.AppendInt(b, cmdTime, c.Time)
	b = wire.AppendBytes(b, cmdKey, c.Key)
	b = wire.AppendBytes(b, cmdValue, c.Value)
	b = wire.AppendInt(b, cmdTTL, int64(c.TTL))
	if c.Cond != nil {
		var cb []byte
		cb = wire.AppendUint(cb, condKind, uint64(c.Cond.Kind))
		cb = wire.AppendUint(cb, condModIndex, c.Cond.ModIndex)
		cb = wire.AppendBytes(cb, condValue, c.Cond.Value)
		b = wire.AppendBytesAlways(b, cmdCond, cb)
	}
	if c.Fence != nil {
		var fb []byte
		fb = wire.AppendBytes(fb, fenceLock, []byte(c.Fence.Lock))
		fb = wire.AppendUint(fb, fenceToken, c.Fence.Token)
		b = wire.AppendBytesAlways(b, cmdFence, fb)
	}
	if c.Prev {
		b = wire.AppendUint(b, cmdPrev, 1)
	}
	b = wire.AppendUint(b, cmdModIndex, c.ModIndex)
	b = wire.AppendUint(b, cmdChildID, c.ChildID)
	for _, srv := range c.Servers {
		b = wire.AppendBytesAlways(b, cmdServer, encodeServer(srv))
	}
	return b, nil
}

// maxServers bounds a configuration carried in a command.
const maxServers = 16

func encodeServer(s Server) []byte {
	b := append([]byte(s.ID), 0)
	b = append(append(b, s.Address...), 0)
	if s.Voter {
		return append(b, 1)
	}
	return append(b, 0)
}

func decodeServer(p []byte) (Server, error) {
	parts := bytes.SplitN(p, []byte{0}, 3)
	if len(parts) != 3 || len(parts[0]) == 0 || len(parts[0]) > 256 || len(parts[1]) > 256 || len(parts[2]) != 1 {
		return Server{}, fmt.Errorf("%w: malformed server", ErrInvalidCommand)
	}
	return Server{ID: string(parts[0]), Address: string(parts[1]), Voter: parts[2][0] == 1}, nil
}

// validateCommand is shared by both directions so that anything DecodeCommand
// accepts, EncodeCommand accepts too.
func validateCommand(c *Command) error {
	minKey := 1
	switch c.Op {
	case OpPut, OpDelete, OpExpire:
	case OpNoop:
		minKey = 0 // a noop touches no key
	case OpLock:
		// The key is the lock name; the value a lock.Command whose name
		// apply checks against it.
		if len(c.Key) > lock.MaxNameSize || len(c.Value) == 0 {
			return fmt.Errorf("%w: lock command needs a name of 1..%d bytes and a value",
				ErrInvalidCommand, lock.MaxNameSize)
		}
	case OpTxn:
		if len(c.Value) == 0 || len(c.Value) > maxTxnCommandSize || c.Cond != nil || c.Fence != nil {
			return fmt.Errorf("%w: txn command needs an encoded request of 1..%d bytes and no if or fence",
				ErrInvalidCommand, maxTxnCommandSize)
		}
	case OpTxnPrepare, OpTxnRecord, OpTxnResolve:
		if len(c.Value) == 0 || len(c.Value) > maxTxnCommandSize {
			return fmt.Errorf("%w: txn command needs a value of 1..%d bytes", ErrInvalidCommand, maxTxnCommandSize)
		}
	case OpTxnBatch:
		minKey = 0 // each command is range-checked on its own
		if len(c.Key) != 0 || len(c.Value) == 0 || len(c.Value) > MaxTxnBatchSize || c.Cond != nil || c.Fence != nil || c.RequestID != "" {
			return fmt.Errorf("%w: txn batch needs commands of 1..%d bytes and no key, if, fence or request id",
				ErrInvalidCommand, MaxTxnBatchSize)
		}
	case OpRaiseBase:
		minKey = 0
		if len(c.Key) != 0 || len(c.Value) != 8 {
			return fmt.Errorf("%w: raise_base takes no key and an 8-byte floor", ErrInvalidCommand)
		}
	case OpFencedGet:
		if c.Fence == nil {
			return fmt.Errorf("%w: fenced get without a fence", ErrInvalidCommand)
		}
	case OpSplit:
		if c.ChildID == 0 || len(c.Servers) == 0 || len(c.Servers) > maxServers {
			return fmt.Errorf("%w: split needs a child id and 1..%d servers", ErrInvalidCommand, maxServers)
		}
		for _, srv := range c.Servers {
			if srv.ID == "" || len(srv.ID) > 256 || len(srv.Address) > 256 ||
				bytes.IndexByte([]byte(srv.ID+srv.Address), 0) >= 0 {
				return fmt.Errorf("%w: split server %q invalid", ErrInvalidCommand, srv.ID)
			}
		}
	default:
		return fmt.Errorf("%w: unknown op %v", ErrInvalidCommand, c.Op)
	}
	if len(c.Key) < minKey || len(c.Key) > MaxKeySize {
		return fmt.Errorf("%w: key size %d not in [%d, %d]", ErrInvalidCommand, len(c.Key), minKey, MaxKeySize)
	}
	if len(c.Value) > MaxValueSize && (c.Op < OpTxn || c.Op > OpTxnBatch) {
		return fmt.Errorf("%w: value size %d exceeds %d", ErrInvalidCommand, len(c.Value), MaxValueSize)
	}
	if len(c.RequestID) > maxRequestIDSize {
		return fmt.Errorf("%w: request id size %d exceeds %d", ErrInvalidCommand, len(c.RequestID), maxRequestIDSize)
	}
	if c.TTL < 0 {
		return fmt.Errorf("%w: negative ttl %v", ErrInvalidCommand, c.TTL)
	}
	if c.Cond != nil {
		if c.Cond.Kind > CondValue {
			return fmt.Errorf("%w: unknown condition kind %d", ErrInvalidCommand, c.Cond.Kind)
		}
		if len(c.Cond.Value) > MaxValueSize {
			return fmt.Errorf("%w: condition value size %d exceeds %d",
				ErrInvalidCommand, len(c.Cond.Value), MaxValueSize)
		}
	}
	if c.Fence != nil {
		// The fence bucket key is lock+0x00+key: a NUL inside the lock name
		// would let two (lock, key) pairs collide.
		if len(c.Fence.Lock) == 0 || len(c.Fence.Lock) > maxLockNameSize ||
			bytes.IndexByte([]byte(c.Fence.Lock), 0) >= 0 {
			return fmt.Errorf("%w: fence lock name must be 1..%d bytes without NUL",
				ErrInvalidCommand, maxLockNameSize)
		}
	}
	return nil
}

// DecodeCommand decodes an entry written by EncodeCommand. It never panics;
// every error wraps ErrInvalidCommand. Unknown fields are skipped so that
// newer proposers can add fields; an unknown format version or op is an error.
// The returned command does not alias b.
func DecodeCommand(b []byte) (*Command, error) {
	c, err := decodeCommand(b)
	if err == nil && c.Value != nil && nestedValue(c.Op) {
		c.Value = cloneBytes(c.Value)
	}
	return c, err
}

// decodeCommand is DecodeCommand for the apply path: the Value of an op
// whose Value is itself an encoding (nestedValue) aliases b, because apply
// decodes it again at once, copying what it keeps, and never holds the
// Value itself (a clone per command and replica was most of a
// transaction command's decoding allocations); every other field, and any
// other op's Value, is a copy.
func decodeCommand(b []byte) (*Command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty entry", ErrInvalidCommand)
	}
	if b[0] != commandFormat {
		return nil, fmt.Errorf("%w: unknown format version %d", ErrInvalidCommand, b[0])
	}
	c := &Command{}
	if err := walkFields(b[1:], c.decodeField); err != nil {
		return nil, err
	}
	if c.Value != nil && !nestedValue(c.Op) {
		c.Value = cloneBytes(c.Value)
	}
	if err := validateCommand(c); err != nil {
		return nil, err
	}
	return c, nil
}

// nestedValue reports whether op's Value is an encoding of its own that
// apply decodes into copies (a transaction, lock or token-base command, a
// batch of commands) rather than bytes it stores.
func nestedValue(op Op) bool {
	switch op {
	case OpTxn, OpTxnPrepare, OpTxnRecord, OpTxnResolve, OpTxnBatch, OpLock, OpRaiseBase:
		return true
	}
	return false
}

func (c *Command) decodeField(field, wt, v uint64, p []byte) error {
	var err error
	switch field {
	case cmdOp, cmdEpoch, cmdTime, cmdTTL, cmdPrev, cmdModIndex, cmdChildID:
		err = wantType(field, wt, wire.TypeVarint)
	case cmdRequestID, cmdKey, cmdValue, cmdCond, cmdFence, cmdServer:
		err = wantType(field, wt, wire.TypeBytes)
	default:
		return nil // forward compatibility: a field from a newer proposer
	}
	if err != nil {
		return err
	}
	switch field {
	case cmdOp:
		if v > 255 {
			return fmt.Errorf("%w: unknown op %d", ErrInvalidCommand, v)
		}
		c.Op = Op(v)
	case cmdRequestID:
		c.RequestID = string(p)
	case cmdEpoch:
		c.Epoch = v
	case cmdTime:
		c.Time = wire.Unzigzag(v)
	case cmdKey:
		c.Key = cloneBytes(p)
	case cmdValue:
		c.Value = p // copied by decodeCommand unless nestedValue
	case cmdTTL:
		c.TTL = time.Duration(wire.Unzigzag(v))
	case cmdCond:
		c.Cond, err = decodeCondition(p)
	case cmdFence:
		c.Fence, err = decodeFence(p)
	case cmdPrev:
		c.Prev = v != 0
	case cmdModIndex:
		c.ModIndex = v
	case cmdChildID:
		c.ChildID = v
	case cmdServer:
		var srv Server
		srv, err = decodeServer(p)
		if err == nil && len(c.Servers) >= maxServers {
			err = fmt.Errorf("%w: more than %d servers", ErrInvalidCommand, maxServers)
		}
		c.Servers = append(c.Servers, srv)
	}
	return err
}

func decodeCondition(b []byte) (*Condition, error) {
	cond := &Condition{}
	err := walkFields(b, func(field, wt, v uint64, p []byte) error {
		switch field {
		case condKind:
			if v > 255 {
				return fmt.Errorf("%w: unknown condition kind %d", ErrInvalidCommand, v)
			}
			cond.Kind = CondKind(v)
			return wantType(field, wt, wire.TypeVarint)
		case condModIndex:
			cond.ModIndex = v
			return wantType(field, wt, wire.TypeVarint)
		case condValue:
			cond.Value = cloneBytes(p)
			return wantType(field, wt, wire.TypeBytes)
		}
		return nil
	})
	return cond, err
}

func decodeFence(b []byte) (*Fence, error) {
	f := &Fence{}
	err := walkFields(b, func(field, wt, v uint64, p []byte) error {
		switch field {
		case fenceLock:
			f.Lock = string(p)
			return wantType(field, wt, wire.TypeBytes)
		case fenceToken:
			f.Token = v
			return wantType(field, wt, wire.TypeVarint)
		}
		return nil
	})
	return f, err
}
