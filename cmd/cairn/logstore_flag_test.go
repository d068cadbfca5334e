package main

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/internal/cli"
	"github.com/cairndb/cairn/shard"
)

// --log-store reaches node.Config.LogStore (wal by default); an unknown store
// is bad usage (exit 2) naming the flag, for cairn server and cairn dev.
func TestLogStoreFlag(t *testing.T) {
	for _, cmd := range []*cobra.Command{newServerCmd(), newDevCmd()} {
		if fl := cmd.Flags().Lookup("log-store"); fl == nil || fl.DefValue != string(shard.LogStoreWAL) {
			t.Errorf("cairn %s --log-store: %+v, want a flag defaulting to wal", cmd.Name(), fl)
		}
	}
	for _, store := range shard.LogStoreKinds {
		f := serverFlags{id: "n1", dataDir: t.TempDir(), logStore: string(store), logLevel: "info",
			httpAddr: "127.0.0.1:1", raftAddr: "127.0.0.1:2", gossipAddr: "127.0.0.1:3",
			heartbeat: time.Second, deadAfter: time.Minute, splitSize: 64 << 20}
		if cfg, err := f.config(); err != nil || cfg.LogStore != store {
			t.Errorf("--log-store %s: config LogStore %q, %v", store, cfg.LogStore, err)
		}
	}

	for _, name := range []string{"server", "dev"} {
		cmd := newServerCmd()
		args := []string{"--id", "n1", "--data-dir", t.TempDir(), "--log-store", "bolt"}
		if name == "dev" {
			cmd, args = newDevCmd(), []string{"--log-store", "bolt"}
		}
		cmd.SetArgs(args)
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		err := cmd.Execute()
		var ue cli.UsageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--log-store") {
			t.Errorf("cairn %s --log-store bolt: %v, want a usage error naming --log-store", name, err)
		}
	}
}
