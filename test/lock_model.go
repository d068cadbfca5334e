// A porcupine model of one lock (issue 12): acquire with a fencing token, renew, release, expiry observed
// as lock_lost, try-lock answered lock_held, and status. Invariants I9 (tokens strictly increase per lock)
// and I10 (no lease ends before its TTL) are what it checks; a recorder for concurrent lock clients
// goes with it.

package test

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// LockOp names an operation of the lock model.
type LockOp string

// The operations of the lock model.
const (
	LockOpAcquire LockOp = "acquire"
	LockOpRenew   LockOp = "renew"
	LockOpRelease LockOp = "release"
	LockOpStatus  LockOp = "status"
)

// LockInput is the porcupine input of one lock operation. Call and TTL let the model bound expiry in
// real time: the times are the recorder's (nanoseconds on the test's monotonic clock), and the same
// values porcupine sees as the operation's Call.
type LockInput struct {
	Op     LockOp
	Name   string
	Client int
	// Token is the token renew and release carry.
	Token uint64
	// TTL is the lease the holder asked for (acquire), or holds (renew). The model assumes the server
	// starts a lease's countdown no earlier than the call that granted or renewed it, so the holder keeps
	// the lock at least until Call+TTL (I10).
	TTL time.Duration
	// Wait is the acquire's wait; 0 is a try-lock.
	Wait time.Duration
	// Call is the time the request was sent (set by LockRecorder).
	Call int64
}

// LockOutput is the porcupine output of one lock operation.
type LockOutput struct {
	// OK: acquire granted (Token is the grant's token), renew or release took effect.
	OK    bool
	Token uint64
	// Held: acquire answered 409 lock_held. HeldBy is the holder's token the body names (0: not named).
	Held   bool
	HeldBy uint64
	// Lost: renew or release answered 410 lock_lost.
	Lost bool
	// Status answers: StatusHeld with the holder's token in Token.
	StatusHeld bool
	// Unknown marks an operation whose outcome is unknown (timeout, 504 outcome_unknown, no answer).
	Unknown bool
	// Refused marks a definite refusal that did nothing and observed nothing (400, a node that refused
	// the connection): LockRecorder leaves the operation out.
	Refused bool
	// Return is the time the answer arrived, or one past the end of the history for Unknown.
	Return int64
}

// lockState is what the model knows about one lock. It is a comparable value (porcupine merges equal
// states of the power-set construction with ==).
type lockState struct {
	// holder is the token of the grant that holds the lock now, 0 when free or held by a phantom.
	holder uint64
	// phantom: a grant nobody learned about holds the lock (an acquire with an unknown outcome, or a
	// waiting acquire that was granted and then cancelled). Nobody relies on it, so it may vanish at any
	// moment; a status or lock_held answer may reveal its token.
	phantom bool
	client  int
	ttl     time.Duration
	// until is the earliest time the holder's lease may expire: the call of its acquire or of its last
	// acknowledged renew, plus its TTL, minus the model's slack.
	until int64
	// last is the highest token granted so far (a lower bound when a phantom's token is not known): every
	// later grant must be above it (I9).
	last uint64
	// floor is a lower bound on real time at this point of the linearization, raised by each expiry: an
	// operation linearized after an expiry must return after the expiry could happen.
	floor int64
}

func (s lockState) String() string {
	switch {
	case s.phantom:
		return fmt.Sprintf("held by an unseen grant (tokens > %d)", s.last)
	case s.holder == 0:
		return fmt.Sprintf("free (last token %d)", s.last)
	default:
		return fmt.Sprintf("held by client %d token %d until %v (last token %d)", s.client, s.holder,
			time.Duration(s.until), s.last)
	}
}

func (s lockState) held() bool { return s.phantom || s.holder != 0 }

func (s lockState) free() lockState {
	s.holder, s.phantom, s.client, s.ttl, s.until = 0, false, 0, 0, 0
	return s
}

// LockModel returns the porcupine model of locks: one independent lock per name (partitioned by name),
// each a mutex with fencing tokens and leases. slack is subtracted from every lease's guaranteed end, to
// absorb the difference in clock rates between the test and the server (0 on one machine).
//
// What a history must show, for each lock, in some order consistent with real time:
//   - a grant only when the lock is free, with a token above every earlier grant's (I9);
//   - renew and release succeed only for the holder's token; lock_lost only for a token that does not
//     hold the lock;
//   - a holder loses the lock without releasing it only by expiry, and an expiry is observed (by a grant
//     to someone else, a lock_lost, a status) only by an operation that returned at or after the
//     holder's guaranteed lease end (I10);
//   - lock_held and status see a holder, and name its token when they name one.
//
// Unknown outcomes: an acquire may or may not have granted (a grant nobody saw holds the lock until it
// vanishes, at any moment); a release may or may not have released; a renew is taken as not extending
// the lease (the conservative reading). The model does not know lock_delay: histories must use none.
func LockModel(slack time.Duration) porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition:      partitionLocksByName,
		PartitionEvent: partitionLockEventsByName,
		Init:           func() []any { return []any{lockState{}} },
		Step: func(state, input, output any) []any {
			return stepLock(state.(lockState), input.(LockInput), output.(LockOutput), slack)
		},
		DescribeOperation: func(input, output any) string {
			return describeLockOperation(input.(LockInput), output.(LockOutput))
		},
		DescribeState: func(state any) string { return state.(lockState).String() },
	}
	return nm.ToModel()
}

// stepLock returns every state the lock may be in after the operation, or none if the operation cannot
// have answered so from s.
func stepLock(s lockState, in LockInput, out LockOutput, slack time.Duration) []any {
	if out.Return < s.floor {
		return nil // it returned before an expiry linearized ahead of it could happen
	}
	var next []any
	for _, pre := range lockPreStates(s, out) {
		for _, post := range applyLockOp(pre, in, out, slack) {
			if !slices.Contains(next, any(post)) {
				next = append(next, post)
			}
		}
	}
	return next
}

// lockPreStates is s and, when the holder's lease may have ended by the time the operation returned, s
// after that expiry.
func lockPreStates(s lockState, out LockOutput) []lockState {
	switch {
	case s.phantom:
		return []lockState{s, s.free()}
	case s.holder != 0 && out.Return >= s.until:
		e := s.free()
		e.floor = max(s.floor, s.until)
		return []lockState{s, e}
	default:
		return []lockState{s}
	}
}

func applyLockOp(s lockState, in LockInput, out LockOutput, slack time.Duration) []lockState {
	switch in.Op {
	case LockOpAcquire:
		return applyAcquire(s, in, out, slack)
	case LockOpRenew:
		switch {
		case out.Unknown:
			return []lockState{s}
		case out.OK:
			if s.phantom || s.holder != in.Token {
				return nil
			}
			s.until = max(s.until, in.Call+int64(s.ttl-slack))
			return []lockState{s}
		case out.Lost:
			return lostAnswer(s, in)
		}
	case LockOpRelease:
		switch {
		case out.Unknown:
			if !s.phantom && s.holder == in.Token {
				return []lockState{s, s.free()}
			}
			return []lockState{s}
		case out.OK:
			if s.phantom || s.holder != in.Token {
				return nil
			}
			return []lockState{s.free()}
		case out.Lost:
			return lostAnswer(s, in)
		}
	case LockOpStatus:
		if out.Unknown {
			return []lockState{s}
		}
		if !out.StatusHeld {
			if s.held() {
				return nil
			}
			return []lockState{s}
		}
		return seeHolder(s, out.Token)
	}
	return nil
}

func applyAcquire(s lockState, in LockInput, out LockOutput, slack time.Duration) []lockState {
	phantom := s.free()
	phantom.phantom = true
	switch {
	case out.Unknown:
		if s.held() {
			return []lockState{s}
		}
		return []lockState{s, phantom}
	case out.OK:
		if s.held() || out.Token <= s.last {
			return nil // granted while held (mutual exclusion), or a token that went back (I9)
		}
		return []lockState{{holder: out.Token, client: in.Client, ttl: in.TTL,
			until: in.Call + int64(in.TTL-slack), last: out.Token, floor: s.floor}}
	case out.Held:
		var next []lockState
		if s.held() {
			next = seeHolder(s, out.HeldBy)
		}
		if in.Wait > 0 && !s.held() {
			// A waiting acquire that was granted as its wait ended: the cancel released that grant
			// (its requester never learned the token). Between the two, the lock was held by it.
			next = append(next, phantom)
		}
		return next
	}
	return nil
}

// lostAnswer: renew or release was told lock_lost, so the token does not hold the lock now.
func lostAnswer(s lockState, in LockInput) []lockState {
	if !s.phantom && s.holder == in.Token {
		return nil // the holder's lease has not ended yet (the expired variant is the other pre-state)
	}
	return []lockState{s}
}

// seeHolder: an answer saw the lock held, by token (0: not named).
func seeHolder(s lockState, token uint64) []lockState {
	switch {
	case !s.held():
		return nil
	case token == 0 || (!s.phantom && s.holder == token):
		return []lockState{s}
	case s.phantom && token > s.last:
		s.phantom, s.holder, s.last = false, token, token
		s.until = 0 // nobody relies on it: it may still vanish at any moment
		return []lockState{s}
	default:
		return nil
	}
}

func partitionLocksByName(history []porcupine.Operation) [][]porcupine.Operation {
	byName := make(map[string][]porcupine.Operation)
	for _, op := range history {
		name := op.Input.(LockInput).Name
		byName[name] = append(byName[name], op)
	}
	parts := make([][]porcupine.Operation, 0, len(byName))
	for _, n := range sortedKeys(byName) {
		parts = append(parts, byName[n])
	}
	return parts
}

func partitionLockEventsByName(history []porcupine.Event) [][]porcupine.Event {
	byName := make(map[string][]porcupine.Event)
	nameOf := make(map[int]string)
	for _, ev := range history {
		if ev.Kind == porcupine.CallEvent {
			nameOf[ev.Id] = ev.Value.(LockInput).Name
		}
	}
	for _, ev := range history {
		n := nameOf[ev.Id]
		byName[n] = append(byName[n], ev)
	}
	parts := make([][]porcupine.Event, 0, len(byName))
	for _, n := range sortedKeys(byName) {
		parts = append(parts, byName[n])
	}
	return parts
}

func describeLockOperation(in LockInput, out LockOutput) string {
	var res string
	switch {
	case out.Unknown:
		res = "?"
	case in.Op == LockOpStatus && out.StatusHeld:
		res = fmt.Sprintf("held by %d", out.Token)
	case in.Op == LockOpStatus:
		res = "free"
	case out.OK && in.Op == LockOpAcquire:
		res = fmt.Sprintf("token %d", out.Token)
	case out.OK:
		res = "ok"
	case out.Held:
		res = fmt.Sprintf("lock_held by %d", out.HeldBy)
	case out.Lost:
		res = "lock_lost"
	default:
		res = "<no outcome>"
	}
	switch in.Op {
	case LockOpAcquire:
		return fmt.Sprintf("c%d acquire(%q, ttl %v, wait %v) -> %s", in.Client, in.Name, in.TTL, in.Wait, res)
	case LockOpRenew, LockOpRelease:
		return fmt.Sprintf("c%d %s(%q, %d) -> %s", in.Client, in.Op, in.Name, in.Token, res)
	default:
		return fmt.Sprintf("c%d %s(%q) -> %s", in.Client, in.Op, in.Name, res)
	}
}

// CheckLockHistory checks a history of LockInput/LockOutput operations against LockModel(slack), like
// CheckHistory does for the KV model: Illegal fails t and writes porcupine's visualization, Unknown (the
// checker ran out of time) is logged loudly and proves nothing.
func CheckLockHistory(t testing.TB, history []porcupine.Operation, slack, timeout time.Duration) porcupine.CheckResult {
	t.Helper()
	model := LockModel(slack)
	begin := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, history, timeout)
	took := time.Since(begin).Round(time.Millisecond)
	switch res {
	case porcupine.Illegal:
		// Invariants I9, I10: the lock history has no legal order.
		path, err := writeVisualization(t, model, info)
		if err != nil {
			t.Errorf("I9/I10: lock history of %d operations is NOT linearizable; writing the visualization failed: %v",
				len(history), err)
			return res
		}
		t.Errorf("I9/I10: lock history of %d operations is NOT linearizable; visualization: %s\n%s", len(history), path,
			describeLockFailure(history, info))
	case porcupine.Unknown:
		t.Logf("!!! LOCK LINEARIZABILITY CHECK INCONCLUSIVE: porcupine gave up after %v on %d operations; "+
			"this run proves NOTHING (not a failure, not a pass)", took, len(history))
	default:
		t.Logf("lock linearizability: %d operations are linearizable (checked in %v)", len(history), took)
	}
	return res
}

// describeLockFailure says, for each lock whose history has no legal order, where the longest legal order
// found stops: its last operations and the earliest ones it could not place (the visualization shows all).
func describeLockFailure(history []porcupine.Operation, info porcupine.LinearizationInfo) string {
	parts := partitionLocksByName(history)
	lins := info.PartialLinearizationsOperations()
	if len(lins) != len(parts) {
		return ""
	}
	var b strings.Builder
	line := func(prefix string, op porcupine.Operation) {
		fmt.Fprintf(&b, "  %s [%v, %v] %s\n", prefix, time.Duration(op.Call), time.Duration(op.Return),
			describeLockOperation(op.Input.(LockInput), op.Output.(LockOutput)))
	}
	for i, part := range parts {
		var longest []porcupine.Operation
		for _, l := range lins[i] {
			if len(l) > len(longest) {
				longest = l
			}
		}
		if len(longest) == len(part) {
			continue
		}
		fmt.Fprintf(&b, "lock %q: %d of %d operations ordered; the order ends with\n", part[0].Input.(LockInput).Name,
			len(longest), len(part))
		for _, op := range longest[max(0, len(longest)-4):] {
			line("ok ", op)
		}
		b.WriteString("  and cannot go on with any of\n")
		rest := slices.DeleteFunc(slices.Clone(part), func(op porcupine.Operation) bool { return slices.Contains(longest, op) })
		slices.SortFunc(rest, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
		for _, op := range rest[:min(6, len(rest))] {
			line("-> ", op)
		}
	}
	return b.String()
}

// LockRecorder records a history of lock operations from concurrent clients, for LockModel. It is safe
// for concurrent use. Times are nanoseconds since NewLockRecorder on the monotonic clock.
type LockRecorder struct {
	start time.Time

	mu      sync.Mutex
	nextID  int
	pending map[int]LockInput
	done    []porcupine.Operation
	unknown []porcupine.Operation
}

// NewLockRecorder returns an empty LockRecorder.
func NewLockRecorder() *LockRecorder {
	return &LockRecorder{start: time.Now(), pending: make(map[int]LockInput)}
}

// Now is the recorder's clock: the time base of LockInput.Call and LockOutput.Return, and of the
// semaphore, FIFO and hold checkers when fed from the same recorder.
func (r *LockRecorder) Now() int64 { return time.Since(r.start).Nanoseconds() }

// Call records the invocation of in (its Call is set here) and returns the function to call once with
// the outcome: out.Unknown (or never calling finish) records an unknown outcome; a status or renew
// with an unknown outcome is left out (see observesOnly), and so is a Refused operation. Calls of finish after the first are ignored.
func (r *LockRecorder) Call(in LockInput) (finish func(out LockOutput)) {
	in.Call = r.Now()
	r.mu.Lock()
	id := r.nextID
	r.nextID++
	r.pending[id] = in
	r.mu.Unlock()
	return func(out LockOutput) {
		ret := r.Now()
		r.mu.Lock()
		defer r.mu.Unlock()
		in, ok := r.pending[id]
		if !ok {
			return
		}
		delete(r.pending, id)
		if out.Refused {
			return
		}
		op := porcupine.Operation{ClientId: in.Client, Input: in, Call: in.Call, Return: ret}
		if out.Unknown {
			if observesOnly(in.Op) {
				return
			}
			op.Output = LockOutput{Unknown: true}
			r.unknown = append(r.unknown, op)
			return
		}
		out.Return = ret
		op.Output = out
		r.done = append(r.done, op)
	}
}

// Operations returns the history so far: answered operations as observed, and unknown or pending ones
// with their return one past the end of the history (they may take effect at any point after their call).
func (r *LockRecorder) Operations() []porcupine.Operation {
	r.mu.Lock()
	defer r.mu.Unlock()
	ops := slices.Clone(r.done)
	open := slices.Clone(r.unknown)
	var end int64
	for _, op := range ops {
		end = max(end, op.Return)
	}
	for _, op := range open {
		end = max(end, op.Call)
	}
	ids := make([]int, 0, len(r.pending))
	for id, in := range r.pending {
		end = max(end, in.Call)
		if !observesOnly(in.Op) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		in := r.pending[id]
		open = append(open, porcupine.Operation{ClientId: in.Client, Input: in, Call: in.Call})
	}
	for _, op := range open {
		op.Return = end + 1
		op.Output = LockOutput{Unknown: true, Return: end + 1}
		ops = append(ops, op)
	}
	return ops
}

// observesOnly: without an answer, the operation changed nothing the model tracks (a status reads; a
// renew that may have taken effect is read as not extending the lease), so it is left out.
func observesOnly(op LockOp) bool { return op == LockOpStatus || op == LockOpRenew }

// Check checks the recorded history with CheckLockHistory.
func (r *LockRecorder) Check(t testing.TB, slack, timeout time.Duration) porcupine.CheckResult {
	t.Helper()
	return CheckLockHistory(t, r.Operations(), slack, timeout)
}
