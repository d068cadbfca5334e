package node

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/internal/syncbuf"
	"github.com/cairndb/cairn/shard"
)

// soloConfig is a one-node config on free loopback ports, logging to out.
func soloConfig(t *testing.T, dir string, out *syncbuf.Buffer) Config {
	t.Helper()
	cfg := DefaultConfig()
	cfg.ID, cfg.DataDir = "n1", dir
	httpLn, raftLn := listen(t), listen(t)
	cfg.HTTPListener, cfg.RaftListener = httpLn, raftLn
	cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr = httpLn.Addr().String(), raftLn.Addr().String(), freeUDPAndTCP(t)
	cfg.Replication, cfg.NoAutoPlacement = 1, true
	cfg.Tuning, cfg.MetaTuning = shard.FastRaftTuning(), shard.FastRaftTuning()
	cfg.Logger = slog.New(slog.NewTextHandler(out, nil))
	return cfg
}

// A new node given neither --bootstrap-expect nor --join could never form
// or join a cluster: it refuses to start and says why, instead of waiting
// silently forever (issue 11 item 9). A data dir that already belongs to a
// cluster restarts without them.
func TestStartWithoutFormationFlags(t *testing.T) {
	dir := t.TempDir()
	var logs syncbuf.Buffer
	cfg := soloConfig(t, dir, &logs)
	n, err := Start(cfg)
	if err == nil {
		n.Close()
		t.Fatal("a new node with neither --bootstrap-expect nor --join started")
	}
	if !errors.Is(err, ErrNoFormation) || !strings.Contains(err.Error(), "--bootstrap-expect") ||
		!strings.Contains(err.Error(), "--join") {
		t.Fatalf("error %v does not say what to set", err)
	}

	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("the refused start left %d files in the data dir", len(entries))
	}

	// A data dir used before but never added to a cluster (a --join that
	// reached nobody) is refused too, once its meta group is open.
	used := t.TempDir()
	ucfg := soloConfig(t, used, &logs)
	ucfg.Join = []string{"127.0.0.1:1"}
	un, err := Start(ucfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := un.Close(); err != nil {
		t.Fatal(err)
	}
	ucfg = soloConfig(t, used, &logs)
	ucfg.RaftAddr = un.cfg.RaftAddr // the data dir's identity
	ucfg.RaftListener.Close()
	ucfg.HTTPListener.Close()
	ucfg.HTTPListener, ucfg.RaftListener = nil, nil
	if un, err = Start(ucfg); !errors.Is(err, ErrNoFormation) {
		if err == nil {
			un.Close()
		}
		t.Fatalf("a used data dir that never joined a cluster, restarted with neither flag: %v", err)
	}

	// Form a one-node cluster in dir, stop it, restart without the flags
	// (on the same addresses: the node listens on them itself).
	cfg.HTTPListener.Close()
	cfg.RaftListener.Close()
	cfg.HTTPListener, cfg.RaftListener = nil, nil
	cfg.BootstrapExpect = 1
	if n, err = Start(cfg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "formed", n.Ready)
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.BootstrapExpect = 0
	if n, err = Start(cfg); err != nil {
		t.Fatalf("restart of a cluster's node without the formation flags: %v", err)
	}
	defer n.Close()
	waitFor(t, 30*time.Second, "ready after the restart", n.Ready)
}

// A node waiting for its cluster to form says what it waits for at once,
// and again periodically (issue 11 item 9).
func TestWaitingToFormIsLogged(t *testing.T) {
	var logs syncbuf.Buffer
	cfg := soloConfig(t, t.TempDir(), &logs)
	cfg.BootstrapExpect = 3
	cfg.Knobs = &Knobs{FormationLogEvery: 100 * time.Millisecond}
	n, err := Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	waitFor(t, 10*time.Second, "two waiting lines", func() bool {
		return strings.Count(logs.String(), "waiting for the cluster to form") >= 2
	})
	line := logs.String()
	line = line[strings.Index(line, "waiting for the cluster to form"):]
	line = line[:strings.IndexByte(line, '\n')]
	for _, want := range []string{"bootstrap_expect=3", "met=1", "n1"} {
		if !strings.Contains(line, want) {
			t.Errorf("waiting line %q lacks %q", line, want)
		}
	}
}
