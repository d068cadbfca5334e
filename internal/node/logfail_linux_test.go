//go:build linux

package node

import (
	"testing"

	"github.com/cairndb/cairn/internal/faultfs"
	"github.com/cairndb/cairn/shard"
)

// Invariant I1, on the boltdb store: a failed write of one group's raft.db
// (ENOSPC under bbolt) stops the node's serving exactly as a failed WAL
// commit does (TestNodeLogFailureStopsServing).
func TestNodeLogFailureStopsServingBoltDB(t *testing.T) {
	var files faultfs.Files
	arm := func() {
		if err := files.Arm(); err != nil {
			t.Fatal(err)
		}
	}
	disarm := func() {
		if err := files.Disarm(); err != nil {
			t.Fatal(err)
		}
	}
	testNodeLogFailure(t, shard.LogStoreBoltDB, &Knobs{Bolt: &shard.BoltKnobs{OpenFile: files.OpenFile}}, arm, disarm)
}
