package fsm

import (
	"errors"
	"fmt"

	"github.com/cairndb/cairn/internal/wire"
)

// Commands, results, stored records and range descriptors use the tag/value
// fields of internal/wire. walkFields and wantType report that package's
// format errors as ErrInvalidCommand, the error every decoder here returns.

func walkFields(b []byte, fn func(field, wt, v uint64, p []byte) error) error {
	return invalid(wire.Walk(b, fn))
}

func wantType(field, got, want uint64) error {
	return invalid(wire.WantType(field, got, want))
}

// invalid wraps a wire format error in ErrInvalidCommand, once: a nested
// message's error has been wrapped on its way through the inner walk.
func invalid(err error) error {
	if errors.Is(err, wire.ErrMalformed) && !errors.Is(err, ErrInvalidCommand) {
		return fmt.Errorf("%w: %w", ErrInvalidCommand, err)
	}
	return err
}

// cloneBytes copies p so decoded values never alias the input buffer, and
// maps empty to nil so decode(encode(x)) is deep-equal to x.
func cloneBytes(p []byte) []byte { return wire.Clone(p) }
