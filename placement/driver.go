package placement

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairndb/cairn/internal/clock"
)

// RangeStats is what a shard leader's heartbeat says about its range.
type RangeStats struct {
	Leader       string
	SizeBytes    int64
	WriteBytes   float64 // bytes/s written recently
	AppliedIndex uint64  // the leader's applied index (shown by GET /v1/cluster)
	Updated      time.Time
}

// DriverConfig configures the placement driver.
type DriverConfig struct {
	Meta      *Meta
	Exec      Executor
	Scheduler SchedulerConfig
	// Alive reports the nodes gossip currently sees alive (a hint, I12).
	Alive func() map[string]bool
	// Suspect reports the nodes gossip lists but suspects (they failed this
	// node's last probe of them and have not answered since); nil: none.
	// They receive nothing until they answer again.
	Suspect func() map[string]bool
	// ContactAges reports, for nodes that follow in raft groups this node
	// leads (the meta group's and the shards'), how long ago the freshest
	// of them answered a request sent to it (nil: no such signal). A node
	// heard from no sooner than ContactTimeout ago is Unresponsive: cut off
	// a moment ago, before it misses a report or gossip suspects it.
	ContactAges func() map[string]time.Duration
	// ContactTimeout: default 1s (raft heartbeats a follower every tenth
	// of its heartbeat timeout: 150ms by default); a node raises it to
	// half its groups' heartbeat timeout when that is longer.
	ContactTimeout time.Duration
	// ReportTimeout: a node whose last report (ObserveNode) is older than
	// this, or that has not reported since this node became placement
	// leader, is Unresponsive: it may have died a moment ago, before gossip
	// says so. Nodes report every 500ms. Default 2s.
	ReportTimeout time.Duration
	// Interval between scheduling rounds; default 1s.
	Interval time.Duration
	// MaxOps bounds the operations in progress at once; default 4.
	MaxOps int
	// NoSchedule disables new decisions (operations still run): a test knob
	// and an operator's pause switch.
	NoSchedule bool
	Logger     *slog.Logger
	// Clock is the time every timeout above is decided on; nil = the real
	// clock.
	Clock clock.Clock
	// Metrics, if set, receives cairn_placement_operations_total and
	// cairn_placement_operations_stalled.
	Metrics prometheus.Registerer
	// StallAfter is how long an operation may run on this placement leader
	// before it counts as stalled: it is reported (a warning and the
	// metrics) and rolled back where that is safe (Rollback). Default 60s.
	StallAfter time.Duration
}

// Driver runs on every node and acts while its node leads the meta group:
// it schedules (decide), records operations in the meta log, and steps them
// (execute). Statistics come from shard leaders' heartbeats.
type Driver struct {
	cfg DriverConfig

	mu         sync.Mutex
	stats      map[uint64]RangeStats
	downSince  map[string]time.Time
	lastReport map[string]time.Time // by node, since this node leads the meta group
	// lostLead is when a node was last seen to lose a range's leadership to
	// another node: until it reports again it may be dead (a dead leader's
	// ranges are taken over after an election timeout, maybe before
	// ReportTimeout has passed).
	lostLead map[string]time.Time
	running  map[uint64]bool
	// tracked remembers when this leader first saw each operation in
	// progress, to notice one that makes no progress.
	tracked map[uint64]*opTrack
	ops     *prometheus.CounterVec // by kind and event (started, finished, stalled, rolled_back)
	stalled prometheus.Gauge
	// underReplicated counts ranges with fewer live voters than the
	// replication factor: one failure closer to losing their quorum.
	underReplicated prometheus.Gauge
	rounds          prometheus.Counter
}

// opTrack is one operation as this placement leader has watched it.
type opTrack struct {
	op       Operation
	since    time.Time
	warnedAt time.Time // last stall warning; zero: not reported yet
	lastErr  error
}

// DefaultDriverConfig returns the driver's production settings; the caller
// fills in Meta, Exec, Alive and, to export them, Metrics.
func DefaultDriverConfig() DriverConfig {
	return DriverConfig{Scheduler: DefaultSchedulerConfig(), ContactTimeout: time.Second, ReportTimeout: 2 * time.Second,
		Interval: time.Second, MaxOps: 4, StallAfter: 60 * time.Second, Clock: clock.Real()}
}

// Validate reports settings the driver cannot run with. Zero values that
// have a default are valid; negative ones are not. (Meta, Exec and Alive are
// what Run needs; unit tests of the decisions run without them.)
func (c DriverConfig) Validate() error {
	var errs []error
	for name, d := range map[string]time.Duration{"contact timeout": c.ContactTimeout, "report timeout": c.ReportTimeout,
		"interval": c.Interval, "stall bound": c.StallAfter} {
		if d < 0 {
			errs = append(errs, fmt.Errorf("placement driver: %s %s is negative", name, d))
		}
	}
	if c.MaxOps < 0 {
		errs = append(errs, fmt.Errorf("placement driver: max ops %d is negative", c.MaxOps))
	}
	return errors.Join(errs...)
}

// NewDriver validates cfg and returns a driver; call Run.
func NewDriver(cfg DriverConfig) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Interval == 0 {
		cfg.Interval = time.Second
	}
	if cfg.MaxOps == 0 {
		cfg.MaxOps = 4
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real()
	}
	if cfg.ContactTimeout == 0 {
		cfg.ContactTimeout = time.Second
	}
	if cfg.ReportTimeout == 0 {
		cfg.ReportTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StallAfter == 0 {
		cfg.StallAfter = 60 * time.Second
	}
	d := &Driver{cfg: cfg, stats: map[uint64]RangeStats{}, downSince: map[string]time.Time{}, running: map[uint64]bool{},
		tracked: map[uint64]*opTrack{}, lastReport: map[string]time.Time{}, lostLead: map[string]time.Time{}}
	d.ops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "cairn", Subsystem: "placement", Name: "operations_total",
		Help: "Placement operations started and finished by this node as placement leader.",
	}, []string{"kind", "event"})
	d.stalled = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "cairn", Subsystem: "placement", Name: "operations_stalled",
		Help: "Operations in progress longer than the stall bound on this placement leader.",
	})
	d.underReplicated = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "cairn", Subsystem: "placement", Name: "ranges_under_replicated",
		Help: "Ranges with fewer live voters than the replication factor, as this placement leader sees them.",
	})
	d.rounds = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "cairn", Subsystem: "placement", Name: "rounds_total",
		Help: "Rounds of the placement driver (step the operations in progress, schedule new ones) this node ran as placement leader.",
	})
	if cfg.Metrics != nil {
		for _, c := range []prometheus.Collector{d.ops, d.stalled, d.underReplicated, d.rounds} {
			if err := cfg.Metrics.Register(c); err != nil {
				return nil, fmt.Errorf("placement driver metrics: %w", err)
			}
		}
	}
	return d, nil
}

// Observe records a heartbeat's statistics for a range.
func (d *Driver) Observe(rangeID uint64, s RangeStats) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s.Updated = d.cfg.Clock.Now()
	if prev, ok := d.stats[rangeID]; ok && prev.Leader != "" && prev.Leader != s.Leader {
		d.lostLead[prev.Leader] = s.Updated
	}
	d.stats[rangeID] = s
}

// ObserveNode records that node id has reported (its heartbeat arrived).
func (d *Driver) ObserveNode(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lastReport[id] = d.cfg.Clock.Now()
}

// Stats returns the latest heartbeat statistics of range id (meta leader).
func (d *Driver) Stats(id uint64) (RangeStats, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.stats[id]
	return s, ok && d.cfg.Clock.Now().Sub(s.Updated) < 10*time.Second
}

// Run schedules and executes until stop is closed.
func (d *Driver) Run(stop <-chan struct{}) {
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	var quorumless time.Time // since when this leader has had no quorum's answer
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		switch {
		case !d.cfg.Meta.IsLeader():
			quorumless = time.Time{}
			d.forget()
		case d.cfg.Meta.LeadsWithQuorum():
			quorumless = time.Time{}
			d.round(stop, &wg)
		default:
			// Raft says this node leads, but no quorum answered it within
			// the heartbeat timeout: a deposed leader whose raft is stuck
			// says so too, and would step the operations of its frozen map
			// against the new leader's (placement/DESIGN.md). Run no
			// round. Its leader-only gauges read 0 (another node may be
			// reporting them now); what it remembers is kept for a moment
			// in case it is only slow, then dropped, as on stepping down.
			now := d.cfg.Clock.Now()
			if quorumless.IsZero() {
				quorumless = now
			}
			if now.Sub(quorumless) > d.cfg.ReportTimeout {
				d.forget()
			} else {
				d.stalled.Set(0)
				d.underReplicated.Set(0)
			}
		}
	}
}

// forget drops leader-only memory when this node stops leading.
func (d *Driver) forget() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.downSince = map[string]time.Time{}
	d.tracked = map[uint64]*opTrack{}
	d.lastReport = map[string]time.Time{}
	d.lostLead = map[string]time.Time{}
	d.stalled.Set(0)
	d.underReplicated.Set(0) // only the placement leader reports it
}

// track records the operations in progress and returns how many have run
// longer than StallAfter. An operation replaced by another for the same
// range starts its clock again.
func (d *Driver) track(ops map[uint64]Operation, now time.Time) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, t := range d.tracked {
		if op, ok := ops[id]; !ok || !sameOp(op, t.op) {
			delete(d.tracked, id)
		}
	}
	n := 0
	for id, op := range ops {
		t, ok := d.tracked[id]
		if !ok {
			t = &opTrack{op: op, since: now}
			d.tracked[id] = t
		}
		if now.Sub(t.since) >= d.cfg.StallAfter {
			n++
		}
	}
	d.stalled.Set(float64(n))
	return n
}

func sameOp(a, b Operation) bool {
	return a.Kind == b.Kind && a.RangeID == b.RangeID && a.Epoch == b.Epoch && a.From == b.From && a.To == b.To &&
		string(a.SplitKey) == string(b.SplitKey)
}

// isStalled reports whether op has run longer than StallAfter and, when it
// has, whether a warning is due now (the first, then one per StallAfter).
func (d *Driver) isStalled(op Operation, now time.Time) (stalled, warn bool, since time.Time, lastErr error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	t, ok := d.tracked[op.RangeID]
	if !ok || !sameOp(t.op, op) || now.Sub(t.since) < d.cfg.StallAfter {
		return false, false, time.Time{}, nil
	}
	warn = t.warnedAt.IsZero() || now.Sub(t.warnedAt) >= d.cfg.StallAfter
	if warn {
		t.warnedAt = now
	}
	return true, warn, t.since, t.lastErr
}

func (d *Driver) noteErr(op Operation, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t, ok := d.tracked[op.RangeID]; ok && sameOp(t.op, op) && err != nil {
		t.lastErr = err
	}
}

func (d *Driver) round(stop <-chan struct{}, wg *sync.WaitGroup) {
	st, _ := d.cfg.Meta.State()
	if !st.Formed() {
		return
	}
	d.rounds.Inc()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	view := d.view(st)
	ids := make([]uint64, 0, len(st.Ops))
	for id := range st.Ops {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	d.track(st.Ops, d.cfg.Clock.Now())
	abandoned := 0
	for _, id := range ids {
		if d.abandonTransfer(ctx, view, st, st.Ops[id]) {
			abandoned++
			continue
		}
		d.stepAsync(stop, wg, st, st.Ops[id])
	}
	d.underReplicated.Set(float64(underReplicated(st, d.cfg.Alive(), d.cfg.Scheduler.Replication)))
	d.clearVoidPrefs(ctx, view, st)
	if d.cfg.NoSchedule || len(st.Ops)-abandoned >= d.cfg.MaxOps {
		return
	}
	started := len(st.Ops) - abandoned
	for _, op := range Schedule(d.cfg.Scheduler, view) {
		if started >= d.cfg.MaxOps {
			break
		}
		if err := d.cfg.Meta.StartOp(ctx, op); err != nil {
			if !errors.Is(err, ErrOpInProgress) {
				d.cfg.Logger.Warn("record placement operation", "op", op.String(), "err", err)
			}
			continue
		}
		d.cfg.Logger.Info("placement operation", "op", op.String())
		d.ops.WithLabelValues(string(op.Kind), "started").Inc()
		started++
	}
}

// stepAsync advances one operation in the background, one step at a time
// per range.
func (d *Driver) stepAsync(stop <-chan struct{}, wg *sync.WaitGroup, st *State, op Operation) {
	d.mu.Lock()
	if d.running[op.RangeID] {
		d.mu.Unlock()
		return
	}
	d.running[op.RangeID] = true
	d.mu.Unlock()
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			d.mu.Lock()
			delete(d.running, op.RangeID)
			d.mu.Unlock()
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		done, rolledBack, _ := d.step(ctx, st, op)
		if done {
			event := "finished"
			if rolledBack {
				event = "rolled_back"
			}
			d.ops.WithLabelValues(string(op.Kind), event).Inc()
			if err := d.cfg.Meta.FinishOp(ctx, op.RangeID); err != nil {
				d.cfg.Logger.Warn("finish placement operation", "op", op.String(), "err", err)
			}
		}
	}()
}

// step advances op one action, or, once it has stalled, rolls it back
// where that is safe (Rollback) and reports it: an operation that cannot
// make progress is never silently stuck (issue 10 item 6).
func (d *Driver) step(ctx context.Context, st *State, op Operation) (done, rolledBack bool, err error) {
	stalled, warn, since, lastErr := d.isStalled(op, d.cfg.Clock.Now())
	if stalled {
		if warn {
			d.ops.WithLabelValues(string(op.Kind), "stalled").Inc()
			d.cfg.Logger.Warn("placement operation stalled; rolling back where safe", "op", op.String(),
				"running", d.cfg.Clock.Now().Sub(since).Round(time.Second), "last_err", lastErr)
		}
		done, err = Rollback(ctx, d.cfg.Exec, st, op)
		if done {
			d.cfg.Logger.Warn("placement operation rolled back", "op", op.String())
			return true, true, nil
		}
		if !errors.Is(err, errCannotRollBack) {
			d.noteErr(op, err)
			return false, false, err
		}
		// The target votes already: the only way out is forward.
	}
	done, err = Step(ctx, d.cfg.Exec, st, op)
	if err != nil && !IsWaiting(err) {
		d.cfg.Logger.Debug("placement step", "op", op.String(), "err", err)
	}
	d.noteErr(op, err)
	return done, false, err
}

// underReplicated counts the ranges of the map with fewer voters on live,
// not removed nodes than replication. It reads the map, not the scheduler's
// view (which shows operations in progress as done): a range under repair
// counts until the map shows the repair finished. An alarm, not a decision.
func underReplicated(st *State, alive map[string]bool, replication int) int {
	n := 0
	for _, r := range st.Ranges {
		live := 0
		for _, id := range r.Replicas {
			if alive[id] && !st.Nodes[id].Removed {
				live++
			}
		}
		if live < replication {
			n++
		}
	}
	return n
}

// view builds the scheduler's input from the meta state, heartbeats and
// gossip liveness.
func (d *Driver) view(st *State) ClusterView {
	alive := d.cfg.Alive()
	now := d.cfg.Clock.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	var v ClusterView
	ids := make([]string, 0, len(st.Nodes))
	for id := range st.Nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var suspect map[string]bool
	if d.cfg.Suspect != nil {
		suspect = d.cfg.Suspect()
	}
	var contact map[string]time.Duration
	if d.cfg.ContactAges != nil {
		contact = d.cfg.ContactAges()
	}
	for _, id := range ids {
		n := st.Nodes[id]
		// A node whose binary is below the cluster's command level must hold
		// no replica (level.go): drained as if the operator had asked.
		nv := NodeView{ID: id, Alive: alive[id], Draining: n.Draining || st.BehindLevel(id), Removed: n.Removed}
		last, reported := d.lastReport[id]
		lost, lostLead := d.lostLead[id]
		age, heard := contact[id]
		nv.Unresponsive = suspect[id] || !reported || now.Sub(last) > d.cfg.ReportTimeout ||
			lostLead && !last.After(lost) || heard && age > d.cfg.ContactTimeout
		if nv.Alive {
			delete(d.downSince, id)
		} else {
			since, ok := d.downSince[id]
			if !ok {
				since = now
				d.downSince[id] = now
			}
			nv.DownFor = now.Sub(since)
		}
		v.Nodes = append(v.Nodes, nv)
	}
	for _, r := range st.Ranges {
		rv := RangeView{ID: r.ID, Start: r.Start, End: r.End, Epoch: r.Epoch, Replicas: r.Replicas,
			PreferredLeader: st.LeaderPrefs[r.ID]}
		if s, ok := d.stats[r.ID]; ok && now.Sub(s.Updated) < 10*time.Second {
			rv.Leader, rv.SizeBytes, rv.WriteBytes = s.Leader, s.SizeBytes, s.WriteBytes
		}
		if op, busy := st.Ops[r.ID]; busy {
			rv.Busy = true
			applyInfluence(&rv, op)
		}
		v.Ranges = append(v.Ranges, rv)
	}
	return v
}

// applyInfluence shows an operation in progress as if it had completed, so
// the scheduler counts replicas and leaders where they are going and does not
// schedule the same correction again (TiKV PD's "operator influence").
func applyInfluence(rv *RangeView, op Operation) {
	replicas := make([]string, 0, len(rv.Replicas)+1)
	for _, id := range rv.Replicas {
		if id != op.From || (op.Kind != OpMoveReplica && op.Kind != OpRemoveReplica) {
			replicas = append(replicas, id)
		}
	}
	if (op.Kind == OpMoveReplica || op.Kind == OpAddReplica) && !ctlHas(replicas, op.To) {
		replicas = append(replicas, op.To)
	}
	rv.Replicas = replicas
	switch {
	case op.Kind == OpTransferLeader:
		rv.Leader = op.To
	case op.Kind == OpMoveReplica && rv.Leader == op.From:
		rv.Leader = op.To
	}
}
