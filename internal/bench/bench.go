// Package bench is the engine of "cairn bench": workloads, key generators, a
// closed-loop runner bounded by count or time, latency histograms and reports,
// with cairn and etcd (JSON gateway) as targets measured the same way.
package bench

import (
	"errors"
	"fmt"
	"time"
)

// Workload is what each client does in a loop.
type Workload string

const (
	WorkloadPut   Workload = "put"   // blind writes of random keys
	WorkloadGet   Workload = "get"   // reads of random (preloaded) keys
	WorkloadMixed Workload = "mixed" // reads with probability ReadRatio, else writes
	// WorkloadLock acquires a lock and releases it (one operation). Each
	// client uses lock names of its own, or with Contended all take one lock.
	WorkloadLock Workload = "lock"
	// WorkloadTxn commits transactions of two keys, each compared
	// (mod_index > 0: the key exists) and written: on one shard, or with
	// CrossShard on two (txn.go).
	WorkloadTxn Workload = "txn"
)

// KeyDist is how keys are picked.
type KeyDist string

const (
	KeyDistUniform KeyDist = "uniform"
	// KeyDistZipf picks keys with a Zipf distribution: a few keys are hot.
	// The hot keys are scattered over the keyspace (and so over shards).
	KeyDistZipf KeyDist = "zipf"
)

// Config describes one benchmark run. Start from DefaultConfig.
type Config struct {
	Workload Workload
	// Clients is the number of concurrent closed-loop clients: each issues
	// its next operation when the previous one has answered.
	Clients int
	// Duration bounds the run in time when Count is 0. Operations in flight
	// at the deadline are waited for and counted.
	Duration time.Duration
	// Count, when positive, bounds the run to this many operations in total
	// (successful or not) instead of Duration.
	Count int64
	// Keys is the size of the keyspace: keys KeyPrefix+"00000000" up to
	// Keys-1, zero-padded so that byte order is numeric order.
	Keys      int
	KeyPrefix string
	ValueSize int
	KeyDist   KeyDist
	// ZipfS is the Zipf exponent (> 1); larger is more skewed.
	ZipfS float64
	// ReadRatio is the probability that a mixed-workload operation is a read.
	ReadRatio float64
	// Contended makes every lock-workload client take the same lock;
	// LockTTL is the lease each acquire asks for.
	Contended bool
	LockTTL   time.Duration
	// CrossShard makes each transaction's two keys lie in different halves
	// of the keyspace (so on two shards of a keyspace split evenly);
	// otherwise they are neighbours (2m, 2m+1: one shard).
	CrossShard bool
	// Preload writes every key once before the measured phase, so that
	// reads find their key. It is not measured.
	Preload bool
	// OpTimeout bounds each operation; one that runs out counts as an error
	// with code deadline_exceeded.
	OpTimeout time.Duration
	// Seed makes the key and operation choices reproducible. 0 picks one;
	// the report carries the seed used.
	Seed uint64
	// Progress, when set, is called every ProgressInterval from a goroutine
	// of the runner, and once more when a phase ends.
	Progress         func(Progress)
	ProgressInterval time.Duration

	// The fields below only label the report.
	Consistency string // the read level the target was built with
	Label       string // free text that groups runs in a summary
}

// DefaultConfig is the configuration of docs/api.md's "cairn bench" defaults.
func DefaultConfig() Config {
	return Config{
		Workload:         WorkloadPut,
		Clients:          64,
		Duration:         30 * time.Second,
		Keys:             100000,
		KeyPrefix:        "bench/",
		ValueSize:        256,
		KeyDist:          KeyDistUniform,
		ZipfS:            1.1,
		ReadRatio:        0.9,
		OpTimeout:        10 * time.Second,
		ProgressInterval: time.Second,
		LockTTL:          15 * time.Second,
	}
}

// Validate reports a configuration Run cannot use.
func (c Config) Validate() error {
	var errs []error
	switch c.Workload {
	case WorkloadPut, WorkloadGet, WorkloadMixed:
	case WorkloadTxn:
		if c.Keys < 4 {
			errs = append(errs, fmt.Errorf("the txn workload needs at least 4 keys, not %d", c.Keys))
		}
	case WorkloadLock:
		if c.LockTTL < time.Second {
			errs = append(errs, fmt.Errorf("lock ttl must be at least 1s, not %v", c.LockTTL))
		}
		if c.Preload {
			errs = append(errs, errors.New("the lock workload has nothing to preload"))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown workload %q (put, get, mixed, txn or lock)", c.Workload))
	}
	if c.Clients < 1 {
		errs = append(errs, fmt.Errorf("clients must be at least 1, not %d", c.Clients))
	}
	if c.Count < 0 {
		errs = append(errs, fmt.Errorf("count must not be negative, not %d", c.Count))
	}
	if c.Count == 0 && c.Duration <= 0 {
		errs = append(errs, errors.New("either a positive duration or a positive count is needed"))
	}
	if c.Keys < 1 {
		errs = append(errs, fmt.Errorf("keys must be at least 1, not %d", c.Keys))
	}
	if c.ValueSize < 0 {
		errs = append(errs, fmt.Errorf("value size must not be negative, not %d", c.ValueSize))
	}
	switch c.KeyDist {
	case KeyDistUniform:
	case KeyDistZipf:
		if !(c.ZipfS > 1) {
			errs = append(errs, fmt.Errorf("the zipf exponent must be above 1, not %v", c.ZipfS))
		}
	default:
		errs = append(errs, fmt.Errorf("unknown key distribution %q (uniform or zipf)", c.KeyDist))
	}
	if c.Workload == WorkloadMixed && !(c.ReadRatio >= 0 && c.ReadRatio <= 1) {
		errs = append(errs, fmt.Errorf("read ratio must be within [0, 1], not %v", c.ReadRatio))
	}
	if c.OpTimeout <= 0 {
		errs = append(errs, fmt.Errorf("op timeout must be positive, not %v", c.OpTimeout))
	}
	if c.Progress != nil && c.ProgressInterval <= 0 {
		errs = append(errs, errors.New("a progress interval must be positive"))
	}
	return errors.Join(errs...)
}
