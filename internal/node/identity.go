package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cairndb/cairn/internal/durable"
)

// identity is what a data dir remembers about the node that owns it, in
// <data-dir>/node.json. Raft configurations name nodes by id and raft
// address, so both must stay fixed.
//
// V is the file's format version (identityFormat). Files written before it
// existed (cf3dc0d) have no "v" and the same layout: they are read as
// version 1. A newer version is refused rather than half-read.
type identity struct {
	V        int    `json:"v,omitempty"`
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	// Level is the highest cluster command level (placement/level.go) the
	// node has seen: a binary below it must not run here.
	Level int `json:"level,omitempty"`
}

// identityFormat is the newest node.json version this binary reads.
// Version 2 is version 1 with "level" set: it is written once the node has
// seen a cluster command level above 0, so that a binary from before levels,
// which ignores "level" but refuses a "v" it does not know, refuses the data
// dir too instead of applying commands it cannot know (cf3dc0d's, which
// predates "v", would not: downgrading that far is not supported). Without a level the
// file stays version 1, which any binary since cf3dc0d reads.
const identityFormat = 2

// isNewDataDir reports whether dir is missing or empty: no node has used
// it yet.
func isNewDataDir(dir string) bool {
	entries, err := os.ReadDir(dir)
	return errors.Is(err, os.ErrNotExist) || err == nil && len(entries) == 0
}

// checkIdentity records the identity in a new data dir, or verifies that the
// flags match the one stored there and that this binary's command level
// (level) is not below the cluster level the dir has seen. It returns that
// recorded level.
func checkIdentity(dir, id, raftAddr string, level int) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, "node.json")
	st, err := readIdentity(dir)
	if errors.Is(err, os.ErrNotExist) {
		return 0, writeIdentity(path, identity{V: 1, ID: id, RaftAddr: raftAddr})
	}
	if err != nil {
		return 0, err
	}
	if st.ID != id {
		return 0, fmt.Errorf("data dir %s belongs to node %q, not --id %q", dir, st.ID, id)
	}
	if st.RaftAddr != raftAddr {
		return 0, fmt.Errorf("data dir %s was created with --raft-addr %s, not %s (raft membership names this address)",
			dir, st.RaftAddr, raftAddr)
	}
	if st.Level > level {
		return 0, fmt.Errorf("data dir %s: its cluster runs shard command level %d and this binary applies up to "+
			"level %d: a downgrade below the cluster's level is not possible (run a cairn binary of level %d or later)",
			dir, st.Level, level, st.Level)
	}
	return st.Level, nil
}

// readIdentity reads dir's node.json.
func readIdentity(dir string) (identity, error) {
	b, err := os.ReadFile(filepath.Join(dir, "node.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return identity{}, err
		}
		return identity{}, fmt.Errorf("data dir: %w", err)
	}
	var st identity
	if err := json.Unmarshal(b, &st); err != nil {
		return identity{}, fmt.Errorf("data dir %s: corrupt node.json: %w", dir, err)
	}
	if st.V > identityFormat {
		return identity{}, fmt.Errorf("data dir %s: node.json format v%d was written by a newer cairn (this one reads up to v%d)",
			dir, st.V, identityFormat)
	}
	return st, nil
}

// recordLevel raises the cluster level node.json remembers to level.
func recordLevel(dir string, level int) error {
	st, err := readIdentity(dir)
	if err != nil {
		return err
	}
	if level <= st.Level {
		return nil
	}
	st.Level = level
	st.V = 2 // see identityFormat
	return writeIdentity(filepath.Join(dir, "node.json"), st)
}

// writeIdentity replaces path with st, durably (durable.WriteFile).
func writeIdentity(path string, st identity) error {
	b, _ := json.Marshal(st)
	if err := durable.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	return nil
}
