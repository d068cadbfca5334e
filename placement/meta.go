// Package placement is the placement driver: the range map and node registry
// kept in their own raft group (the meta group), and the decisions about
// where replicas and leaders live.
package placement

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/shard"
)

// MetaGroupID is the raft group id of the meta group on the shared transport.
// Shard ids start at 1.
const MetaGroupID = 0

// NodeInfo is a registered node. Addresses come from gossip and are hints.
type NodeInfo struct {
	ID       string `json:"id"`
	HTTPAddr string `json:"http_addr"`
	RaftAddr string `json:"raft_addr"`
	Draining bool   `json:"draining,omitempty"` // operator asked to move everything off
	Removed  bool   `json:"removed,omitempty"`  // operator removed the node for good
	// Level is the shard command level the node's binary applies
	// (fsm.CommandLevel), as it advertises it; 0 for a binary from before
	// levels.
	Level int `json:"level,omitempty"`
	// Recorded is the highest cluster level the node has recorded in its
	// data dir (node.json), below which its data dir no longer starts: the
	// level is raised only once every node that counts recorded it.
	Recorded int `json:"recorded,omitempty"`
}

// State is the replicated placement state.
type State struct {
	ClusterID   string              `json:"cluster_id"`
	Nodes       map[string]NodeInfo `json:"nodes"`
	Ranges      []fsm.Range         `json:"ranges"` // sorted by Start, covering the keyspace
	NextRangeID uint64              `json:"next_range_id"`
	// Ops are the placement operations in progress, at most one per range,
	// recorded before they run so a new placement leader resumes them.
	Ops map[uint64]Operation `json:"ops,omitempty"`
	// Genesis holds the descriptors the cluster was formed with. A replica
	// that joins one of those ranges may be sent the log from index 1, so its
	// state machine must start from exactly the descriptor the first replicas
	// started from, not from today's. (Ranges made by splits start from a
	// snapshot at index 1, so joiners always receive a snapshot there.)
	Genesis map[uint64]fsm.Range `json:"genesis,omitempty"`
	// LeaderPrefs maps a range id to the node an operator asked to lead it
	// (cairn cluster transfer-leader); the scheduler keeps leadership there
	// while that node is an eligible replica (prefs.go).
	LeaderPrefs map[uint64]string `json:"leader_prefs,omitempty"`
	// Level is the cluster's shard command level: commands of a higher level
	// (fsm.CommandLevel) are never proposed. It never goes down (level.go).
	Level int `json:"level,omitempty"`
	// Pending is the level being raised to: every node that counts records
	// it in its data dir, then Level becomes it (level.go).
	Pending int `json:"pending,omitempty"`
}

// Formed reports whether the cluster has been initialised.
func (s *State) Formed() bool { return s.ClusterID != "" }

// Lookup returns the range that owns key.
func (s *State) Lookup(key []byte) (fsm.Range, bool) {
	i := sort.Search(len(s.Ranges), func(i int) bool {
		return bytes.Compare(s.Ranges[i].Start, key) > 0
	})
	if i == 0 {
		return fsm.Range{}, false
	}
	r := s.Ranges[i-1]
	return r, r.Contains(key)
}

// Range returns the range with id.
func (s *State) Range(id uint64) (fsm.Range, bool) {
	for _, r := range s.Ranges {
		if r.ID == id {
			return r, true
		}
	}
	return fsm.Range{}, false
}

func (s *State) clone() *State {
	c := &State{ClusterID: s.ClusterID, NextRangeID: s.NextRangeID, Level: s.Level, Pending: s.Pending,
		Nodes: make(map[string]NodeInfo, len(s.Nodes))}
	for k, v := range s.Nodes {
		c.Nodes[k] = v
	}
	c.Ranges = append([]fsm.Range(nil), s.Ranges...)
	c.Ops = make(map[uint64]Operation, len(s.Ops))
	for k, v := range s.Ops {
		c.Ops[k] = v
	}
	c.Genesis = s.Genesis // written once at init, never mutated
	if len(s.LeaderPrefs) > 0 {
		c.LeaderPrefs = make(map[uint64]string, len(s.LeaderPrefs))
		for k, v := range s.LeaderPrefs {
			c.LeaderPrefs[k] = v
		}
	}
	return c
}

// metaCommand is one meta-group log entry. JSON: the meta group carries few,
// small entries, and readable logs help operators; V is the format version
// (metacodec.go).
type metaCommand struct {
	V         int         `json:"v"`
	Op        string      `json:"op"`
	Cluster   string      `json:"cluster_id,omitempty"`
	Ranges    []fsm.Range `json:"ranges,omitempty"`
	Node      *NodeInfo   `json:"node,omitempty"`
	Operation *Operation  `json:"operation,omitempty"`
	RangeID   uint64      `json:"range_id,omitempty"`
	Level     int         `json:"level,omitempty"`
}

const (
	opInit         = "init"
	opRegisterNode = "register_node"
	opReportRanges = "report_ranges"
	opAllocRangeID = "alloc_range_id"
	opStartOp      = "op_start"
	opFinishOp     = "op_done"
	opNodeState    = "node_state"
	opPrepareLevel = "prepare_level"
	opRaiseLevel   = "raise_level"
)

// ErrOpInProgress is returned when a range already has an operation.
var ErrOpInProgress = errors.New("an operation is already in progress for the range")

// ErrAlreadyFormed is returned by an init proposal on a formed cluster.
var ErrAlreadyFormed = errors.New("cluster already formed")

// InitialRanges cuts the keyspace at splits into ranges with ids 1..n, all
// replicated on replicas, at epoch 1.
func InitialRanges(splits []string, replicas []string) ([]fsm.Range, error) {
	keys := append([]string(nil), splits...)
	sort.Strings(keys)
	var out []fsm.Range
	var start []byte
	for i, k := range keys {
		if k == "" || (i > 0 && k == keys[i-1]) {
			return nil, fmt.Errorf("initial splits must be distinct, non-empty keys: %q", splits)
		}
		out = append(out, fsm.Range{ID: uint64(len(out) + 1), Start: start, End: []byte(k), Epoch: 1, Replicas: replicas})
		start = []byte(k)
	}
	out = append(out, fsm.Range{ID: uint64(len(out) + 1), Start: start, Epoch: 1, Replicas: replicas})
	return out, nil
}

// report merges one range descriptor reported by its shard's leader. The
// shard's own log is authoritative; the range map follows it by epoch:
//   - a report older than what the map holds for that id is ignored;
//   - a report that overlaps another id at an equal or higher epoch is stale
//     and ignored;
//   - otherwise it replaces its id, and other ranges it overlaps (older
//     views of a parent that split) are trimmed to what lies outside it.
//
// Reports may arrive in any order (a split's child before its parent); the
// map never holds overlapping ranges, at worst a short gap that the router
// waits out.
func (s *State) report(r fsm.Range) {
	for _, e := range s.Ranges {
		if e.ID == r.ID && e.Epoch >= r.Epoch {
			return
		}
		if e.ID != r.ID && overlap(e, r) && e.Epoch >= r.Epoch {
			return
		}
	}
	out := make([]fsm.Range, 0, len(s.Ranges)+1)
	for _, e := range s.Ranges {
		if e.ID == r.ID {
			continue
		}
		if !overlap(e, r) {
			out = append(out, e)
			continue
		}
		if bytes.Compare(e.Start, r.Start) < 0 {
			left := e
			left.End = r.Start
			out = append(out, left)
		} else if len(r.End) > 0 && (len(e.End) == 0 || bytes.Compare(e.End, r.End) > 0) {
			right := e
			right.Start = r.End
			out = append(out, right)
		}
	}
	out = append(out, r)
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].Start, out[j].Start) < 0 })
	s.Ranges = out
	if r.ID >= s.NextRangeID {
		s.NextRangeID = r.ID + 1
	}
}

func overlap(a, b fsm.Range) bool {
	aEndsBeforeB := len(a.End) > 0 && bytes.Compare(a.End, b.Start) <= 0
	bEndsBeforeA := len(b.End) > 0 && bytes.Compare(b.End, a.Start) <= 0
	return !aEndsBeforeB && !bEndsBeforeA
}

// metaFSM is the in-memory state machine of the meta group. Snapshots are the
// whole state as versioned JSON (metacodec.go); it is small (descriptors and
// nodes only).
type metaFSM struct {
	mu      sync.RWMutex
	state   *State
	changed chan struct{}
}

func newMetaFSM() *metaFSM {
	return &metaFSM{state: &State{Nodes: map[string]NodeInfo{}}, changed: make(chan struct{})}
}

func (f *metaFSM) Apply(l *raft.Log) interface{} {
	if l.Type != raft.LogCommand {
		return nil
	}
	c, err := decodeMetaCommand(l.Data)
	if err != nil {
		return fmt.Errorf("meta: decode entry %d: %w", l.Index, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// Copy on write: State hands out f.state itself, so a change goes to
	// a copy that replaces it. Entries are rare (formation, membership,
	// placement operations); reads are on every request's path.
	f.state = f.state.clone()
	res := f.apply(&c)
	f.notifyLocked()
	return res
}

// apply returns nil, an error, or a value (alloc_range_id's id).
func (f *metaFSM) apply(c *metaCommand) interface{} {
	switch c.Op {
	case opInit:
		if f.state.Formed() {
			return ErrAlreadyFormed
		}
		f.state.ClusterID = c.Cluster
		f.state.Ranges = c.Ranges
		f.state.Genesis = make(map[uint64]fsm.Range, len(c.Ranges))
		for _, r := range c.Ranges {
			f.state.Genesis[r.ID] = r
		}
		for _, r := range c.Ranges {
			if r.ID >= f.state.NextRangeID {
				f.state.NextRangeID = r.ID + 1
			}
		}
		return nil
	case opRegisterNode:
		if c.Node == nil || c.Node.ID == "" {
			return errors.New("meta: register_node without node")
		}
		n := f.state.Nodes[c.Node.ID] // addresses change; operator flags stay
		n.ID, n.HTTPAddr, n.RaftAddr = c.Node.ID, c.Node.HTTPAddr, c.Node.RaftAddr
		n.Level, n.Recorded = c.Node.Level, c.Node.Recorded
		f.state.Nodes[c.Node.ID] = n
		return nil
	case opNodeState:
		if c.Node == nil {
			return errors.New("meta: node_state without node")
		}
		n, ok := f.state.Nodes[c.Node.ID]
		if !ok {
			return fmt.Errorf("meta: node %s is not registered", c.Node.ID)
		}
		n.Draining, n.Removed = c.Node.Draining, c.Node.Removed
		f.state.Nodes[c.Node.ID] = n
		return nil
	case opStartOp:
		if c.Operation == nil {
			return errors.New("meta: op_start without operation")
		}
		if f.state.Ops == nil {
			f.state.Ops = map[uint64]Operation{}
		}
		if _, busy := f.state.Ops[c.Operation.RangeID]; busy {
			return ErrOpInProgress
		}
		f.state.Ops[c.Operation.RangeID] = *c.Operation
		return nil
	case opFinishOp:
		delete(f.state.Ops, c.RangeID)
		return nil
	case opReportRanges:
		for _, r := range c.Ranges {
			f.state.report(r)
		}
		return nil
	case opLeaderPref:
		return f.state.setLeaderPref(c)
	case opPrepareLevel:
		return f.state.prepareLevel(c.Level)
	case opRaiseLevel:
		return f.state.raiseLevel(c.Level)
	case opAllocRangeID:
		id := f.state.NextRangeID
		f.state.NextRangeID++
		return id
	}
	return fmt.Errorf("meta: unknown op %q", c.Op)
}

func (f *metaFSM) notifyLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *metaFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := encodeMetaSnapshot(f.state)
	if err != nil {
		return nil, err
	}
	return metaSnapshot(b), nil
}

func (f *metaFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s, err := decodeMetaSnapshot(rc)
	if err != nil {
		return fmt.Errorf("meta: restore: %w", err)
	}
	f.mu.Lock()
	f.state = s
	f.notifyLocked()
	f.mu.Unlock()
	return nil
}

type metaSnapshot []byte

func (s metaSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write(s); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (metaSnapshot) Release() {}

// MetaConfig configures this node's replica of the meta group.
type MetaConfig struct {
	NodeID  string
	DataDir string // the group lives in DataDir/meta
	Mux     *shard.Mux
	Logs    shard.NodeLog // the node's raft log store (required)
	Tuning  shard.RaftTuning
	Logger  *slog.Logger
}

// Meta is this node's replica of the meta group (voter or non-voter).
type Meta struct {
	g   *shard.Group
	fsm *metaFSM
	// contactWithin bounds how long ago a quorum must have answered this
	// node for LeadsWithQuorum: the group's heartbeat timeout, after which
	// the others may have elected a leader.
	contactWithin time.Duration
}

// OpenMeta starts this node's meta replica. A new node starts without a
// configuration and waits to be bootstrapped or added.
func OpenMeta(cfg MetaConfig) (*Meta, error) {
	f := newMetaFSM()
	g, err := shard.StartGroup(shard.GroupConfig{
		ID: MetaGroupID, Dir: filepath.Join(cfg.DataDir, "meta"), NodeID: cfg.NodeID,
		FSM: f, Mux: cfg.Mux, Logs: cfg.Logs, Tuning: cfg.Tuning, Logger: cfg.Logger.With("group", "meta"),
	})
	if err != nil {
		return nil, err
	}
	return &Meta{g: g, fsm: f, contactWithin: cfg.Tuning.HeartbeatTimeout}, nil
}

// State returns the applied state and a channel closed at the next change.
// The state is shared and never changes (a change replaces it): callers
// must not modify it.
func (m *Meta) State() (*State, <-chan struct{}) {
	m.fsm.mu.RLock()
	defer m.fsm.mu.RUnlock()
	return m.fsm.state, m.fsm.changed
}

// HasConfiguration reports whether this replica knows any meta membership
// (it was bootstrapped or added).
func (m *Meta) HasConfiguration() bool {
	f := m.g.Raft().GetConfiguration()
	return f.Error() == nil && len(f.Configuration().Servers) > 0
}

// Bootstrap forms the meta group with servers. Only one node calls it.
func (m *Meta) Bootstrap(servers []raft.Server) error {
	err := m.g.Raft().BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return nil
	}
	return err
}

// IsLeader reports whether this replica leads the meta group.
func (m *Meta) IsLeader() bool { return m.g.Raft().State() == raft.Leader }

// LeadsWithQuorum reports whether this node leads the meta group and a
// quorum of its voters answered it within the group's heartbeat timeout. A
// deposed leader whose raft main goroutine is stuck (a stalled log write)
// runs no lease check and keeps saying it leads while the others elect a
// leader; no quorum answers it in its old term, so this turns false.
func (m *Meta) LeadsWithQuorum() bool {
	r := m.g.Raft()
	if r.State() != raft.Leader {
		return false
	}
	qc := r.QuorumContact()
	return !qc.IsZero() && time.Since(qc) <= m.contactWithin
}

// Leader returns the meta leader's node id, empty when unknown.
func (m *Meta) Leader() string {
	id, _ := m.g.Leader()
	return id
}

// Raft exposes the meta raft instance, for tests that inspect or snapshot
// it. Membership changes, barriers and leadership transfers go through the
// methods of Meta, which bound and classify them.
func (m *Meta) Raft() *raft.Raft { return m.g.Raft() }

// Init proposes the cluster's initial range map. Leader only.
func (m *Meta) Init(ctx context.Context, clusterID string, ranges []fsm.Range) error {
	return m.proposeErr(ctx, &metaCommand{V: 1, Op: opInit, Cluster: clusterID, Ranges: ranges})
}

// RegisterNode records or updates a node's addresses. Leader only.
func (m *Meta) RegisterNode(ctx context.Context, n NodeInfo) error {
	return m.proposeErr(ctx, &metaCommand{V: 1, Op: opRegisterNode, Node: &n})
}

// PrepareLevel starts raising the cluster's command level to level
// (State.Pending), and RaiseLevel ends it (State.Level); a level at or below
// the current one changes nothing. Leader only; the caller checks that the
// nodes are ready (planMeta), the state machine checks it again (level.go).
func (m *Meta) PrepareLevel(ctx context.Context, level int) error {
	return m.proposeErr(ctx, &metaCommand{V: 1, Op: opPrepareLevel, Level: level})
}

// RaiseLevel: see PrepareLevel.
func (m *Meta) RaiseLevel(ctx context.Context, level int) error {
	return m.proposeErr(ctx, &metaCommand{V: 1, Op: opRaiseLevel, Level: level})
}

// propose appends c to the meta log and returns the FSM's answer to it.
// Errors are classified as a shard replica's proposals are (shard's
// propose.go, invariant I7): *shard.NotLeaderError or shard.ErrUnavailable
// (nothing written), shard.ErrOutcomeUnknown (may have been written); an
// entry the FSM refused returns the FSM's error (ErrAlreadyFormed,
// ErrOpInProgress, ...). It never waits past ctx, metaApplyTimeout, or the
// meta replica's shutdown.
func (m *Meta) propose(ctx context.Context, c *metaCommand) (interface{}, error) {
	b, err := encodeMetaCommand(c)
	if err != nil {
		return nil, err
	}
	resp, err := m.g.Apply(ctx, b, metaApplyTimeout)
	if err != nil {
		var nl *shard.NotLeaderError
		if errors.As(err, &nl) {
			return nil, err
		}
		return nil, fmt.Errorf("meta %s: %w", c.Op, err)
	}
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

// metaApplyTimeout bounds one meta proposal or membership change when the
// caller's context allows longer.
const metaApplyTimeout = 5 * time.Second

func (m *Meta) proposeErr(ctx context.Context, c *metaCommand) error {
	_, err := m.propose(ctx, c)
	return err
}

// ReportRanges merges descriptors reported by shard leaders into the range
// map (see State.report). Leader only.
func (m *Meta) ReportRanges(ctx context.Context, ranges []fsm.Range) error {
	return m.proposeErr(ctx, &metaCommand{V: 1, Op: opReportRanges, Ranges: ranges})
}

// StartOp records a placement operation before it runs. Leader only.
func (m *Meta) StartOp(ctx context.Context, op Operation) error {
	return m.proposeErr(ctx, &metaCommand{V: 1, Op: opStartOp, Operation: &op})
}

// FinishOp removes the operation of a range (done or rolled back). Leader only.
func (m *Meta) FinishOp(ctx context.Context, rangeID uint64) error {
	return m.proposeErr(ctx, &metaCommand{V: 1, Op: opFinishOp, RangeID: rangeID})
}

// SetNodeState records an operator's drain or removal of a node. Leader only.
func (m *Meta) SetNodeState(ctx context.Context, id string, draining, removed bool) error {
	return m.proposeErr(ctx, &metaCommand{V: 1, Op: opNodeState, Node: &NodeInfo{ID: id, Draining: draining, Removed: removed}})
}

// AllocRangeID reserves a new, never used range id. Leader only. Errors as
// propose's.
func (m *Meta) AllocRangeID(ctx context.Context) (uint64, error) {
	resp, err := m.propose(ctx, &metaCommand{V: 1, Op: opAllocRangeID})
	if err != nil {
		return 0, err
	}
	id, ok := resp.(uint64)
	if !ok {
		return 0, fmt.Errorf("meta: alloc_range_id answered %v", resp)
	}
	return id, nil
}

// AddNonvoter adds node id at raft address addr to the meta group as a
// non-voter (it receives the range map). Leader only. Errors are classified
// as propose's: a change appended but not known committed within ctx (or
// metaApplyTimeout) is shard.ErrOutcomeUnknown.
func (m *Meta) AddNonvoter(ctx context.Context, id, addr string) error {
	return m.changeMembership(ctx, func(r *raft.Raft, timeout time.Duration) raft.IndexFuture {
		return r.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	})
}

// AddVoter makes node id a voter of the meta group. Leader only. Errors as
// AddNonvoter's.
func (m *Meta) AddVoter(ctx context.Context, id, addr string) error {
	return m.changeMembership(ctx, func(r *raft.Raft, timeout time.Duration) raft.IndexFuture {
		return r.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	})
}

// RemoveMember removes node id from the meta group. Leader only. Errors as
// AddNonvoter's.
func (m *Meta) RemoveMember(ctx context.Context, id string) error {
	return m.changeMembership(ctx, func(r *raft.Raft, timeout time.Duration) raft.IndexFuture {
		return r.RemoveServer(raft.ServerID(id), 0, timeout)
	})
}

func (m *Meta) changeMembership(ctx context.Context, change func(*raft.Raft, time.Duration) raft.IndexFuture) error {
	err := m.g.ChangeMembership(ctx, metaApplyTimeout, change)
	var nl *shard.NotLeaderError
	if err == nil || errors.As(err, &nl) {
		return err
	}
	return fmt.Errorf("meta membership change: %w", err)
}

// Members returns the meta group's latest configuration as this replica
// knows it (uncommitted changes included).
func (m *Meta) Members() ([]shard.Member, error) {
	f := m.g.Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	var out []shard.Member
	for _, s := range f.Configuration().Servers {
		out = append(out, shard.Member{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

// Barrier returns once every entry committed before the call is applied to
// this replica's state, which must lead. Errors as propose's.
func (m *Meta) Barrier(ctx context.Context) error {
	return m.g.Barrier(ctx, metaApplyTimeout)
}

// TransferLeadership hands the meta group's leadership to the voter id at
// addr, or to the most up-to-date voter when id is "", and waits for that,
// at most until ctx ends (or metaApplyTimeout). Failures are
// shard.ErrUnavailable.
func (m *Meta) TransferLeadership(ctx context.Context, id, addr string) error {
	return m.g.TransferLeadership(ctx, metaApplyTimeout, id, addr)
}

// Close stops the meta replica.
func (m *Meta) Close() error { return m.g.Shutdown() }
