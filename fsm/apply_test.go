package fsm

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestPutGetDeleteMetadata(t *testing.T) {
	f := newFSM(t)
	r := mustApply(t, f, 1, put("k", "v1"))
	want := &KV{Key: []byte("k"), CreateIndex: 1, ModIndex: 1, Version: 1}
	if r.Err != nil || r.Index != 1 || !reflect.DeepEqual(r.KV, want) || r.Prev != nil {
		t.Fatalf("create: %+v (kv %+v)", r, r.KV)
	}
	r = mustApply(t, f, 2, &Command{Op: OpPut, Key: []byte("k"), Value: []byte("v2"), Prev: true})
	if r.KV.CreateIndex != 1 || r.KV.ModIndex != 2 || r.KV.Version != 2 {
		t.Fatalf("update kv: %+v", r.KV)
	}
	if r.Prev == nil || string(r.Prev.Value) != "v1" || r.Prev.ModIndex != 1 {
		t.Fatalf("update prev: %+v", r.Prev)
	}
	if kv := mustGet(t, f, "k"); string(kv.Value) != "v2" || kv.Version != 2 || kv.CreateIndex != 1 {
		t.Fatalf("get after update: %+v", kv)
	}
	r = mustApply(t, f, 3, &Command{Op: OpDelete, Key: []byte("k"), Prev: true})
	if r.Deleted != 1 || r.Prev == nil || string(r.Prev.Value) != "v2" {
		t.Fatalf("delete: %+v", r)
	}
	if kv := mustGet(t, f, "k"); kv != nil {
		t.Fatalf("get after delete: %+v", kv)
	}
	if r = mustApply(t, f, 4, &Command{Op: OpDelete, Key: []byte("k")}); r.Deleted != 0 || r.Err != nil {
		t.Fatalf("delete absent: %+v", r)
	}
	// Re-create after delete starts a new life: version 1, new create index.
	r = mustApply(t, f, 5, put("k", "v3"))
	if r.KV.CreateIndex != 5 || r.KV.Version != 1 {
		t.Fatalf("re-create: %+v", r.KV)
	}
	if f.Applied() != 5 {
		t.Fatalf("Applied() = %d, want 5", f.Applied())
	}
}

func TestConditions(t *testing.T) {
	// State before each case: "k"="v" at mod_index 1; "missing" does not exist.
	cases := []struct {
		name string
		key  string
		cond Condition
		ok   bool
	}{
		{"mod index match", "k", Condition{Kind: CondModIndex, ModIndex: 1}, true},
		{"mod index mismatch", "k", Condition{Kind: CondModIndex, ModIndex: 2}, false},
		{"mod index 0 on existing", "k", Condition{Kind: CondModIndex}, false},
		{"mod index 0 on absent", "missing", Condition{Kind: CondModIndex}, true},
		{"mod index on absent", "missing", Condition{Kind: CondModIndex, ModIndex: 1}, false},
		{"absent on absent", "missing", Condition{Kind: CondAbsent}, true},
		{"absent on existing", "k", Condition{Kind: CondAbsent}, false},
		{"value equal", "k", Condition{Kind: CondValue, Value: []byte("v")}, true},
		{"value differs", "k", Condition{Kind: CondValue, Value: []byte("w")}, false},
		{"value on absent", "missing", Condition{Kind: CondValue}, false},
		{"none", "k", Condition{}, true},
	}
	for _, op := range []Op{OpPut, OpDelete} {
		for _, tc := range cases {
			t.Run(op.String()+"/"+tc.name, func(t *testing.T) {
				f := newFSM(t)
				mustApply(t, f, 1, put("k", "v"))
				before := mustGet(t, f, tc.key)
				cond := tc.cond
				r := mustApply(t, f, 2, &Command{Op: op, Key: []byte(tc.key), Value: []byte("new"), Cond: &cond})
				var ce *ConditionError
				if tc.ok {
					if r.Err != nil {
						t.Fatalf("unexpected error %v", r.Err)
					}
					return
				}
				if !errors.As(r.Err, &ce) || string(ce.Key) != tc.key || !reflect.DeepEqual(ce.Current, before) {
					t.Fatalf("err = %#v, want ConditionError with current %+v", r.Err, before)
				}
				if after := mustGet(t, f, tc.key); !reflect.DeepEqual(after, before) {
					t.Fatalf("failed condition changed the key: %+v -> %+v", before, after)
				}
				if f.Applied() != 2 {
					t.Fatalf("Applied() = %d, want 2", f.Applied())
				}
			})
		}
	}
}

// Invariant I5: keys outside the range are rejected and change nothing, but
// the applied index still advances.
func TestWrongShard(t *testing.T) {
	for _, op := range []Op{OpPut, OpDelete, OpExpire} {
		for _, key := range []string{"a", "y", "z"} {
			t.Run(op.String()+"/"+key, func(t *testing.T) {
				f := newFSM(t)
				_, before := mustHash(t, f)
				r := mustApply(t, f, 1, &Command{Op: op, Key: []byte(key), Value: []byte("v"), RequestID: "r"})
				var ws *WrongShardError
				if !errors.As(r.Err, &ws) || string(ws.Key) != key || ws.Range.ID != testRange.ID {
					t.Fatalf("err = %v, want WrongShardError", r.Err)
				}
				// Nothing but the applied index changed: compare with a
				// replica that applied a no-op entry at the same index.
				g := newFSM(t)
				g.Apply(&raft.Log{Index: 1, Type: raft.LogNoop})
				_, got := mustHash(t, f)
				_, want := mustHash(t, g)
				if string(got) != string(want) || string(got) == string(before) {
					t.Fatal("wrong-shard command changed state beyond the applied index")
				}
			})
		}
	}
	f := newFSM(t)
	if _, err := f.Get([]byte("a")); !errors.As(err, new(*WrongShardError)) {
		t.Fatalf("Get outside range: %v, want WrongShardError", err)
	}
}

// Invariant I11: a write fenced with a token below one already accepted for
// the same lock on the same key is rejected; equal and higher tokens pass.
func TestFence(t *testing.T) {
	f := newFSM(t)
	fenced := func(op Op, key, lock string, token uint64) *Command {
		return &Command{Op: op, Key: []byte(key), Value: []byte("v"), Fence: &Fence{Lock: lock, Token: token}}
	}
	steps := []struct {
		name  string
		cmd   *Command
		stale uint64 // accepted token reported, 0 if the write must pass
	}{
		{"first token", fenced(OpPut, "k", "L", 10), 0},
		{"equal token", fenced(OpPut, "k", "L", 10), 0},
		{"lower token put", fenced(OpPut, "k", "L", 9), 10},
		{"lower token delete", fenced(OpDelete, "k", "L", 9), 10},
		{"other lock unaffected", fenced(OpPut, "k", "M", 1), 0},
		{"other key unaffected", fenced(OpPut, "k2", "L", 1), 0},
		{"higher token", fenced(OpPut, "k", "L", 20), 0},
		{"old token now stale", fenced(OpPut, "k", "L", 10), 20},
		{"unfenced write passes", put("k", "v"), 0},
		{"fenced delete higher", fenced(OpDelete, "k", "L", 21), 0},
		{"after delete still fenced", fenced(OpPut, "k", "L", 20), 21},
	}
	for i, s := range steps {
		index := uint64(i + 1)
		before := mustGet(t, f, string(s.cmd.Key))
		r := mustApply(t, f, index, s.cmd)
		var se *StaleTokenError
		if s.stale == 0 {
			if r.Err != nil {
				t.Fatalf("%s: unexpected error %v", s.name, r.Err)
			}
			continue
		}
		if !errors.As(r.Err, &se) || se.Accepted != s.stale || se.Token != s.cmd.Fence.Token || se.Lock != s.cmd.Fence.Lock {
			t.Fatalf("%s: err = %v, want StaleTokenError accepted=%d", s.name, r.Err, s.stale)
		}
		if after := mustGet(t, f, string(s.cmd.Key)); !reflect.DeepEqual(before, after) {
			t.Fatalf("%s: stale write changed the key", s.name)
		}
	}
}

// Invariant I7: a retried request id returns the stored result and does not
// apply again; the applied index still advances.
func TestDedup(t *testing.T) {
	f := newFSM(t)
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	cmd := &Command{Op: OpPut, Key: []byte("k"), Value: []byte("v"), RequestID: "req", Time: now}
	first := mustApply(t, f, 1, cmd)
	retry := mustApply(t, f, 2, cmd)
	if !reflect.DeepEqual(first, retry) || retry.Index != 1 {
		t.Fatalf("retry result %+v, want the original %+v", retry, first)
	}
	if kv := mustGet(t, f, "k"); kv.Version != 1 || kv.ModIndex != 1 {
		t.Fatalf("retry re-applied: %+v", kv)
	}
	if f.Applied() != 2 {
		t.Fatalf("Applied() = %d, want 2", f.Applied())
	}

	// A ConditionError outcome is stored too, with its Current kv, even
	// though the key changes afterwards.
	cas := &Command{Op: OpPut, Key: []byte("k"), Value: []byte("x"), RequestID: "cas", Time: now,
		Cond: &Condition{Kind: CondAbsent}}
	failed := mustApply(t, f, 3, cas)
	mustApply(t, f, 4, &Command{Op: OpDelete, Key: []byte("k")})
	if again := mustApply(t, f, 5, cas); !reflect.DeepEqual(again, failed) || mustGet(t, f, "k") != nil {
		t.Fatalf("CAS retry %+v, want stored failure %+v and no write", again, failed)
	}

	// Wrong-shard outcomes are not stored: the client retries on the right
	// shard, and after a range change the same id must be able to succeed.
	out := &Command{Op: OpPut, Key: []byte("a"), RequestID: "out", Time: now}
	mustApply(t, f, 6, out)
	if _, ok := lookupDedupT(t, f, "out"); ok {
		t.Fatal("WrongShardError was stored in the dedup table")
	}

	// Pruned once a later command's Time is past the window: the same id
	// then applies again.
	later := &Command{Op: OpPut, Key: []byte("other"), Time: now + int64(DefaultDedupWindow) + 1}
	mustApply(t, f, 7, later)
	if _, ok := lookupDedupT(t, f, "req"); ok {
		t.Fatal("dedup entry survived past the window")
	}
	if r := mustApply(t, f, 8, cmd); r.Index != 8 || r.KV.Version != 1 {
		t.Fatalf("after pruning the request should apply afresh, got %+v", r)
	}
}

// Pruning is bounded per command so one apply never does unbounded work.
func TestDedupPruneBounded(t *testing.T) {
	f := newFSM(t, func(c *Config) { c.DedupWindow = time.Second })
	n := maxPrunePerCommand + 10
	for i := 1; i <= n; i++ {
		mustApply(t, f, uint64(i), &Command{Op: OpPut, Key: []byte("k"), RequestID: string(rune('A' + i)), Time: int64(i)})
	}
	mustApply(t, f, uint64(n+1), &Command{Op: OpPut, Key: []byte("k"), Time: int64(time.Hour)})
	if got := countBucket(t, f, bucketDedup); got != 10 {
		t.Fatalf("after one prune %d dedup entries left, want 10", got)
	}
	mustApply(t, f, uint64(n+2), &Command{Op: OpPut, Key: []byte("k"), Time: int64(time.Hour)})
	if got := countBucket(t, f, bucketDedup); got != 0 {
		t.Fatalf("after two prunes %d dedup entries left, want 0", got)
	}
}

func TestExpire(t *testing.T) {
	f := newFSM(t)
	mustApply(t, f, 1, &Command{Op: OpPut, Key: []byte("t"), Value: []byte("v"), TTL: time.Minute})
	mustApply(t, f, 2, put("plain", "v"))
	steps := []struct {
		name    string
		key     string
		mod     uint64
		deleted int
	}{
		{"stale mod index", "t", 99, 0},
		{"no ttl", "plain", 2, 0},
		{"missing", "nothing", 1, 0},
		{"match", "t", 1, 1},
		{"already gone", "t", 1, 0},
	}
	for i, s := range steps {
		r := mustApply(t, f, uint64(10+i), &Command{Op: OpExpire, Key: []byte(s.key), ModIndex: s.mod})
		if r.Err != nil || r.Deleted != s.deleted {
			t.Fatalf("%s: %+v, want deleted=%d", s.name, r, s.deleted)
		}
	}
	// Rewritten since the leader scheduled expiry: left alone.
	mustApply(t, f, 20, &Command{Op: OpPut, Key: []byte("t2"), TTL: time.Minute})
	mustApply(t, f, 21, &Command{Op: OpPut, Key: []byte("t2"), TTL: time.Minute})
	if r := mustApply(t, f, 22, &Command{Op: OpExpire, Key: []byte("t2"), ModIndex: 20}); r.Deleted != 0 {
		t.Fatal("expired a key rewritten after the expiry was scheduled")
	}
	if mustGet(t, f, "t2") == nil || mustGet(t, f, "plain") == nil || mustGet(t, f, "t") != nil {
		t.Fatal("unexpected keys after expiry")
	}
}

func TestTTLBucketAndOnTTL(t *testing.T) {
	var calls []TTLEntry
	f := newFSM(t, func(c *Config) { c.OnTTL = func(e TTLEntry) { calls = append(calls, e) } })
	mustApply(t, f, 1, &Command{Op: OpPut, Key: []byte("k1"), TTL: time.Minute})
	f.ApplyBatch([]*raft.Log{
		cmdLog(t, 2, &Command{Op: OpPut, Key: []byte("b"), TTL: time.Second}),
		cmdLog(t, 3, &Command{Op: OpPut, Key: []byte("c"), TTL: time.Hour}),
		cmdLog(t, 4, &Command{Op: OpPut, Key: []byte("c"), TTL: 2 * time.Hour}),
		cmdLog(t, 5, &Command{Op: OpPut, Key: []byte("d"), TTL: time.Hour, Cond: &Condition{Kind: CondModIndex, ModIndex: 7}}),
		cmdLog(t, 6, put("e", "no ttl")),
	})
	wantCalls := []TTLEntry{
		{Key: []byte("k1"), ModIndex: 1, TTL: time.Minute},
		{Key: []byte("b"), ModIndex: 2, TTL: time.Second},
		{Key: []byte("c"), ModIndex: 3, TTL: time.Hour},
		{Key: []byte("c"), ModIndex: 4, TTL: 2 * time.Hour},
	}
	if !reflect.DeepEqual(calls, wantCalls) {
		t.Fatalf("OnTTL calls:\n got %+v\nwant %+v", calls, wantCalls)
	}
	mustApply(t, f, 7, put("b", "ttl removed"))                  // a put without TTL clears it
	mustApply(t, f, 8, &Command{Op: OpDelete, Key: []byte("c")}) // a delete clears it
	mustApply(t, f, 9, &Command{Op: OpPut, Key: []byte("f"), TTL: time.Minute})
	got, err := f.TTLKeys()
	if err != nil {
		t.Fatal(err)
	}
	want := []TTLEntry{{Key: []byte("f"), ModIndex: 9, TTL: time.Minute}, {Key: []byte("k1"), ModIndex: 1, TTL: time.Minute}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("TTLKeys:\n got %+v\nwant %+v", got, want)
	}
	if kv := mustGet(t, f, "f"); kv.TTL != time.Minute {
		t.Fatalf("stored TTL %v", kv.TTL)
	}
}

func TestNonCommandEntries(t *testing.T) {
	f := newFSM(t)
	cases := []struct {
		name string
		log  *raft.Log
	}{
		{"configuration", &raft.Log{Index: 1, Type: raft.LogConfiguration, Data: []byte{1, 2, 3}}},
		{"noop", &raft.Log{Index: 2, Type: raft.LogNoop}},
		{"barrier", &raft.Log{Index: 3, Type: raft.LogBarrier}},
		{"future type", &raft.Log{Index: 4, Type: raft.LogType(200)}},
	}
	for _, tc := range cases {
		if r := f.Apply(tc.log); r != nil {
			t.Fatalf("%s: result %#v, want nil", tc.name, r)
		}
		if f.Applied() != tc.log.Index {
			t.Fatalf("%s: Applied() = %d, want %d", tc.name, f.Applied(), tc.log.Index)
		}
	}
}

// OpNoop (a new leader's first entry) changes nothing but the applied index.
func TestNoop(t *testing.T) {
	f, g := newFSM(t), newFSM(t)
	r := mustApply(t, f, 1, &Command{Op: OpNoop})
	if r.Err != nil || r.Index != 1 || r.KV != nil || f.Applied() != 1 {
		t.Fatalf("noop result %+v, applied %d", r, f.Applied())
	}
	g.Apply(&raft.Log{Index: 1, Type: raft.LogNoop})
	_, h1 := mustHash(t, f)
	_, h2 := mustHash(t, g)
	if string(h1) != string(h2) {
		t.Fatal("OpNoop changed state beyond the applied index")
	}
}

func TestInvalidEntry(t *testing.T) {
	f := newFSM(t)
	for i, data := range [][]byte{nil, {0xff}, {commandFormat, 0xff}} {
		index := uint64(i + 1)
		r, _ := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}).(*Result)
		if r == nil || !errors.Is(r.Err, ErrInvalidCommand) || r.Index != index {
			t.Fatalf("entry %x: %+v, want ErrInvalidCommand", data, r)
		}
		if f.Applied() != index {
			t.Fatalf("Applied() = %d, want %d", f.Applied(), index)
		}
	}
}

// workload returns n entries touching every op, condition, fence, dedup and
// TTL path, plus configuration entries.
func workload(t testing.TB, n int) []*raft.Log {
	logs := make([]*raft.Log, 0, n)
	for i := 1; i <= n; i++ {
		key := []byte{'k', byte('a' + i%7)}
		var c *Command
		switch i % 9 {
		case 0:
			logs = append(logs, &raft.Log{Index: uint64(i), Type: raft.LogConfiguration})
			continue
		case 1:
			c = &Command{Op: OpPut, Key: key, Value: []byte{byte(i)}, RequestID: string(rune('a' + i%5)), Time: int64(i) * int64(time.Minute)}
		case 2:
			c = &Command{Op: OpPut, Key: key, Value: []byte{byte(i)}, TTL: time.Second, Prev: true}
		case 3:
			c = &Command{Op: OpDelete, Key: key, Cond: &Condition{Kind: CondModIndex, ModIndex: uint64(i - 1)}}
		case 4:
			c = &Command{Op: OpPut, Key: key, Fence: &Fence{Lock: "L", Token: uint64(i % 20)}}
		case 5:
			c = &Command{Op: OpExpire, Key: key, ModIndex: uint64(i - 3)}
		case 6:
			c = &Command{Op: OpPut, Key: []byte("zz"), Value: []byte("out of range")}
		case 7:
			if i%2 == 0 {
				c = &Command{Op: OpNoop}
				break
			}
			logs = append(logs, &raft.Log{Index: uint64(i), Type: raft.LogCommand, Data: []byte{9, 9}})
			continue
		default:
			c = &Command{Op: OpPut, Key: key, Cond: &Condition{Kind: CondValue, Value: []byte{byte(i - 1)}}}
		}
		logs = append(logs, cmdLog(t, uint64(i), c))
	}
	return logs
}

// Apply is ApplyBatch of one: any split of the log into batches gives the
// same state and the same results.
func TestApplyBatchMatchesApply(t *testing.T) {
	logs := workload(t, 300)
	one, batched := newFSM(t), newFSM(t)
	var want []interface{}
	for _, l := range logs {
		want = append(want, one.Apply(l))
	}
	var got []interface{}
	for i := 0; i < len(logs); i += 37 {
		got = append(got, batched.ApplyBatch(logs[i:min(i+37, len(logs))])...)
	}
	if len(got) != len(want) {
		t.Fatalf("%d results, want %d", len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("result %d: batched %+v, single %+v", i, got[i], want[i])
		}
	}
	a1, h1 := mustHash(t, one)
	a2, h2 := mustHash(t, batched)
	if a1 != a2 || string(h1) != string(h2) {
		t.Fatal("ApplyBatch and Apply produced different state")
	}
}

// Invariant I4: entries at or below the applied index are skipped after a
// restart, so replaying the log does not apply anything twice.
func TestReplayAfterRestart(t *testing.T) {
	const n, m = 120, 60
	logs := workload(t, n+m)
	path := t.TempDir() + "/fsm.db"
	f, err := Open(Config{Path: path, Initial: testRange})
	if err != nil {
		t.Fatal(err)
	}
	f.ApplyBatch(logs[:n])
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = mustOpen(t, path)
	if f.Applied() != n {
		t.Fatalf("Applied() after reopen = %d, want %d", f.Applied(), n)
	}
	for i, l := range logs[:n] {
		if r := f.Apply(l); r != nil {
			t.Fatalf("replayed entry %d returned %+v, want nil (skipped)", i+1, r)
		}
	}
	// A batch straddling the applied index applies only the new part.
	f.ApplyBatch(logs[n-10:])

	fresh := newFSM(t)
	fresh.ApplyBatch(logs)
	a1, h1 := mustHash(t, f)
	a2, h2 := mustHash(t, fresh)
	if a1 != n+m || a1 != a2 || string(h1) != string(h2) {
		t.Fatalf("replayed replica (applied %d) differs from fresh one (applied %d)", a1, a2)
	}
}
