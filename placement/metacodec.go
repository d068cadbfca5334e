package placement

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// The meta group's persisted encodings (fsm/DESIGN.md "Persisted formats"):
// log entries are a metaCommand as JSON, snapshots the State as JSON, both
// with a format version "v" and explicit keys on every field, fsm.Range and
// Operation included (placement/format_test.go guards that). The keys are
// those cf3dc0d wrote; never rename one: add a field, or a new version with
// a decoder that still reads the old ones.
//
// Compatibility rule: a version is only written once every node that may
// apply it can read it; until then writers keep to the older version. A
// replica that meets a version it does not know rejects the entry, as it
// does an undecodable one, rather than guessing (fsm's command format does
// the same).
const (
	// metaCommandFormat is the "v" of every meta log entry. cf3dc0d wrote
	// 1 too; an entry without "v" (never written) is read as 1.
	metaCommandFormat = 1
	// metaSnapshotFormat is the "v" of a meta snapshot. Snapshots written
	// before the field existed (cf3dc0d) have no "v" and the same layout:
	// they are read as version 1.
	metaSnapshotFormat = 1
)

// ErrMetaFormat marks a meta log entry or snapshot this binary cannot read:
// malformed, or of a newer format version.
var ErrMetaFormat = errors.New("meta: unsupported encoding")

// encodeMetaCommand encodes c for the meta log at the current version. The
// bytes are exactly cf3dc0d's for the same command (format_test.go), so a
// rolling upgrade's older replicas read what newer leaders propose.
func encodeMetaCommand(c *metaCommand) ([]byte, error) {
	cc := *c
	cc.V = metaCommandFormat
	return json.Marshal(&cc)
}

// decodeMetaCommand decodes a meta log entry of any version this binary
// knows.
func decodeMetaCommand(b []byte) (metaCommand, error) {
	var c metaCommand
	if err := json.Unmarshal(b, &c); err != nil {
		return metaCommand{}, fmt.Errorf("%w: %v", ErrMetaFormat, err)
	}
	switch c.V {
	case 0, 1:
		c.V = metaCommandFormat
	default:
		return metaCommand{}, fmt.Errorf("%w: entry format v%d (this binary reads up to v%d)", ErrMetaFormat, c.V, metaCommandFormat)
	}
	return c, nil
}

// metaSnapshotJSON is a snapshot's layout: State's fields and "v".
type metaSnapshotJSON struct {
	V int `json:"v"`
	*State
}

// encodeMetaSnapshot encodes s as a meta snapshot at the current version.
func encodeMetaSnapshot(s *State) ([]byte, error) {
	return json.Marshal(metaSnapshotJSON{V: metaSnapshotFormat, State: s})
}

// decodeMetaSnapshot reads a meta snapshot of any version this binary knows.
func decodeMetaSnapshot(r io.Reader) (*State, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	snap := metaSnapshotJSON{State: &State{}}
	if err := json.Unmarshal(b, &snap); err != nil {
		return nil, fmt.Errorf("%w: snapshot: %v", ErrMetaFormat, err)
	}
	switch snap.V {
	case 0, 1: // 0: written before "v" existed, the same layout
	default:
		return nil, fmt.Errorf("%w: snapshot format v%d (this binary reads up to v%d)", ErrMetaFormat, snap.V, metaSnapshotFormat)
	}
	if snap.State.Nodes == nil {
		snap.State.Nodes = map[string]NodeInfo{}
	}
	return snap.State, nil
}
