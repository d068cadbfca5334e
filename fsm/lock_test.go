package fsm

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"

	"github.com/cairndb/cairn/lock"
)

const lockNow = int64(1795966788167000000) // a proposer wall clock, unix ns

func lockCommand(t testing.TB, c lock.Command, now int64) *Command {
	t.Helper()
	b, err := lock.EncodeCommand(c)
	if err != nil {
		t.Fatalf("lock.EncodeCommand(%+v): %v", c, err)
	}
	return &Command{Op: OpLock, Key: []byte(c.LockName()), Value: b, Time: now}
}

// applyLock applies c at index and returns its lock result, failing on an
// fsm-level error.
func applyLock(t testing.TB, f *FSM, index uint64, c lock.Command, now int64) *LockResult {
	t.Helper()
	r := mustApply(t, f, index, lockCommand(t, c, now))
	if r.Err != nil || r.Lock == nil {
		t.Fatalf("lock entry %d (%T): err %v, lock result %v", index, c, r.Err, r.Lock)
	}
	return r.Lock
}

func mustLockRecord(t testing.TB, f *FSM, name string) *lock.Record {
	t.Helper()
	rec, _, err := f.LockRecord([]byte(name))
	if err != nil {
		t.Fatalf("LockRecord(%q): %v", name, err)
	}
	return rec
}

func acquire(name, id string, wait time.Duration) lock.Acquire {
	return lock.Acquire{Name: name, Owner: "o-" + id, TTL: 10 * time.Second, Wait: wait, Limit: 1,
		LockDelay: 2 * time.Second, WaiterID: id}
}

// Every lock command kind goes through the fsm: the record stored in `locks`
// is the one lock.Apply returned (the same as Result.Lock.Record), tokens
// come from base+index (I9), the OnLock events follow in log order, and a
// refusal leaves the record untouched.
func TestLockApplyEveryKind(t *testing.T) {
	var events []LockEvent
	f := newFSM(t, func(c *Config) { c.OnLock = func(e LockEvent) { events = append(events, e) } })
	idx := uint64(0)
	next := func() uint64 { idx++; return idx }
	check := func(lr *LockResult, want lock.Status) {
		t.Helper()
		if lr.Result.Err != nil || lr.Result.Status != want {
			t.Fatalf("status %v err %v, want %v", lr.Result.Status, lr.Result.Err, want)
		}
		if got := mustLockRecord(t, f, "job"); !reflect.DeepEqual(got, lr.Record) {
			t.Fatalf("stored record %+v, result record %+v", got, lr.Record)
		}
	}

	a := applyLock(t, f, next(), acquire("job", "a", 0), lockNow)
	check(a, lock.StatusGranted)
	if a.Result.Token != 1 || a.Seq != 1 {
		t.Fatalf("first grant token %d seq %d, want 1 (base 0 + index 1)", a.Result.Token, a.Seq)
	}
	if r := applyLock(t, f, next(), acquire("job", "b", 0), lockNow); !errors.Is(r.Result.Err, lock.ErrLockHeld) {
		t.Fatalf("try-lock on a held lock: %+v", r.Result)
	}
	b := applyLock(t, f, next(), acquire("job", "b", time.Minute), lockNow)
	check(b, lock.StatusQueued)
	c := applyLock(t, f, next(), acquire("job", "c", time.Minute), lockNow)
	check(c, lock.StatusQueued)
	check(applyLock(t, f, next(), lock.Renew{Name: "job", Token: a.Result.Token}, lockNow), lock.StatusRenewed)
	if r := applyLock(t, f, next(), lock.Renew{Name: "job", Token: 99}, lockNow); !errors.Is(r.Result.Err, lock.ErrLockLost) {
		t.Fatalf("renew with a foreign token: %+v", r.Result)
	}
	// Release hands the lock to b in the same entry.
	ri := next()
	rel := applyLock(t, f, ri, lock.Release{Name: "job", Token: a.Result.Token}, lockNow)
	check(rel, lock.StatusReleased)
	if len(rel.Result.Granted) != 1 || rel.Result.Granted[0].WaiterID != "b" || rel.Result.Granted[0].Token != ri {
		t.Fatalf("release granted %+v, want b with token %d", rel.Result.Granted, ri)
	}
	bTok := rel.Result.Granted[0]
	// A stale Expire (renew seq does not match) does nothing.
	check(applyLock(t, f, next(), lock.Expire{Name: "job", Token: bTok.Token, RenewSeq: bTok.RenewSeq + 100}, lockNow), lock.StatusNone)
	// The real one expires b, starts b's lock delay: c waits through it.
	ex := applyLock(t, f, next(), lock.Expire{Name: "job", Token: bTok.Token, RenewSeq: bTok.RenewSeq}, lockNow)
	check(ex, lock.StatusExpired)
	if ex.Record.DelaySeq == 0 || len(ex.Record.Waiters) != 1 || len(ex.Record.Holders) != 0 {
		t.Fatalf("after expiry: %+v", ex.Record)
	}
	d := applyLock(t, f, next(), acquire("job", "d", time.Second), lockNow)
	check(d, lock.StatusQueued)
	// ExpireWaiters at a later proposer time drops d (its wait ended), not c.
	ew := applyLock(t, f, next(), lock.ExpireWaiters{Name: "job"}, lockNow+int64(2*time.Second))
	check(ew, lock.StatusCancelled)
	if !reflect.DeepEqual(ew.Result.Removed, []string{"d"}) {
		t.Fatalf("expire waiters removed %v, want [d]", ew.Result.Removed)
	}
	ei := next()
	end := applyLock(t, f, ei, lock.EndDelay{Name: "job", DelaySeq: ex.Record.DelaySeq}, lockNow)
	check(end, lock.StatusDelayEnd)
	if len(end.Result.Granted) != 1 || end.Result.Granted[0].WaiterID != "c" || end.Result.Granted[0].Token != ei {
		t.Fatalf("end of delay granted %+v", end.Result.Granted)
	}
	// c's request went away: CancelWait undoes the grant nobody received,
	// and the free lock's record is dropped.
	cw := applyLock(t, f, next(), lock.CancelWait{Name: "job", WaiterID: "c"}, lockNow)
	if cw.Result.Status != lock.StatusReleased || cw.Record != nil || mustLockRecord(t, f, "job") != nil {
		t.Fatalf("cancel of a granted waiter: %+v record %+v", cw.Result, cw.Record)
	}
	if n := countBucket(t, f, bucketLocks); n != 0 {
		t.Fatalf("locks bucket holds %d records for a free lock", n)
	}
	if len(events) != int(idx) {
		t.Fatalf("%d OnLock events for %d entries", len(events), idx)
	}
	for i, e := range events {
		if e.Index != uint64(i+1) || e.Seq != e.Index || e.Name != "job" {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	if events[len(events)-1].Next != nil || !events[len(events)-1].Prev.Held() {
		t.Fatalf("last event should drop a held record: %+v", events[len(events)-1])
	}

	// Routing and malformed entries: deterministic fsm-level errors, no record.
	if r := mustApply(t, f, next(), lockCommand(t, acquire("a-outside", "x", 0), lockNow)); !errors.As(r.Err, new(*WrongShardError)) || r.Lock != nil {
		t.Fatalf("lock outside the range (I5): %+v", r)
	}
	bad := lockCommand(t, acquire("job", "x", 0), lockNow)
	bad.Key = []byte("other")
	if r := mustApply(t, f, next(), bad); !errors.Is(r.Err, ErrInvalidCommand) {
		t.Fatalf("lock command under another name: %+v", r)
	}
	garbage := &Command{Op: OpLock, Key: []byte("job"), Value: []byte{9, 9}}
	if r := mustApply(t, f, next(), garbage); !errors.Is(r.Err, ErrInvalidCommand) {
		t.Fatalf("undecodable lock command: %+v", r)
	}
	if rec := mustLockRecord(t, f, "other"); rec != nil {
		t.Fatalf("refused entries left a record: %+v", rec)
	}
	if _, _, err := f.LockRecord([]byte("zz")); !errors.As(err, new(*WrongShardError)) {
		t.Fatalf("LockRecord outside the range: %v", err)
	}
}

// A lock command with a request id is not deduplicated by the fsm window:
// lock.Apply makes the retried acquire idempotent by its waiter id.
func TestLockSkipsDedup(t *testing.T) {
	f := newFSM(t)
	cmd := lockCommand(t, acquire("job", "a", 0), lockNow)
	cmd.RequestID = "req-a"
	first := mustApply(t, f, 1, cmd)
	again := mustApply(t, f, 2, cmd)
	if first.Lock == nil || again.Lock == nil || again.Lock.Result.Token != first.Lock.Result.Token {
		t.Fatalf("retried acquire: first %+v again %+v", first.Lock, again.Lock)
	}
	if _, ok := lookupDedupT(t, f, "req-a"); ok {
		t.Fatal("a lock command was stored in the dedup window")
	}
}

// Lock records, and the token base, are part of the replicated state: a
// snapshot carries them and the restored replica hashes the same.
func TestLockRecordsSurviveSnapshot(t *testing.T) {
	f := newFSM(t)
	applyLock(t, f, 1, acquire("job", "a", 0), lockNow)
	applyLock(t, f, 2, acquire("job", "b", time.Minute), lockNow)
	applyLock(t, f, 3, acquire("kit", "k", 0), lockNow)
	snap := mustPersist(t, f)
	restored := false
	g := newFSM(t, func(c *Config) { c.AfterRestore = func() { restored = true } })
	mustRestore(t, g, snap)
	if !restored {
		t.Fatal("AfterRestore was not called")
	}
	_, want := mustHash(t, f)
	if _, got := mustHash(t, g); !bytes.Equal(got, want) {
		t.Fatal("restored state hashes differently")
	}
	for _, n := range []string{"job", "kit"} {
		if a, b := mustLockRecord(t, f, n), mustLockRecord(t, g, n); b == nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("%s: restored record %+v, want %+v", n, b, a)
		}
	}
	recs, more, err := g.ScanLocks([]byte("j"), []byte("k\xff"), 1)
	if err != nil || !more || len(recs) != 1 || recs[0].Name != "job" {
		t.Fatalf("ScanLocks page 1: %v more=%v err=%v", recs, more, err)
	}
	recs, more, err = g.ScanLocks([]byte("job\x00"), nil, 10)
	if err != nil || more || len(recs) != 1 || recs[0].Name != "kit" {
		t.Fatalf("ScanLocks page 2: %v more=%v err=%v", recs, more, err)
	}
	// Clipped to the range: a scan from before the start sees the same.
	if recs, _, err := g.ScanLocks(nil, nil, 0); err != nil || len(recs) != 2 {
		t.Fatalf("ScanLocks all: %v %v", recs, err)
	}
	// The granted holder continues after the restore: b is served on release.
	rel := applyLock(t, g, 4, lock.Release{Name: "job", Token: 1}, lockNow)
	if len(rel.Result.Granted) != 1 || rel.Result.Granted[0].WaiterID != "b" {
		t.Fatalf("release after restore granted %+v", rel.Result.Granted)
	}
}

// Invariant I9 across a split: the child gets the records of its range and
// the token base parent base + split index, so the same name continues in
// the child with tokens above every one the parent gave, also when the
// record had been dropped (a free lock keeps no LastToken). The negative
// control shows that without the base the child's token would go back.
func TestLockTokensIncreaseAcrossSplit(t *testing.T) {
	fx := newSplitFixture(t) // entries 1..7; keys on both sides of "m"
	p := fx.parent
	applyLock(t, p, 8, acquire("c-lock", "p1", 0), lockNow)        // stays in the parent
	held := applyLock(t, p, 9, acquire("p-held", "h", 0), lockNow) // moves, held
	applyLock(t, p, 10, acquire("q-free", "f", 0), lockNow)        // moves, then freed
	for i := uint64(11); i < 40; i++ {                             // the parent's indices run ahead
		mustApply(t, p, i, put("k", "v"))
	}
	free := applyLock(t, p, 40, lock.Release{Name: "q-free", Token: 10}, lockNow)
	if free.Record != nil {
		t.Fatalf("released lock kept a record: %+v", free.Record)
	}
	const splitIndex = 41
	if r := mustApply(t, p, splitIndex, &Command{Op: OpSplit, Key: []byte("m"), Epoch: testRange.Epoch,
		ChildID: 42, Servers: testServers}); r.Err != nil {
		t.Fatalf("split: %v", r.Err)
	}
	c := mustOpen(t, filepath.Join(t.TempDir(), "child.db"), func(cfg *Config) { cfg.Initial = fx.children[0] })
	if err := c.Restore(io.NopCloser(bytes.NewReader(fx.exported.Bytes()))); err != nil {
		t.Fatalf("restore child: %v", err)
	}
	if c.TokenBase() != p.TokenBase()+splitIndex {
		t.Fatalf("child base %d, want parent base %d + split index %d", c.TokenBase(), p.TokenBase(), splitIndex)
	}
	if rec := mustLockRecord(t, c, "p-held"); rec == nil || rec.Holders[0].Token != held.Result.Token {
		t.Fatalf("child lacks the held lock's record: %+v", rec)
	}
	if _, _, err := p.LockRecord([]byte("p-held")); !errors.As(err, new(*WrongShardError)) {
		t.Fatalf("parent still serves a moved lock: %v", err)
	}
	if n := countBucket(t, p, bucketLocks); n != 1 {
		t.Fatalf("parent keeps %d lock records, want 1 (c-lock)", n)
	}
	if rec := mustLockRecord(t, p, "c-lock"); rec == nil {
		t.Fatal("parent lost its own lock")
	}
	// The child's indices restart at 2.
	rel := applyLock(t, c, 2, lock.Release{Name: "p-held", Token: held.Result.Token}, lockNow)
	if rel.Result.Err != nil {
		t.Fatalf("release in the child: %v", rel.Result.Err)
	}
	again := applyLock(t, c, 3, acquire("p-held", "h2", 0), lockNow)
	if again.Result.Token <= held.Result.Token || again.Result.Token != splitIndex+3 {
		t.Fatalf("token in the child %d, want base+index %d > parent's %d", again.Result.Token, splitIndex+3, held.Result.Token)
	}
	reborn := applyLock(t, c, 4, acquire("q-free", "f2", 0), lockNow)
	if reborn.Result.Token <= 10 || reborn.Result.Token != splitIndex+4 {
		t.Fatalf("token of a re-created lock in the child %d, want > 10 (I9)", reborn.Result.Token)
	}
	// Negative control: the same grant computed without the child's base
	// goes back below the parent's token, which the checks above would catch.
	_, noBase := lock.Apply(nil, acquire("q-free", "f2", 0), 4, 0, lockNow)
	if noBase.Token > 10 {
		t.Fatalf("control: without the base the token is %d; the check above could not fail", noBase.Token)
	}
}

// I11 with a fenced read: OpFencedGet returns the key and registers its
// token on it, so a write with a lower token, even the first write with that
// token, is refused afterwards; fenced deletes are checked the same way.
// Without the fenced read (the negative control) the older holder's write
// lands on top of what the newer one read.
func TestFencedGet(t *testing.T) {
	f := newFSM(t)
	fence := func(tok uint64) *Fence { return &Fence{Lock: "L", Token: tok} }
	mustApply(t, f, 1, &Command{Op: OpPut, Key: []byte("counter"), Value: []byte("1"), Fence: fence(5)})
	// Control: on a second key, no fenced read: token 6 writes, then the
	// older token 5's late write still lands (its first on this key).
	mustApply(t, f, 2, &Command{Op: OpPut, Key: []byte("other"), Value: []byte("1"), Fence: fence(6)})
	if r := mustApply(t, f, 3, &Command{Op: OpPut, Key: []byte("other"), Value: []byte("1"), Fence: fence(6)}); r.Err != nil {
		t.Fatal(r.Err)
	}
	if r := mustApply(t, f, 4, &Command{Op: OpPut, Key: []byte("fresh"), Value: []byte("late"), Fence: fence(5)}); r.Err != nil {
		t.Fatalf("control: an unfenced key refused a first write: %v", r.Err)
	}

	r := mustApply(t, f, 5, &Command{Op: OpFencedGet, Key: []byte("counter"), Fence: fence(7)})
	if r.Err != nil || r.KV == nil || string(r.KV.Value) != "1" || r.KV.ModIndex != 1 {
		t.Fatalf("fenced get: %+v", r)
	}
	var se *StaleTokenError
	if r := mustApply(t, f, 6, &Command{Op: OpPut, Key: []byte("counter"), Value: []byte("2"), Fence: fence(6)}); !errors.As(r.Err, &se) || se.Accepted != 7 {
		t.Fatalf("write with a token below the fenced read's: %v", r.Err)
	}
	if r := mustApply(t, f, 7, &Command{Op: OpDelete, Key: []byte("counter"), Fence: fence(6)}); !errors.As(r.Err, &se) {
		t.Fatalf("fenced delete below the fenced read's token: %v", r.Err)
	}
	if r := mustApply(t, f, 8, &Command{Op: OpFencedGet, Key: []byte("counter"), Fence: fence(3)}); !errors.As(r.Err, &se) || r.KV != nil {
		t.Fatalf("fenced get with a stale token: %+v", r)
	}
	if kv := mustGet(t, f, "counter"); string(kv.Value) != "1" {
		t.Fatalf("refused writes changed the key: %q", kv.Value)
	}
	if r := mustApply(t, f, 9, &Command{Op: OpPut, Key: []byte("counter"), Value: []byte("2"), Fence: fence(7)}); r.Err != nil {
		t.Fatalf("write with the fenced read's token: %v", r.Err)
	}
	if r := mustApply(t, f, 10, &Command{Op: OpDelete, Key: []byte("counter"), Fence: fence(7)}); r.Err != nil || r.Deleted != 1 {
		t.Fatalf("fenced delete with the current token: %+v", r)
	}
	// A fenced get of an absent key registers the fence too.
	if r := mustApply(t, f, 11, &Command{Op: OpFencedGet, Key: []byte("missing"), Fence: fence(9)}); r.Err != nil || r.KV != nil {
		t.Fatalf("fenced get of an absent key: %+v", r)
	}
	if r := mustApply(t, f, 12, &Command{Op: OpPut, Key: []byte("missing"), Value: []byte("x"), Fence: fence(8)}); !errors.As(r.Err, &se) {
		t.Fatalf("first write below a fenced read's token: %v", r.Err)
	}
	if r := mustApply(t, f, 13, &Command{Op: OpFencedGet, Key: []byte("zz"), Fence: fence(9)}); !errors.As(r.Err, new(*WrongShardError)) {
		t.Fatalf("fenced get outside the range: %+v", r)
	}
	if _, err := EncodeCommand(&Command{Op: OpFencedGet, Key: []byte("k")}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("fenced get without a fence encoded: %v", err)
	}
}

// A store written before locks existed (no `locks` bucket, no token base)
// opens: the bucket is created empty, the base is 0, and locks work.
func TestLockOldStoreOpens(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f := mustOpen(t, path)
	mustApply(t, f, 1, put("k", "v"))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error { return tx.DeleteBucket(bucketLocks) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	g := mustOpen(t, path)
	if g.TokenBase() != 0 || g.Applied() != 1 {
		t.Fatalf("old store: base %d applied %d", g.TokenBase(), g.Applied())
	}
	if lr := applyLock(t, g, 2, acquire("job", "a", 0), lockNow); lr.Result.Token != 2 {
		t.Fatalf("token in an old store %d, want 2", lr.Result.Token)
	}
}

func raiseBase(floor uint64) *Command {
	return &Command{Op: OpRaiseBase, Value: u64(floor)}
}

// Invariant I9 for a restore into a new cluster: its groups' indices start
// again at 1, so without a raised base its first tokens would fall below
// the ones the old cluster handed out. OpRaiseBase lifts every later seq
// (and token) above the floor, for records that exist and for new ones,
// survives a reopen and a snapshot, never lowers the base, and takes
// effect for the entries after it in the same batch.
func TestRaiseBaseLiftsTokensAboveFloor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f := mustOpen(t, path)
	old := applyLock(t, f, 1, acquire("held", "a", 0), lockNow)
	if old.Result.Token != 1 {
		t.Fatalf("first token %d, want 1 (base 0 + index 1)", old.Result.Token)
	}
	const floor = 1_000_000 // the old cluster's highest seq, say
	if r := mustApply(t, f, 2, raiseBase(floor)); r.Err != nil {
		t.Fatalf("raise base: %v", r.Err)
	}
	if f.TokenBase() != floor {
		t.Fatalf("base %d after raising to %d", f.TokenBase(), floor)
	}
	if r := mustApply(t, f, 3, raiseBase(10)); r.Err != nil || f.TokenBase() != floor {
		t.Fatalf("a lower floor moved the base to %d (err %v): bases only grow", f.TokenBase(), r.Err)
	}
	fresh := applyLock(t, f, 4, acquire("fresh", "b", 0), lockNow)
	if fresh.Result.Token <= floor {
		t.Fatalf("token %d on a new lock after raising the base to %d", fresh.Result.Token, floor)
	}
	applyLock(t, f, 5, lock.Release{Name: "held", Token: old.Result.Token}, lockNow)
	again := applyLock(t, f, 6, acquire("held", "c", 0), lockNow)
	if again.Result.Token <= floor {
		t.Fatalf("token %d on a re-acquired lock after raising the base to %d", again.Result.Token, floor)
	}
	snap := mustPersist(t, f)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = mustOpen(t, path)
	if f.TokenBase() != floor {
		t.Fatalf("base %d after reopening, want %d", f.TokenBase(), floor)
	}
	g := newFSM(t)
	mustRestore(t, g, snap)
	if g.TokenBase() != floor {
		t.Fatalf("base %d after a snapshot install, want %d", g.TokenBase(), floor)
	}

	// In one batch: the raise and a grant after it.
	h := newFSM(t)
	cmds := []*Command{raiseBase(500), lockCommand(t, acquire("x", "x", 0), lockNow)}
	var logs []*raft.Log
	for i, c := range cmds {
		b, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		logs = append(logs, &raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: b})
	}
	res := h.ApplyBatch(logs)
	if r := res[1].(*Result); r.Lock == nil || r.Lock.Result.Token != 502 {
		t.Fatalf("grant after a raise in the same batch: %+v, want token 502 (base 500 + index 2)", r.Lock)
	}
	if _, err := EncodeCommand(&Command{Op: OpRaiseBase, Value: []byte{1}}); !errors.Is(err, ErrInvalidCommand) {
		t.Fatalf("a malformed floor encoded: %v", err)
	}
}
