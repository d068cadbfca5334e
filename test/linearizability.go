// Linearizability checking (Scenario S25): a porcupine model of cairn's single-key operations, a history
// recorder for concurrent clients, and the check that reports violations with a visualization.

package test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// KVOp names a single-key operation of the register model.
type KVOp string

// The operations of the register model.
const (
	OpGet KVOp = "get"
	OpPut KVOp = "put"
	OpCAS KVOp = "cas"
)

// KVInput is the porcupine input of one single-key operation.
type KVInput struct {
	Op  KVOp
	Key string
	// Value is the value written by put and by a successful cas.
	Value string
	// Expect is the value cas requires the key to hold. It is ignored when ExpectAbsent is set.
	Expect string
	// ExpectAbsent makes cas require that the key does not exist.
	ExpectAbsent bool
}

// KVOutput is the porcupine output of one single-key operation.
type KVOutput struct {
	// Value and Found are what a get observed.
	Value string
	Found bool
	// OK reports whether a cas took effect. OK=false on a definite answer means the condition did not hold.
	OK bool
	// Unknown marks an indeterminate write (timeout, outcome_unknown): it may or may not have taken effect.
	// Such an operation is recorded with a return time after the end of the history, so the checker may
	// place it anywhere after its call, including after everything else (which is "it never happened").
	Unknown bool
}

// registerState is the state of one key. The model is partitioned by key, so one register is all a
// partition needs. It is a plain comparable value: porcupine's default == equality and its cache work on it.
type registerState struct {
	value   string
	present bool
}

func (s registerState) String() string {
	if !s.present {
		return "<absent>"
	}
	return fmt.Sprintf("%q", s.value)
}

// KVModel returns the porcupine model of cairn's single-key operations: a map of independent registers
// with get, put and compare-and-set, partitioned by key so each key is checked on its own (that is what
// keeps checking tractable; single-key operations on different keys never constrain each other).
//
// Inputs are KVInput and outputs KVOutput, as values. Step is deterministic: an indeterminate write applies
// its effect when it is linearized (a put sets the value; a cas sets it if its condition holds and leaves
// the state alone otherwise). The "did not happen" case is covered by its open-ended return time, which lets
// porcupine linearize it after every other operation, where its effect is unobservable.
func KVModel() porcupine.Model {
	return porcupine.Model{
		Partition:      partitionByKey,
		PartitionEvent: partitionEventsByKey,
		Init:           func() any { return registerState{} },
		Step:           stepRegister,
		Equal:          func(a, b any) bool { return a.(registerState) == b.(registerState) },
		DescribeOperation: func(input, output any) string {
			return describeKVOperation(input.(KVInput), output.(KVOutput))
		},
		DescribeState: func(state any) string { return state.(registerState).String() },
	}
}

func stepRegister(state, input, output any) (bool, any) {
	s := state.(registerState)
	in := input.(KVInput)
	out := output.(KVOutput)
	switch in.Op {
	case OpGet:
		if out.Unknown {
			return true, s // a read without an answer observed nothing
		}
		if out.Found != s.present {
			return false, s
		}
		return !out.Found || out.Value == s.value, s
	case OpPut:
		// Definite or indeterminate alike: if it is linearized here, this is its effect.
		return true, registerState{value: in.Value, present: true}
	case OpCAS:
		holds := casConditionHolds(s, in)
		next := s
		if holds {
			next = registerState{value: in.Value, present: true}
		}
		switch {
		case out.Unknown:
			return true, next
		case out.OK:
			return holds, next
		default: // definite "condition failed"
			return !holds, s
		}
	default:
		return false, s
	}
}

func casConditionHolds(s registerState, in KVInput) bool {
	if in.ExpectAbsent {
		return !s.present
	}
	return s.present && s.value == in.Expect
}

func partitionByKey(history []porcupine.Operation) [][]porcupine.Operation {
	byKey := make(map[string][]porcupine.Operation)
	for _, op := range history {
		key := op.Input.(KVInput).Key
		byKey[key] = append(byKey[key], op)
	}
	keys := sortedKeys(byKey)
	parts := make([][]porcupine.Operation, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, byKey[k])
	}
	return parts
}

func partitionEventsByKey(history []porcupine.Event) [][]porcupine.Event {
	byKey := make(map[string][]porcupine.Event)
	keyOf := make(map[int]string) // event id -> key; only call events carry the input
	for _, ev := range history {
		if ev.Kind == porcupine.CallEvent {
			keyOf[ev.Id] = ev.Value.(KVInput).Key
		}
	}
	for _, ev := range history {
		key := keyOf[ev.Id]
		byKey[key] = append(byKey[key], ev)
	}
	keys := sortedKeys(byKey)
	parts := make([][]porcupine.Event, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, byKey[k])
	}
	return parts
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func describeKVOperation(in KVInput, out KVOutput) string {
	switch in.Op {
	case OpGet:
		switch {
		case out.Unknown:
			return fmt.Sprintf("get(%q) -> ?", in.Key)
		case !out.Found:
			return fmt.Sprintf("get(%q) -> <absent>", in.Key)
		default:
			return fmt.Sprintf("get(%q) -> %q", in.Key, out.Value)
		}
	case OpPut:
		if out.Unknown {
			return fmt.Sprintf("put(%q, %q) -> ?", in.Key, in.Value)
		}
		return fmt.Sprintf("put(%q, %q)", in.Key, in.Value)
	case OpCAS:
		expect := fmt.Sprintf("%q", in.Expect)
		if in.ExpectAbsent {
			expect = "<absent>"
		}
		result := "failed"
		switch {
		case out.Unknown:
			result = "?"
		case out.OK:
			result = "ok"
		}
		return fmt.Sprintf("cas(%q, %s -> %q) -> %s", in.Key, expect, in.Value, result)
	default:
		return fmt.Sprintf("<invalid op %q on %q>", in.Op, in.Key)
	}
}

// ArtifactsEnv names the environment variable that points at a directory for test artifacts (porcupine
// visualizations). When unset, artifacts go to a fresh directory under os.TempDir(), which outlives the test.
const ArtifactsEnv = "CAIRN_TEST_ARTIFACTS"

// CheckHistory checks a history of KVInput/KVOutput operations against KVModel.
//
// Illegal fails the test (t.Errorf) and writes porcupine's HTML visualization to the artifacts directory,
// naming the file and the keys whose histories are not linearizable. Unknown (the checker ran out of time)
// is logged loudly but does not fail the test: it is neither a pass nor a failure. A timeout of 0 means no
// limit.
func CheckHistory(t testing.TB, history []porcupine.Operation, timeout time.Duration) porcupine.CheckResult {
	t.Helper()
	model := KVModel()
	begin := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, history, timeout)
	took := time.Since(begin).Round(time.Millisecond)
	switch res {
	case porcupine.Illegal:
		// Scenario S25: a history of concurrent get/put/cas is not linearizable.
		bad := nonLinearizableKeys(history, info)
		path, err := writeVisualization(t, model, info)
		if err != nil {
			t.Errorf("Scenario S25: history of %d operations is NOT linearizable (keys %q); "+
				"writing the visualization failed: %v", len(history), bad, err)
			return res
		}
		t.Errorf("Scenario S25: history of %d operations is NOT linearizable (keys %q); visualization: %s",
			len(history), bad, path)
	case porcupine.Unknown:
		t.Logf("!!! LINEARIZABILITY CHECK INCONCLUSIVE: porcupine gave up after %v on %d operations. "+
			"This run proves NOTHING about Scenario S25 (not a failure, not a pass): "+
			"shorten the workload, use more keys, or raise the timeout.", took, len(history))
	default:
		t.Logf("linearizability: %d operations are linearizable (checked in %v)", len(history), took)
	}
	return res
}

// nonLinearizableKeys names the partitions for which porcupine found no complete linearization. It relies on
// porcupine partitioning with KVModel's deterministic Partition, which yields partitions in key order.
func nonLinearizableKeys(history []porcupine.Operation, info porcupine.LinearizationInfo) []string {
	parts := partitionByKey(history)
	partials := info.PartialLinearizations()
	if len(partials) != len(parts) {
		return nil
	}
	var bad []string
	for i, part := range parts {
		longest := 0
		for _, p := range partials[i] {
			longest = max(longest, len(p))
		}
		if longest < len(part) {
			bad = append(bad, part[0].Input.(KVInput).Key)
		}
	}
	return bad
}

func writeVisualization(t testing.TB, model porcupine.Model, info porcupine.LinearizationInfo) (string, error) {
	dir := os.Getenv(ArtifactsEnv)
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "cairn-linearizability-"); err != nil {
			return "", err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, fileSafe(t.Name())+"-*.html")
	if err != nil {
		return "", err
	}
	if err := porcupine.Visualize(model, info, f); err != nil {
		f.Close()
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return filepath.Abs(f.Name())
}

func fileSafe(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		default:
			return '_'
		}
	}, name)
}

// Outcome classifies how an operation ended, from the client's point of view.
type Outcome int

// The outcomes. The zero value is not an outcome; the Recorder treats it, and any other unrecognised value,
// as OutcomeUnknown, the conservative reading.
const (
	// OutcomeOK: the operation completed and its output is an observation.
	OutcomeOK Outcome = iota + 1
	// OutcomeFailed: the operation definitely did not take effect (rejected before it was proposed). It is
	// dropped from the history: it neither changed the state nor observed it.
	OutcomeFailed
	// OutcomeConditionFailed: a cas whose condition definitely did not hold (409 condition_failed). That is
	// an observation and is recorded as a cas with OK=false. For get and put it means the same as
	// OutcomeFailed. Adapters whose CAS returns (false, nil) for this case never need it.
	OutcomeConditionFailed
	// OutcomeUnknown: the operation may or may not have taken effect (timeout, 504 outcome_unknown,
	// leadership lost). Writes are kept as indeterminate; reads are dropped.
	OutcomeUnknown
)

func (o Outcome) String() string {
	switch o {
	case OutcomeOK:
		return "ok"
	case OutcomeFailed:
		return "failed"
	case OutcomeConditionFailed:
		return "condition_failed"
	case OutcomeUnknown:
		return "unknown"
	default:
		return fmt.Sprintf("Outcome(%d)", int(o))
	}
}

// DefaultClassify maps nil to OutcomeOK and every error to OutcomeUnknown. Treating a failure as unknown only
// weakens the check; treating an unknown outcome as a failure can report a violation that is not there, or
// hide one. Callers that can tell definite failures apart (400, 404, 409, 429, and 503 where the server
// guarantees nothing was proposed) should supply their own Classify.
func DefaultClassify(err error) Outcome {
	if err == nil {
		return OutcomeOK
	}
	return OutcomeUnknown
}

// RecorderConfig configures a Recorder.
type RecorderConfig struct {
	// Classify maps the error an operation returned to its Outcome. It is called only with non-nil errors,
	// possibly from many goroutines at once. Nil means DefaultClassify.
	Classify func(error) Outcome
}

// RecorderStats counts recorded operations by how they ended.
type RecorderStats struct {
	Calls         int // Call invocations
	OK            int // completed with an observation (including cas condition failures)
	Failed        int // definitely did not take effect; dropped
	Indeterminate int // writes whose outcome is unknown; kept with an open-ended return
	DroppedReads  int // reads that failed or timed out; dropped
	Pending       int // called but not finished yet
}

func (s RecorderStats) String() string {
	return fmt.Sprintf("%d calls: %d ok, %d failed (dropped), %d indeterminate writes, %d failed reads (dropped), %d pending",
		s.Calls, s.OK, s.Failed, s.Indeterminate, s.DroppedReads, s.Pending)
}

// Recorder records a history of single-key operations from concurrent clients. All methods are safe for
// concurrent use.
//
// Timestamps come from the monotonic clock, in nanoseconds since NewRecorder, so real-time order across
// goroutines is preserved.
type Recorder struct {
	classify func(error) Outcome
	start    time.Time

	mu            sync.Mutex
	nextID        int
	pending       map[int]pendingCall
	definite      []porcupine.Operation
	indeterminate []porcupine.Operation // Return is filled in by Operations
	stats         RecorderStats
}

type pendingCall struct {
	client int
	in     KVInput
	call   int64
}

// NewRecorder returns a Recorder that classifies errors with DefaultClassify.
func NewRecorder() *Recorder {
	return NewRecorderWithConfig(RecorderConfig{})
}

// NewRecorderWithConfig returns a Recorder configured by cfg.
func NewRecorderWithConfig(cfg RecorderConfig) *Recorder {
	classify := cfg.Classify
	if classify == nil {
		classify = DefaultClassify
	}
	return &Recorder{classify: classify, start: time.Now(), pending: make(map[int]pendingCall)}
}

func (r *Recorder) now() int64 { return time.Since(r.start).Nanoseconds() }

// Call records the invocation of an operation by client (a small non-negative number; it is the row in the
// visualization) and returns the function to call, exactly once, with its result. Call it immediately
// before sending the request, and finish immediately after the answer arrives: the interval between the
// two stamps must contain the operation's real effect.
//
// finish classifies a non-nil err with the configured Classify (out is then ignored, apart from a cas that
// the classification says failed its condition). An operation whose finish is never called counts as
// indeterminate if it is a write and is left out if it is a read. Calls of finish after the first are
// ignored.
func (r *Recorder) Call(client int, in KVInput) (finish func(out KVOutput, err error)) {
	call := r.now()
	r.mu.Lock()
	id := r.nextID
	r.nextID++
	r.pending[id] = pendingCall{client: client, in: in, call: call}
	r.stats.Calls++
	r.mu.Unlock()
	return func(out KVOutput, err error) {
		ret := r.now()
		outcome := OutcomeOK
		if err != nil {
			outcome = r.classify(err)
		}
		r.finish(id, ret, out, outcome)
	}
}

func (r *Recorder) finish(id int, ret int64, out KVOutput, outcome Outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.pending[id]
	if !ok {
		return
	}
	delete(r.pending, id)
	if outcome == OutcomeOK && out.Unknown {
		outcome = OutcomeUnknown // the caller said so explicitly
	}
	if outcome == OutcomeConditionFailed && p.in.Op == OpCAS {
		outcome, out = OutcomeOK, KVOutput{OK: false}
	}
	op := porcupine.Operation{ClientId: p.client, Input: p.in, Call: p.call, Return: ret}
	switch {
	case outcome == OutcomeOK:
		out.Unknown = false
		op.Output = out
		r.definite = append(r.definite, op)
		r.stats.OK++
	case p.in.Op == OpGet:
		// A read that failed or timed out observed nothing.
		r.stats.DroppedReads++
	case outcome == OutcomeFailed || outcome == OutcomeConditionFailed:
		r.stats.Failed++
	default:
		op.Output = KVOutput{Unknown: true}
		r.indeterminate = append(r.indeterminate, op)
		r.stats.Indeterminate++
	}
}

// Stats returns the counts of operations recorded so far.
func (r *Recorder) Stats() RecorderStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Pending = len(r.pending)
	return s
}

// Operations returns the history recorded so far, ready for porcupine and KVModel: definite operations as
// observed, and indeterminate writes (including writes still pending) with Return set one nanosecond after
// the latest timestamp in the history, so each may linearize anywhere after its call. Pending reads are
// left out.
func (r *Recorder) Operations() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := make([]porcupine.Operation, 0, len(r.definite)+len(r.indeterminate)+len(r.pending))
	var end int64
	for _, op := range r.definite {
		end = max(end, op.Return)
		ops = append(ops, op)
	}
	open := slices.Clone(r.indeterminate)
	for _, op := range open {
		end = max(end, op.Call, op.Return)
	}
	ids := make([]int, 0, len(r.pending))
	for id, p := range r.pending {
		end = max(end, p.call)
		ids = append(ids, id)
	}
	slices.Sort(ids) // deterministic order for a given recording
	for _, id := range ids {
		if p := r.pending[id]; p.in.Op != OpGet {
			open = append(open, porcupine.Operation{
				ClientId: p.client, Input: p.in, Call: p.call, Output: KVOutput{Unknown: true},
			})
		}
	}
	for _, op := range open {
		op.Return = end + 1
		ops = append(ops, op)
	}
	return ops
}

// Check checks the recorded history with CheckHistory: Illegal fails t and writes a visualization, Unknown
// (timeout) is logged loudly. Call it after every client has finished.
func (r *Recorder) Check(t testing.TB, timeout time.Duration) porcupine.CheckResult {
	t.Helper()
	t.Logf("linearizability: checking history of %s", r.Stats())
	return CheckHistory(t, r.Operations(), timeout)
}
