package test

import (
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// lop builds a hand-made lock operation; ret openReturn marks an unknown outcome (closed by
// closeLockReturns, as LockRecorder.Operations does).
func lop(client int, call, ret int64, in LockInput, out LockOutput) porcupine.Operation {
	in.Client, in.Call = client, call
	if in.Name == "" {
		in.Name = "L"
	}
	out.Return = ret
	return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
}

func closeLockReturns(ops []porcupine.Operation) []porcupine.Operation {
	ops = closeOpenReturns(ops)
	for i := range ops {
		out := ops[i].Output.(LockOutput)
		out.Return = ops[i].Return
		ops[i].Output = out
	}
	return ops
}

// Times in these histories are bare numbers; TTLs are the same units (nanoseconds).
func acq(ttl int64) LockInput { return LockInput{Op: LockOpAcquire, TTL: time.Duration(ttl)} }
func acqWait(ttl, wait int64) LockInput {
	return LockInput{Op: LockOpAcquire, TTL: time.Duration(ttl), Wait: time.Duration(wait)}
}
func renew(tok uint64) LockInput   { return LockInput{Op: LockOpRenew, Token: tok} }
func release(tok uint64) LockInput { return LockInput{Op: LockOpRelease, Token: tok} }

var (
	statusOp     = LockInput{Op: LockOpStatus}
	lockOK       = LockOutput{OK: true}
	lockLost     = LockOutput{Lost: true}
	lockUnknown  = LockOutput{Unknown: true}
	lockFree     = LockOutput{}
	lockHeldAnon = LockOutput{Held: true}
)

func granted(tok uint64) LockOutput    { return LockOutput{OK: true, Token: tok} }
func heldBy(tok uint64) LockOutput     { return LockOutput{Held: true, HeldBy: tok} }
func statusHeld(tok uint64) LockOutput { return LockOutput{StatusHeld: true, Token: tok} }

// TestLockModelHandBuiltHistories is the lock model's own negative control: every "bad" history breaks
// one guarantee (I9 token order, I10 lease, mutual exclusion) and must be Illegal; the good ones are the
// same shapes done right, with expiries, unknown outcomes and phantoms, and must pass.
func TestLockModelHandBuiltHistories(t *testing.T) {
	tests := []struct {
		name string
		ops  []porcupine.Operation
		want bool
	}{
		// Legal.
		{"acquire release acquire", []porcupine.Operation{
			lop(0, 0, 10, acq(1000), granted(5)),
			lop(0, 20, 30, release(5), lockOK),
			lop(1, 40, 50, acq(1000), granted(9)),
		}, true},
		{"try-lock while held sees the holder", []porcupine.Operation{
			lop(0, 0, 10, acq(1000), granted(5)),
			lop(1, 20, 30, acq(1000), heldBy(5)),
			lop(2, 40, 50, statusOp, statusHeld(5)),
			lop(0, 60, 70, renew(5), lockOK),
		}, true},
		{"expiry after the ttl: next grant, then the old holder is lost", []porcupine.Operation{
			lop(0, 0, 10, acq(100), granted(5)),
			lop(1, 150, 160, acq(100), granted(8)),
			lop(0, 170, 180, renew(5), lockLost),
			lop(0, 190, 200, release(5), lockLost),
		}, true},
		{"expiry observed by a status and by lock_lost", []porcupine.Operation{
			lop(0, 0, 10, acq(100), granted(5)),
			lop(1, 120, 130, statusOp, lockFree),
			lop(0, 140, 150, renew(5), lockLost),
		}, true},
		{"a renew extends the lease", []porcupine.Operation{
			lop(0, 0, 10, acq(100), granted(5)),
			lop(0, 80, 90, renew(5), lockOK),
			lop(1, 150, 160, acq(100), heldBy(5)),
			lop(1, 200, 210, acq(100), granted(7)),
		}, true},
		{"an expiry concurrent with the answer that saw it", []porcupine.Operation{
			lop(0, 0, 10, acq(100), granted(5)),
			lop(1, 50, 120, acq(100), granted(6)), // returned after A's lease could end
		}, true},
		{"an unknown acquire may hold the lock unseen, then vanish", []porcupine.Operation{
			lop(0, 0, openReturn, acq(1000), lockUnknown),
			lop(1, 20, 30, acq(1000), heldBy(7)),
			lop(1, 40, 50, statusOp, lockFree),
			lop(1, 60, 70, acq(1000), granted(9)),
		}, true},
		{"an unknown acquire may never have happened", []porcupine.Operation{
			lop(0, 0, openReturn, acq(1000), lockUnknown),
			lop(1, 20, 30, acq(1000), granted(3)),
		}, true},
		{"an unknown release may have released", []porcupine.Operation{
			lop(0, 0, 10, acq(1000), granted(5)),
			lop(0, 20, openReturn, release(5), lockUnknown),
			lop(1, 40, 50, acq(1000), granted(6)),
		}, true},
		{"a waiting acquire granted and cancelled as its wait ran out", []porcupine.Operation{
			lop(0, 0, 10, acq(1000), granted(5)),
			lop(1, 15, 100, acqWait(1000, 80), lockHeldAnon),
			lop(0, 20, 30, release(5), lockOK),
			lop(2, 40, 50, statusOp, statusHeld(6)), // the waiter's grant, before its cancel
			lop(2, 110, 120, statusOp, lockFree),
			lop(2, 130, 140, acq(1000), granted(9)),
		}, true},
		{"locks are independent", []porcupine.Operation{
			lop(0, 0, 10, LockInput{Op: LockOpAcquire, Name: "a", TTL: 1000}, granted(5)),
			lop(1, 20, 30, LockInput{Op: LockOpAcquire, Name: "b", TTL: 1000}, granted(2)),
		}, true},

		// Illegal.
		{"two holders at once", []porcupine.Operation{
			lop(0, 0, 10, acq(1000), granted(5)),
			lop(1, 20, 30, acq(1000), granted(6)),
		}, false},
		{"a token that goes back (I9)", []porcupine.Operation{
			lop(0, 0, 10, acq(1000), granted(5)),
			lop(0, 20, 30, release(5), lockOK),
			lop(1, 40, 50, acq(1000), granted(4)),
		}, false},
		{"a token handed out twice (I9)", []porcupine.Operation{
			lop(0, 0, 10, acq(1000), granted(5)),
			lop(0, 20, 30, release(5), lockOK),
			lop(1, 40, 50, acq(1000), granted(5)),
		}, false},
		{"a lease lost before its ttl (I10)", []porcupine.Operation{
			lop(0, 0, 10, acq(100), granted(5)),
			lop(0, 50, 60, renew(5), lockLost),
		}, false},
		{"a grant before the renewed lease ended (I10)", []porcupine.Operation{
			lop(0, 0, 10, acq(100), granted(5)),
			lop(0, 80, 90, renew(5), lockOK),
			lop(1, 150, 160, acq(100), granted(6)),
		}, false},
		{"a renew of a lease already taken over", []porcupine.Operation{
			lop(0, 0, 10, acq(100), granted(5)),
			lop(1, 150, 160, acq(100), granted(6)),
			lop(0, 170, 180, renew(5), lockOK),
		}, false},
		{"lock_held on a free lock", []porcupine.Operation{
			lop(0, 0, 10, acq(1000), granted(5)),
			lop(0, 20, 30, release(5), lockOK),
			lop(1, 40, 50, acq(1000), heldBy(5)),
		}, false},
		{"lock_held naming a token that does not hold", []porcupine.Operation{
			lop(0, 0, 10, acq(1000), granted(5)),
			lop(1, 20, 30, acq(1000), heldBy(4)),
		}, false},
		{"a release that succeeds twice", []porcupine.Operation{
			lop(0, 0, 10, acq(1000), granted(5)),
			lop(0, 20, 30, release(5), lockOK),
			lop(0, 40, 50, release(5), lockOK),
		}, false},
		{"status free while the lease runs", []porcupine.Operation{
			lop(0, 0, 10, acq(1000), granted(5)),
			lop(1, 20, 30, statusOp, lockFree),
		}, false},
		{"an answer that saw the next holder returned before the expiry could happen", []porcupine.Operation{
			lop(0, 0, 10, acq(100), granted(5)),
			lop(1, 5, 200, acq(100), granted(6)),    // may linearize after A's lease (t>=100) ...
			lop(2, 20, 50, statusOp, statusHeld(6)), // ... but this saw it at t<=50
		}, false},
		{"a try-lock cannot be an unseen grant", []porcupine.Operation{
			lop(0, 0, 10, acq(1000), granted(5)),
			lop(0, 20, 30, release(5), lockOK),
			lop(1, 40, 50, acq(1000), lockHeldAnon),
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ops := closeLockReturns(tt.ops)
			got := porcupine.CheckOperations(LockModel(0), ops)
			if got != tt.want {
				t.Errorf("linearizable = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestLockModelSlack: slack loosens the lease bound by that much, no more.
func TestLockModelSlack(t *testing.T) {
	ops := closeLockReturns([]porcupine.Operation{
		lop(0, 0, 10, acq(100), granted(5)),
		lop(1, 85, 95, acq(100), granted(6)), // 5 before the lease could end
	})
	if porcupine.CheckOperations(LockModel(0), ops) {
		t.Errorf("a grant 5 before the lease end passed with no slack")
	}
	if !porcupine.CheckOperations(LockModel(10), ops) {
		t.Errorf("a grant 5 before the lease end failed with slack 10")
	}
}

func TestLockRecorderAndCheck(t *testing.T) {
	rec := NewLockRecorder()
	rec.Call(LockInput{Op: LockOpAcquire, Name: "x", Client: 0, TTL: time.Hour})(LockOutput{OK: true, Token: 3})
	rec.Call(LockInput{Op: LockOpStatus, Name: "x", Client: 2})(LockOutput{Unknown: true}) // dropped
	rec.Call(LockInput{Op: LockOpAcquire, Name: "x", Client: 1, TTL: time.Hour})(LockOutput{Held: true, HeldBy: 3})
	rel := rec.Call(LockInput{Op: LockOpRelease, Name: "x", Client: 0, Token: 3}) // never answered
	_ = rel
	ops := rec.Operations()
	if len(ops) != 3 {
		t.Fatalf("recorded %d operations, want 3 (the unknown status is dropped): %v", len(ops), ops)
	}
	last := ops[2]
	if out := last.Output.(LockOutput); !out.Unknown || out.Return != last.Return || last.Return <= ops[1].Return {
		t.Errorf("the pending release is %+v, want unknown with its return past the end", last)
	}
	ct := &checkCaptureTB{TB: t}
	if res := rec.Check(ct, 0, 10*time.Second); res != porcupine.Ok || len(ct.errors) != 0 {
		t.Errorf("Check = %v, errors %q; want Ok", res, ct.errors)
	}

	// Negative control through the recorder: a second grant while the hour-long lease runs.
	rec.Call(LockInput{Op: LockOpAcquire, Name: "x", Client: 1, TTL: time.Hour})(LockOutput{OK: true, Token: 9})
	rec.Call(LockInput{Op: LockOpRenew, Name: "x", Client: 0, Token: 3})(LockOutput{OK: true})
	dir := t.TempDir()
	t.Setenv(ArtifactsEnv, dir)
	ct = &checkCaptureTB{TB: t}
	if res := rec.Check(ct, 0, 10*time.Second); res != porcupine.Illegal {
		t.Fatalf("Check = %v, want Illegal", res)
	}
	if len(ct.errors) != 1 || !strings.Contains(ct.errors[0], dir) {
		t.Errorf("errors %q: want one naming the visualization in %s", ct.errors, dir)
	}
}
