// Package shard hosts many Raft groups on one node: raft configuration, log
// stores, the multiplexed transport, the read paths and the replica write path.
package shard

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// RaftTuning is the subset of raft.Config that cairn exposes. Data groups and
// the meta group may use different tunings.
type RaftTuning struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	MaxAppendEntries   int
	SnapshotThreshold  uint64
	SnapshotInterval   time.Duration
	TrailingLogs       uint64
	LogCacheSize       int
}

// DefaultRaftTuning returns the production timeouts: a second-scale failure
// detector, as Raft recommends, with batched appends for throughput.
func DefaultRaftTuning() RaftTuning {
	return RaftTuning{
		// Raft heartbeats every HeartbeatTimeout/10 per follower per group,
		// the dominant idle cost with many shards (see shard/DESIGN.md "Scale").
		// 1.5s keeps failover well under the 5s RTO target.
		HeartbeatTimeout:   1500 * time.Millisecond,
		ElectionTimeout:    1500 * time.Millisecond,
		LeaderLeaseTimeout: 750 * time.Millisecond,
		// CommitTimeout is how often an idle leader's pipeline pings each
		// follower to carry the commit index. Writes do not wait on it (the
		// leader answers on commit); only followers' knowledge of the commit
		// index does. At 5ms it cost 200 RPCs/s per follower per group idle.
		CommitTimeout:     250 * time.Millisecond,
		MaxAppendEntries:  1024,
		SnapshotThreshold: 8192,
		SnapshotInterval:  60 * time.Second,
		TrailingLogs:      10240,
		LogCacheSize:      512,
	}
}

// FastRaftTuning returns timeouts suited to loopback test clusters.
func FastRaftTuning() RaftTuning {
	t := DefaultRaftTuning()
	t.HeartbeatTimeout = 300 * time.Millisecond
	t.ElectionTimeout = 300 * time.Millisecond
	t.LeaderLeaseTimeout = 150 * time.Millisecond
	t.SnapshotInterval = 5 * time.Second
	return t
}

// Validate reports a tuning that hashicorp/raft would reject or that cannot work.
func (t RaftTuning) Validate() error {
	switch {
	case t.HeartbeatTimeout < 5*time.Millisecond:
		return fmt.Errorf("heartbeat timeout %s is too low", t.HeartbeatTimeout)
	case t.ElectionTimeout < t.HeartbeatTimeout:
		return fmt.Errorf("election timeout %s below heartbeat timeout %s", t.ElectionTimeout, t.HeartbeatTimeout)
	case t.LeaderLeaseTimeout > t.HeartbeatTimeout:
		return fmt.Errorf("leader lease timeout %s above heartbeat timeout %s", t.LeaderLeaseTimeout, t.HeartbeatTimeout)
	case t.MaxAppendEntries <= 0 || t.MaxAppendEntries > 1024:
		return fmt.Errorf("max append entries %d out of range 1..1024", t.MaxAppendEntries)
	case t.LogCacheSize <= 0:
		return fmt.Errorf("log cache size %d must be positive", t.LogCacheSize)
	}
	return nil
}

// GroupConfig describes one raft group to start on this node.
type GroupConfig struct {
	ID     uint64
	Dir    string // the group's own directory: snapshots/ (and raft.db with the boltdb log store)
	NodeID string
	FSM    raft.FSM
	Mux    *Mux
	Tuning RaftTuning
	// Logger receives the group's logs, raft's included (raftlog.go). It
	// should name the group already (the host adds shard=N, the meta group
	// group=meta): StartGroup adds no label of its own, so that a line does
	// not carry the group twice.
	Logger *slog.Logger
	// Logs is the node's log store (logstore.go), the WAL or boltdb;
	// required.
	Logs      NodeLog
	Bootstrap []raft.Server // non-empty: bootstrap with this configuration if the group has no state
	// NoSnapshotRestoreOnStart is set for FSMs that persist their own state
	// (the shard FSM); raft then only replays entries after the snapshot.
	NoSnapshotRestoreOnStart bool
	// OnAppendEntries, when set, sees every AppendEntries request this
	// replica receives (heartbeats aside) before raft handles it; it must be
	// fast and must not keep or change the request (staleness.go).
	OnAppendEntries func(*raft.AppendEntriesRequest)
	// OnLeadershipLost, when set, is raft's Config.LeadershipLost (the
	// third_party copy): the index and term of each entry in flight when
	// the leader loses leadership (claims.go).
	OnLeadershipLost func(index, term uint64)
}

// Group is a running raft instance with the stores it owns: a shard replica's
// or the placement meta group's.
type Group struct {
	id        uint64
	raft      *raft.Raft
	guard     *logGuard // raft's view of the group's log
	snaps     raft.SnapshotStore
	transport *GroupTransport
	observed  *observedTransport // the transport raft runs on when OnAppendEntries is set

	logStop atomic.Bool // stopped by logFailed
	// gate and stopping keep calls that queue on raft's apply channel from
	// racing its shutdown; stopCh ends every wait on a future (propose.go).
	gate         sync.RWMutex
	stopping     atomic.Bool
	stopCh       chan struct{}
	stopOnce     sync.Once
	stopped      raft.Future
	shutdownOnce sync.Once
	shutdownErr  error
}

// StartGroup opens the group's stores and starts raft. On error everything it
// opened is closed again.
func StartGroup(cfg GroupConfig) (*Group, error) {
	if cfg.Logs == nil {
		return nil, fmt.Errorf("group %d: no log store (GroupConfig.Logs)", cfg.ID)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("group %d: %w", cfg.ID, err)
	}
	g := &Group{id: cfg.ID, stopCh: make(chan struct{})}
	if err := g.start(cfg); err != nil {
		_ = g.closeStores()
		if cfg.Logs.Err() != nil && !errors.Is(err, ErrLogFailed) {
			// raft reports store errors with %v: keep the cause matchable.
			err = fmt.Errorf("%w (%v)", cfg.Logs.Err(), err)
		}
		return nil, err
	}
	return g, nil
}

func (g *Group) start(cfg GroupConfig) error {
	gl, err := cfg.Logs.OpenGroup(cfg.ID, cfg.Dir)
	if err != nil {
		return fmt.Errorf("group %d: open log store: %w", cfg.ID, err)
	}
	g.guard = &logGuard{GroupLog: gl, onFail: g.logFailed}
	var stable raft.StableStore = g.guard
	cached, err := raft.NewLogCache(cfg.Tuning.LogCacheSize, g.guard)
	if err != nil {
		return fmt.Errorf("group %d: log cache: %w", cfg.ID, err)
	}
	hlog := newRaftLogger(cfg.Logger)
	g.snaps, err = raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, hlog)
	if err != nil {
		return fmt.Errorf("group %d: snapshot store: %w", cfg.ID, err)
	}
	g.transport, err = cfg.Mux.Transport(cfg.ID, 3, 10*time.Second, hlog)
	if err != nil {
		return fmt.Errorf("group %d: transport: %w", cfg.ID, err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.LeadershipLost = cfg.OnLeadershipLost
	rc.HeartbeatTimeout = cfg.Tuning.HeartbeatTimeout
	rc.ElectionTimeout = cfg.Tuning.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.Tuning.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.Tuning.CommitTimeout
	rc.MaxAppendEntries = cfg.Tuning.MaxAppendEntries
	rc.SnapshotThreshold = cfg.Tuning.SnapshotThreshold
	rc.SnapshotInterval = cfg.Tuning.SnapshotInterval
	rc.TrailingLogs = cfg.Tuning.TrailingLogs
	rc.NoSnapshotRestoreOnStart = cfg.NoSnapshotRestoreOnStart
	// A buffered apply channel: proposers queue their entry and go on to
	// wait for its outcome instead of parking until the leader loop takes
	// it, which cost a goroutine handoff per entry. The price is that an
	// entry can be appended after Apply's timeout, which Propose already
	// reports as outcome unknown; entries still queued when leadership is
	// lost are refused with ErrNotLeader, nothing written.
	rc.BatchApplyCh = true
	rc.Logger = hlog
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("group %d: %w", cfg.ID, err)
	}

	if len(cfg.Bootstrap) > 0 {
		has, err := raft.HasExistingState(cached, stable, g.snaps)
		if err != nil {
			return fmt.Errorf("group %d: %w", cfg.ID, err)
		}
		if !has {
			err := raft.BootstrapCluster(rc, cached, stable, g.snaps, g.transport,
				raft.Configuration{Servers: cfg.Bootstrap})
			if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
				return fmt.Errorf("group %d: bootstrap: %w", cfg.ID, err)
			}
		}
	}
	var trans raft.Transport = g.transport
	if cfg.OnAppendEntries != nil {
		g.observed = newObservedTransport(g.transport, cfg.OnAppendEntries)
		trans = g.observed
	}
	g.raft, err = newRaft(cfg.Logs, func() (*raft.Raft, error) {
		return raft.NewRaft(rc, cfg.FSM, cached, stable, g.snaps, trans)
	})
	if err != nil {
		return fmt.Errorf("group %d: start raft: %w", cfg.ID, err)
	}
	g.guard.started.Store(true)
	return nil
}

// newRaft runs start (raft.NewRaft), turning the panic it raises when the
// node log fails under it (it saves the current term and reads the log's
// configuration entries, and panics on an error of either) into an error.
func newRaft(logs NodeLog, start func() (*raft.Raft, error)) (r *raft.Raft, err error) {
	defer func() {
		if p := recover(); p != nil {
			if logs.Err() == nil {
				panic(p)
			}
			r, err = nil, fmt.Errorf("%w (raft: %v)", logs.Err(), p)
		}
	}()
	return start()
}

// logFailed stops raft once the node log has failed (logGuard): the group
// can no longer make anything durable. Shutdown completes the stop.
func (g *Group) logFailed() {
	if g.guard.started.Load() {
		g.stopRaftNow()
		g.logStop.Store(true)
	}
}

// stopRaft starts raft's shutdown, once. It first closes the gate of the
// calls that queue futures on raft's apply channel, waits for the calls in
// progress, and lets raft's main loop take what they queued, so every future
// the group handed out is answered (propose.go).
func (g *Group) stopRaft() raft.Future {
	g.stopOnce.Do(func() {
		g.stopping.Store(true)
		g.gate.Lock() // waits for calls queueing right now
		//lint:ignore SA2001 an empty critical section: the wait is the point
		g.gate.Unlock()
		awaitApplyQueueEmpty(g.raft)
		close(g.stopCh)
		g.stopped = g.raft.Shutdown()
	})
	return g.stopped
}

// stopRaftNow is stopRaft from inside raft's own goroutines (the log store
// failed under a call of raft's): raft's main loop may be the caller, so it
// neither waits for the gate nor for the apply queue. Waiters return at once
// (stopCh); futures still queued stay unanswered, their readers behind.
func (g *Group) stopRaftNow() raft.Future {
	g.stopOnce.Do(func() {
		g.stopping.Store(true)
		close(g.stopCh)
		g.stopped = g.raft.Shutdown()
	})
	return g.stopped
}

// Shutdown stops raft and closes the stores. Safe to call more than once.
func (g *Group) Shutdown() error {
	g.shutdownOnce.Do(func() {
		var err error
		if g.raft != nil {
			err = g.stopRaft().Error()
		}
		g.shutdownErr = errors.Join(err, g.closeStores())
	})
	return g.shutdownErr
}

func (g *Group) closeStores() error {
	var errs []error
	if g.observed != nil {
		g.observed.close()
	}
	if g.transport != nil {
		errs = append(errs, g.transport.Close())
		// Its own layer (closed by the transport's Close already, unless
		// raft closed the transport first): never Unregister by id, which
		// would close a replica of the same group registered since.
		g.transport.layer.close()
	}
	if g.guard != nil {
		errs = append(errs, g.guard.Close())
	}
	return errors.Join(errs...)
}

// Leader returns the node id and raft address of the group's leader as this
// replica knows it; empty when unknown.
func (g *Group) Leader() (id, addr string) {
	a, i := g.raft.LeaderWithID()
	return string(i), string(a)
}

// Raft returns the group's raft instance.
func (g *Group) Raft() *raft.Raft { return g.raft }
