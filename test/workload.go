package test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// KVStore is what the register workload needs from a client of the store under test. Adapters around the
// real client implement it; each workload client gets its own KVStore (see WorkloadConfig.Stores), and
// each is used by one goroutine at a time.
//
// Every method must honour ctx: return once it is done, reporting the outcome as the caller's Classify
// expects (typically OutcomeUnknown for a write cut short). Errors are classified by WorkloadConfig.Classify.
type KVStore interface {
	// Get returns the key's current value; found=false with a nil error means the key does not exist.
	Get(ctx context.Context, key string) (value string, found bool, err error)
	// Put sets the key to value unconditionally.
	Put(ctx context.Context, key, value string) error
	// CAS sets the key to value if it currently holds expect (or, with expectAbsent, does not exist).
	// ok=false with a nil error means the condition definitely did not hold.
	CAS(ctx context.Context, key, expect string, expectAbsent bool, value string) (ok bool, err error)
}

// WorkloadConfig configures RunRegisterWorkload. Start from DefaultWorkloadConfig.
type WorkloadConfig struct {
	Clients int // concurrent clients, one goroutine each
	Keys    int // distinct keys; fewer keys means more contention and more informative histories
	// KeyPrefix is prepended to key names ("<prefix>k0", "<prefix>k1", ...). Every key must be absent when
	// the workload starts. Empty means "lin-<seed>/".
	KeyPrefix string
	Ops       int           // total operations across all clients; 0 means no bound (Duration must be set)
	Duration  time.Duration // no new operation starts after this; 0 means no bound (Ops must be set)
	// Seed is the source of all the workload's randomness. The caller logs it so a run can be replayed.
	Seed int64
	// ReadRatio and CASRatio are the fractions of gets and of cas; the rest are puts.
	ReadRatio, CASRatio float64
	// OpTimeout bounds each operation. An operation in flight when Duration ends is allowed to finish
	// within its OpTimeout; cancelling ctx cuts it short.
	OpTimeout time.Duration
	// Stores returns the store client number client (0 <= client < Clients) uses; each may point at a
	// different node. It is called once per client, before the workload starts.
	Stores func(client int) KVStore
	// Classify maps operation errors to outcomes (see Outcome). Nil means DefaultClassify.
	Classify func(error) Outcome
}

// DefaultWorkloadConfig returns a workload that finishes in seconds against a healthy cluster and keeps
// porcupine's work small: 8 clients on 8 keys, at most 2000 operations or 10 s, 40% gets, 30% cas.
// Stores and Seed must still be set.
func DefaultWorkloadConfig() WorkloadConfig {
	return WorkloadConfig{
		Clients:   8,
		Keys:      8,
		Ops:       2000,
		Duration:  10 * time.Second,
		ReadRatio: 0.4,
		CASRatio:  0.3,
		OpTimeout: 2 * time.Second,
	}
}

// Validate reports the first problem with c.
func (c WorkloadConfig) Validate() error {
	switch {
	case c.Clients < 1:
		return fmt.Errorf("workload: Clients must be at least 1, got %d", c.Clients)
	case c.Keys < 1:
		return fmt.Errorf("workload: Keys must be at least 1, got %d", c.Keys)
	case c.Ops < 0 || c.Duration < 0:
		return fmt.Errorf("workload: Ops (%d) and Duration (%v) must not be negative", c.Ops, c.Duration)
	case c.Ops == 0 && c.Duration == 0:
		return errors.New("workload: set Ops, Duration or both; the workload must be bounded")
	case c.ReadRatio < 0 || c.CASRatio < 0 || c.ReadRatio+c.CASRatio > 1:
		return fmt.Errorf("workload: ReadRatio (%v) and CASRatio (%v) must be non-negative and sum to at most 1",
			c.ReadRatio, c.CASRatio)
	case c.OpTimeout <= 0:
		return fmt.Errorf("workload: OpTimeout must be positive, got %v", c.OpTimeout)
	case c.Stores == nil:
		return errors.New("workload: Stores is nil")
	}
	return nil
}

// RunRegisterWorkload runs concurrent get/put/cas clients against the stores until Ops operations have been
// issued, Duration has passed, or ctx is done, whichever comes first, and returns the recorded history,
// ready for Recorder.Check (Scenario S25). Every value written is unique ("c<client>-<seq>"), so a read
// names the write it saw. All client goroutines have ended when it returns. An invalid cfg fails t at once.
func RunRegisterWorkload(ctx context.Context, t testing.TB, cfg WorkloadConfig) *Recorder {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.KeyPrefix == "" {
		cfg.KeyPrefix = fmt.Sprintf("lin-%d/", cfg.Seed)
	}
	keys := make([]string, cfg.Keys)
	for i := range keys {
		keys[i] = fmt.Sprintf("%sk%d", cfg.KeyPrefix, i)
	}
	stores := make([]KVStore, cfg.Clients)
	for i := range stores {
		if stores[i] = cfg.Stores(i); stores[i] == nil {
			t.Fatalf("workload: Stores(%d) returned nil", i)
		}
	}
	rec := NewRecorderWithConfig(RecorderConfig{Classify: cfg.Classify})

	// runCtx only gates the start of new operations; operations run under ctx plus OpTimeout, so the ones
	// in flight when Duration ends get a definite answer instead of becoming indeterminate.
	runCtx, cancel := ctx, context.CancelFunc(func() {})
	if cfg.Duration > 0 {
		runCtx, cancel = context.WithTimeout(ctx, cfg.Duration)
	}
	defer cancel()

	t.Logf("register workload: seed=%d clients=%d keys=%d ops<=%d duration<=%v reads=%.2f cas=%.2f",
		cfg.Seed, cfg.Clients, cfg.Keys, cfg.Ops, cfg.Duration, cfg.ReadRatio, cfg.CASRatio)
	var issued atomic.Int64
	var wg sync.WaitGroup
	for c := range cfg.Clients {
		w := &registerClient{
			id:     c,
			cfg:    &cfg,
			keys:   keys,
			store:  stores[c],
			rec:    rec,
			issued: &issued,
			rng:    rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(c))),
			seen:   make(map[string]registerState),
		}
		wg.Go(func() { w.run(ctx, runCtx) })
	}
	wg.Wait()
	t.Logf("register workload done: %s", rec.Stats())
	return rec
}

// registerClient is one workload client. It is used by a single goroutine.
type registerClient struct {
	id     int
	cfg    *WorkloadConfig
	keys   []string
	store  KVStore
	rec    *Recorder
	issued *atomic.Int64
	rng    *rand.Rand
	// seen is the last state of each key this client learned, to choose cas expectations that can succeed.
	seen map[string]registerState
}

func (w *registerClient) run(ctx, runCtx context.Context) {
	// ctx is checked too: when it is cancelled, its children (this op's
	// context, runCtx) are cancelled one after another, so an op can return
	// before runCtx reports the end.
	for seq := 0; runCtx.Err() == nil && ctx.Err() == nil; seq++ {
		if w.cfg.Ops > 0 && w.issued.Add(1) > int64(w.cfg.Ops) {
			return
		}
		in := w.next(seq)
		opCtx, cancel := context.WithTimeout(ctx, w.cfg.OpTimeout)
		finish := w.rec.Call(w.id, in)
		out, err := w.do(opCtx, in)
		finish(out, err)
		cancel()
		w.learn(in, out, err)
	}
}

func (w *registerClient) next(seq int) KVInput {
	in := KVInput{Key: w.keys[w.rng.IntN(len(w.keys))], Value: fmt.Sprintf("c%d-%d", w.id, seq)}
	switch p := w.rng.Float64(); {
	case p < w.cfg.ReadRatio:
		in.Op, in.Value = OpGet, ""
	case p < w.cfg.ReadRatio+w.cfg.CASRatio:
		in.Op = OpCAS
		if s, ok := w.seen[in.Key]; ok && s.present {
			in.Expect = s.value
		} else {
			in.ExpectAbsent = true
		}
	default:
		in.Op = OpPut
	}
	return in
}

func (w *registerClient) do(ctx context.Context, in KVInput) (KVOutput, error) {
	switch in.Op {
	case OpGet:
		v, found, err := w.store.Get(ctx, in.Key)
		return KVOutput{Value: v, Found: found}, err
	case OpPut:
		return KVOutput{}, w.store.Put(ctx, in.Key, in.Value)
	default:
		ok, err := w.store.CAS(ctx, in.Key, in.Expect, in.ExpectAbsent, in.Value)
		return KVOutput{OK: ok}, err
	}
}

// learn updates what the client believes each key holds. It only steers the choice of cas expectations;
// the checker never relies on it.
func (w *registerClient) learn(in KVInput, out KVOutput, err error) {
	switch {
	case err != nil:
		delete(w.seen, in.Key)
	case in.Op == OpGet:
		w.seen[in.Key] = registerState{value: out.Value, present: out.Found}
	case in.Op == OpPut || out.OK:
		w.seen[in.Key] = registerState{value: in.Value, present: true}
	default: // cas condition failed: the key holds something else
		delete(w.seen, in.Key)
	}
}
