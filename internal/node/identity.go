package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
}

const identityFormat = 1

// isNewDataDir reports whether dir is missing or empty: no node has used
// it yet.
func isNewDataDir(dir string) bool {
	entries, err := os.ReadDir(dir)
	return errors.Is(err, os.ErrNotExist) || err == nil && len(entries) == 0
}

// checkIdentity records the identity in a new data dir, or verifies that the
// flags match the one stored there.
func checkIdentity(dir, id, raftAddr string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	path := filepath.Join(dir, "node.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		b, _ = json.Marshal(identity{V: identityFormat, ID: id, RaftAddr: raftAddr})
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return fmt.Errorf("data dir: %w", err)
		}
		return os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	var st identity
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("data dir %s: corrupt node.json: %w", dir, err)
	}
	if st.V > identityFormat {
		return fmt.Errorf("data dir %s: node.json format v%d was written by a newer cairn (this one reads up to v%d)",
			dir, st.V, identityFormat)
	}
	if st.ID != id {
		return fmt.Errorf("data dir %s belongs to node %q, not --id %q", dir, st.ID, id)
	}
	if st.RaftAddr != raftAddr {
		return fmt.Errorf("data dir %s was created with --raft-addr %s, not %s (raft membership names this address)",
			dir, st.RaftAddr, raftAddr)
	}
	return nil
}
