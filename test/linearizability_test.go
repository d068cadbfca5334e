package test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.uber.org/goleak"
)

// ---- hand-built histories -------------------------------------------------------------------------------

// openReturn marks an indeterminate operation's return in hand-built histories; closeOpenReturns replaces
// it with one past the end of the history, as Recorder.Operations does.
const openReturn = -1

func hop(client int, call, ret int64, in KVInput, out KVOutput) porcupine.Operation {
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func inGet(k string) KVInput         { return KVInput{Op: OpGet, Key: k} }
func inPut(k, v string) KVInput      { return KVInput{Op: OpPut, Key: k, Value: v} }
func inCAS(k, exp, v string) KVInput { return KVInput{Op: OpCAS, Key: k, Expect: exp, Value: v} }
func inCASAbsent(k, v string) KVInput {
	return KVInput{Op: OpCAS, Key: k, ExpectAbsent: true, Value: v}
}

var (
	outDone    = KVOutput{}
	outAbsent  = KVOutput{Found: false}
	outCASOK   = KVOutput{OK: true}
	outCASFail = KVOutput{OK: false}
	outUnknown = KVOutput{Unknown: true}
)

func outFound(v string) KVOutput { return KVOutput{Value: v, Found: true} }

func closeOpenReturns(ops []porcupine.Operation) []porcupine.Operation {
	var end int64
	for _, o := range ops {
		end = max(end, o.Call, o.Return)
	}
	out := make([]porcupine.Operation, len(ops))
	for i, o := range ops {
		if o.Return == openReturn {
			o.Return = end + 1
		}
		out[i] = o
	}
	return out
}

func TestModelHandBuiltHistories(t *testing.T) {
	tests := []struct {
		name string
		ops  []porcupine.Operation
		want bool
	}{
		// Linearizable.
		{"empty", nil, true},
		{"read of a key never written is absent", []porcupine.Operation{
			hop(0, 0, 10, inGet("x"), outAbsent),
		}, true},
		{"sequential put then get", []porcupine.Operation{
			hop(0, 0, 10, inPut("x", "a"), outDone),
			hop(1, 20, 30, inGet("x"), outFound("a")),
		}, true},
		{"reads concurrent with a put may see old then new", []porcupine.Operation{
			hop(0, 0, 100, inPut("x", "b"), outDone),
			hop(1, 10, 20, inGet("x"), outAbsent),
			hop(2, 30, 40, inGet("x"), outFound("b")),
		}, true},
		{"cas chain with a definite condition failure", []porcupine.Operation{
			hop(0, 0, 10, inPut("x", "a"), outDone),
			hop(1, 20, 30, inCAS("x", "a", "b"), outCASOK),
			hop(2, 40, 50, inCAS("x", "a", "c"), outCASFail),
			hop(0, 60, 70, inGet("x"), outFound("b")),
		}, true},
		{"cas expecting absence", []porcupine.Operation{
			hop(0, 0, 10, inCASAbsent("x", "a"), outCASOK),
			hop(1, 20, 30, inCASAbsent("x", "b"), outCASFail),
			hop(2, 40, 50, inGet("x"), outFound("a")),
		}, true},
		{"two concurrent cas from the same value: one wins", []porcupine.Operation{
			hop(0, 0, 10, inPut("x", "a"), outDone),
			hop(1, 20, 40, inCAS("x", "a", "b"), outCASOK),
			hop(2, 25, 45, inCAS("x", "a", "c"), outCASFail),
			hop(0, 50, 60, inGet("x"), outFound("b")),
		}, true},
		{"keys are independent", []porcupine.Operation{
			hop(0, 0, 10, inPut("x", "a"), outDone),
			hop(1, 20, 30, inGet("y"), outAbsent),
			hop(1, 40, 50, inGet("x"), outFound("a")),
		}, true},

		// Not linearizable.
		{"stale read after a completed put", []porcupine.Operation{
			hop(0, 0, 10, inPut("x", "a"), outDone),
			hop(0, 20, 30, inPut("x", "b"), outDone),
			hop(1, 40, 50, inGet("x"), outFound("a")),
		}, false},
		{"completed put then absent", []porcupine.Operation{
			hop(0, 0, 10, inPut("x", "a"), outDone),
			hop(1, 20, 30, inGet("x"), outAbsent),
		}, false},
		{"cas succeeds against a value that was overwritten", []porcupine.Operation{
			hop(0, 0, 10, inPut("x", "a"), outDone),
			hop(1, 20, 30, inPut("x", "b"), outDone),
			hop(2, 40, 50, inCAS("x", "a", "c"), outCASOK),
		}, false},
		{"two concurrent cas from the same value both succeed", []porcupine.Operation{
			hop(0, 0, 10, inPut("x", "a"), outDone),
			hop(1, 20, 40, inCAS("x", "a", "b"), outCASOK),
			hop(2, 25, 45, inCAS("x", "a", "c"), outCASOK),
		}, false},
		{"cas reports condition failed although it held", []porcupine.Operation{
			hop(0, 0, 10, inPut("x", "a"), outDone),
			hop(1, 20, 30, inCAS("x", "a", "b"), outCASFail),
		}, false},
		{"two cas expecting absence both succeed", []porcupine.Operation{
			hop(0, 0, 20, inCASAbsent("x", "a"), outCASOK),
			hop(1, 5, 25, inCASAbsent("x", "b"), outCASOK),
		}, false},
		{"read of a value never written", []porcupine.Operation{
			hop(0, 0, 10, inGet("x"), outFound("z")),
		}, false},
		{"new value then old value while a put is in flight", []porcupine.Operation{
			hop(0, 0, 100, inPut("x", "b"), outDone),
			hop(1, 10, 20, inGet("x"), outFound("b")),
			hop(2, 30, 40, inGet("x"), outAbsent),
		}, false},
		{"a violation on one key among healthy ones", []porcupine.Operation{
			hop(0, 0, 10, inPut("x", "a"), outDone),
			hop(1, 0, 10, inPut("y", "a"), outDone),
			hop(2, 20, 30, inGet("y"), outAbsent),
			hop(0, 20, 30, inGet("x"), outFound("a")),
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(KVModel(), tc.ops); got != tc.want {
				t.Errorf("linearizable = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestModelIndeterminateOperations(t *testing.T) {
	tests := []struct {
		name string
		ops  []porcupine.Operation
		want bool
	}{
		{"indeterminate put that later shows up", []porcupine.Operation{
			hop(0, 0, openReturn, inPut("x", "a"), outUnknown),
			hop(1, 50, 60, inGet("x"), outFound("a")),
		}, true},
		{"indeterminate put that never shows up", []porcupine.Operation{
			hop(0, 0, openReturn, inPut("x", "a"), outUnknown),
			hop(1, 50, 60, inGet("x"), outAbsent),
			hop(1, 70, 80, inGet("x"), outAbsent),
		}, true},
		{"indeterminate put that shows up long after it was overwritten (a delayed apply)", []porcupine.Operation{
			hop(0, 0, openReturn, inPut("x", "a"), outUnknown),
			hop(1, 10, 20, inPut("x", "b"), outDone),
			hop(2, 30, 40, inGet("x"), outFound("b")),
			hop(2, 50, 60, inGet("x"), outFound("a")),
		}, true},
		{"indeterminate put seen, then the old value again", []porcupine.Operation{
			hop(0, 0, openReturn, inPut("x", "a"), outUnknown),
			hop(1, 50, 60, inGet("x"), outFound("a")),
			hop(1, 70, 80, inGet("x"), outAbsent),
		}, false},
		{"indeterminate put seen before it was called", []porcupine.Operation{
			hop(1, 0, 10, inGet("x"), outFound("a")),
			hop(0, 20, openReturn, inPut("x", "a"), outUnknown),
		}, false},
		{"indeterminate cas that took effect", []porcupine.Operation{
			hop(0, 0, 10, inPut("x", "a"), outDone),
			hop(1, 20, openReturn, inCAS("x", "a", "b"), outUnknown),
			hop(2, 30, 40, inGet("x"), outFound("b")),
		}, true},
		{"indeterminate cas that did not take effect", []porcupine.Operation{
			hop(0, 0, 10, inPut("x", "a"), outDone),
			hop(1, 20, openReturn, inCAS("x", "a", "b"), outUnknown),
			hop(2, 30, 40, inGet("x"), outFound("a")),
			hop(2, 50, 60, inPut("x", "c"), outDone),
			hop(2, 70, 80, inGet("x"), outFound("c")),
		}, true},
		{"indeterminate cas whose condition never held shows up", []porcupine.Operation{
			hop(0, 0, 10, inPut("x", "a"), outDone),
			hop(1, 20, openReturn, inCAS("x", "z", "b"), outUnknown),
			hop(2, 30, 40, inGet("x"), outFound("b")),
		}, false},
		{"indeterminate put does not excuse a lost acknowledged put", []porcupine.Operation{
			hop(0, 0, openReturn, inPut("x", "a"), outUnknown),
			hop(1, 10, 20, inPut("x", "b"), outDone),
			hop(2, 30, 40, inGet("x"), outAbsent),
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(KVModel(), closeOpenReturns(tc.ops)); got != tc.want {
				t.Errorf("linearizable = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestModelPartitionsByKey(t *testing.T) {
	ops := []porcupine.Operation{
		hop(0, 0, 10, inPut("b", "1"), outDone),
		hop(1, 0, 10, inPut("a", "2"), outDone),
		hop(0, 20, 30, inGet("b"), outFound("1")),
	}
	parts := KVModel().Partition(ops)
	if len(parts) != 2 || len(parts[0]) != 1 || len(parts[1]) != 2 {
		t.Fatalf("partitions = %v, want [a: 1 op] [b: 2 ops]", parts)
	}
	if k := parts[0][0].Input.(KVInput).Key; k != "a" {
		t.Errorf("first partition holds key %q, want a (partitions in key order)", k)
	}

	// The event form: a violation on "y" only.
	events := []porcupine.Event{
		{ClientId: 0, Kind: porcupine.CallEvent, Value: inPut("x", "1"), Id: 0},
		{ClientId: 1, Kind: porcupine.CallEvent, Value: inPut("y", "1"), Id: 1},
		{ClientId: 0, Kind: porcupine.ReturnEvent, Value: outDone, Id: 0},
		{ClientId: 1, Kind: porcupine.ReturnEvent, Value: outDone, Id: 1},
		{ClientId: 0, Kind: porcupine.CallEvent, Value: inGet("x"), Id: 2},
		{ClientId: 0, Kind: porcupine.ReturnEvent, Value: outFound("1"), Id: 2},
	}
	if got := len(KVModel().PartitionEvent(events)); got != 2 {
		t.Fatalf("event partitions = %d, want 2", got)
	}
	if !porcupine.CheckEvents(KVModel(), events) {
		t.Errorf("linearizable event history rejected")
	}
	bad := append(events[:len(events):len(events)],
		porcupine.Event{ClientId: 1, Kind: porcupine.CallEvent, Value: inGet("y"), Id: 3},
		porcupine.Event{ClientId: 1, Kind: porcupine.ReturnEvent, Value: outAbsent, Id: 3},
	)
	if porcupine.CheckEvents(KVModel(), bad) {
		t.Errorf("non-linearizable event history accepted")
	}
}

func TestModelDescribeOperation(t *testing.T) {
	m := KVModel()
	tests := []struct {
		in   KVInput
		out  KVOutput
		want string
	}{
		{inGet("x"), outFound("a"), `get("x") -> "a"`},
		{inGet("x"), outAbsent, `get("x") -> <absent>`},
		{inPut("x", "a"), outUnknown, `put("x", "a") -> ?`},
		{inCAS("x", "a", "b"), outCASOK, `cas("x", "a" -> "b") -> ok`},
		{inCASAbsent("x", "b"), outCASFail, `cas("x", <absent> -> "b") -> failed`},
	}
	for _, tc := range tests {
		if got := m.DescribeOperation(tc.in, tc.out); got != tc.want {
			t.Errorf("DescribeOperation(%+v, %+v) = %s, want %s", tc.in, tc.out, got, tc.want)
		}
	}
}

// ---- recorder -------------------------------------------------------------------------------------------

var (
	errFakeTimeout   = errors.New("fake: outcome unknown")
	errFakeRejected  = errors.New("fake: rejected, not applied")
	errFakeCondition = errors.New("fake: condition failed")
)

func classifyFakeErr(err error) Outcome {
	switch {
	case errors.Is(err, errFakeRejected):
		return OutcomeFailed
	case errors.Is(err, errFakeCondition):
		return OutcomeConditionFailed
	default:
		return OutcomeUnknown
	}
}

func TestRecorderClassifiesOutcomes(t *testing.T) {
	rec := NewRecorderWithConfig(RecorderConfig{Classify: classifyFakeErr})
	rec.Call(0, inPut("x", "a"))(KVOutput{}, nil)
	rec.Call(0, inGet("x"))(KVOutput{}, errFakeTimeout)                     // dropped
	rec.Call(0, inGet("x"))(KVOutput{}, errFakeRejected)                    // dropped
	rec.Call(0, inPut("x", "b"))(KVOutput{}, errFakeRejected)               // dropped
	rec.Call(0, inCAS("x", "z", "c"))(KVOutput{OK: true}, errFakeCondition) // observation: failed
	rec.Call(1, inPut("x", "d"))(KVOutput{}, errFakeTimeout)                // indeterminate
	rec.Call(1, inCAS("x", "d", "e"))(KVOutput{}, nil)
	rec.Call(2, inPut("x", "f")) // never finished: indeterminate
	rec.Call(2, inGet("x"))      // never finished: left out

	s := rec.Stats()
	want := RecorderStats{Calls: 9, OK: 3, Failed: 1, Indeterminate: 1, DroppedReads: 2, Pending: 2}
	if s != want {
		t.Errorf("Stats() = %+v, want %+v", s, want)
	}

	ops := rec.Operations()
	var end int64
	type seen struct {
		in  KVInput
		out KVOutput
	}
	var got []seen
	for _, o := range ops {
		if o.Call > o.Return {
			t.Errorf("%v: call %d after return %d", o.Input, o.Call, o.Return)
		}
		if !o.Output.(KVOutput).Unknown {
			end = max(end, o.Return)
		}
		got = append(got, seen{o.Input.(KVInput), o.Output.(KVOutput)})
	}
	wantOps := []seen{
		{inPut("x", "a"), outDone},
		{inCAS("x", "z", "c"), outCASFail},
		{inCAS("x", "d", "e"), outCASFail},
		{inPut("x", "d"), outUnknown},
		{inPut("x", "f"), outUnknown},
	}
	if fmt.Sprint(got) != fmt.Sprint(wantOps) {
		t.Fatalf("Operations() = %+v\nwant %+v", got, wantOps)
	}
	for _, o := range ops {
		if o.Output.(KVOutput).Unknown && o.Return <= end {
			t.Errorf("indeterminate %v returns at %d, not after the history's end %d", o.Input, o.Return, end)
		}
		if !o.Output.(KVOutput).Unknown && o.Call > end {
			t.Errorf("unexpected stamps: %+v", o)
		}
	}
	// inPut a; inCAS z->c fails (rightly); inPut d maybe; inCAS d->e fails; inPut f maybe: linearizable with the
	// indeterminate puts placed after the last inCAS.
	if res := CheckHistory(t, ops, 10*time.Second); res != porcupine.Ok {
		t.Errorf("CheckHistory = %v, want Ok", res)
	}
}

func TestRecorderFinishTwiceIsIgnored(t *testing.T) {
	rec := NewRecorder()
	finish := rec.Call(0, inPut("x", "a"))
	finish(KVOutput{}, nil)
	finish(KVOutput{}, errFakeTimeout)
	if s := rec.Stats(); s.OK != 1 || s.Indeterminate != 0 {
		t.Errorf("Stats() = %+v, want one ok operation", s)
	}
}

func TestRecorderConcurrentClients(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	rec := NewRecorder()
	var wg sync.WaitGroup
	for c := range 16 {
		wg.Go(func() {
			for i := range 200 {
				rec.Call(c, inPut(fmt.Sprint("k", i%4), fmt.Sprintf("c%d-%d", c, i)))(KVOutput{}, nil)
				_ = rec.Stats()
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			_ = rec.Operations()
		}
	})
	wg.Wait()
	if n := len(rec.Operations()); n != 16*200 {
		t.Errorf("recorded %d operations, want %d", n, 16*200)
	}
}

// checkCaptureTB records Errorf and Logf so a test can check what Check reports without failing itself.
type checkCaptureTB struct {
	testing.TB
	mu     sync.Mutex
	errors []string
	logs   []string
}

func (c *checkCaptureTB) Helper() {}

func (c *checkCaptureTB) Errorf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.errors = append(c.errors, fmt.Sprintf(format, args...))
}

func (c *checkCaptureTB) Logf(format string, args ...any) {
	c.mu.Lock()
	c.logs = append(c.logs, fmt.Sprintf(format, args...))
	c.mu.Unlock()
	c.TB.Logf(format, args...)
}

func TestRecorderCheckWritesVisualizationOnIllegal(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(ArtifactsEnv, dir)
	rec := NewRecorder()
	rec.Call(0, inPut("x", "a"))(KVOutput{}, nil)
	rec.Call(0, inPut("y", "a"))(KVOutput{}, nil)
	rec.Call(1, inGet("x"))(outAbsent, nil) // stale: the inPut completed before
	rec.Call(1, inGet("y"))(outFound("a"), nil)

	ct := &checkCaptureTB{TB: t}
	if res := rec.Check(ct, 10*time.Second); res != porcupine.Illegal {
		t.Fatalf("Check = %v, want Illegal", res)
	}
	if len(ct.errors) != 1 {
		t.Fatalf("Check reported %d errors, want 1: %q", len(ct.errors), ct.errors)
	}
	msg := ct.errors[0]
	for _, want := range []string{"Scenario S25", dir, `"x"`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, `"y"`) {
		t.Errorf("error %q names the healthy key y", msg)
	}
	path := msg[strings.Index(msg, dir):]
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("visualization not written: %v", err)
	}
	if !strings.Contains(string(body), "<html") {
		t.Errorf("%s does not look like porcupine's HTML visualization", path)
	}
}

func TestRecorderCheckOK(t *testing.T) {
	rec := NewRecorder()
	rec.Call(0, inPut("x", "a"))(KVOutput{}, nil)
	rec.Call(1, inGet("x"))(outFound("a"), nil)
	ct := &checkCaptureTB{TB: t}
	if res := rec.Check(ct, 10*time.Second); res != porcupine.Ok || len(ct.errors) != 0 {
		t.Errorf("Check = %v, errors %q; want Ok and none", res, ct.errors)
	}
}

func TestLinearizabilityCheckTimeoutIsInconclusive(t *testing.T) {
	// 40 fully concurrent puts and 40 concurrent reads on one key, then a read of a value nobody wrote:
	// porcupine must rule out every interleaving before it can say Illegal, which takes far longer than
	// the timeout.
	var ops []porcupine.Operation
	for i := range 40 {
		ops = append(ops, hop(i, 0, 1000, inPut("x", fmt.Sprint(i)), outDone))
		ops = append(ops, hop(100+i, 0, 1000, inGet("x"), outFound(fmt.Sprint(i*7%40))))
	}
	ops = append(ops, hop(200, 2000, 2010, inGet("x"), outFound("never")))

	ct := &checkCaptureTB{TB: t}
	if res := CheckHistory(ct, ops, 50*time.Millisecond); res != porcupine.Unknown {
		t.Fatalf("CheckHistory = %v, want Unknown", res)
	}
	if len(ct.errors) != 0 {
		t.Errorf("a timeout failed the test: %q", ct.errors)
	}
	if len(ct.logs) != 1 || !strings.Contains(ct.logs[0], "INCONCLUSIVE") {
		t.Errorf("logs %q: want one loud INCONCLUSIVE line", ct.logs)
	}
}

// ---- workload against fakes -----------------------------------------------------------------------------
//
// These fakes are test doubles for the checker, not for cairn: a store that is linearizable by
// construction must pass, and stores with the classic replication bugs must be caught.

// fakeMemStore is linearizable: every operation takes effect atomically under one mutex. With a non-zero
// faultRate it also misbehaves the way a real cluster may, without breaking linearizability: an operation
// may be rejected without effect (errFakeRejected), or report errFakeTimeout after having taken effect or not.
type fakeMemStore struct {
	mu        sync.Mutex
	data      map[string]string
	faultRate float64
	rng       *rand.Rand
}

func newFakeMemStore(seed uint64, faultRate float64) *fakeMemStore {
	return &fakeMemStore{data: make(map[string]string), faultRate: faultRate, rng: rand.New(rand.NewPCG(seed, 1))}
}

// fault, called with mu held, picks a misbehaviour: applied reports whether the operation takes effect,
// err what the client is told.
func (s *fakeMemStore) fault() (apply bool, err error) {
	if s.faultRate == 0 || s.rng.Float64() >= s.faultRate {
		return true, nil
	}
	switch s.rng.IntN(3) {
	case 0:
		return false, errFakeRejected
	case 1:
		return false, errFakeTimeout
	default:
		return true, errFakeTimeout
	}
}

func (s *fakeMemStore) Get(ctx context.Context, key string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.fault(); err != nil {
		return "", false, err
	}
	v, ok := s.data[key]
	return v, ok, nil
}

func (s *fakeMemStore) Put(ctx context.Context, key, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	apply, err := s.fault()
	if apply {
		s.data[key] = value
	}
	return err
}

func (s *fakeMemStore) CAS(ctx context.Context, key, expect string, expectAbsent bool, value string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	apply, err := s.fault()
	cur, present := s.data[key]
	holds := !present && expectAbsent || present && !expectAbsent && cur == expect
	if apply && holds {
		s.data[key] = value
	}
	if err != nil {
		return false, err // rejected, or evaluated but the client never heard
	}
	return holds, nil
}

// fakeStaleStore serves every third read from a copy that is refreshed only every tenth write: the lagging
// follower read of a system that skips ReadIndex.
type fakeStaleStore struct {
	*fakeMemStore
	lagging      map[string]string
	reads, write int
}

func (s *fakeStaleStore) Get(ctx context.Context, key string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	src := s.data
	if s.reads%3 == 0 {
		src = s.lagging
	}
	v, ok := src[key]
	return v, ok, nil
}

func (s *fakeStaleStore) wrote() {
	if s.write++; s.write%10 == 0 {
		s.lagging = make(map[string]string, len(s.data))
		for k, v := range s.data {
			s.lagging[k] = v
		}
	}
}

func (s *fakeStaleStore) Put(ctx context.Context, key, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[key] = value
	s.wrote()
	return nil
}

func (s *fakeStaleStore) CAS(ctx context.Context, key, expect string, expectAbsent bool, value string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, present := s.data[key]
	if holds := !present && expectAbsent || present && !expectAbsent && cur == expect; !holds {
		return false, nil
	}
	s.data[key] = value
	s.wrote()
	return true, nil
}

// fakeLostWriteStore acknowledges every seventh inPut without applying it: the write lost in a failover.
type fakeLostWriteStore struct {
	*fakeMemStore
	puts int
}

func (s *fakeLostWriteStore) Put(ctx context.Context, key, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.puts++; s.puts%7 != 0 {
		s.data[key] = value
	}
	return nil
}

// fakeSplitBrainCASStore evaluates every fifth inCAS against a snapshot taken at the previous inCAS, as two leaders
// would: two inCAS from the same expected value can both succeed.
type fakeSplitBrainCASStore struct {
	*fakeMemStore
	old map[string]string
	n   int
}

func (s *fakeSplitBrainCASStore) CAS(ctx context.Context, key, expect string, expectAbsent bool, value string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	view := s.data
	if s.n%5 == 0 && s.old != nil {
		view = s.old
	}
	s.old = make(map[string]string, len(s.data))
	for k, v := range s.data {
		s.old[k] = v
	}
	cur, present := view[key]
	if holds := !present && expectAbsent || present && !expectAbsent && cur == expect; !holds {
		return false, nil
	}
	s.data[key] = value
	return true, nil
}

func fakeWorkloadConfig(seed int64, store KVStore) WorkloadConfig {
	cfg := DefaultWorkloadConfig()
	cfg.Seed = seed
	cfg.Clients = 6
	cfg.Keys = 4
	cfg.Ops = 3000
	cfg.Duration = 20 * time.Second
	cfg.Stores = func(int) KVStore { return store }
	cfg.Classify = classifyFakeErr
	return cfg
}

func TestWorkloadLinearizableFakePasses(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tests := []struct {
		name      string
		faultRate float64
	}{
		{"no faults", 0},
		{"rejections and unknown outcomes", 0.05},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			const seed = 1
			t.Logf("seed %d", seed)
			store := newFakeMemStore(seed, tc.faultRate)
			rec := RunRegisterWorkload(context.Background(), t, fakeWorkloadConfig(seed, store))
			s := rec.Stats()
			if s.Calls != 3000 || s.Pending != 0 {
				t.Errorf("stats %+v: want 3000 calls, none pending", s)
			}
			if tc.faultRate > 0 && (s.Indeterminate == 0 || s.Failed == 0 || s.DroppedReads == 0) {
				t.Errorf("stats %+v: the faults were not exercised", s)
			}
			if res := rec.Check(t, 30*time.Second); res != porcupine.Ok {
				t.Errorf("Check = %v, want Ok", res)
			}
		})
	}
}

func TestWorkloadBrokenFakesAreCaught(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	tests := []struct {
		name  string
		store func() KVStore
	}{
		{"stale reads from a lagging copy", func() KVStore {
			return &fakeStaleStore{fakeMemStore: newFakeMemStore(1, 0), lagging: map[string]string{}}
		}},
		{"acknowledged puts lost", func() KVStore {
			return &fakeLostWriteStore{fakeMemStore: newFakeMemStore(1, 0)}
		}},
		{"cas decided on an old view", func() KVStore {
			return &fakeSplitBrainCASStore{fakeMemStore: newFakeMemStore(1, 0)}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Setenv(ArtifactsEnv, dir)
			const seed = 7
			t.Logf("seed %d", seed)
			cfg := fakeWorkloadConfig(seed, tc.store())
			cfg.Ops = 1000
			rec := RunRegisterWorkload(context.Background(), t, cfg)
			ct := &checkCaptureTB{TB: t}
			if res := rec.Check(ct, 30*time.Second); res != porcupine.Illegal {
				t.Fatalf("Check = %v, want Illegal: the checker missed a broken store", res)
			}
			if len(ct.errors) != 1 || !strings.Contains(ct.errors[0], "Scenario S25") ||
				!strings.Contains(ct.errors[0], dir) {
				t.Errorf("Check reported %q; want one error naming Scenario S25 and a file in %s", ct.errors, dir)
			}
		})
	}
}

// fakeSlowStore answers after delay or when ctx ends, whichever is first; a cut-short write is errFakeTimeout.
type fakeSlowStore struct {
	*fakeMemStore
	delay time.Duration
}

func (s *fakeSlowStore) wait(ctx context.Context) error {
	select {
	case <-time.After(s.delay):
		return nil
	case <-ctx.Done():
		return errFakeTimeout
	}
}

func (s *fakeSlowStore) Get(ctx context.Context, key string) (string, bool, error) {
	if err := s.wait(ctx); err != nil {
		return "", false, err
	}
	return s.fakeMemStore.Get(ctx, key)
}

func (s *fakeSlowStore) Put(ctx context.Context, key, value string) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.fakeMemStore.Put(ctx, key, value)
}

func (s *fakeSlowStore) CAS(ctx context.Context, key, expect string, expectAbsent bool, value string) (bool, error) {
	if err := s.wait(ctx); err != nil {
		return false, err
	}
	return s.fakeMemStore.CAS(ctx, key, expect, expectAbsent, value)
}

func TestWorkloadIsBounded(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	newSlow := func(d time.Duration) *fakeSlowStore {
		return &fakeSlowStore{fakeMemStore: newFakeMemStore(1, 0), delay: d}
	}

	t.Run("by ops", func(t *testing.T) {
		cfg := fakeWorkloadConfig(3, newFakeMemStore(3, 0))
		cfg.Ops, cfg.Duration = 123, 0
		if s := RunRegisterWorkload(context.Background(), t, cfg).Stats(); s.Calls != 123 {
			t.Errorf("%d calls, want 123", s.Calls)
		}
	})
	t.Run("by duration", func(t *testing.T) {
		cfg := fakeWorkloadConfig(4, newSlow(time.Millisecond))
		cfg.Ops, cfg.Duration = 0, 200*time.Millisecond
		begin := time.Now()
		rec := RunRegisterWorkload(context.Background(), t, cfg)
		if took := time.Since(begin); took > 2*time.Second {
			t.Errorf("took %v with Duration 200ms", took)
		}
		if s := rec.Stats(); s.Calls == 0 || s.Indeterminate != 0 {
			t.Errorf("stats %+v: want calls, and in-flight operations allowed to finish", s)
		}
		if res := rec.Check(t, 30*time.Second); res != porcupine.Ok {
			t.Errorf("Check = %v, want Ok", res)
		}
	})
	t.Run("by ctx", func(t *testing.T) {
		cfg := fakeWorkloadConfig(5, newSlow(time.Hour))
		cfg.Ops, cfg.Duration, cfg.OpTimeout = 0, time.Hour, time.Hour
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		begin := time.Now()
		rec := RunRegisterWorkload(ctx, t, cfg)
		if took := time.Since(begin); took > 2*time.Second {
			t.Errorf("took %v with ctx cancelled after 100ms", took)
		}
		// At most one cut-short call per client: none starts after the end.
		// (A starved client may not have started at all within 100ms.)
		if s := rec.Stats(); s.Calls < 1 || s.Calls > cfg.Clients || s.OK != 0 {
			t.Errorf("stats %+v: want at most one cut-short call per client", s)
		}
		if res := rec.Check(t, 30*time.Second); res != porcupine.Ok {
			t.Errorf("Check = %v, want Ok", res)
		}
	})
	t.Run("by op timeout", func(t *testing.T) {
		cfg := fakeWorkloadConfig(6, newSlow(time.Hour))
		cfg.Ops, cfg.Duration, cfg.OpTimeout = 12, time.Hour, 20*time.Millisecond
		rec := RunRegisterWorkload(context.Background(), t, cfg)
		if s := rec.Stats(); s.Calls != 12 || s.OK != 0 || s.Indeterminate+s.DroppedReads != 12 {
			t.Errorf("stats %+v: want 12 timed-out calls", s)
		}
	})
}

func TestWorkloadConfigValidate(t *testing.T) {
	ok := fakeWorkloadConfig(1, newFakeMemStore(1, 0))
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	tests := []struct {
		name   string
		modify func(*WorkloadConfig)
	}{
		{"no clients", func(c *WorkloadConfig) { c.Clients = 0 }},
		{"no keys", func(c *WorkloadConfig) { c.Keys = 0 }},
		{"unbounded", func(c *WorkloadConfig) { c.Ops, c.Duration = 0, 0 }},
		{"negative ops", func(c *WorkloadConfig) { c.Ops = -1 }},
		{"ratios over 1", func(c *WorkloadConfig) { c.ReadRatio, c.CASRatio = 0.6, 0.5 }},
		{"negative ratio", func(c *WorkloadConfig) { c.CASRatio = -0.1 }},
		{"no op timeout", func(c *WorkloadConfig) { c.OpTimeout = 0 }},
		{"no stores", func(c *WorkloadConfig) { c.Stores = nil }},
	}
	for _, tc := range tests {
		cfg := ok
		tc.modify(&cfg)
		if err := cfg.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", tc.name, cfg)
		}
	}
}

func TestWorkloadValuesAreUniqueAndSeedDeterminesOps(t *testing.T) {
	run := func() []porcupine.Operation {
		cfg := fakeWorkloadConfig(42, newFakeMemStore(42, 0))
		cfg.Clients, cfg.Ops = 1, 300 // one client: the run is fully determined by the seed
		return RunRegisterWorkload(context.Background(), t, cfg).Operations()
	}
	a, b := run(), run()
	written := make(map[string]bool)
	kinds := make(map[KVOp]int)
	for i, o := range a {
		in := o.Input.(KVInput)
		kinds[in.Op]++
		if in.Op != OpGet {
			if written[in.Value] {
				t.Errorf("value %q written twice", in.Value)
			}
			written[in.Value] = true
		}
		if in != b[i].Input.(KVInput) || o.Output != b[i].Output {
			t.Fatalf("operation %d differs between runs with the same seed: %v vs %v", i, o.Input, b[i].Input)
		}
	}
	if kinds[OpGet] == 0 || kinds[OpPut] == 0 || kinds[OpCAS] == 0 {
		t.Errorf("operation mix %v: want gets, puts and cas", kinds)
	}
	var outCASOK int
	for _, o := range a {
		if o.Input.(KVInput).Op == OpCAS && o.Output.(KVOutput).OK {
			outCASOK++
		}
	}
	if outCASOK == 0 {
		t.Errorf("no cas succeeded: the workload never exercises successful cas")
	}
}
