package node

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/shard"
)

// startSingle starts a one-node cluster on dir with the raft log store
// store, binding the raft address *raftAddr (picked on the first start and
// kept, as a data dir's raft address is fixed).
func startSingle(t *testing.T, dir string, store shard.LogStoreKind, raftAddr *string) (*Node, error) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ID, cfg.DataDir = "n1", dir
	if store != "" {
		cfg.LogStore = store
	}
	httpLn := listen(t)
	var raftLn net.Listener
	if *raftAddr == "" {
		raftLn = listen(t)
		*raftAddr = raftLn.Addr().String()
	} else {
		var err error
		if raftLn, err = net.Listen("tcp", *raftAddr); err != nil {
			t.Fatal(err)
		}
	}
	cfg.HTTPListener, cfg.RaftListener = httpLn, raftLn
	cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr = httpLn.Addr().String(), raftLn.Addr().String(), freeUDPAndTCP(t)
	cfg.BootstrapExpect, cfg.Replication, cfg.NoAutoPlacement = 1, 1, true
	cfg.Tuning, cfg.MetaTuning = shard.FastRaftTuning(), shard.FastRaftTuning()
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	n, err := Start(cfg)
	if err != nil {
		httpLn.Close()
		raftLn.Close()
	}
	return n, err
}

// Invariant I1: a node whose data dir was written with one raft log store
// refuses to start with the other, saying which store to start with, and
// starts again with its own store and data.
func TestNodeRefusesOtherLogStore(t *testing.T) {
	for _, tc := range []struct{ written, other shard.LogStoreKind }{
		{shard.LogStoreWAL, shard.LogStoreBoltDB},
		{shard.LogStoreBoltDB, shard.LogStoreWAL},
	} {
		t.Run(string(tc.written), func(t *testing.T) {
			dir := t.TempDir()
			raftAddr := "" // fixed for the data dir
			start := func(store shard.LogStoreKind) (*Node, error) { return startSingle(t, dir, store, &raftAddr) }
			n, err := start(tc.written)
			if err != nil {
				t.Fatal(err)
			}
			base := "http://" + n.HTTPAddr()
			waitFor(t, 30*time.Second, "a first write", func() bool {
				s, _ := put(t, base+"/v1/kv/a", `{"value":"1"}`)
				return s == http.StatusOK
			})
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}

			n, err = start(tc.other)
			if err == nil {
				n.Close()
				t.Fatalf("a %s data dir started with --log-store %s", tc.written, tc.other)
			}
			if !errors.Is(err, shard.ErrLogStoreMismatch) || !strings.Contains(err.Error(), "--log-store "+string(tc.written)) {
				t.Errorf("start with %s: %v, want ErrLogStoreMismatch naming --log-store %s", tc.other, err, tc.written)
			}
			t.Logf("refused: %v", err)

			n, err = start(tc.written)
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			base = "http://" + n.HTTPAddr()
			waitFor(t, 30*time.Second, "the first write read back", func() bool {
				s, body := get(t, base+"/v1/kv/a")
				return s == http.StatusOK && strings.Contains(body, `"1"`)
			})
		})
	}
}
