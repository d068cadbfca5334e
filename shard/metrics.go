package shard

import (
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// RegisterMetrics exposes the host's shards on reg: per-shard gauges read
// from the replicas at scrape time (they cost nothing between scrapes) and
// a leader-change counter. Call once, before replicas open.
func (h *Host) RegisterMetrics(reg prometheus.Registerer) error {
	h.leaderChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "cairn", Subsystem: "shard", Name: "leader_changes_total",
		Help: "Times this node's replica of a shard gained or lost leadership.",
	}, []string{"shard"})
	if err := reg.Register(h.leaderChanges); err != nil {
		return err
	}
	h.proposeSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "cairn", Subsystem: "shard", Name: "propose_seconds",
		Help:    "Time from handing a command to raft on the leader to its applied result (commit by a majority and local apply).",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2, 16),
	})
	if err := reg.Register(h.proposeSeconds); err != nil {
		return err
	}
	h.settled = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "cairn", Subsystem: "shard", Name: "lost_leadership_settled_total",
		Help: "Proposals failed by a lost leadership whose fate this node learned as a follower: committed (answered with the result) or not_written (routed to the new leader).",
	}, []string{"outcome"})
	if err := reg.Register(h.settled); err != nil {
		return err
	}
	lm, err := newLockMetrics(reg)
	if err != nil {
		return err
	}
	h.lockMetrics = lm
	return reg.Register(&collector{h: h})
}

func newLogStoreMetrics(reg prometheus.Registerer) (*logStoreMetrics, error) {
	m := &logStoreMetrics{
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "cairn", Subsystem: "raft_log", Name: "commit_seconds",
			Help:    "Duration of one commit of the node's raft log store, fsync included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "cairn", Subsystem: "raft_log", Name: "writes_per_commit",
			Help:    "Log and stable-store writes (from any group) carried by one commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
	}
	for _, c := range []prometheus.Collector{m.commit, m.batch} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

type logStoreMetrics struct {
	commit, batch prometheus.Histogram
}

var (
	descTerm    = shardDesc("term", "Current raft term of this node's replica.")
	descCommit  = shardDesc("commit_index", "Raft commit index as this replica knows it.")
	descApplied = shardDesc("applied_index", "Index the replica's state machine has applied.")
	descLastLog = shardDesc("last_log_index", "Last index in this replica's raft log.")
	descLeader  = shardDesc("is_leader", "1 if this replica leads its shard.")
	descContact = shardDesc("last_contact_seconds", "Seconds since a follower last heard from its leader (0 on the leader).")
	descSize    = shardDesc("size_bytes", "Bytes of user data in the shard.")
	descLag     = prometheus.NewDesc("cairn_shard_follower_lag_entries",
		"On the leader: entries in the leader's log that a follower's log lacks, as of the follower's latest heartbeat answer.",
		[]string{"shard", "follower"}, nil)
)

func shardDesc(name, help string) *prometheus.Desc {
	return prometheus.NewDesc("cairn_shard_"+name, help, []string{"shard"}, nil)
}

// collector reads every replica of its host at scrape time.
type collector struct{ h *Host }

// Describe implements prometheus.Collector.
func (*collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTerm, descCommit, descApplied, descLastLog, descLeader, descContact, descSize, descLag} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, r := range c.h.Replicas() {
		r.collect(ch)
	}
}

func (r *Replica) collect(ch chan<- prometheus.Metric) {
	id := strconv.FormatUint(r.id, 10)
	st := r.g.raft.Stats()
	num := func(k string) float64 {
		v, _ := strconv.ParseFloat(st[k], 64)
		return v
	}
	gauge := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, id)
	}
	gauge(descTerm, num("term"))
	gauge(descCommit, num("commit_index"))
	gauge(descApplied, float64(r.fsm.Applied()))
	gauge(descLastLog, num("last_log_index"))
	leader, contact := 0.0, 0.0
	if r.g.raft.State() == raft.Leader {
		leader = 1
		r.collectLag(ch, id, uint64(num("last_log_index")))
	} else if lc := r.g.raft.LastContact(); !lc.IsZero() {
		contact = time.Since(lc).Seconds()
	}
	gauge(descLeader, leader)
	gauge(descContact, contact)
	gauge(descSize, float64(r.fsm.SizeBytes()))
}

// collectLag reports, on the leader, how far each follower's log is behind,
// from the last-log index in its latest heartbeat answer (beats.go).
func (r *Replica) collectLag(ch chan<- prometheus.Metric, id string, last uint64) {
	cf := r.g.raft.GetConfiguration()
	if cf.Error() != nil {
		return
	}
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) == r.nodeID {
			continue
		}
		seen, ok := r.g.transport.FollowerLastLog(string(s.Address))
		if !ok {
			continue
		}
		lag := 0.0
		if last > seen {
			lag = float64(last - seen)
		}
		ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, lag, id, string(s.ID))
	}
}
