// Package test is cairn's test harness: in-process clusters of real nodes on
// loopback with fault injection, linearizability models and workloads.
// Ordinary (non-_test) files, so every package's tests can use it.
package test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/api"
	"github.com/cairndb/cairn/internal/clock"
	"github.com/cairndb/cairn/internal/node"
	"github.com/cairndb/cairn/internal/syncbuf"
	"github.com/cairndb/cairn/shard"
)

// ClusterConfig configures an in-process cluster.
type ClusterConfig struct {
	Nodes         int      // default 3
	InitialSplits []string // pre-split keys
	Tuning        shard.RaftTuning
	ApplyTimeout  time.Duration
	// Verbose logs node output at info level to stderr (CAIRN_TEST_LOG=1 too).
	Verbose bool
	// AutoPlacement lets the placement driver balance, split and repair on
	// its own. Off by default so fault tests keep the layout they arrange.
	AutoPlacement bool
	// ReadyTimeout bounds the wait for formation; default 30s.
	ReadyTimeout time.Duration
	// Delayable routes raft traffic through a delay line (Cluster.SetDelay,
	// scenario S20). Off by default: it costs a goroutine and a copy per
	// connection write.
	Delayable bool
	// DeadAfter and SplitSize tune the placement driver (defaults: node's).
	DeadAfter time.Duration
	SplitSize int64
	// FSMSync fsyncs every state machine commit (node.Config.FSMSync,
	// --fsm-sync) instead of deferring it to the raft log.
	FSMSync bool
	// BeforeRangePublish is node.Knobs.BeforeRangePublish on every node.
	BeforeRangePublish func()
	// LogStore is every node's raft log store (node.Config.LogStore,
	// --log-store). Empty: $CAIRN_TEST_LOG_STORE, else the WAL; so
	// CAIRN_TEST_LOG_STORE=boltdb runs every cluster test on raft-boltdb.
	LogStore shard.LogStoreKind
	// TxnKnobs are every node's transaction coordinator hooks (S14).
	TxnKnobs *api.TxnKnobs
	// LogOutput, when set, receives every node's log as text at info level,
	// the server's default (tests of what a healthy cluster logs).
	LogOutput io.Writer
	// WALKnobs, when set, gives each node (by id) hooks into its raft
	// write-ahead log (node.Knobs.WAL): a stalled or failing disk.
	WALKnobs func(id string) *shard.WALKnobs
	// Clocks gives a node (by id, "n1"...) its own clock (node.Config.Clock,
	// every lease, TTL and deadline it decides): a skewed clock for scenario
	// S18. Nodes not named use the real clock.
	Clocks map[string]clock.Clock
	// CommandLevels gives a node (by id) another binary's shard command
	// level (node.Knobs.CommandLevel): 0 stands for a binary from before
	// levels. Nodes not named run fsm.CommandLevel. SetCommandLevel changes
	// it for the node's next start.
	CommandLevels map[string]int
	// GossipToTheDeadTime and RejoinEvery shorten gossip's timing
	// (node.Knobs): how long memberlist still gossips to a member it
	// declared dead, and how often a node joins again while it misses one.
	GossipToTheDeadTime, RejoinEvery time.Duration
}

// tailLogBytes is about how much of the nodes' log a failed test prints:
// the last 64 KiB or so, a few hundred lines.
const tailLogBytes = 64 << 10

// Cluster is a set of real cairn nodes in this process, each with its own
// data dir and loopback ports, and a network that the test can partition.
type Cluster struct {
	t     testing.TB
	cfg   ClusterConfig
	Net   *Network
	mu    sync.Mutex
	nodes []*NodeHandle
	// logTail keeps the nodes' last log lines at info level when the test
	// sends them nowhere else; Close prints them if the test failed, so a
	// failure that happens once in many runs (in CI, say) says what the
	// nodes did.
	logTail *syncbuf.Tail
}

// NodeHandle is one node of a Cluster. Node is nil while the node is down.
type NodeHandle struct {
	ID         string
	DataDir    string
	HTTPAddr   string
	RaftAddr   string
	GossipAddr string
	Node       *node.Node
	cfg        node.Config
}

// Network is the test's view of connectivity between nodes, keyed by raft
// address. It is consulted by the raft transport, by node-to-node HTTP and
// by gossip (node.Knobs.Blocked; gossip maps a member's gossip address to
// its raft address).
type Network struct {
	mu      sync.RWMutex
	blocked map[[2]string]bool
	delay   time.Duration   // one way, every link (ClusterConfig.Delayable)
	hung    map[string]bool // raft addresses whose HTTP dials hang (HangDials)
	// pausedUntil holds, per raft address, when a pause of that node ends
	// (Cluster.Pause): traffic to or from it is held until then.
	pausedUntil map[string]time.Time
}

// HangDials makes every node-to-node HTTP dial to the node with raft address
// to hang until the dialer gives up, as resolving a dead container's name
// does under docker's DNS (node.Knobs.HangDial); false undoes it.
func (n *Network) HangDials(to string, hang bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.hung == nil {
		n.hung = map[string]bool{}
	}
	n.hung[to] = hang
}

func (n *Network) hangDial(from, to string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.hung[to]
}

// Delay returns how long raft traffic from a to b takes to arrive.
func (n *Network) Delay(a, b string) time.Duration {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return max(n.delay, n.pauseLeft(a), n.pauseLeft(b))
}

// Blocked reports whether traffic from a to b is dropped.
func (n *Network) Blocked(a, b string) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.blocked[[2]string{a, b}]
}

func (n *Network) set(a, b string, v bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if v {
		n.blocked[[2]string{a, b}] = true
	} else {
		delete(n.blocked, [2]string{a, b})
	}
}

// StartCluster starts cfg.Nodes nodes that form a cluster, and waits until
// every node is ready and every shard has a leader. Nodes are closed when
// the test ends.
func StartCluster(t testing.TB, cfg ClusterConfig) *Cluster {
	t.Helper()
	if cfg.Nodes == 0 {
		cfg.Nodes = 3
	}
	if cfg.Tuning.HeartbeatTimeout == 0 {
		cfg.Tuning = shard.FastRaftTuning()
	}
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 5 * time.Second
	}
	c := newCluster(t, cfg)
	root := t.TempDir()
	for i := 1; i <= cfg.Nodes; i++ {
		h := &NodeHandle{ID: fmt.Sprintf("n%d", i), DataDir: filepath.Join(root, fmt.Sprintf("n%d", i))}
		httpLn, raftLn := mustListen(t), mustListen(t)
		h.HTTPAddr, h.RaftAddr = httpLn.Addr().String(), raftLn.Addr().String()
		h.cfg = c.nodeConfig(h, cfg)
		h.cfg.HTTPListener, h.cfg.RaftListener = httpLn, raftLn
		for _, o := range c.nodes {
			h.cfg.Join = append(h.cfg.Join, o.GossipAddr)
		}
		h.Node = c.startWithGossipPort(h)
		c.nodes = append(c.nodes, h)
	}
	t.Cleanup(c.Close)
	if cfg.ReadyTimeout == 0 {
		cfg.ReadyTimeout = 30 * time.Second
	}
	c.WaitReady(cfg.ReadyTimeout)
	return c
}

// newCluster is a Cluster with no node yet.
func newCluster(t testing.TB, cfg ClusterConfig) *Cluster {
	return &Cluster{t: t, cfg: cfg, Net: &Network{blocked: map[[2]string]bool{}}, logTail: &syncbuf.Tail{Max: tailLogBytes}}
}

func (c *Cluster) nodeConfig(h *NodeHandle, cfg ClusterConfig) node.Config {
	nc := node.DefaultConfig()
	nc.ID, nc.DataDir = h.ID, h.DataDir
	nc.HTTPAddr, nc.RaftAddr, nc.GossipAddr = h.HTTPAddr, h.RaftAddr, h.GossipAddr
	nc.BootstrapExpect = cfg.Nodes
	nc.InitialSplits = cfg.InitialSplits
	nc.Replication = min(3, cfg.Nodes)
	nc.Tuning, nc.MetaTuning = cfg.Tuning, shard.FastRaftTuning()
	nc.ApplyTimeout = cfg.ApplyTimeout
	nc.Knobs = &node.Knobs{Blocked: c.Net.Blocked, HangDial: c.Net.hangDial, BeforeRangePublish: cfg.BeforeRangePublish,
		Txn: cfg.TxnKnobs, GossipToTheDeadTime: cfg.GossipToTheDeadTime, RejoinEvery: cfg.RejoinEvery}
	if cfg.Delayable {
		nc.Knobs.Delay = c.Net.Delay
	}
	if cfg.WALKnobs != nil {
		nc.Knobs.WAL = cfg.WALKnobs(h.ID)
	}
	nc.NoAutoPlacement = !cfg.AutoPlacement
	if cfg.DeadAfter > 0 {
		nc.DeadAfter = cfg.DeadAfter
	}
	if cfg.SplitSize > 0 {
		nc.SplitSize = cfg.SplitSize
	}
	nc.FSMSync = cfg.FSMSync
	if ck, ok := cfg.Clocks[h.ID]; ok {
		nc.Clock = ck
	}
	if l, ok := cfg.CommandLevels[h.ID]; ok {
		nc.Knobs.CommandLevel = &l
	}
	nc.LogStore = cfg.LogStore
	if nc.LogStore == "" {
		nc.LogStore = shard.LogStoreKind(os.Getenv("CAIRN_TEST_LOG_STORE"))
	}
	level := slog.LevelError
	var out io.Writer = io.Discard
	if c.logTail != nil {
		level, out = slog.LevelInfo, c.logTail
	}
	if cfg.Verbose || os.Getenv("CAIRN_TEST_LOG") != "" {
		level, out = slog.LevelInfo, os.Stderr
		if os.Getenv("CAIRN_TEST_LOG") == "debug" {
			level = slog.LevelDebug
		}
	}
	if cfg.LogOutput != nil {
		level, out = slog.LevelInfo, cfg.LogOutput
	}
	nc.Logger = slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level})) // node.Start adds node=<id>
	return nc
}

// startWithGossipPort starts h's node on a free gossip port. memberlist
// binds the port itself, so another process can take the port between our
// probe and its bind: then it tries another one. The gossip address is not
// part of a node's identity.
func (c *Cluster) startWithGossipPort(h *NodeHandle) *node.Node {
	c.t.Helper()
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		h.GossipAddr = freeGossipAddr(c.t)
		h.cfg.GossipAddr = h.GossipAddr
		var n *node.Node
		if n, err = node.Start(h.cfg); err == nil {
			return n
		}
		if !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), "gossip") {
			break
		}
		// The failed start closed the listeners it was given: bind again.
		if h.cfg.RaftListener, err = net.Listen("tcp", h.RaftAddr); err != nil {
			break
		}
		if h.cfg.HTTPListener, err = net.Listen("tcp", h.HTTPAddr); err != nil {
			break
		}
	}
	c.t.Fatalf("start %s: %v", h.ID, err)
	return nil
}

// Nodes returns the node handles (index 0 is n1).
func (c *Cluster) Nodes() []*NodeHandle {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*NodeHandle(nil), c.nodes...)
}

// LiveNodes returns the running nodes, read under the lock Kill and
// Restart take, for goroutines that watch the cluster while faults run.
func (c *Cluster) LiveNodes() []*node.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*node.Node
	for _, h := range c.nodes {
		if h.Node != nil {
			out = append(out, h.Node)
		}
	}
	return out
}

// Node returns the handle of node i (0-based).
func (c *Cluster) Node(i int) *NodeHandle { return c.Nodes()[i] }

// HTTPAddrs returns every node's API address.
func (c *Cluster) HTTPAddrs() []string {
	var out []string
	for _, h := range c.Nodes() {
		out = append(out, h.HTTPAddr)
	}
	return out
}

// WaitReady waits until every running node is ready and every shard has a
// leader that all running replicas agree on.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.t.Helper()
	WaitFor(c.t, timeout, "cluster ready", func() error {
		for _, h := range c.Nodes() {
			if h.Node == nil {
				continue
			}
			if !h.Node.Ready() {
				return fmt.Errorf("%s not ready", h.ID)
			}
		}
		for _, r := range c.running()[0].Node.Ranges() {
			if _, err := c.Leader(r.ID); err != nil {
				return err
			}
			for _, h := range c.running() {
				if !slices.Contains(r.Replicas, h.ID) {
					continue
				}
				if _, ok := h.Node.Host().Replica(r.ID); !ok {
					return fmt.Errorf("%s has not opened its replica of shard %d yet", h.ID, r.ID)
				}
			}
		}
		return nil
	})
}

func (c *Cluster) running() []*NodeHandle {
	var out []*NodeHandle
	for _, h := range c.Nodes() {
		if h.Node != nil {
			out = append(out, h)
		}
	}
	return out
}

// Leader returns the index of the node leading shard id, as agreed by the
// running replicas that can reach it.
func (c *Cluster) Leader(id uint64) (int, error) {
	for i, h := range c.Nodes() {
		if h.Node == nil {
			continue
		}
		if rep, ok := h.Node.Host().Replica(id); ok && rep.IsLeader() {
			return i, nil
		}
	}
	return -1, fmt.Errorf("shard %d has no leader", id)
}

// WaitLeader waits for shard id to have a leader other than the excluded nodes.
func (c *Cluster) WaitLeader(id uint64, timeout time.Duration, exclude ...int) int {
	c.t.Helper()
	leader := -1
	WaitFor(c.t, timeout, fmt.Sprintf("leader of shard %d", id), func() error {
		i, err := c.Leader(id)
		if err != nil {
			return err
		}
		for _, x := range exclude {
			if i == x {
				return fmt.Errorf("leader is still excluded node %d", i)
			}
		}
		leader = i
		return nil
	})
	return leader
}

// Kill stops node i abruptly from the cluster's point of view: its API,
// gossip and raft stop; its data dir stays.
func (c *Cluster) Kill(i int) {
	c.t.Helper()
	h := c.Node(i)
	if h.Node == nil {
		return
	}
	_ = h.Node.Close()
	c.mu.Lock()
	h.Node = nil
	c.mu.Unlock()
}

// Restart starts node i again on the same data dir and addresses.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	h := c.Node(i)
	if h.Node != nil {
		return
	}
	var n *node.Node
	WaitFor(c.t, 10*time.Second, "restart "+h.ID, func() error {
		var err error
		n, err = c.startOnce(h)
		return err
	})
	c.mu.Lock()
	h.Node = n
	c.mu.Unlock()
}

// TryRestart starts stopped node i again once and returns node.Start's
// error, for a start that is meant to be refused (a downgrade).
func (c *Cluster) TryRestart(i int) error {
	c.t.Helper()
	h := c.Node(i)
	if h.Node != nil {
		return nil
	}
	n, err := c.startOnce(h)
	if err == nil {
		c.mu.Lock()
		h.Node = n
		c.mu.Unlock()
	}
	return err
}

// startOnce starts h on its data dir and addresses, joining the running
// nodes; a gossip port taken meanwhile is replaced for the next try.
func (c *Cluster) startOnce(h *NodeHandle) (*node.Node, error) {
	cfg := h.cfg
	cfg.HTTPListener, cfg.RaftListener = nil, nil
	cfg.Join = nil
	for _, o := range c.Nodes() {
		if o != h && o.Node != nil {
			cfg.Join = append(cfg.Join, o.GossipAddr)
		}
	}
	n, err := node.Start(cfg)
	if err != nil && strings.Contains(err.Error(), "gossip") {
		h.GossipAddr = freeGossipAddr(c.t) // taken meanwhile: any free port will do
		h.cfg.GossipAddr = h.GossipAddr
	}
	return n, err
}

// SetCommandLevel gives stopped node i the binary level level from its
// next start (a node upgraded or downgraded in place).
func (c *Cluster) SetCommandLevel(i int, level int) {
	h := c.Node(i)
	k := *h.cfg.Knobs
	k.CommandLevel = &level
	h.cfg.Knobs = &k
}

// Isolate cuts node i off from every other node, both directions: raft,
// node-to-node HTTP (forwarding, heartbeats, participant calls), open
// connections included (TestIsolateCutsOpenConnections), and gossip, so
// the others come to suspect it and declare it dead as they would across
// a real partition (TestIsolateCutsGossip).
func (c *Cluster) Isolate(i int) {
	nodes := c.Nodes()
	for j := range nodes {
		if j != i {
			c.Net.set(nodes[i].RaftAddr, nodes[j].RaftAddr, true)
			c.Net.set(nodes[j].RaftAddr, nodes[i].RaftAddr, true)
		}
	}
}

// Partition splits the nodes into the given groups; traffic crosses no
// group boundary. Nodes not named form no group of their own: name them all.
func (c *Cluster) Partition(groups ...[]int) {
	nodes := c.Nodes()
	group := map[int]int{}
	for g, members := range groups {
		for _, m := range members {
			group[m] = g
		}
	}
	for i := range nodes {
		for j := range nodes {
			if i != j && group[i] != group[j] {
				c.Net.set(nodes[i].RaftAddr, nodes[j].RaftAddr, true)
			}
		}
	}
}

// SetDelay makes raft traffic on every link take d to arrive, one way (the
// cluster must be Delayable); 0 removes the delay.
func (c *Cluster) SetDelay(d time.Duration) {
	if !c.cfg.Delayable {
		c.t.Fatal("SetDelay on a cluster started without Delayable")
	}
	c.Net.mu.Lock()
	c.Net.delay = d
	c.Net.mu.Unlock()
}

// Heal removes every partition.
func (c *Cluster) Heal() {
	c.Net.mu.Lock()
	c.Net.blocked = map[[2]string]bool{}
	c.Net.mu.Unlock()
}

// Close stops every node.
func (c *Cluster) Close() {
	defer func() {
		if c.t.Failed() && c.logTail != nil {
			if s := c.logTail.String(); s != "" {
				c.t.Logf("the nodes' last log lines (info and up):\n%s", s)
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range c.Nodes() {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c.Kill(i)
		}(i)
	}
	wg.Wait()
}

// WaitFor polls cond until it returns nil or timeout passes, then fails the
// test with the last error.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Context returns a context that ends with the test or after d.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustListen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return ln
}

// freeGossipAddr finds a loopback port free for both TCP and UDP (memberlist
// binds both).
func freeGossipAddr(t testing.TB) string {
	t.Helper()
	for attempt := 0; attempt < 50; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err != nil {
			continue
		}
		pc.Close()
		return addr
	}
	t.Fatalf("no free gossip port")
	return ""
}

// AddNode starts one more node that joins the running cluster through
// gossip, as `cairn server --join` does, and returns its index.
func (c *Cluster) AddNode() int {
	c.t.Helper()
	return c.addNode(nil)
}

// AddNodeJoining is AddNode with the new node's --join listing only the
// nodes at indices seeds.
func (c *Cluster) AddNodeJoining(seeds ...int) int {
	c.t.Helper()
	return c.addNode(seeds)
}

func (c *Cluster) addNode(seeds []int) int {
	c.t.Helper()
	c.mu.Lock()
	i := len(c.nodes)
	c.mu.Unlock()
	h := &NodeHandle{ID: fmt.Sprintf("n%d", i+1), DataDir: filepath.Join(c.t.TempDir(), fmt.Sprintf("n%d", i+1))}
	httpLn, raftLn := mustListen(c.t), mustListen(c.t)
	h.HTTPAddr, h.RaftAddr = httpLn.Addr().String(), raftLn.Addr().String()
	h.cfg = c.nodeConfig(h, c.cfg)
	h.cfg.HTTPListener, h.cfg.RaftListener = httpLn, raftLn
	for j, o := range c.Nodes() {
		if o.Node != nil && (seeds == nil || slices.Contains(seeds, j)) {
			h.cfg.Join = append(h.cfg.Join, o.GossipAddr)
		}
	}
	h.Node = c.startWithGossipPort(h)
	c.mu.Lock()
	c.nodes = append(c.nodes, h)
	c.mu.Unlock()
	return i
}
