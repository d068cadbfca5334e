package main

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/internal/cli"
	"github.com/cairndb/cairn/internal/node"
	"github.com/cairndb/cairn/shard"
)

func newDevCmd() *cobra.Command {
	var nodes int
	var splits []string
	var keep bool
	var logStore string
	var gcPercent int
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a throw-away local cluster in one process (data in a temp dir)",
		Long: `Run a throw-away cluster of --nodes nodes in one process with data in a temp
dir. Node i serves HTTP on 127.0.0.1:7070+10*(i-1) (so n1 is 127.0.0.1:7070).
Ctrl-C ends it and removes the data unless --keep.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if nodes < 1 || nodes > 9 {
				return cli.Usage(fmt.Errorf("--nodes %d out of range 1..9", nodes))
			}
			if err := shard.LogStoreKind(logStore).Validate(); err != nil {
				return cli.Usage(fmt.Errorf("--log-store: %w", err))
			}
			dir, err := os.MkdirTemp("", "cairn-dev-")
			if err != nil {
				return err
			}
			if !keep {
				defer os.RemoveAll(dir)
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			var cfgs []node.Config
			for i := 1; i <= nodes; i++ {
				base := 7070 + 10*(i-1)
				cfg := node.DefaultConfig()
				cfg.ID = fmt.Sprintf("n%d", i)
				cfg.DataDir = fmt.Sprintf("%s/n%d", dir, i)
				cfg.HTTPAddr = fmt.Sprintf("127.0.0.1:%d", base)
				cfg.RaftAddr = fmt.Sprintf("127.0.0.1:%d", base+1)
				cfg.GossipAddr = fmt.Sprintf("127.0.0.1:%d", base+2)
				cfg.BootstrapExpect = nodes
				cfg.InitialSplits = splits
				cfg.Replication = min(3, nodes)
				cfg.LogStore = shard.LogStoreKind(logStore)
				cfg.Tuning.HeartbeatTimeout, cfg.Tuning.ElectionTimeout = 500*time.Millisecond, 500*time.Millisecond
				cfg.Tuning.LeaderLeaseTimeout = 250 * time.Millisecond
				cfg.Logger = logger // node.New adds node=<id>
				if i > 1 {
					cfg.Join = []string{"127.0.0.1:7072"}
				}
				cfgs = append(cfgs, cfg)
			}
			if _, err := applyGC(cmd, gcPercent); err != nil {
				return cli.Usage(err)
			}
			return serve(func() {
				fmt.Printf("cairn dev: %d nodes, data in %s\n", nodes, dir)
				fmt.Println("  try: curl -X PUT -d '{\"value\":\"hello\"}' http://127.0.0.1:7070/v1/kv/greeting")
				fmt.Println("       curl http://127.0.0.1:7070/v1/kv/greeting")
				fmt.Println("       curl http://127.0.0.1:7070/v1/cluster")
				fmt.Println("       ./bin/cairn kv get greeting")
				fmt.Println("  Ctrl-C to stop")
			}, cfgs...)
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 3, "number of nodes")
	cmd.Flags().StringSliceVar(&splits, "initial-splits", []string{"g", "n", "t"}, "keys at which to pre-split the keyspace")
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the data dir on exit")
	cmd.Flags().StringVar(&logStore, "log-store", string(shard.LogStoreWAL), logStoreUsage)
	addGCFlag(cmd, &gcPercent)
	return cmd
}
