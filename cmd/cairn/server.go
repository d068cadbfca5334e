package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/internal/cli"
	"github.com/cairndb/cairn/internal/node"
	"github.com/cairndb/cairn/shard"
	"github.com/cairndb/cairn/txn"
)

// logStoreUsage documents --log-store for cairn server and cairn dev.
const logStoreUsage = "raft log store: wal (the node write-ahead log, one for all groups) or boltdb " +
	"(hashicorp/raft-boltdb, a raft.db per group); fixed for the data dir"

type serverFlags struct {
	id, dataDir, httpAddr, raftAddr, gossipAddr string
	join, initialSplits                         []string
	bootstrapExpect                             int
	logLevel, logStore                          string
	heartbeat, deadAfter                        time.Duration
	splitSize                                   int64
	pprof, fsmSync                              bool
	txnMaxOps, txnMaxBytes                      int
	gcPercent                                   int
}

func newServerCmd() *cobra.Command {
	var f serverFlags
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a cairn node",
		Long: `Run a cairn node. The cluster forms once --bootstrap-expect nodes have met
through gossip; later nodes join with --join. A new node needs one of the two
(without either it exits 2: it could never form or join a cluster); a
restarted node with an existing --data-dir rejoins with its data. Until the
cluster forms, the node logs what it waits for every 10s.`,
		Example: `  cairn server --id n1 --data-dir /var/lib/cairn \
    --http-addr 127.0.0.1:7070 --raft-addr 127.0.0.1:7071 --gossip-addr 127.0.0.1:7072 \
    --bootstrap-expect 3 --join 127.0.0.1:7082,127.0.0.1:7092`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.config()
			if err != nil {
				return cli.Usage(err)
			}
			gc, err := applyGC(cmd, f.gcPercent)
			if err != nil {
				return cli.Usage(err)
			}
			cfg.Logger.Debug("go gc target", "percent", gc)
			return serve(nil, cfg)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.id, "id", "", "node id, unique in the cluster and fixed for the data dir (required)")
	fl.StringVar(&f.dataDir, "data-dir", "", "directory for raft logs, snapshots and shard state (required)")
	fl.StringVar(&f.httpAddr, "http-addr", "127.0.0.1:7070", "HTTP API listen address")
	fl.StringVar(&f.raftAddr, "raft-addr", "127.0.0.1:7071", "raft listen and advertise address (fixed for the data dir)")
	fl.StringVar(&f.gossipAddr, "gossip-addr", "127.0.0.1:7072", "gossip (memberlist) bind address")
	fl.StringSliceVar(&f.join, "join", nil, "gossip addresses of existing nodes, HOST:PORT,...")
	fl.IntVar(&f.bootstrapExpect, "bootstrap-expect", 0, "form a new cluster once this many nodes have met")
	fl.StringSliceVar(&f.initialSplits, "initial-splits", nil, "keys at which to pre-split the keyspace when the cluster forms, e.g. g,n,t")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.DurationVar(&f.heartbeat, "raft-heartbeat", 1500*time.Millisecond, "raft heartbeat and election timeout of data shards")
	fl.DurationVar(&f.deadAfter, "dead-after", 30*time.Second, "re-create the replicas of a node gossip reports dead this long")
	fl.Int64Var(&f.splitSize, "split-size", 64<<20, "split a range whose data grows past this many bytes")
	fl.BoolVar(&f.pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on the HTTP address")
	fl.StringVar(&f.logStore, "log-store", string(shard.LogStoreWAL), logStoreUsage)
	fl.BoolVar(&f.fsmSync, "fsm-sync", false, "also fsync each shard's state machine file on every batch (by default only the raft log is synced, and a machine crash is recovered from the log)")
	def := txn.DefaultLimits()
	fl.IntVar(&f.txnMaxOps, "txn-max-ops", def.MaxOps, fmt.Sprintf("most compares and ops in one transaction (at most %d)", txn.HardMaxOps))
	addGCFlag(cmd, &f.gcPercent)
	fl.IntVar(&f.txnMaxBytes, "txn-max-bytes", def.MaxBytes, fmt.Sprintf("most key and value bytes in one transaction (at most %d)", txn.HardMaxBytes))
	return cmd
}

func (f *serverFlags) config() (node.Config, error) {
	cfg := node.DefaultConfig()
	cfg.ID, cfg.DataDir = f.id, f.dataDir
	cfg.HTTPAddr, cfg.RaftAddr, cfg.GossipAddr = f.httpAddr, f.raftAddr, f.gossipAddr
	cfg.Join, cfg.BootstrapExpect, cfg.InitialSplits = f.join, f.bootstrapExpect, f.initialSplits
	cfg.Tuning.HeartbeatTimeout, cfg.Tuning.ElectionTimeout = f.heartbeat, f.heartbeat
	cfg.Tuning.LeaderLeaseTimeout = f.heartbeat / 2
	cfg.DeadAfter, cfg.SplitSize, cfg.Pprof, cfg.FSMSync = f.deadAfter, f.splitSize, f.pprof, f.fsmSync
	cfg.LogStore = shard.LogStoreKind(f.logStore)
	cfg.TxnLimits = txn.DefaultLimits()
	if f.txnMaxOps != 0 || f.txnMaxBytes != 0 { // zero: flags not parsed (tests), the defaults
		cfg.TxnLimits.MaxOps, cfg.TxnLimits.MaxBytes = f.txnMaxOps, f.txnMaxBytes
	}
	if err := cfg.TxnLimits.Validate(); err != nil {
		return cfg, fmt.Errorf("--txn-max-ops/--txn-max-bytes: %w", err)
	}
	if id := os.Getenv("CAIRN_TEST_BOOT_ID"); id != "" {
		// Test hook: a SIGKILLed node restarted with another boot id
		// recovers as after a machine crash (fsm/durability.go).
		cfg.Knobs = &node.Knobs{BootID: func() (string, error) { return id, nil }}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return cfg, fmt.Errorf("--log-level %q: %w", f.logLevel, err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	return cfg, cfg.Validate()
}

// serve runs nodes until SIGINT or SIGTERM, then stops them gracefully.
// started, if set, runs once every node is up.
func serve(started func(), cfgs ...node.Config) error {
	var nodes []*node.Node
	defer func() {
		for _, n := range nodes {
			_ = n.Close()
		}
	}()
	for _, cfg := range cfgs {
		n, err := node.Start(cfg)
		if errors.Is(err, node.ErrNoFormation) {
			return cli.Usage(err)
		}
		if err != nil {
			return err
		}
		nodes = append(nodes, n)
		cfg.Logger.Info("node started", "id", cfg.ID, "http", n.HTTPAddr(), "raft", cfg.RaftAddr,
			"gossip", cfg.GossipAddr, "join", strings.Join(cfg.Join, ","))
	}
	if started != nil {
		started()
	}
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	go func() {
		<-sig
		os.Exit(1) // a second signal: stop now
	}()
	// Hand leaderships off before stopping, so the cluster does not wait
	// out an election timeout per shard; bounded, well inside docker's
	// default 10s grace. Not when this process runs the whole cluster
	// (cairn dev): there is nobody to hand off to.
	if len(nodes) > 1 {
		return nil
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n.Leave(leaveTimeout)
		}()
	}
	wg.Wait()
	return nil
}

// leaveTimeout bounds the leadership handoff on SIGTERM.
const leaveTimeout = 3 * time.Second
