package lock

import (
	"errors"
	"fmt"

	"github.com/cairndb/cairn/internal/wire"
)

// Records and commands use the tag/value fields of internal/wire, the same
// helpers as fsm's commands and records (lock/ does not import fsm/; fsm
// will import lock). walkFields and wantType report that package's format
// errors as ErrCorrupt.

// ErrCorrupt wraps every decoding error of a record or a command. A record
// that fails to decode is corrupt stored state; a command that fails is
// rejected the same way on every replica.
var ErrCorrupt = errors.New("lock: malformed encoding")

func walkFields(b []byte, fn func(field, wt, v uint64, p []byte) error) error {
	return corrupt(wire.Walk(b, fn))
}

func wantType(field, got, want uint64) error {
	return corrupt(wire.WantType(field, got, want))
}

// corrupt wraps a wire format error in ErrCorrupt, once: a nested message's
// error has been wrapped on its way through the inner walk.
func corrupt(err error) error {
	if errors.Is(err, wire.ErrMalformed) && !errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return err
}
