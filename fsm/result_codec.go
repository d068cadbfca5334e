package fsm

import (
	"errors"
	"fmt"

	"github.com/cairndb/cairn/internal/wire"
)

// Results are stored in the dedup bucket so that a retried request gets the
// original answer back (invariant I7). Only outcomes of the command itself
// are stored: see dedupable.

// Field numbers of a stored Result.
const (
	resIndex    = 1
	resKV       = 2
	resPrev     = 3
	resDeleted  = 4
	resCondErr  = 5
	resStaleErr = 6
	resTxn      = 7 // fsm/txn.go: appendTxnResult

	condErrKey     = 1
	condErrCurrent = 2

	staleKey      = 1
	staleLock     = 2
	staleToken    = 3
	staleAccepted = 4
)

// dedupable reports whether r is the outcome of executing the command, as
// opposed to a routing or validation outcome (WrongShardError,
// ErrInvalidCommand) that the client retries elsewhere or not at all.
func dedupable(r *Result) bool {
	if r.Err == nil {
		return true
	}
	var ce *ConditionError
	var se *StaleTokenError
	return errors.As(r.Err, &ce) || errors.As(r.Err, &se)
}

func encodeResult(r *Result) []byte {
	b := []byte{recordFormat}
	b = wire.AppendUint(b, resIndex, r.Index)
	if r.KV != nil {
		b = appendNestedKV(b, resKV, r.KV)
	}
	if r.Prev != nil {
		b = appendNestedKV(b, resPrev, r.Prev)
	}
	b = wire.AppendUint(b, resDeleted, uint64(r.Deleted))
	if r.Txn != nil {
		b = wire.AppendBytesAlways(b, resTxn, appendTxnResult(nil, r.Txn))
	}
	var ce *ConditionError
	var se *StaleTokenError
	switch {
	case errors.As(r.Err, &ce):
		var eb []byte
		eb = wire.AppendBytes(eb, condErrKey, ce.Key)
		if ce.Current != nil {
			eb = appendNestedKV(eb, condErrCurrent, ce.Current)
		}
		b = wire.AppendBytesAlways(b, resCondErr, eb)
	case errors.As(r.Err, &se):
		var eb []byte
		eb = wire.AppendBytes(eb, staleKey, se.Key)
		eb = wire.AppendBytes(eb, staleLock, []byte(se.Lock))
		eb = wire.AppendUint(eb, staleToken, se.Token)
		eb = wire.AppendUint(eb, staleAccepted, se.Accepted)
		b = wire.AppendBytesAlways(b, resStaleErr, eb)
	}
	return b
}

func decodeResult(b []byte) (*Result, error) {
	if len(b) == 0 || b[0] != recordFormat {
		return nil, fmt.Errorf("%w: result record", errCorrupt)
	}
	r := &Result{}
	err := walkFields(b[1:], func(field, wt, v uint64, p []byte) error {
		var err error
		switch field {
		case resIndex:
			r.Index = v
		case resKV:
			r.KV, err = decodeKV(p)
		case resPrev:
			r.Prev, err = decodeKV(p)
		case resDeleted:
			r.Deleted = int(v)
		case resCondErr:
			r.Err, err = decodeConditionError(p)
		case resStaleErr:
			r.Err, err = decodeStaleTokenError(p)
		case resTxn:
			r.Txn, err = decodeTxnResult(p)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%w: result record: %v", errCorrupt, err)
	}
	return r, nil
}

func decodeConditionError(b []byte) (*ConditionError, error) {
	ce := &ConditionError{}
	err := walkFields(b, func(field, wt, v uint64, p []byte) error {
		var err error
		switch field {
		case condErrKey:
			ce.Key = cloneBytes(p)
		case condErrCurrent:
			ce.Current, err = decodeKV(p)
		}
		return err
	})
	return ce, err
}

func decodeStaleTokenError(b []byte) (*StaleTokenError, error) {
	se := &StaleTokenError{}
	err := walkFields(b, func(field, wt, v uint64, p []byte) error {
		switch field {
		case staleKey:
			se.Key = cloneBytes(p)
		case staleLock:
			se.Lock = string(p)
		case staleToken:
			se.Token = v
		case staleAccepted:
			se.Accepted = v
		}
		return nil
	})
	return se, err
}
