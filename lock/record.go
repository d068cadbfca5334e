package lock

import (
	"fmt"
	"math"
	"time"

	"github.com/cairndb/cairn/internal/wire"
)

// recordFormat is the first byte of an encoded Record (the value of a lock's
// entry in fsm's `locks` bucket, and so part of snapshots). A new layout
// takes a new version; fields are tag/value so a field can be added without
// one.
const recordFormat = 1

// Field numbers of a Record. Part of the on-disk format: never renumber.
const (
	recName      = 1
	recLimit     = 2
	recHolder    = 3 // repeated, nested
	recWaiter    = 4 // repeated, nested
	recLastToken = 5
	recDelaySeq  = 6
	recDelay     = 7
	recChangeSeq = 8

	holderToken     = 1
	holderOwner     = 2
	holderMode      = 3
	holderTTL       = 4
	holderLockDelay = 5
	holderWaiterID  = 6
	holderGrantSeq  = 7
	holderRenewSeq  = 8

	waiterID        = 1
	waiterOwner     = 2
	waiterMode      = 3
	waiterTTL       = 4
	waiterLockDelay = 5
	waiterDeadline  = 6
	waiterSeq       = 7
)

// EncodeRecord encodes r for storage. It does not validate r: Apply only
// produces valid records, and DecodeRecord checks what it reads.
func EncodeRecord(r *Record) []byte {
	b := make([]byte, 0, 32+len(r.Name)+48*(len(r.Holders)+len(r.Waiters)))
	b = append(b, recordFormat)
	b = wire.AppendBytes(b, recName, []byte(r.Name))
	b = wire.AppendUint(b, recLimit, uint64(r.Limit))
	var nb []byte
	for i := range r.Holders {
		h := &r.Holders[i]
		nb = wire.AppendUint(nb[:0], holderToken, h.Token)
		nb = wire.AppendBytes(nb, holderOwner, []byte(h.Owner))
		nb = wire.AppendUint(nb, holderMode, uint64(h.Mode))
		nb = wire.AppendInt(nb, holderTTL, int64(h.TTL))
		nb = wire.AppendInt(nb, holderLockDelay, int64(h.LockDelay))
		nb = wire.AppendBytes(nb, holderWaiterID, []byte(h.WaiterID))
		nb = wire.AppendUint(nb, holderGrantSeq, h.GrantSeq)
		nb = wire.AppendUint(nb, holderRenewSeq, h.RenewSeq)
		b = wire.AppendBytesAlways(b, recHolder, nb)
	}
	for i := range r.Waiters {
		w := &r.Waiters[i]
		nb = wire.AppendBytes(nb[:0], waiterID, []byte(w.ID))
		nb = wire.AppendBytes(nb, waiterOwner, []byte(w.Owner))
		nb = wire.AppendUint(nb, waiterMode, uint64(w.Mode))
		nb = wire.AppendInt(nb, waiterTTL, int64(w.TTL))
		nb = wire.AppendInt(nb, waiterLockDelay, int64(w.LockDelay))
		nb = wire.AppendInt(nb, waiterDeadline, w.Deadline)
		nb = wire.AppendUint(nb, waiterSeq, w.Seq)
		b = wire.AppendBytesAlways(b, recWaiter, nb)
	}
	b = wire.AppendUint(b, recLastToken, r.LastToken)
	b = wire.AppendUint(b, recDelaySeq, r.DelaySeq)
	b = wire.AppendInt(b, recDelay, int64(r.Delay))
	return wire.AppendUint(b, recChangeSeq, r.ChangeSeq)
}

// DecodeRecord decodes a stored record. It never panics and never returns
// a record that breaks the package's bounds (name, counts, modes, limit);
// every error wraps ErrCorrupt. The result does not alias b.
func DecodeRecord(b []byte) (*Record, error) {
	if len(b) == 0 || b[0] != recordFormat {
		return nil, fmt.Errorf("%w: lock record: unknown format", ErrCorrupt)
	}
	r := &Record{}
	err := walkFields(b[1:], func(field, wt, v uint64, p []byte) error {
		switch field {
		case recName:
			if err := wantType(field, wt, wire.TypeBytes); err != nil {
				return err
			}
			r.Name = string(p)
		case recLimit:
			if err := wantType(field, wt, wire.TypeVarint); err != nil {
				return err
			}
			if v > MaxLimit {
				return fmt.Errorf("%w: limit %d", ErrCorrupt, v)
			}
			r.Limit = int(v)
		case recHolder:
			if err := wantType(field, wt, wire.TypeBytes); err != nil {
				return err
			}
			if len(r.Holders) >= MaxHolders {
				return fmt.Errorf("%w: more than %d holders", ErrCorrupt, MaxHolders)
			}
			h, err := decodeHolder(p)
			if err != nil {
				return err
			}
			r.Holders = append(r.Holders, h)
		case recWaiter:
			if err := wantType(field, wt, wire.TypeBytes); err != nil {
				return err
			}
			if len(r.Waiters) >= MaxWaiters {
				return fmt.Errorf("%w: more than %d waiters", ErrCorrupt, MaxWaiters)
			}
			w, err := decodeWaiter(p)
			if err != nil {
				return err
			}
			r.Waiters = append(r.Waiters, w)
		case recLastToken, recDelaySeq, recDelay, recChangeSeq:
			if err := wantType(field, wt, wire.TypeVarint); err != nil {
				return err
			}
			switch field {
			case recLastToken:
				r.LastToken = v
			case recDelaySeq:
				r.DelaySeq = v
			case recDelay:
				r.Delay = time.Duration(wire.Unzigzag(v))
			case recChangeSeq:
				r.ChangeSeq = v
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lock record: %w", err)
	}
	if err := ValidName(r.Name); err != nil {
		return nil, fmt.Errorf("%w: lock record: %v", ErrCorrupt, err)
	}
	if r.Delay < 0 {
		return nil, fmt.Errorf("%w: lock record %q: negative delay", ErrCorrupt, r.Name)
	}
	return r, nil
}

func decodeHolder(b []byte) (Holder, error) {
	var h Holder
	err := walkFields(b, func(field, wt, v uint64, p []byte) error {
		want := uint64(wire.TypeVarint)
		if field == holderOwner || field == holderWaiterID {
			want = wire.TypeBytes
		}
		if field >= holderToken && field <= holderRenewSeq {
			if err := wantType(field, wt, want); err != nil {
				return err
			}
		}
		switch field {
		case holderToken:
			h.Token = v
		case holderOwner:
			h.Owner = string(p)
		case holderMode:
			h.Mode = Mode(min(v, math.MaxUint8))
		case holderTTL:
			h.TTL = time.Duration(wire.Unzigzag(v))
		case holderLockDelay:
			h.LockDelay = time.Duration(wire.Unzigzag(v))
		case holderWaiterID:
			h.WaiterID = string(p)
		case holderGrantSeq:
			h.GrantSeq = v
		case holderRenewSeq:
			h.RenewSeq = v
		}
		return nil
	})
	if err != nil {
		return h, err
	}
	if h.Token == 0 || h.Mode > Shared || h.TTL < 0 || h.LockDelay < 0 ||
		len(h.Owner) > MaxOwnerSize || len(h.WaiterID) > MaxWaiterIDSize {
		return h, fmt.Errorf("%w: holder with token %d out of bounds", ErrCorrupt, h.Token)
	}
	return h, nil
}

func decodeWaiter(b []byte) (Waiter, error) {
	var w Waiter
	err := walkFields(b, func(field, wt, v uint64, p []byte) error {
		want := uint64(wire.TypeVarint)
		if field == waiterID || field == waiterOwner {
			want = wire.TypeBytes
		}
		if field >= waiterID && field <= waiterSeq {
			if err := wantType(field, wt, want); err != nil {
				return err
			}
		}
		switch field {
		case waiterID:
			w.ID = string(p)
		case waiterOwner:
			w.Owner = string(p)
		case waiterMode:
			w.Mode = Mode(min(v, math.MaxUint8))
		case waiterTTL:
			w.TTL = time.Duration(wire.Unzigzag(v))
		case waiterLockDelay:
			w.LockDelay = time.Duration(wire.Unzigzag(v))
		case waiterDeadline:
			w.Deadline = wire.Unzigzag(v)
		case waiterSeq:
			w.Seq = v
		}
		return nil
	})
	if err != nil {
		return w, err
	}
	if w.Mode > Shared || w.TTL < 0 || w.LockDelay < 0 ||
		len(w.Owner) > MaxOwnerSize || len(w.ID) > MaxWaiterIDSize {
		return w, fmt.Errorf("%w: waiter %q out of bounds", ErrCorrupt, w.ID)
	}
	return w, nil
}
