package test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/shard"
)

// testSeed returns $CAIRN_SEED or a fresh seed, logged so a failing run can
// be replayed.
func testSeed(t *testing.T) uint64 {
	if s := os.Getenv("CAIRN_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CAIRN_SEED: %v", err)
		}
		return v
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (replay with CAIRN_SEED=%d)", seed, seed)
	return seed
}

// Scenario S25, Invariants I1, I2, I5: concurrent get/put/CAS from many
// clients over several keys and shards, while the nemesis kills, restarts,
// isolates and pauses nodes at random (DefaultFaults); porcupine must find
// the history linearizable. On both raft log stores: the WAL (the default)
// for 15s, raft-boltdb for a shorter run that still restarts nodes on their
// raft.db files (make test stays within its budget); CAIRN_CHAOS=1 runs each
// for two minutes.
func TestLinearizableUnderFaults(t *testing.T) {
	for _, tc := range []struct {
		store    shard.LogStoreKind
		duration time.Duration
	}{
		{shard.LogStoreWAL, 15 * time.Second},
		{shard.LogStoreBoltDB, 8 * time.Second},
	} {
		t.Run(string(tc.store), func(t *testing.T) {
			duration := tc.duration
			if os.Getenv("CAIRN_CHAOS") != "" {
				duration = 2 * time.Minute
			}
			testLinearizableUnderFaults(t, tc.store, duration)
		})
	}
}

func testLinearizableUnderFaults(t *testing.T, store shard.LogStoreKind, duration time.Duration) {
	seed := testSeed(t)
	prefix := "lin/"
	// Split inside the workload's key space so its keys span four shards.
	// Delayable: the nemesis pauses nodes.
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{prefix + "k2", prefix + "k4", prefix + "k6"},
		LogStore: store, Delayable: true})
	clients := NewClients(t, c, 6)
	ctx, cancel := context.WithTimeout(context.Background(), duration+time.Minute)
	defer cancel()

	nem := &Nemesis{C: c, Seed: seed, Shards: []uint64{1, 2, 3, 4}}
	var wg sync.WaitGroup
	stopNemesis := nem.Start(ctx, duration, &wg)
	defer stopNemesis()

	cfg := clusterWorkload(seed, clients, prefix, duration)
	rec := RunRegisterWorkload(ctx, t, cfg)
	wg.Wait()
	st := rec.Stats()
	t.Logf("faults: %s", nem.Summary())
	t.Logf("operations: %+v", st)
	if st.OK < 100 {
		t.Fatalf("only %d operations succeeded: the cluster was unavailable for most of the run", st.OK)
	}
	if store == shard.LogStoreBoltDB {
		checkRaftDBs(t, c)
	}
	rec.Check(t, 60*time.Second)
}

// checkRaftDBs: a cluster on the boltdb store keeps its groups' logs in
// raft.db files (meta/ and shards/<id>/) and has no WAL.
func checkRaftDBs(t *testing.T, c *Cluster) {
	t.Helper()
	for _, h := range c.Nodes() {
		dir := h.DataDir
		dbs, _ := filepath.Glob(filepath.Join(dir, "*", "raft.db"))
		shardDBs, _ := filepath.Glob(filepath.Join(dir, "shards", "*", "raft.db"))
		if len(dbs) == 0 || len(shardDBs) == 0 {
			t.Errorf("%s: raft.db files %v %v: want meta's and the shards'", dir, dbs, shardDBs)
		}
		if wal, _ := filepath.Glob(filepath.Join(dir, "raft-wal", "*.wal")); len(wal) > 0 {
			t.Errorf("%s: a boltdb node wrote WAL segments %v", dir, wal)
		}
	}
}

// clusterWorkload is the register workload the fault tests run: a store per
// client, eight keys under prefix, for duration, with client errors
// classified by outcome.
func clusterWorkload(seed uint64, clients []*client.Client, prefix string, duration time.Duration) WorkloadConfig {
	cfg := DefaultWorkloadConfig()
	cfg.Seed = int64(seed)
	cfg.Clients = len(clients)
	cfg.Keys = 8
	cfg.KeyPrefix = prefix
	cfg.Ops = 100000
	cfg.Duration = duration
	cfg.OpTimeout = 5 * time.Second
	cfg.Stores = func(i int) KVStore { return ClientStore{C: clients[i]} }
	cfg.Classify = ClassifyClientError
	return cfg
}
