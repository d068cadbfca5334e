package fsm

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

var testServers = []Server{{ID: "n1", Address: "a1", Voter: true}, {ID: "n2", Address: "a2", Voter: true},
	{ID: "n3", Address: "a3", Voter: true}}

// splitFixture is a parent FSM with keys on both sides of "m", a TTL key, a
// fence and a dedup entry, and an OnSplit hook that captures the export.
type splitFixture struct {
	parent   *FSM
	exported bytes.Buffer
	children []Range
	after    []Range
}

func newSplitFixture(t *testing.T) *splitFixture {
	fx := &splitFixture{}
	fx.parent = newFSM(t, func(c *Config) {
		c.OnSplit = func(child Range, servers []Server, export func(io.Writer) error) error {
			fx.children = append(fx.children, child)
			fx.exported.Reset()
			return export(&fx.exported)
		}
		c.AfterSplit = func(child Range) { fx.after = append(fx.after, child) }
	})
	idx := uint64(1)
	for _, k := range []string{"c", "k", "m", "p", "x"} {
		mustApply(t, fx.parent, idx, put(k, "v-"+k))
		idx++
	}
	mustApply(t, fx.parent, idx, &Command{Op: OpPut, Key: []byte("q"), Value: []byte("t"), TTL: 5e9})
	mustApply(t, fx.parent, idx+1, &Command{Op: OpPut, Key: []byte("r"), Value: []byte("f"),
		Fence: &Fence{Lock: "L", Token: 9}, RequestID: "req-1", Time: 1})
	return fx
}

// Invariants I5, I6: after a split the parent keeps [start, key) and the
// child, built from the exported half, owns [key, end); both take epoch+1;
// the child carries the half's TTLs, fences and every dedup entry.
func TestSplit(t *testing.T) {
	fx := newSplitFixture(t)
	r := mustApply(t, fx.parent, 10, &Command{Op: OpSplit, Key: []byte("m"), Epoch: testRange.Epoch,
		ChildID: 42, Servers: testServers})
	if r.Err != nil {
		t.Fatalf("split: %v", r.Err)
	}
	p := fx.parent.Range()
	if string(p.End) != "m" || p.Epoch != testRange.Epoch+1 {
		t.Fatalf("parent range after split: %+v", p)
	}
	if len(fx.children) != 1 || len(fx.after) != 1 {
		t.Fatalf("hooks: OnSplit %d AfterSplit %d calls, want 1 each", len(fx.children), len(fx.after))
	}
	child := fx.children[0]
	if child.ID != 42 || string(child.Start) != "m" || string(child.End) != "y" || child.Epoch != p.Epoch {
		t.Fatalf("child range: %+v", child)
	}
	for _, k := range []string{"m", "p", "x", "q", "r"} {
		if _, err := fx.parent.Get([]byte(k)); !errors.As(err, new(*WrongShardError)) {
			t.Fatalf("parent still serves %q after the split: %v", k, err)
		}
	}
	if kv := mustGet(t, fx.parent, "k"); kv == nil || string(kv.Value) != "v-k" {
		t.Fatalf("parent lost its own key k: %v", kv)
	}

	c := mustOpen(t, filepath.Join(t.TempDir(), "child.db"), func(cfg *Config) { cfg.Initial = child })
	if err := c.Restore(io.NopCloser(bytes.NewReader(fx.exported.Bytes()))); err != nil {
		t.Fatalf("restore child: %v", err)
	}
	if c.Applied() != ChildAppliedIndex || c.Range().ID != 42 {
		t.Fatalf("child applied %d range %+v", c.Applied(), c.Range())
	}
	for _, k := range []string{"m", "p", "x", "q", "r"} {
		if kv := mustGet(t, c, k); kv == nil {
			t.Fatalf("child lacks %q", k)
		}
	}
	if _, err := c.Get([]byte("k")); !errors.As(err, new(*WrongShardError)) {
		t.Fatalf("child serves the parent's key k: %v", err)
	}
	ttl, err := c.TTLKeys()
	if err != nil || len(ttl) != 1 || string(ttl[0].Key) != "q" {
		t.Fatalf("child ttl keys: %v %v", ttl, err)
	}
	if _, ok := lookupDedupT(t, c, "req-1"); !ok {
		t.Fatal("child lost the dedup entry: a retried request would apply twice (I7)")
	}
	// The fence moved with its key: an older token is rejected on the child (I11).
	res := mustApply(t, c, 2, &Command{Op: OpPut, Key: []byte("r"), Value: []byte("old"), Fence: &Fence{Lock: "L", Token: 8}})
	if !errors.As(res.Err, new(*StaleTokenError)) {
		t.Fatalf("stale token accepted on the child: %v", res.Err)
	}
}

func TestSplitRejections(t *testing.T) {
	cases := []struct {
		name string
		cmd  *Command
	}{
		{"stale epoch", &Command{Op: OpSplit, Key: []byte("m"), Epoch: testRange.Epoch - 1, ChildID: 42, Servers: testServers}},
		{"key at start", &Command{Op: OpSplit, Key: []byte("b"), Epoch: testRange.Epoch, ChildID: 42, Servers: testServers}},
		{"key outside", &Command{Op: OpSplit, Key: []byte("z"), Epoch: testRange.Epoch, ChildID: 42, Servers: testServers}},
		{"child is self", &Command{Op: OpSplit, Key: []byte("m"), Epoch: testRange.Epoch, ChildID: testRange.ID, Servers: testServers}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fx := newSplitFixture(t)
			r := mustApply(t, fx.parent, 10, tc.cmd)
			if r.Err == nil {
				t.Fatal("split accepted")
			}
			if len(fx.children) != 0 || fx.parent.Range().Epoch != testRange.Epoch {
				t.Fatalf("a rejected split changed the range: %+v", fx.parent.Range())
			}
			if kv := mustGet(t, fx.parent, "p"); kv == nil {
				t.Fatal("a rejected split dropped the upper half")
			}
		})
	}
}

// Invariant I4: a split replayed after a restart is skipped, not repeated.
func TestSplitReplaySkipped(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fsm.db")
	calls := 0
	hook := func(c *Config) {
		c.OnSplit = func(Range, []Server, func(io.Writer) error) error { calls++; return nil }
	}
	f := mustOpen(t, path, hook)
	mustApply(t, f, 1, put("c", "1"))
	split := cmdLog(t, 2, &Command{Op: OpSplit, Key: []byte("m"), Epoch: testRange.Epoch, ChildID: 9, Servers: testServers})
	f.Apply(split)
	f.Close()
	f = mustOpen(t, path, hook)
	if out := f.Apply(split); out != nil {
		t.Fatalf("replayed split returned %v, want skipped", out)
	}
	if calls != 1 || string(f.Range().End) != "m" {
		t.Fatalf("OnSplit calls %d, range %+v", calls, f.Range())
	}
}

// Invariant I6: a configuration entry that changes the voters bumps the
// epoch and records the replicas; one that does not leaves both alone.
func TestConfigurationTracksReplicas(t *testing.T) {
	f := newFSM(t)
	conf := func(ids ...string) *raft.Log {
		var c raft.Configuration
		for _, id := range ids {
			c.Servers = append(c.Servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id), Suffrage: raft.Voter})
		}
		c.Servers = append(c.Servers, raft.Server{ID: "learner", Address: "l", Suffrage: raft.Nonvoter})
		return &raft.Log{Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(c)}
	}
	steps := []struct {
		ids   []string
		epoch uint64
	}{
		{[]string{"n3", "n1", "n2"}, testRange.Epoch}, // same voters, any order: no change
		{[]string{"n1", "n2", "n3", "n4"}, testRange.Epoch + 1},
		{[]string{"n2", "n3", "n4"}, testRange.Epoch + 2},
	}
	for i, st := range steps {
		l := conf(st.ids...)
		l.Index = uint64(i + 1)
		f.Apply(l)
		r := f.Range()
		if r.Epoch != st.epoch {
			t.Fatalf("step %d: epoch %d, want %d", i, r.Epoch, st.epoch)
		}
	}
	if r := f.Range(); len(r.Replicas) != 3 || r.Replicas[0] != "n2" {
		t.Fatalf("replicas %v, want [n2 n3 n4] (voters only)", r.Replicas)
	}
}

func TestSplitKey(t *testing.T) {
	f := newFSM(t)
	if _, err := f.SplitKey(); !errors.Is(err, ErrNoSplitKey) {
		t.Fatalf("empty range: %v", err)
	}
	for i, k := range []string{"c", "d", "e", "f", "g", "h"} {
		mustApply(t, f, uint64(i+1), put(k, "value"))
	}
	k, err := f.SplitKey()
	if err != nil || string(k) <= "c" || string(k) > "f" {
		t.Fatalf("split key %q %v, want a middle key", k, err)
	}
}
