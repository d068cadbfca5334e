package lock

import (
	"fmt"
	"math"
	"time"

	"github.com/cairndb/cairn/internal/wire"
)

// commandFormat is the first byte of an encoded Command. fsm carries the
// bytes as the value of its lock op, with the lock name as the key (so the
// range check of invariant I5 applies unchanged) and the proposer's time in
// its Command.Time.
const commandFormat = 1

// Field numbers of a Command. Part of the log format: never renumber.
const (
	cmdKind      = 1
	cmdName      = 2
	cmdOwner     = 3
	cmdTTL       = 4
	cmdWait      = 5
	cmdMode      = 6
	cmdLimit     = 7
	cmdLockDelay = 8
	cmdWaiterID  = 9
	cmdToken     = 10
	cmdRenewSeq  = 11
	cmdDelaySeq  = 12
)

// EncodeCommand encodes c for the raft log. It checks only what the decoder
// checks (kind, name, sizes), so anything DecodeCommand accepts re-encodes;
// the rest (TTL bounds, limit, ...) is Apply's to refuse deterministically.
func EncodeCommand(c Command) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil command", ErrCorrupt)
	}
	f := flatten(c)
	if err := f.check(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 24+len(f.name)+len(f.owner)+len(f.waiterID))
	b = append(b, commandFormat)
	b = wire.AppendUint(b, cmdKind, uint64(f.kind))
	b = wire.AppendBytes(b, cmdName, []byte(f.name))
	b = wire.AppendBytes(b, cmdOwner, []byte(f.owner))
	b = wire.AppendInt(b, cmdTTL, int64(f.ttl))
	b = wire.AppendInt(b, cmdWait, int64(f.wait))
	b = wire.AppendUint(b, cmdMode, uint64(f.mode))
	b = wire.AppendInt(b, cmdLimit, f.limit)
	b = wire.AppendInt(b, cmdLockDelay, int64(f.lockDelay))
	b = wire.AppendBytes(b, cmdWaiterID, []byte(f.waiterID))
	b = wire.AppendUint(b, cmdToken, f.token)
	b = wire.AppendUint(b, cmdRenewSeq, f.renewSeq)
	return wire.AppendUint(b, cmdDelaySeq, f.delaySeq), nil
}

// DecodeCommand decodes an entry written by EncodeCommand into one of the
// concrete command values (Acquire, Renew, ...). It never panics; errors
// wrap ErrCorrupt. Unknown fields are skipped; an unknown version or kind
// is an error.
func DecodeCommand(b []byte) (Command, error) {
	if len(b) == 0 || b[0] != commandFormat {
		return nil, fmt.Errorf("%w: lock command: unknown format", ErrCorrupt)
	}
	var f flat
	err := walkFields(b[1:], func(field, wt, v uint64, p []byte) error {
		switch field {
		case cmdName, cmdOwner, cmdWaiterID:
			if err := wantType(field, wt, wire.TypeBytes); err != nil {
				return err
			}
		case cmdKind, cmdTTL, cmdWait, cmdMode, cmdLimit, cmdLockDelay, cmdToken, cmdRenewSeq, cmdDelaySeq:
			if err := wantType(field, wt, wire.TypeVarint); err != nil {
				return err
			}
		}
		switch field {
		case cmdKind:
			f.kind = Kind(min(v, math.MaxUint8))
		case cmdName:
			f.name = string(p)
		case cmdOwner:
			f.owner = string(p)
		case cmdTTL:
			f.ttl = time.Duration(wire.Unzigzag(v))
		case cmdWait:
			f.wait = time.Duration(wire.Unzigzag(v))
		case cmdMode:
			f.mode = Mode(min(v, math.MaxUint8))
		case cmdLimit:
			f.limit = wire.Unzigzag(v)
		case cmdLockDelay:
			f.lockDelay = time.Duration(wire.Unzigzag(v))
		case cmdWaiterID:
			f.waiterID = string(p)
		case cmdToken:
			f.token = v
		case cmdRenewSeq:
			f.renewSeq = v
		case cmdDelaySeq:
			f.delaySeq = v
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lock command: %w", err)
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	return f.command(), nil
}

// flat is every command's fields side by side, for the codec.
type flat struct {
	kind                 Kind
	name, owner          string
	ttl, wait, lockDelay time.Duration
	mode                 Mode
	limit                int64
	waiterID             string
	token                uint64
	renewSeq, delaySeq   uint64
}

func flatten(c Command) flat {
	f := flat{kind: c.Kind(), name: c.LockName()}
	switch c := c.(type) {
	case Acquire:
		f.owner, f.ttl, f.wait, f.mode, f.limit, f.lockDelay, f.waiterID =
			c.Owner, c.TTL, c.Wait, c.Mode, int64(c.Limit), c.LockDelay, c.WaiterID
	case *Acquire:
		return flatten(*c)
	case Renew:
		f.token = c.Token
	case *Renew:
		f.token = c.Token
	case Release:
		f.token = c.Token
	case *Release:
		f.token = c.Token
	case Expire:
		f.token, f.renewSeq = c.Token, c.RenewSeq
	case *Expire:
		f.token, f.renewSeq = c.Token, c.RenewSeq
	case CancelWait:
		f.waiterID = c.WaiterID
	case *CancelWait:
		f.waiterID = c.WaiterID
	case EndDelay:
		f.delaySeq = c.DelaySeq
	case *EndDelay:
		f.delaySeq = c.DelaySeq
	}
	return f
}

func (f flat) check() error {
	if f.kind < KindAcquire || f.kind > KindEndDelay {
		return fmt.Errorf("%w: lock command: unknown kind %d", ErrCorrupt, f.kind)
	}
	if err := ValidName(f.name); err != nil {
		return fmt.Errorf("%w: lock command: %v", ErrCorrupt, err)
	}
	if len(f.owner) > MaxOwnerSize || len(f.waiterID) > MaxWaiterIDSize {
		return fmt.Errorf("%w: lock command: owner or request id too long", ErrCorrupt)
	}
	if f.limit < math.MinInt32 || f.limit > math.MaxInt32 {
		return fmt.Errorf("%w: lock command: limit %d", ErrCorrupt, f.limit)
	}
	return nil
}

func (f flat) command() Command {
	switch f.kind {
	case KindAcquire:
		return Acquire{Name: f.name, Owner: f.owner, TTL: f.ttl, Wait: f.wait, Mode: f.mode,
			Limit: int(f.limit), LockDelay: f.lockDelay, WaiterID: f.waiterID}
	case KindRenew:
		return Renew{Name: f.name, Token: f.token}
	case KindRelease:
		return Release{Name: f.name, Token: f.token}
	case KindExpire:
		return Expire{Name: f.name, Token: f.token, RenewSeq: f.renewSeq}
	case KindCancelWait:
		return CancelWait{Name: f.name, WaiterID: f.waiterID}
	case KindExpireWaiters:
		return ExpireWaiters{Name: f.name}
	}
	return EndDelay{Name: f.name, DelaySeq: f.delaySeq}
}
