package api

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/cluster"
	"github.com/cairndb/cairn/shard"
)

// Transaction errors of the API edge (errors.go maps them).
var (
	// errTxnAborted: 409 txn_aborted, retry as a new transaction.
	errTxnAborted = cluster.ErrTxnAborted
	// errOutcomeUnknownTxn: the coordinator could not learn the record's
	// final state before the deadline (504 outcome_unknown).
	errOutcomeUnknownTxn = fmt.Errorf("the transaction's outcome is unknown: %w", shard.ErrOutcomeUnknown)
	// errIntentWait: a request waited for another transaction's intent for
	// the meeting bound (503 unavailable, retryable).
	errIntentWait = fmt.Errorf("another transaction holds the key: %w", shard.ErrUnavailable)
)

// txnMetrics: commits, aborts by cause, intents met by readers and writers
// (issue 13 item 8).
type txnMetrics struct {
	outcomes *prometheus.CounterVec
	met      *prometheus.CounterVec
	swept    prometheus.Counter
	reroutes prometheus.Counter
	batch    *prometheus.HistogramVec
}

func newTxnMetrics(reg *prometheus.Registry) *txnMetrics {
	m := &txnMetrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cairn", Name: "txn_total",
			Help: "Transactions by shards (one, multi) and outcome (committed, aborted_<cause>, stale_token, unknown)."},
			[]string{"shards", "outcome"}),
		met: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "cairn", Name: "txn_intents_met_total",
			Help: "Intents of other transactions met by requests, by what the record said (final: resolved; live: waited)."},
			[]string{"record"}),
		swept: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "cairn", Name: "txn_recoveries_total",
			Help: "Transactions ended by the record sweeper (their coordinator stopped heart-beating)."}),
		reroutes: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "cairn", Name: "txn_reroutes_total",
			Help: "Multi-shard transactions routed again after a split moved keys under a participant command (wrong_shard)."}),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "cairn", Name: "txn_batch_size",
			Help:    "Transactions per background batch a coordinator sends a shard: resolve (one entry), forget (one entry), prepare (one node-to-node call), rider (resolutions and forgets carried by one prepare or decide entry).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128}},
			[]string{"kind"}),
	}
	reg.MustRegister(m.outcomes, m.met, m.swept, m.reroutes, m.batch)
	return m
}

func (m *txnMetrics) outcome(multi bool, err error, cause string) {
	shards := "one"
	if multi {
		shards = "multi"
	}
	o := "committed"
	switch {
	case err == nil:
	case errors.Is(err, errTxnAborted):
		o = "aborted_" + cause
	case errors.Is(err, cluster.ErrStaleToken) || isStale(err):
		o = "stale_token"
	case errors.Is(err, shard.ErrOutcomeUnknown):
		o = "unknown"
	default:
		o = "error"
	}
	m.outcomes.WithLabelValues(shards, o).Inc()
}

func (m *txnMetrics) reroute() { m.reroutes.Inc() }

func (m *txnMetrics) intentsMet(resolved bool) {
	if resolved {
		m.met.WithLabelValues("final").Inc()
	} else {
		m.met.WithLabelValues("live").Inc()
	}
}

func isStale(err error) bool {
	var st *fsm.StaleTokenError
	return errors.As(err, &st)
}

func isIntent(err error) bool {
	var ie *fsm.IntentError
	return errors.As(err, &ie)
}
