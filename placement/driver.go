package placement

import (
	"context"
	"errors"
	"github.com/prometheus/client_golang/prometheus"
	"log/slog"
	"sort"
	"sync"
	"time"
)

// RangeStats is what a shard leader's heartbeat says about its range.
type RangeStats struct {
	Leader     string
	SizeBytes  int64
	WriteBytes float64 // bytes/s written recently
	Updated    time.Time
}

// DriverConfig configures the placement driver.
type DriverConfig struct {
	Meta      *Meta
	Exec      Executor
	Scheduler SchedulerConfig
	// Alive reports the nodes gossip currently sees alive (a hint, I12).
	Alive func() map[string]bool
	// Suspect reports the nodes gossip lists but suspects (missed probes);
	// nil: none. They receive nothing until they answer again.
	Suspect func() map[string]bool
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
	Now        func() time.Time // nil = time.Now
	// Metrics, if set, receives cairn_placement_operations_total.
	Metrics prometheus.Registerer
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
	ops      *prometheus.CounterVec // by kind and event (started, finished)
}

// NewDriver returns a driver; call Run.
func NewDriver(cfg DriverConfig) *Driver {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Second
	}
	if cfg.MaxOps <= 0 {
		cfg.MaxOps = 4
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ReportTimeout <= 0 {
		cfg.ReportTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Driver{cfg: cfg, stats: map[uint64]RangeStats{}, downSince: map[string]time.Time{},
		lastReport: map[string]time.Time{}, lostLead: map[string]time.Time{}, running: map[uint64]bool{}}
	d.ops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "cairn", Subsystem: "placement", Name: "operations_total",
		Help: "Placement operations started and finished by this node as placement leader.",
	}, []string{"kind", "event"})
	if cfg.Metrics != nil {
		cfg.Metrics.MustRegister(d.ops)
	}
	return d
}

// Observe records a heartbeat's statistics for a range.
func (d *Driver) Observe(rangeID uint64, s RangeStats) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s.Updated = d.cfg.Now()
	if prev, ok := d.stats[rangeID]; ok && prev.Leader != "" && prev.Leader != s.Leader {
		d.lostLead[prev.Leader] = s.Updated
	}
	d.stats[rangeID] = s
}

// ObserveNode records that node id has reported (its heartbeat arrived).
func (d *Driver) ObserveNode(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lastReport[id] = d.cfg.Now()
}

// Stats returns the latest heartbeat statistics of range id (meta leader).
func (d *Driver) Stats(id uint64) (RangeStats, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.stats[id]
	return s, ok && d.cfg.Now().Sub(s.Updated) < 10*time.Second
}

// Run schedules and executes until stop is closed.
func (d *Driver) Run(stop <-chan struct{}) {
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if d.cfg.Meta.IsLeader() {
			d.round(stop, &wg)
		} else {
			d.forget()
		}
	}
}

// forget drops leader-only memory when this node stops leading.
func (d *Driver) forget() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.downSince = map[string]time.Time{}
	d.lastReport = map[string]time.Time{}
	d.lostLead = map[string]time.Time{}
}

func (d *Driver) round(stop <-chan struct{}, wg *sync.WaitGroup) {
	st, _ := d.cfg.Meta.State()
	if !st.Formed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	view := d.view(st)
	ids := make([]uint64, 0, len(st.Ops))
	for id := range st.Ops {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	abandoned := 0
	for _, id := range ids {
		if d.abandonTransfer(ctx, view, st, st.Ops[id]) {
			abandoned++
			continue
		}
		d.stepAsync(stop, wg, st, st.Ops[id])
	}
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
		done, err := Step(ctx, d.cfg.Exec, st, op)
		if err != nil && !IsWaiting(err) {
			d.cfg.Logger.Debug("placement step", "op", op.String(), "err", err)
		}
		if done {
			d.ops.WithLabelValues(string(op.Kind), "finished").Inc()
			if err := d.cfg.Meta.FinishOp(ctx, op.RangeID); err != nil {
				d.cfg.Logger.Warn("finish placement operation", "op", op.String(), "err", err)
			}
		}
	}()
}

// view builds the scheduler's input from the meta state, heartbeats and
// gossip liveness.
func (d *Driver) view(st *State) ClusterView {
	alive := d.cfg.Alive()
	now := d.cfg.Now()
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
	for _, id := range ids {
		n := st.Nodes[id]
		nv := NodeView{ID: id, Alive: alive[id], Draining: n.Draining, Removed: n.Removed}
		last, reported := d.lastReport[id]
		lost, lostLead := d.lostLead[id]
		nv.Unresponsive = suspect[id] || !reported || now.Sub(last) > d.cfg.ReportTimeout ||
			lostLead && !last.After(lost)
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
