package shard

import (
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/clock"
)

// HostConfig configures the set of shard replicas on one node.
type HostConfig struct {
	NodeID  string
	DataDir string // replicas live in DataDir/shards/<id>/
	Mux     *Mux
	// Logs is the node's raft log store (logstore.go); required.
	Logs NodeLog
	// DeferFSMSync commits state machine batches without fsync, trusting
	// the raft log (fsm/durability.go); BootID overrides the boot id (tests).
	DeferFSMSync bool
	BootID       func() (string, error)
	Tuning       RaftTuning
	ApplyTimeout time.Duration // bound on one proposal; default 5s
	Logger       *slog.Logger
	Clock        Clock // nil = the real clock
	// Metrics, when set, receives the host's metrics at NewHost (the same
	// as calling RegisterMetrics); nil: none registered.
	Metrics prometheus.Registerer
	// Knobs are test hooks; nil in production.
	Knobs *ReplicaKnobs
	// BeforeRangePublish is fsm.Config.BeforeRangePublish (test knob).
	BeforeRangePublish func()
}

// Host owns every shard replica on this node.
type Host struct {
	cfg HostConfig
	log *slog.Logger

	mu       sync.RWMutex
	replicas map[uint64]*Replica
	opening  map[uint64]chan struct{} // ids being opened; closed when done
	closed   bool
	failed   error         // the node log failed: every replica is stopped (Fail)
	stop     chan struct{} // closed by Close: ends watchLog
	wg       sync.WaitGroup

	leaderChanges  *prometheus.CounterVec // nil until RegisterMetrics
	proposeSeconds prometheus.Histogram   // nil until RegisterMetrics
	settled        *prometheus.CounterVec // nil until RegisterMetrics
	lockMetrics    *lockMetrics           // nil until RegisterMetrics
}

// DefaultHostConfig returns a host configuration with production defaults;
// the caller fills in NodeID, DataDir and Mux.
func DefaultHostConfig() HostConfig {
	return HostConfig{Tuning: DefaultRaftTuning(), ApplyTimeout: 5 * time.Second, Clock: clock.Real()}
}

// Validate reports a configuration NewHost cannot start with. Zero values
// that have a default (ApplyTimeout, Logger, Clock) are valid.
func (c HostConfig) Validate() error {
	var errs []error
	if c.NodeID == "" || c.DataDir == "" || c.Mux == nil || c.Logs == nil {
		errs = append(errs, errors.New("shard host: NodeID, DataDir, Mux and Logs are required"))
	}
	if err := c.Tuning.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("shard host: %w", err))
	}
	if c.ApplyTimeout < 0 {
		errs = append(errs, fmt.Errorf("shard host: apply timeout %s is negative", c.ApplyTimeout))
	}
	return errors.Join(errs...)
}

// NewHost validates cfg and returns an empty host. Call OpenReplica for each
// shard this node hosts (ExistingShards lists those found on disk).
func NewHost(cfg HostConfig) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ApplyTimeout == 0 {
		cfg.ApplyTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	h := &Host{cfg: cfg, log: cfg.Logger, replicas: map[uint64]*Replica{}, opening: map[uint64]chan struct{}{},
		stop: make(chan struct{})}
	if cfg.Metrics != nil {
		if err := h.RegisterMetrics(cfg.Metrics); err != nil {
			return nil, err
		}
	}
	if cfg.Logs != nil {
		h.wg.Add(1)
		go h.watchLog()
	}
	return h, nil
}

// watchLog fails the host when the node log fails.
func (h *Host) watchLog() {
	defer h.wg.Done()
	select {
	case <-h.cfg.Logs.Failed():
		h.Fail(h.cfg.Logs.Err())
	case <-h.stop:
	}
}

// Fail stops every replica and refuses to open more, with err: the node log
// they all write to failed (ErrLogFailed), so none of them can make a vote
// or an entry durable, and what they already acknowledged is safe only on
// disk, which the node reads again when it restarts. Data stays on disk.
func (h *Host) Fail(err error) {
	h.mu.Lock()
	if h.failed != nil {
		h.mu.Unlock()
		return
	}
	h.failed = err
	rs := h.replicas
	h.replicas = map[uint64]*Replica{}
	h.mu.Unlock()
	h.log.Error("node raft log failed: stopping every replica; restart the node to recover", "err", err,
		"replicas", len(rs))
	for _, r := range rs {
		if cerr := r.close(); cerr != nil {
			h.log.Warn("close replica after log failure", "shard", r.id, "err", cerr)
		}
	}
}

// Err returns why the host stopped its replicas (Fail), or nil.
func (h *Host) Err() error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.failed
}

func (h *Host) shardDir(id uint64) string {
	return filepath.Join(h.cfg.DataDir, "shards", strconv.FormatUint(id, 10))
}

// ExistingShards lists the shard ids that have state on disk.
func (h *Host) ExistingShards() ([]uint64, error) {
	ents, err := os.ReadDir(filepath.Join(h.cfg.DataDir, "shards"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for _, e := range ents {
		if id, err := strconv.ParseUint(e.Name(), 10, 64); err == nil && e.IsDir() {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

// OpenReplica starts this node's replica of shard desc.ID, or returns the
// running one. desc is stored as the shard's range only when the replica is
// new; afterwards the range changes through the shard's own log. When
// bootstrap is non-empty and the replica has no raft state, the group is
// bootstrapped with that configuration (every initial member does the same,
// which hashicorp/raft documents as safe).
func (h *Host) OpenReplica(desc fsm.Range, bootstrap []raft.Server) (*Replica, error) {
	for {
		h.mu.Lock()
		if h.closed {
			h.mu.Unlock()
			return nil, ErrClosed
		}
		if h.failed != nil {
			h.mu.Unlock()
			return nil, h.failed
		}
		if r, ok := h.replicas[desc.ID]; ok {
			h.mu.Unlock()
			return r, nil
		}
		if ch, ok := h.opening[desc.ID]; ok {
			h.mu.Unlock()
			<-ch // someone else is opening it: wait, then look again
			continue
		}
		// The directory is created under the lock so prepareChild (a split
		// building this id's starting snapshot) sees it consistently.
		if err := os.MkdirAll(h.shardDir(desc.ID), 0o755); err != nil {
			h.mu.Unlock()
			return nil, err
		}
		ch := make(chan struct{})
		h.opening[desc.ID] = ch
		h.mu.Unlock()

		// Opening takes milliseconds (files, raft start): outside the lock,
		// so a node reopens hundreds of replicas in parallel.
		r, err := h.openReplica(desc, bootstrap)
		h.mu.Lock()
		delete(h.opening, desc.ID)
		closed, failed := h.closed, h.failed
		if err == nil && !closed && failed == nil {
			h.replicas[desc.ID] = r
		}
		close(ch)
		h.mu.Unlock()
		if err == nil && (closed || failed != nil) {
			_ = r.close()
			if failed != nil {
				return nil, failed
			}
			return nil, ErrClosed
		}
		return r, err
	}
}

func (h *Host) openReplica(desc fsm.Range, bootstrap []raft.Server) (*Replica, error) {
	dir := h.shardDir(desc.ID)
	log := h.log.With("shard", desc.ID)
	r := &Replica{
		id: desc.ID, nodeID: h.cfg.NodeID, log: log, clock: h.cfg.Clock, leaderChanges: h.leaderChanges,
		proposeSeconds: h.proposeSeconds, settledMetric: h.settled,
		applyTimeout: h.cfg.ApplyTimeout, ttl: newTTLManager(), knobs: h.cfg.Knobs,
		readyCh: make(chan struct{}), genCh: make(chan struct{}), kick: make(chan struct{}, 1),
		stop: make(chan struct{}),
	}
	r.locks = newLockManager(desc.ID, h.lockMetrics, r.clock.Now)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		// A new replica: whatever an earlier replica of this shard left in
		// the WAL (a removal cut short by a crash) is not its.
		if err := h.cfg.Logs.DropGroup(desc.ID); err != nil {
			return nil, fmt.Errorf("shard %d: clear log: %w", desc.ID, err)
		}
	}
	hasSnap, err := hasSnapshot(dir, log)
	if err != nil {
		return nil, fmt.Errorf("shard %d: %w", desc.ID, err)
	}
	f, err := fsm.Open(fsm.Config{
		Path:        filepath.Join(dir, "fsm.db"),
		Initial:     desc,
		HasSnapshot: hasSnap, // catchUpFromSnapshot restores it after a rebuild
		Logger:      log,
		OnTTL: func(e fsm.TTLEntry) {
			r.ttl.add(r.clock.Now().Add(e.TTL), e)
		},
		OnLock: func(e fsm.LockEvent) {
			r.locks.onLock(e)
		},
		AfterRestore: func() {
			r.locks.recheckAll(true, r.fsm.TokenBase()+r.fsm.Applied())
		},
		OnSplit: h.prepareChild,
		AfterSplit: func(child fsm.Range) {
			r.locks.recheckAll(false, 0) // waits on names that moved to the child end
			h.startChild(child)
		},
		DeferSync: h.cfg.DeferFSMSync,
		BootID:    h.cfg.BootID,

		BeforeRangePublish: h.cfg.BeforeRangePublish,
	})
	if err != nil {
		return nil, fmt.Errorf("shard %d: open fsm: %w", desc.ID, err)
	}
	r.fsm = f
	r.locks.floor = f.TokenBase() + f.Applied()
	if err := catchUpFromSnapshot(dir, f, log); err != nil {
		f.Close()
		return nil, fmt.Errorf("shard %d: %w", desc.ID, err)
	}
	r.claims = newClaimFSM(h.cfg.Knobs.raftFSM(desc.ID, f), f)
	r.g, err = StartGroup(GroupConfig{
		ID: desc.ID, Dir: dir, NodeID: h.cfg.NodeID, FSM: r.claims, Mux: h.cfg.Mux, Logs: h.cfg.Logs,
		Tuning: h.cfg.Tuning, Logger: log, Bootstrap: bootstrap,
		NoSnapshotRestoreOnStart: true,
		OnAppendEntries:          r.observeAppend,
		OnLeadershipLost:         r.claims.expect,
	})
	if err != nil {
		f.Close()
		return nil, err
	}
	r.wg.Add(1)
	go r.watchLeadership()
	return r, nil
}

// catchUpFromSnapshot restores the newest raft snapshot into the FSM when the
// FSM is behind it. The FSM persists its own state, so raft is told not to
// restore on start (it would throw away newer local state); but a crash after
// raft installed a snapshot from the leader and before the FSM swapped its
// file would otherwise lose the entries the snapshot covers.
func catchUpFromSnapshot(dir string, f *fsm.FSM, log *slog.Logger) error {
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, newRaftLogger(log))
	if err != nil {
		return err
	}
	metas, err := snaps.List()
	if err != nil || len(metas) == 0 {
		return err
	}
	newest := metas[0]
	if newest.Index <= f.Applied() {
		return nil
	}
	log.Info("fsm behind newest snapshot; restoring", "fsm_applied", f.Applied(), "snapshot", newest.Index)
	_, rc, err := snaps.Open(newest.ID)
	if err != nil {
		return err
	}
	return f.Restore(rc)
}

// hasSnapshot reports whether the group's directory holds a raft snapshot.
func hasSnapshot(dir string, log *slog.Logger) (bool, error) {
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, newRaftLogger(log))
	if err != nil {
		return false, err
	}
	metas, err := snaps.List()
	return len(metas) > 0, err
}

// Replica returns the running replica of shard id.
func (h *Host) Replica(id uint64) (*Replica, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	r, ok := h.replicas[id]
	return r, ok
}

// Replicas returns the running replicas ordered by shard id.
func (h *Host) Replicas() []*Replica {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*Replica, 0, len(h.replicas))
	for _, r := range h.replicas {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// Close shuts every replica down. Data stays on disk.
func (h *Host) Close() error {
	h.mu.Lock()
	if !h.closed {
		close(h.stop)
	}
	h.closed = true
	rs := h.replicas
	h.replicas = map[uint64]*Replica{}
	h.mu.Unlock()
	h.wg.Wait()
	var errs []error
	for _, r := range rs {
		errs = append(errs, r.close())
	}
	return errors.Join(errs...)
}

func (r *Replica) close() error {
	if !r.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(r.stop)
	err := r.g.Shutdown()
	r.wg.Wait()
	return errors.Join(err, r.fsm.Close())
}

// RemoveReplica stops the replica of shard id and deletes its data. The
// caller has established that the shard's configuration no longer includes
// this node.
func (h *Host) RemoveReplica(id uint64) error {
	h.mu.Lock()
	r, ok := h.replicas[id]
	delete(h.replicas, id)
	h.mu.Unlock()
	if ok {
		if err := r.close(); err != nil {
			h.log.Warn("close removed replica", "shard", id, "err", err)
		}
	}
	if err := h.cfg.Logs.DropGroup(id); err != nil {
		return fmt.Errorf("shard %d: drop log: %w", id, err)
	}
	return os.RemoveAll(h.shardDir(id))
}
