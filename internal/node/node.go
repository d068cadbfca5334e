// Package node assembles one cairn server: raft transport, shard host, meta
// group, gossip and the HTTP API.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairndb/cairn/api"
	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/clock"
	"github.com/cairndb/cairn/placement"
	"github.com/cairndb/cairn/shard"
	"github.com/cairndb/cairn/txn"
	"github.com/hashicorp/raft"
)

// Config is one node's configuration. Flags map onto it one to one.
type Config struct {
	ID              string
	DataDir         string
	HTTPAddr        string // listen address for the API
	RaftAddr        string // listen and advertise address for raft traffic
	GossipAddr      string // memberlist bind address
	Join            []string
	BootstrapExpect int
	InitialSplits   []string      // keys at which the first range map is cut when the cluster forms
	Replication     int           // replicas per shard, default 3
	SplitSize       int64         // split a range larger than this; default 64 MiB
	DeadAfter       time.Duration // re-create replicas of a node gossip reports dead this long; default 30s
	// NoAutoPlacement stops the placement driver from making decisions of its
	// own (operator calls still work): tests that need a fixed layout.
	NoAutoPlacement bool
	Tuning          shard.RaftTuning
	MetaTuning      shard.RaftTuning
	ApplyTimeout    time.Duration
	// FSMSync fsyncs each shard's state machine file on every batch, not
	// only the raft log (fsm/durability.go explains the default).
	FSMSync bool
	Logger  *slog.Logger
	Knobs   *Knobs
	Pprof   bool // serve /debug/pprof on the HTTP address
	// TxnLimits bounds a transaction (--txn-max-ops, --txn-max-bytes);
	// zero = txn.DefaultLimits.
	TxnLimits txn.Limits
	// Clock is the time every decision of the node's packages reads (TTLs,
	// stale reads, proposal times, placement timeouts); nil = the real clock.
	Clock clock.Clock
	// Metrics receives every metric of the node and is what /metrics
	// serves; nil = a new registry of the node's own (never the global one).
	Metrics *prometheus.Registry

	// LogStore is the raft log store (--log-store): the node WAL (wal, the
	// default; empty means wal) or raft-boltdb, one raft.db per group
	// (boltdb). A data dir written with one refuses to start with the other.
	LogStore shard.LogStoreKind

	// Listeners already bound (tests bind port 0); when nil the node listens
	// on the addresses above.
	HTTPListener net.Listener
	RaftListener net.Listener
}

// Knobs are test hooks; nil in production.
type Knobs struct {
	// Blocked reports whether traffic from node raft address from to node raft
	// address to is dropped (raft, node-to-node HTTP and gossip alike).
	Blocked func(from, to string) bool
	// Delay, when set, delays raft traffic from node raft address from to
	// node raft address to by what it returns (shard.TransportKnobs.Delay).
	Delay func(from, to string) time.Duration
	// HangDial, when it returns true, makes a node-to-node dial (HTTP and
	// raft alike) from node raft address from to node raft address to hang
	// until the dial gives up, as resolving a dead peer's name does under
	// docker's DNS.
	HangDial func(from, to string) bool
	// BootID stands in for the machine's boot id (fsm/durability.go): a
	// different one after a SIGKILL looks like a machine crash.
	BootID func() (string, error)
	// WAL injects I/O errors into the node's write-ahead log.
	WAL *shard.WALKnobs
	// Bolt reaches the boltdb log store's files (to inject I/O errors).
	Bolt *shard.BoltKnobs
	// BeforeRangePublish is fsm.Config.BeforeRangePublish, for every shard.
	BeforeRangePublish func()
	// Txn are the transaction coordinator's hooks (api.TxnKnobs).
	Txn *api.TxnKnobs
	// CommandLevel, when set, stands in for the binary's fsm.CommandLevel (a
	// node of an older or newer binary).
	CommandLevel *int
	// FormationLogEvery is how often a node waiting for its cluster to form
	// says so again; zero means every 10s.
	FormationLogEvery time.Duration
	// GossipToTheDeadTime, when positive, stands in for memberlist's (15s on
	// loopback, 30s otherwise): how long gossip still reaches a member it
	// declared dead.
	GossipToTheDeadTime time.Duration
	// RejoinEvery, when positive, stands in for rejoinEvery (10s): how often
	// gossip checks for a counted node it is missing and joins again.
	RejoinEvery time.Duration
}

// ErrNoFormation: a node whose data dir belongs to no cluster yet, started
// with neither BootstrapExpect (--bootstrap-expect) nor Join (--join), could
// never form or join one.
var ErrNoFormation = errors.New("neither --bootstrap-expect nor --join is set")

// DefaultConfig returns a config with production defaults; the caller fills
// in the identity and addresses.
func DefaultConfig() Config {
	return Config{
		Replication:  3,
		SplitSize:    64 << 20,
		DeadAfter:    30 * time.Second,
		Tuning:       shard.DefaultRaftTuning(),
		MetaTuning:   shard.DefaultRaftTuning(),
		ApplyTimeout: 5 * time.Second,
		LogStore:     shard.LogStoreWAL,
		Clock:        clock.Real(),
	}
}

// commandLevel is the shard command level this node's binary applies
// (fsm.CommandLevel, or Knobs.CommandLevel).
func (c *Config) commandLevel() int {
	if c.Knobs != nil && c.Knobs.CommandLevel != nil {
		return *c.Knobs.CommandLevel
	}
	return fsm.CommandLevel
}

// Validate reports a configuration that cannot start.
func (c *Config) Validate() error {
	var errs []error
	if c.ID == "" || strings.ContainsAny(c.ID, " /\t\n") {
		errs = append(errs, fmt.Errorf("--id %q must be non-empty without spaces or slashes", c.ID))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("--data-dir is required"))
	}
	for name, a := range map[string]string{"--http-addr": c.HTTPAddr, "--raft-addr": c.RaftAddr, "--gossip-addr": c.GossipAddr} {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", name, a, err))
		}
	}
	if c.BootstrapExpect < 0 {
		errs = append(errs, fmt.Errorf("--bootstrap-expect %d must not be negative", c.BootstrapExpect))
	}
	if c.DeadAfter < time.Second {
		errs = append(errs, fmt.Errorf("--dead-after %s must be at least 1s", c.DeadAfter))
	}
	if c.SplitSize < 4<<10 {
		errs = append(errs, fmt.Errorf("--split-size %d must be at least 4096 bytes", c.SplitSize))
	}
	if c.Replication < 1 {
		errs = append(errs, fmt.Errorf("replication %d must be at least 1", c.Replication))
	}
	if _, err := placement.InitialRanges(c.InitialSplits, nil); err != nil {
		errs = append(errs, fmt.Errorf("--initial-splits: %w", err))
	}
	if err := c.LogStore.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--log-store: %w", err))
	}
	if c.ApplyTimeout < 0 {
		errs = append(errs, fmt.Errorf("apply timeout %s must not be negative", c.ApplyTimeout))
	}
	errs = append(errs, c.Tuning.Validate(), c.MetaTuning.Validate())
	return errors.Join(errs...)
}

// Node is a running cairn server.
type Node struct {
	cfg    Config
	log    *slog.Logger
	mux    *shard.Mux
	host   *shard.Host
	logs   shard.NodeLog
	meta   *placement.Meta
	gossip *gossip
	http   *http.Server
	httpLn net.Listener
	api    *api.Server
	driver *placement.Driver
	reg    *prometheus.Registry
	// lastWritten remembers each leader replica's WrittenBytes at the last
	// heartbeat, for write rates.
	lastWritten map[uint64]uint64
	// lastVerify is when openReplicas last ran the reads that prove a
	// replica removable (run loop only).
	lastVerify time.Time

	// lastWaitLog is when the run loop last said what formation waits for.
	lastWaitLog time.Time
	// seenLevel is the highest cluster command level the data dir has
	// recorded (node.json); run loop only after Start.
	seenLevel int
	// metPeer: gossip has known another member since Start (reconcile);
	// run loop only.
	metPeer bool
	// levelErr holds the error of a cluster level above this binary's
	// (checkLevel), reported by Health.
	levelErr atomic.Value

	// leaving is set by Leave: the node refuses requests while it hands off.
	leaving atomic.Bool

	stop chan struct{}
	wg   sync.WaitGroup
}

// Start opens the node's data, starts every service and returns. The node
// forms or rejoins its cluster in the background; Ready reports when it can
// route requests.
func Start(cfg Config) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BootstrapExpect == 0 && len(cfg.Join) == 0 && isNewDataDir(cfg.DataDir) {
		// A new data dir: refuse before writing anything in it (start
		// checks again once the meta group is open).
		return nil, noFormation(cfg.DataDir)
	}
	seen, err := checkIdentity(cfg.DataDir, cfg.ID, cfg.RaftAddr, cfg.commandLevel())
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, log: cfg.Logger.With("node", cfg.ID), stop: make(chan struct{}), seenLevel: seen}
	if err := n.start(); err != nil {
		_ = n.shutdown()
		return nil, err
	}
	return n, nil
}

func (n *Node) start() error {
	if err := n.startRaft(); err != nil {
		return err
	}
	// A node never added to a cluster's meta group has no configuration
	// there. Without either flag it would wait forever: nothing forms a
	// cluster with it, and it knows no node to join.
	if n.cfg.BootstrapExpect == 0 && len(n.cfg.Join) == 0 && !n.meta.HasConfiguration() {
		return noFormation(n.cfg.DataDir)
	}
	var err error
	if n.gossip, err = startGossip(n.cfg, n.seenLevel, n.clusterMembers, n.log); err != nil {
		return err
	}
	if err := n.startHTTP(); err != nil {
		return err
	}
	n.wg.Add(5)
	go n.watchLog()
	go n.run()
	go n.reportLoop()
	go func() {
		defer n.wg.Done()
		n.driver.Run(n.stop)
	}()
	go func() {
		defer n.wg.Done()
		n.api.RunTxnSweeper(n.stop) // expired transaction records (api/txn_sweep.go)
	}()
	return nil
}

func (n *Node) startRaft() error {
	ln := n.cfg.RaftListener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", n.cfg.RaftAddr); err != nil {
			return fmt.Errorf("raft listener: %w", err)
		}
	}
	var tk *shard.TransportKnobs
	if k := n.cfg.Knobs; k != nil && (k.Blocked != nil || k.Delay != nil || k.HangDial != nil) {
		tk = &shard.TransportKnobs{Blocked: k.Blocked, Delay: k.Delay, HangDial: k.HangDial}
	}
	var err error
	n.mux, err = shard.NewMux(shard.MuxConfig{Listener: ln, AdvertiseAddr: n.cfg.RaftAddr, Logger: n.log, Knobs: tk})
	if err != nil {
		ln.Close()
		return err
	}
	// The raft log store of every group on the node (shard/logstore.go).
	var logKnobs *shard.LogKnobs
	if k := n.cfg.Knobs; k != nil {
		logKnobs = &shard.LogKnobs{WAL: k.WAL, Bolt: k.Bolt}
	}
	n.logs, err = shard.OpenNodeLog(n.cfg.DataDir, n.cfg.LogStore, logKnobs)
	if err != nil {
		return err
	}
	var bootID func() (string, error)
	var beforeRangePublish func()
	if n.cfg.Knobs != nil {
		bootID, beforeRangePublish = n.cfg.Knobs.BootID, n.cfg.Knobs.BeforeRangePublish
	}
	n.reg = n.cfg.Metrics
	if n.reg == nil {
		n.reg = prometheus.NewRegistry()
	}
	if err := errors.Join(n.reg.Register(collectors.NewGoCollector()),
		n.reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))); err != nil {
		return err
	}
	n.host, err = shard.NewHost(shard.HostConfig{
		NodeID: n.cfg.ID, DataDir: n.cfg.DataDir, Mux: n.mux, Logs: n.logs, Tuning: n.cfg.Tuning,
		DeferFSMSync: !n.cfg.FSMSync, BootID: bootID, BeforeRangePublish: beforeRangePublish,
		ApplyTimeout: n.cfg.ApplyTimeout, Logger: n.log, Clock: n.cfg.Clock, Metrics: n.reg,
	})
	if err != nil {
		return err
	}
	if err := n.logs.RegisterMetrics(n.reg); err != nil {
		return err
	}
	if err := n.reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "cairn", Subsystem: "node", Name: "log_failed",
		Help: "1 when a write or sync of the node's raft log failed: the node serves nothing until it restarts.",
	}, func() float64 {
		if n.logs.Err() != nil {
			return 1
		}
		return 0
	})); err != nil {
		return err
	}
	n.meta, err = placement.OpenMeta(placement.MetaConfig{
		NodeID: n.cfg.ID, DataDir: n.cfg.DataDir, Mux: n.mux, Logs: n.logs, Tuning: n.cfg.MetaTuning, Logger: n.log,
	})
	if err != nil {
		return err
	}
	// Reopen every replica found on disk at once, so shards elect leaders
	// without waiting for the meta group (rolling restarts, S22).
	ids, err := n.host.ExistingShards()
	if err != nil {
		return err
	}
	return openParallel(ids, 8, func(id uint64) error {
		_, err := n.host.OpenReplica(fsm.Range{ID: id}, nil)
		return err
	})
}

// openParallel runs open for every id on up to workers goroutines and
// returns the first error.
func openParallel(ids []uint64, workers int, open func(uint64) error) error {
	ch := make(chan uint64)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var first error
			for id := range ch {
				if err := open(id); err != nil && first == nil {
					first = err
				}
			}
			errs <- first
		}()
	}
	for _, id := range ids {
		ch <- id
	}
	close(ch)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) startHTTP() error {
	ln := n.cfg.HTTPListener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", n.cfg.HTTPAddr); err != nil {
			return fmt.Errorf("http listener: %w", err)
		}
	}
	n.httpLn = ln
	ac := api.DefaultConfig()
	ac.Backend, ac.Placement, ac.Logger, ac.Dial = apiBackend{n}, n, n.log, n.dialPeer
	ac.Registry, ac.Pprof, ac.Clock = n.reg, n.cfg.Pprof, n.cfg.Clock
	ac.TxnLimits = n.cfg.TxnLimits
	if n.cfg.Knobs != nil {
		ac.TxnKnobs = n.cfg.Knobs.Txn
	}
	if err := ac.Validate(); err != nil {
		return err
	}
	n.api = api.NewServer(ac)
	dc := placement.DefaultDriverConfig()
	dc.Scheduler.Replication, dc.Scheduler.SplitSize, dc.Scheduler.DeadAfter = n.cfg.Replication, n.cfg.SplitSize, n.cfg.DeadAfter
	dc.Meta, dc.Exec, dc.Alive, dc.Suspect = n.meta, n.api.NewExecutor(), n.gossip.alive, n.gossip.suspect
	dc.ContactAges, dc.ContactTimeout = n.peerContactAges, contactTimeout(dc.ContactTimeout, n.cfg)
	dc.NoSchedule, dc.Logger, dc.Metrics, dc.Clock = n.cfg.NoAutoPlacement, n.log.With("component", "placement"), n.reg, n.cfg.Clock
	var err error
	if n.driver, err = placement.NewDriver(dc); err != nil {
		return err
	}
	n.http = &http.Server{Handler: n.api, ReadHeaderTimeout: 10 * time.Second}
	// Requests that wait (a queued lock acquire, a blocking status) end when
	// the server shuts down, while the replicas can still cancel them.
	n.http.RegisterOnShutdown(n.api.EndWaits)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := n.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Error("http server", "err", err)
		}
	}()
	return nil
}

// contactTimeout is the placement driver's contact bound for cfg: at least
// def, and at least five heartbeats of the slower of its groups (raft
// heartbeats a follower every tenth of its heartbeat timeout), so a quiet
// follower is never read as cut off.
func contactTimeout(def time.Duration, cfg Config) time.Duration {
	return max(def, cfg.Tuning.HeartbeatTimeout/2, cfg.MetaTuning.HeartbeatTimeout/2)
}

// clusterMembers names the nodes the meta state counts (not removed):
// gossip joins again while one of them is not live to it.
func (n *Node) clusterMembers() []string {
	st, _ := n.meta.State()
	ids := make([]string, 0, len(st.Nodes))
	for id, ni := range st.Nodes {
		if !ni.Removed {
			ids = append(ids, id)
		}
	}
	return ids
}

// peerContactAges is, for each node that follows in a raft group this node
// leads (the meta group or a shard), how long ago the freshest of them
// answered a request sent to it (placement.DriverConfig.ContactAges). A
// follower not heard from yet in a leadership says nothing.
func (n *Node) peerContactAges() map[string]time.Duration {
	ages := map[string]time.Duration{}
	note := func(r *raft.Raft) {
		for id, at := range r.PeerContacts() {
			if at.IsZero() {
				continue
			}
			age := time.Since(at)
			if cur, ok := ages[string(id)]; !ok || age < cur {
				ages[string(id)] = age
			}
		}
	}
	note(n.meta.Raft())
	for _, rep := range n.host.Replicas() {
		note(rep.Raft())
	}
	return ages
}

// dialPeer dials another node's HTTP address for forwarding, heartbeats and
// participant calls, honouring the partition knob so a test partition cuts
// them as it cuts raft: a blocked dial fails, and a connection dialled
// before the partition (kept alive in a pool) closes at its next read or
// write, as it would stall under a real partition.
func (n *Node) dialPeer(ctx context.Context, network, addr string) (net.Conn, error) {
	peerRaft := ""
	if k := n.cfg.Knobs; k != nil && (k.Blocked != nil || k.HangDial != nil) {
		st, _ := n.meta.State()
		for _, ni := range st.Nodes {
			if ni.HTTPAddr != addr {
				continue
			}
			peerRaft = ni.RaftAddr
			if k.Blocked != nil && k.Blocked(n.cfg.RaftAddr, ni.RaftAddr) {
				// Fail like a refused dial: nothing was sent.
				return nil, &net.OpError{Op: "dial", Net: network, Err: errors.New("blocked by test partition")}
			}
			if k.HangDial != nil && k.HangDial(n.cfg.RaftAddr, ni.RaftAddr) {
				<-ctx.Done()
				return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("lookup %s: hung (test knob): %w", addr, ctx.Err())}
			}
		}
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil || peerRaft == "" || n.cfg.Knobs.Blocked == nil {
		return c, err
	}
	return (&shard.TransportKnobs{Blocked: n.cfg.Knobs.Blocked}).WrapConn(c, n.cfg.RaftAddr, peerRaft), nil
}

// HTTPAddr returns the address the API listens on.
func (n *Node) HTTPAddr() string { return n.httpLn.Addr().String() }

// Host returns the node's shard host (tests).
func (n *Node) Host() *shard.Host { return n.host }

// MetaGroup returns the node's meta replica (tests).
func (n *Node) MetaGroup() *placement.Meta { return n.meta }

// ID returns the node id.
func (n *Node) ID() string { return n.cfg.ID }

// RaftLog returns the node's raft log store, shared by all its groups (for
// tests and tools that inspect the log).
func (n *Node) RaftLog() shard.NodeLog { return n.logs }

// Close stops the node gracefully: HTTP first, then gossip, then raft.
func (n *Node) Close() error {
	return n.shutdown()
}

func (n *Node) shutdown() error {
	select {
	case <-n.stop:
		return nil
	default:
		close(n.stop)
	}
	var errs []error
	if n.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		errs = append(errs, n.http.Shutdown(ctx))
		cancel()
	}
	if n.api != nil {
		n.api.Close()
	}
	if n.gossip != nil {
		errs = append(errs, n.gossip.leave())
	}
	n.wg.Wait()
	// The network goes before the groups: raft's shutdown waits for its
	// replication goroutines, and one stuck dialing a dead peer (its name
	// hanging in DNS, up to the transport's 10s timeout) would hold the
	// whole stop past a container's grace period.
	if n.mux != nil {
		errs = append(errs, n.mux.Close())
	}
	if n.host != nil {
		errs = append(errs, n.host.Close())
	}
	if n.meta != nil {
		errs = append(errs, n.meta.Close())
	}
	if n.logs != nil {
		errs = append(errs, n.logs.Close())
	}
	return errors.Join(errs...)
}

// watchLog stops the meta group when the node's raft log fails (the host
// stops the shard replicas itself): no group may go on without a log that
// can make its votes and entries durable. The node stays up, unready, so
// /readyz, /healthz and cairn_node_log_failed say why; a restart replays
// what is on disk.
func (n *Node) watchLog() {
	defer n.wg.Done()
	select {
	case <-n.logs.Failed():
		n.log.Error("raft log failed: this node serves nothing until it restarts", "err", n.logs.Err())
		if err := n.meta.Close(); err != nil {
			n.log.Warn("stop meta group after log failure", "err", err)
		}
	case <-n.stop:
	}
}

// Health returns why the node cannot serve at all (its raft log failed), or
// nil.
func (n *Node) Health() error {
	if err := n.logs.Err(); err != nil {
		return err
	}
	if err, _ := n.levelErr.Load().(error); err != nil {
		return err
	}
	return nil
}

// run forms the cluster, registers nodes and opens this node's replicas,
// reacting to meta changes and gossip events, with a periodic safety tick.
func (n *Node) run() {
	defer n.wg.Done()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		st, changed := n.meta.State()
		if err := n.reconcile(st); err != nil {
			n.log.Debug("reconcile", "err", err)
		}
		select {
		case <-n.stop:
			return
		case <-changed:
		case <-n.gossip.events:
		case <-tick.C:
		}
	}
}

func (n *Node) reconcile(st *placement.State) error {
	// The meta state may be behind the cluster: a node whose data dir was
	// wiped replays the meta log from the start, and sees the ranges that
	// list it before the entry that raised the level above its binary
	// (test.TestWipedNodeOnOlderBinary failed so: "the wiped node on a
	// level-2 binary opened a replica of range 1 in a level-3 cluster").
	// Gossip carries every member's view of the level, so a node that joins
	// a cluster acts on nothing before gossip first knows a peer (once: a
	// later partition that empties gossip does not stop it), and on nothing
	// while gossip says the cluster runs a level above its binary.
	if !n.metPeer {
		if len(n.cfg.Join) > 0 && !n.gossip.knowsPeer(n.cfg.ID) {
			return errors.New("waiting for gossip to reach a peer (--join) before acting on the meta state")
		}
		n.metPeer = true
	}
	if l := n.gossip.clusterLevel(); l > st.Level {
		// A node joining is added to the meta group only once it has
		// recorded the cluster's level, and one behind it never is, so its
		// meta state does not show the level yet: gossip says it.
		if l > n.cfg.commandLevel() {
			return n.behindLevel(l)
		}
		if err := n.recordSeenLevel(l, st.Level); err != nil {
			return err
		}
	}
	if !st.Formed() {
		return n.form(st)
	}
	n.gossip.setClusterID(st.ClusterID)
	if n.meta.IsLeader() {
		if err := n.registerMembers(st); err != nil {
			return err
		}
	}
	if err := n.checkLevel(st); err != nil {
		return err
	}
	return n.openReplicas(st)
}

// checkLevel records in the data dir the cluster's command level, or the
// level it is being raised to (placement/level.go), once this binary applies
// it, and advertises that it did; a binary below the recorded level never
// starts here (checkIdentity). A cluster already above this binary (the
// node came back on an older binary before it learned of a level; every node
// that counts records a level before it is raised, so only a node that did
// not count then) opens no further replica and reports itself unhealthy; the
// placement driver, which sees it behind the level, moves its replicas off.
// Run loop only.
func (n *Node) checkLevel(st *placement.State) error {
	own := n.cfg.commandLevel()
	if st.Level > own {
		return n.behindLevel(st.Level)
	}
	want := st.Level
	if st.Pending <= own {
		want = max(want, st.Pending)
	}
	return n.recordSeenLevel(want, st.Level)
}

// recordSeenLevel records level in node.json if it is above what is
// recorded there, and advertises the recorded level and the cluster's
// level (cluster) in gossip (which broadcasts only a change). Run loop only.
func (n *Node) recordSeenLevel(level, cluster int) error {
	if level > n.seenLevel {
		if err := recordLevel(n.cfg.DataDir, level); err != nil {
			return err
		}
		n.log.Info("recorded the cluster command level in the data dir; a binary below it will not start here",
			"command_level", level, "cluster_level", cluster)
		n.seenLevel = level
	}
	n.gossip.setLevels(n.seenLevel, cluster)
	return nil
}

// behindLevel records that the cluster runs command level level, above
// this binary's: Health reports it, the log says it once.
func (n *Node) behindLevel(level int) error {
	own := n.cfg.commandLevel()
	err := fmt.Errorf("the cluster runs shard command level %d and this binary applies up to level %d: "+
		"run a cairn binary of level %d or later on this node (a downgrade below the cluster's level is not possible)",
		level, own, level)
	if n.levelErr.Load() == nil {
		n.log.Error("opening no replica", "err", err)
	}
	n.levelErr.Store(err)
	return err
}

// form carries out planFormation (formation.go): bootstrap the meta group,
// or, on the meta leader, register the members and write the range map.
func (n *Node) form(st *placement.State) error {
	v := formationView{Self: n.cfg.ID, BootstrapExpect: n.cfg.BootstrapExpect, Replication: n.cfg.Replication,
		HasConfig: n.meta.HasConfiguration(), MetaLeader: n.meta.IsLeader()}
	if !v.HasConfig {
		v.Gossip = n.gossip.members()
	} else if v.MetaLeader {
		var err error
		if v.MetaServers, err = n.meta.Members(); err != nil {
			return err
		}
	}
	plan := planFormation(v)
	switch {
	case plan.Bootstrap != nil:
		n.log.Info("bootstrapping meta group", "servers", len(plan.Bootstrap))
		return n.meta.Bootstrap(plan.Bootstrap)
	case plan.InitReplicas == nil:
		ids := make([]string, len(v.Gossip))
		for i, m := range v.Gossip {
			ids[i] = m.ID
		}
		n.logWaiting(plan.Waiting, "bootstrap_expect", n.cfg.BootstrapExpect, "met", len(ids), "members", ids,
			"join", strings.Join(n.cfg.Join, ","), "meta_leader", n.meta.Leader())
		return nil
	}
	ranges, err := placement.InitialRanges(n.cfg.InitialSplits, plan.InitReplicas)
	if err != nil {
		return err
	}
	if err := n.registerMembers(st); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = n.meta.Init(ctx, newClusterID(), ranges)
	if errors.Is(err, placement.ErrAlreadyFormed) {
		return nil
	}
	if err == nil {
		n.log.Info("cluster formed", "ranges", len(ranges), "replicas", plan.InitReplicas)
	}
	return err
}

func noFormation(dir string) error {
	return fmt.Errorf("data dir %s belongs to no cluster yet and %w: set --bootstrap-expect N to form a new "+
		"cluster once N nodes have met, or --join HOST:GOSSIPPORT to join an existing one", dir, ErrNoFormation)
}

// logWaiting says what formation waits for (INFO): at once, then every
// Knobs.FormationLogEvery (10s), so a node that cannot form is never silent.
// Run loop only.
func (n *Node) logWaiting(what string, args ...any) {
	every := 10 * time.Second
	if k := n.cfg.Knobs; k != nil && k.FormationLogEvery > 0 {
		every = k.FormationLogEvery
	}
	if now := time.Now(); n.lastWaitLog.IsZero() || now.Sub(n.lastWaitLog) >= every {
		n.lastWaitLog = now
		n.log.Info("waiting for the cluster to form: "+what, args...)
	}
}

// registerMembers carries out planMeta (formation.go) on the meta leader:
// register gossip members' addresses, add unknown nodes to the meta group
// as non-voters, and grow its voters. Every change goes through
// placement.Meta, bounded and classified as a proposal is.
func (n *Node) registerMembers(st *placement.State) error {
	conf, err := n.meta.Members()
	if err != nil {
		return err
	}
	plan := planMeta(metaView{State: st, Gossip: n.gossip.members(), Alive: n.gossip.alive(), Config: conf, Self: n.cfg.ID})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, m := range plan.Register {
		if err := n.meta.RegisterNode(ctx, m); err != nil {
			return err
		}
	}
	if plan.CancelPending {
		if err := n.meta.PrepareLevel(ctx, st.Level); err != nil {
			return err
		}
	}
	if plan.PrepareLevel > 0 {
		if err := n.meta.PrepareLevel(ctx, plan.PrepareLevel); err != nil {
			return err
		}
		n.log.Info("raising the cluster command level: every node records it first", "command_level", plan.PrepareLevel)
	}
	if plan.RaiseLevel > 0 {
		if err := n.meta.RaiseLevel(ctx, plan.RaiseLevel); err != nil {
			return err
		}
		n.log.Info("cluster command level raised", "command_level", plan.RaiseLevel)
	}
	for _, ni := range plan.AddNonvoters {
		if err := n.meta.AddNonvoter(ctx, ni.ID, ni.RaftAddr); err != nil {
			return err
		}
	}
	for _, id := range plan.RemoveMembers {
		n.log.Info("removing a removed node from the meta group", "member", id)
		if err := n.meta.RemoveMember(ctx, id); err != nil {
			return err
		}
	}
	if c := plan.Promote; c != nil {
		n.log.Info("growing the meta group", "voter", c.ID)
		return n.meta.AddVoter(ctx, c.ID, c.Address)
	}
	return nil
}

// openReplicas starts a local replica for every range that lists this node
// or that an operation is moving to it, and removes replicas the range map
// no longer assigns here, once that is proven safe (reconcile.go).
func (n *Node) openReplicas(st *placement.State) error {
	local := n.localReplicas()
	plan, err := planReplicas(n.cfg.ID, st, local, nil)
	if err != nil {
		return err
	}
	byID := make(map[uint64]opening, len(plan.Open))
	ids := make([]uint64, 0, len(plan.Open))
	for _, o := range plan.Open {
		byID[o.desc.ID] = o
		ids = append(ids, o.desc.ID)
	}
	if err := openParallel(ids, 8, func(id uint64) error {
		_, err := n.host.OpenReplica(byID[id].desc, byID[id].servers)
		return err
	}); err != nil {
		return err
	}
	if len(plan.Verify) == 0 || n.cfg.Clock.Now().Sub(n.lastVerify) < verifyEvery {
		return nil
	}
	n.lastVerify = n.cfg.Clock.Now()
	auth, err := n.authority(plan.Verify, local)
	if err != nil {
		n.log.Debug("replica removal not verified", "shards", plan.Verify, "err", err)
	}
	if len(auth) == 0 {
		return nil
	}
	// Decide again on fresh local facts, with the authoritative reads.
	st, _ = n.meta.State()
	if plan, err = planReplicas(n.cfg.ID, st, n.localReplicas(), auth); err != nil {
		return err
	}
	for id, why := range plan.Keep {
		if _, read := auth[id]; read {
			n.log.Debug("keeping a replica the range map no longer assigns here", "shard", id, "why", why)
		}
	}
	for _, id := range plan.Remove {
		n.log.Info("removing replica moved off this node", "shard", id, "epoch", auth[id].Epoch)
		if err := n.host.RemoveReplica(id); err != nil {
			return err
		}
	}
	return nil
}

// verifyEvery bounds how often a node runs the reads that prove a replica
// removable (a meta barrier each time).
const verifyEvery = time.Second

// localReplicas describes the replicas running here for planReplicas.
func (n *Node) localReplicas() []localReplica {
	reps := n.host.Replicas()
	out := make([]localReplica, 0, len(reps))
	for _, rep := range reps {
		lr := localReplica{ID: rep.ID(), Epoch: rep.Range().Epoch}
		if f := rep.Raft().GetConfiguration(); f.Error() == nil {
			lr.Config = membershipIn(f.Configuration(), n.cfg.ID)
		}
		out = append(out, lr)
	}
	return out
}

// authority makes the linearizable reads that removing replicas ids needs:
// the ranges from the meta leader and, for a replica whose own latest
// configuration no longer lists this node as a voter, the shard leader's
// committed configuration.
func (n *Node) authority(ids []uint64, local []localReplica) (map[uint64]authority, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	mrs, err := n.api.ReadMetaRanges(ctx, ids)
	if err != nil {
		return nil, err
	}
	own := map[uint64]membership{}
	for _, lr := range local {
		own[lr.ID] = lr.Config
	}
	auth := map[uint64]authority{}
	var errs []error
	for _, mr := range mrs {
		a := authority{Found: mr.Found, Epoch: mr.Epoch, Replicas: mr.Replicas, OpTo: mr.OpTo}
		if mr.Found && !slices.Contains(mr.Replicas, n.cfg.ID) && mr.OpTo != n.cfg.ID && removedIn(own[mr.ID]) {
			s, err := n.api.NewExecutor().CommittedShardStatus(ctx, mr.ID)
			switch {
			case err != nil:
				errs = append(errs, fmt.Errorf("shard %d leader: %w", mr.ID, err))
			case s.MembersCommitted:
				a.Shard = memberAbsent
				for _, m := range s.Members {
					if m.ID == n.cfg.ID {
						a.Shard = memberNonVoter
						if m.Voter {
							a.Shard = memberVoter
						}
					}
				}
			}
		}
		auth[mr.ID] = a
	}
	return auth, errors.Join(errs...)
}

func newClusterID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
