package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// identity is what a data dir remembers about the node that owns it. Raft
// configurations name nodes by id and raft address, so both must stay fixed.
type identity struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
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
		b, _ = json.Marshal(identity{ID: id, RaftAddr: raftAddr})
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
	if st.ID != id {
		return fmt.Errorf("data dir %s belongs to node %q, not --id %q", dir, st.ID, id)
	}
	if st.RaftAddr != raftAddr {
		return fmt.Errorf("data dir %s was created with --raft-addr %s, not %s (raft membership names this address)",
			dir, st.RaftAddr, raftAddr)
	}
	return nil
}
