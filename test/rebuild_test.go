package test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Invariants I5, I6: a node whose data dir was written with fsync on every
// state machine commit (--fsm-sync: no durability sidecar; no raft snapshot
// yet) restarts with deferred sync, and then its machine crashes. Its state
// machine files are rebuilt and raft replays each group's log from index 1:
// every replica must come back with the range its group started from (here
// [m, +inf) for the second range), not the id-only range a node reopens
// replicas with (whole keyspace, epoch 0), and converge with its peers.
func TestRebuildAfterMachineCrashStartsFromGenesis(t *testing.T) {
	c := StartCluster(t, ClusterConfig{FSMSync: true, InitialSplits: []string{"m"}})
	for i := 0; i < 10; i++ {
		mustPut(t, c.Node(i%3).HTTPAddr, fmt.Sprintf("%c-key", 'a'+2*i), "v1")
	}
	const n3 = 2
	h := c.Node(n3)
	c.Kill(n3)
	h.cfg.FSMSync = false // the same data dir, now with deferred sync
	h.cfg.Knobs.BootID = func() (string, error) { return "boot-A", nil }
	c.Restart(n3)
	c.WaitReady(30 * time.Second)
	for i := 0; i < 10; i++ {
		mustPut(t, c.Node(i%3).HTTPAddr, fmt.Sprintf("%c-key", 'a'+2*i), "v2")
	}
	c.Kill(n3)
	// The machine crashes: every state machine file is left open, with
	// unsynced commits, under boot-A; the node comes back under boot-B.
	ids := markOpenUnder(t, h.DataDir, "boot-A")
	if len(ids) != 2 {
		t.Fatalf("%s has shards %v, want 2", h.ID, ids)
	}
	h.cfg.Knobs.BootID = func() (string, error) { return "boot-B", nil }
	c.Restart(n3)
	c.WaitReady(30 * time.Second)
	for _, id := range ids {
		WaitFor(t, 30*time.Second, fmt.Sprintf("shard %d on %s has its peers' range", id, h.ID), func() error {
			want, ok := c.Node(0).Node.Host().Replica(id)
			if !ok {
				return fmt.Errorf("n1 has no replica of shard %d", id)
			}
			rep, ok := h.Node.Host().Replica(id)
			if !ok {
				return fmt.Errorf("%s has no replica of shard %d", h.ID, id)
			}
			if !rep.FSM().Rebuilt() {
				t.Fatalf("shard %d on %s was not rebuilt: the test did not simulate a machine crash", id, h.ID)
			}
			got, exp := rep.Range(), want.Range()
			if string(got.Start) != string(exp.Start) || string(got.End) != string(exp.End) || got.Epoch != exp.Epoch {
				return fmt.Errorf("Invariants I5, I6: shard %d on %s rebuilt to range [%q, %q) epoch %d, its peers have [%q, %q) epoch %d",
					id, h.ID, got.Start, got.End, got.Epoch, exp.Start, exp.End, exp.Epoch)
			}
			return nil
		})
		assertReplicasConverge(t, c, id)
	}
}

// markOpenUnder rewrites every state machine sidecar under dataDir as a
// machine crash leaves it: open, under boot. It returns the shard ids.
func markOpenUnder(t *testing.T, dataDir, boot string) []uint64 {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dataDir, "shards"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for _, e := range ents {
		id, err := strconv.ParseUint(e.Name(), 10, 64)
		if err != nil {
			continue
		}
		path := filepath.Join(dataDir, "shards", e.Name(), "fsm.db.state")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("shard %d: %v", id, err)
		}
		sc := map[string]any{}
		if err := json.Unmarshal(b, &sc); err != nil {
			t.Fatalf("shard %d sidecar: %v", id, err)
		}
		sc["state"], sc["boot"] = "open", boot
		if b, err = json.Marshal(sc); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}
