package shard

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func mustWALKnobs(t *testing.T, dir string, knobs *WALKnobs) *WAL {
	t.Helper()
	w, err := OpenWALConfig(WALConfig{Dir: dir, Knobs: knobs})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// waitClosed waits for ch to close, failing the test after d.
func waitClosed(t *testing.T, ch <-chan struct{}, d time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(d):
		t.Fatalf("timed out after %s waiting for %s", d, what)
	}
}

// Invariant I1. The zero-filler syncs the same open file as the committer.
// On Linux a writeback error is reported once per open file description, to
// whichever fdatasync looks first: when the filler's sync flushes a commit's
// pages and gets EIO, the committer's own fdatasync returns 0. The knob plays
// that: the filler's sync (or write) fails while a commit is in flight, the
// committer's succeeds. No commit may be acknowledged after it.
func TestWALFillerErrorFailsCommits(t *testing.T) {
	for _, fault := range []string{"sync", "write"} {
		t.Run(fault, func(t *testing.T) {
			filling, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			fail := func() error {
				once.Do(func() { close(filling) })
				<-release
				return syscall.EIO
			}
			knobs := &WALKnobs{}
			if fault == "sync" {
				knobs.Sync = func(by WALWriter, f *os.File) error {
					if by == WALFiller {
						return fail()
					}
					return f.Sync()
				}
			} else {
				knobs.Write = func(by WALWriter, f *os.File, b []byte, off int64) (int, error) {
					if by == WALFiller {
						return 0, fail()
					}
					return f.WriteAt(b, off)
				}
			}
			w := mustWALKnobs(t, t.TempDir(), knobs)
			defer w.Close()
			g := w.Group(1)
			if err := g.StoreLog(testEntry(1)); err != nil { // wakes the filler
				t.Fatal(err)
			}
			waitClosed(t, filling, 10*time.Second, "the filler")
			// Entry 2's commit runs while the filler's I/O is failing.
			done := make(chan error, 1)
			go func() { done <- g.StoreLog(testEntry(2)) }()
			time.Sleep(10 * time.Millisecond) // let the commit reach the file; either order must fail it
			close(release)
			if err := <-done; err == nil {
				t.Errorf("a commit overlapping the filler's failed %s was acknowledged", fault)
			}
			if err := g.StoreLog(testEntry(3)); !errors.Is(err, ErrLogFailed) {
				t.Errorf("a commit after the filler's failed %s: %v, want ErrLogFailed", fault, err)
			}
		})
	}
}

// Invariant I1. A commit whose write or fdatasync fails makes the log fatal:
// the writes fail, the values they carried are never served (raft re-reads
// LastVoteTerm/LastVoteCand on every vote request: a vote "remembered" only
// in memory would be forgotten at restart, a double vote), and every later
// call fails even when the disk seems to work again (a failed fsync is never
// retried as if the data were safe).
func TestWALCommitErrorIsFatal(t *testing.T) {
	for _, tc := range []struct {
		name  string
		write bool // fail the write instead of the sync
		// do is the write that fails; check looks for its values.
		do    func(g GroupLog) error
		check func(t *testing.T, g GroupLog)
	}{
		{"vote sync", false, func(g GroupLog) error {
			return errors.Join(g.SetUint64([]byte("LastVoteTerm"), 5), g.Set([]byte("LastVoteCand"), []byte("n2")))
		}, checkVoteNotServed},
		{"vote write", true, func(g GroupLog) error {
			return errors.Join(g.SetUint64([]byte("LastVoteTerm"), 5), g.Set([]byte("LastVoteCand"), []byte("n2")))
		}, checkVoteNotServed},
		{"append sync", false, func(g GroupLog) error {
			return g.StoreLogs([]*raft.Log{testEntry(4), testEntry(5)})
		}, checkAppendNotServed},
		{"append write", true, func(g GroupLog) error {
			return g.StoreLogs([]*raft.Log{testEntry(4), testEntry(5)})
		}, checkAppendNotServed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var armed atomic.Bool
			knobs := &WALKnobs{
				Sync: func(by WALWriter, f *os.File) error {
					if armed.Load() && !tc.write && by == WALCommitter {
						return syscall.EIO
					}
					return f.Sync()
				},
				Write: func(by WALWriter, f *os.File, b []byte, off int64) (int, error) {
					if armed.Load() && tc.write && by == WALCommitter {
						return 0, syscall.EIO
					}
					return f.WriteAt(b, off)
				},
			}
			w := mustWALKnobs(t, t.TempDir(), knobs)
			defer w.Close()
			g := w.Group(1)
			if err := g.SetUint64([]byte("LastVoteTerm"), 4); err != nil {
				t.Fatal(err)
			}
			if err := g.Set([]byte("LastVoteCand"), []byte("n1")); err != nil {
				t.Fatal(err)
			}
			storeRange(t, g, 1, 3)

			armed.Store(true)
			if err := tc.do(g); err == nil {
				t.Fatal("the write whose commit failed returned success")
			}
			armed.Store(false) // the disk "works" again: the log must stay failed
			tc.check(t, g)
			checkAllCallsFail(t, w, g)
		})
	}
}

func checkVoteNotServed(t *testing.T, g GroupLog) {
	t.Helper()
	if v, err := g.GetUint64([]byte("LastVoteTerm")); err == nil && v == 5 {
		t.Errorf("GetUint64(LastVoteTerm) = 5: a vote whose commit failed is served")
	}
	if v, err := g.Get([]byte("LastVoteCand")); err == nil && string(v) == "n2" {
		t.Errorf("Get(LastVoteCand) = n2: a vote whose commit failed is served")
	}
}

func checkAppendNotServed(t *testing.T, g GroupLog) {
	t.Helper()
	if last, err := g.LastIndex(); err == nil && last == 5 {
		t.Errorf("LastIndex = 5: entries whose commit failed are served")
	}
	var out raft.Log
	if err := g.GetLog(4, &out); err == nil {
		t.Errorf("GetLog(4) = %+v: an entry whose commit failed is served", out)
	}
}

// checkAllCallsFail: every call of the log refuses with ErrLogFailed.
func checkAllCallsFail(t *testing.T, w NodeLog, g GroupLog) {
	t.Helper()
	var out raft.Log
	calls := []struct {
		name string
		call func() error
	}{
		{"Set", func() error { return g.Set([]byte("k"), []byte("v")) }},
		{"SetUint64", func() error { return g.SetUint64([]byte("CurrentTerm"), 9) }},
		{"Get", func() error { _, err := g.Get([]byte("LastVoteCand")); return err }},
		{"GetUint64", func() error { _, err := g.GetUint64([]byte("LastVoteTerm")); return err }},
		{"StoreLog", func() error { return g.StoreLog(testEntry(4)) }},
		{"StoreLogs", func() error { return g.StoreLogs([]*raft.Log{testEntry(4)}) }},
		{"DeleteRange", func() error { return g.DeleteRange(1, 1) }},
		{"GetLog", func() error { return g.GetLog(1, &out) }},
		{"FirstIndex", func() error { _, err := g.FirstIndex(); return err }},
		{"LastIndex", func() error { _, err := g.LastIndex(); return err }},
		{"DropGroup", func() error { return w.DropGroup(2) }},
	}
	for _, c := range calls {
		if err := c.call(); !errors.Is(err, ErrLogFailed) {
			t.Errorf("%s after a failed commit: %v, want ErrLogFailed", c.name, err)
		}
	}
}

// applyFSM is the smallest raft.FSM: it counts entries.
type applyFSM struct{ n atomic.Uint64 }

func (f *applyFSM) Apply(*raft.Log) any                 { return f.n.Add(1) }
func (f *applyFSM) Snapshot() (raft.FSMSnapshot, error) { return nopSnapshot{}, nil }
func (f *applyFSM) Restore(rc io.ReadCloser) error      { return rc.Close() }

type nopSnapshot struct{}

func (nopSnapshot) Persist(s raft.SnapshotSink) error { return s.Close() }
func (nopSnapshot) Release()                          {}

// Invariant I1. hashicorp/raft panics when its stable store cannot save the
// current term (setCurrentTerm) or its log store cannot read an entry it
// applies (processLogs), on its own goroutine, where no caller can recover:
// that would take down every group of the node. After the log fails, the
// group must stop instead, without a panic, and acknowledge nothing.
//
// "leader": a single voter's append fails (raft steps down; its next
// election would save a new term). "follower": an idle follower's log fails,
// then the leader stops: the follower's first call to meet the failed log is
// saving the term of the next election (its own or its peer's).
func TestWALFailureStopsGroupWithoutPanic(t *testing.T) {
	t.Run("leader", func(t *testing.T) {
		var armed atomic.Bool
		g := startTestGroup(t, "n1", &armed, nil)
		waitUntil(t, 10*time.Second, "a leader", func() bool { return g.Raft().State() == raft.Leader })
		if err := g.Raft().Apply([]byte("x"), 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
		armed.Store(true)
		if err := g.Raft().Apply([]byte("y"), 5*time.Second).Error(); err == nil {
			t.Error("an entry whose commit failed was acknowledged")
		}
		armed.Store(false)
		waitUntil(t, 10*time.Second, "the group to stop", g.logStopped)
		shutdownWithin(t, g, 10*time.Second)
	})
	t.Run("follower", func(t *testing.T) {
		armed := make([]*atomic.Bool, 3)
		muxes := make([]*Mux, 3)
		var servers []raft.Server
		for i := range muxes {
			armed[i], muxes[i] = new(atomic.Bool), mustMux(t, nil, 0)
			servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprint("n", i+1)), Address: raft.ServerAddress(muxes[i].Addr())})
		}
		groups := make([]*Group, 3)
		for i := range groups {
			groups[i] = startTestGroupOn(t, string(servers[i].ID), muxes[i], armed[i], servers)
		}
		leader := waitGroupLeader(t, groups)
		if err := groups[leader].Raft().Apply([]byte("x"), 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
		f := (leader + 1) % 3
		last := groups[leader].Raft().LastIndex()
		waitUntil(t, 10*time.Second, "the follower to apply everything", func() bool {
			return groups[f].Raft().AppliedIndex() >= last
		})
		armed[f].Store(true)
		shutdownWithin(t, groups[leader], 10*time.Second)
		waitUntil(t, 10*time.Second, "the failed follower's group to stop", groups[f].logStopped)
		for i, g := range groups {
			if i != leader {
				shutdownWithin(t, g, 10*time.Second)
			}
		}
	})
}

func startTestGroup(t *testing.T, id string, armed *atomic.Bool, servers []raft.Server) *Group {
	t.Helper()
	m := mustMux(t, nil, 0)
	return startTestGroupOn(t, id, m, armed, []raft.Server{{ID: raft.ServerID(id), Address: raft.ServerAddress(m.Addr())}})
}

// startTestGroupOn starts group 1 on a WAL of its own whose commits fail
// with EIO while armed.
func startTestGroupOn(t *testing.T, id string, m *Mux, armed *atomic.Bool, servers []raft.Server) *Group {
	t.Helper()
	w := mustWALKnobs(t, t.TempDir(), &WALKnobs{Sync: func(by WALWriter, f *os.File) error {
		if armed.Load() {
			return syscall.EIO
		}
		return f.Sync()
	}})
	g, err := StartGroup(GroupConfig{
		ID: 1, Dir: t.TempDir(), NodeID: id, FSM: &applyFSM{}, Mux: m, Logs: w, Tuning: FastRaftTuning(),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Bootstrap: servers,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = g.Shutdown()
		_ = w.Close()
	})
	return g
}

// shutdownWithin shuts g down, failing the test if that takes longer than d.
func shutdownWithin(t *testing.T, g *Group, d time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- g.Shutdown() }()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("Shutdown hangs after %s", d)
	}
}

// waitUntil polls cond every 10ms until it holds or d passes.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A group started on a log that has already failed gets an error, whether
// it bootstraps (raft.HasExistingState reads the log) or not (raft.NewRaft
// does, and panics on some failures; StartGroup turns those into errors).
func TestWALFailedStartGroupFails(t *testing.T) {
	for _, bootstrap := range []bool{true, false} {
		t.Run(fmt.Sprint("bootstrap=", bootstrap), func(t *testing.T) {
			var armed atomic.Bool
			w := mustWALKnobs(t, t.TempDir(), &WALKnobs{Sync: func(by WALWriter, f *os.File) error {
				if armed.Load() {
					return syscall.EIO
				}
				return f.Sync()
			}})
			defer w.Close()
			if err := w.Group(1).SetUint64([]byte("CurrentTerm"), 1); err != nil {
				t.Fatal(err)
			}
			armed.Store(true)
			if err := w.Group(2).SetUint64([]byte("CurrentTerm"), 1); err == nil {
				t.Fatal("a failed commit succeeded")
			}
			m := mustMux(t, nil, 0)
			var servers []raft.Server
			if bootstrap {
				servers = []raft.Server{{ID: "n1", Address: raft.ServerAddress(m.Addr())}}
			}
			g, err := StartGroup(GroupConfig{
				ID: 1, Dir: t.TempDir(), NodeID: "n1", FSM: &applyFSM{}, Mux: m, Logs: w, Tuning: FastRaftTuning(),
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Bootstrap: servers,
			})
			if err == nil {
				_ = g.Shutdown()
				t.Fatal("a group started on a failed log")
			}
			if !errors.Is(err, ErrLogFailed) {
				t.Errorf("StartGroup: %v, want ErrLogFailed", err)
			}
		})
	}
}

// logStopped reports whether the group stopped because its log failed.
func (g *Group) logStopped() bool { return g.logStop.Load() }
