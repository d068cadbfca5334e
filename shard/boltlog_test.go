//go:build linux

package shard

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/internal/faultfs"
)

// boltFault puts /dev/full under the boltdb store's files (faultfs).
type boltFault struct {
	t *testing.T
	faultfs.Files
}

func (f *boltFault) knobs() *BoltKnobs { return &BoltKnobs{OpenFile: f.OpenFile} }

func (f *boltFault) arm() {
	f.t.Helper()
	if err := f.Arm(); err != nil {
		f.t.Fatal(err)
	}
}

func (f *boltFault) disarm() {
	f.t.Helper()
	if err := f.Disarm(); err != nil {
		f.t.Fatal(err)
	}
}

// Invariant I1, issue 10's rule on the boltdb store: a write whose bbolt
// commit fails fails the store for every group of the node, for good. Nothing
// it wrote is served, and every later call refuses with ErrLogFailed, even
// once the disk works again (bbolt reads from its mmap, the page cache, which
// may hold what never reached the disk).
func TestBoltCommitErrorIsFatal(t *testing.T) {
	for _, tc := range []struct {
		name  string
		do    func(g GroupLog) error
		check func(t *testing.T, g GroupLog)
	}{
		{"vote", func(g GroupLog) error {
			return errors.Join(g.SetUint64([]byte("LastVoteTerm"), 5), g.Set([]byte("LastVoteCand"), []byte("n2")))
		}, checkVoteNotServed},
		{"append", func(g GroupLog) error {
			return g.StoreLogs([]*raft.Log{testEntry(4), testEntry(5)})
		}, checkAppendNotServed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fault := &boltFault{t: t}
			s := OpenBoltLogs(BoltConfig{Knobs: fault.knobs()})
			dir := t.TempDir()
			g, err := s.OpenGroup(1, filepath.Join(dir, "1"))
			if err != nil {
				t.Fatal(err)
			}
			other, err := s.OpenGroup(2, filepath.Join(dir, "2"))
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = errors.Join(g.Close(), other.Close(), s.Close()) }()
			if err := g.SetUint64([]byte("LastVoteTerm"), 4); err != nil {
				t.Fatal(err)
			}
			if err := g.Set([]byte("LastVoteCand"), []byte("n1")); err != nil {
				t.Fatal(err)
			}
			storeRange(t, g, 1, 3)
			storeRange(t, other, 1, 3)

			fault.arm()
			err = tc.do(g)
			if !errors.Is(err, ErrLogFailed) {
				t.Fatalf("the write whose commit failed: %v, want ErrLogFailed", err)
			}
			fault.disarm()
			t.Logf("failed write: %v", err)
			waitClosed(t, s.Failed(), time.Second, "Failed to close")
			tc.check(t, g)
			checkAllCallsFail(t, s, g)
			checkAllCallsFail(t, s, other)
			if _, err := s.OpenGroup(3, filepath.Join(dir, "3")); !errors.Is(err, ErrLogFailed) {
				t.Errorf("OpenGroup after a failed commit: %v, want ErrLogFailed", err)
			}
		})
	}
}

// Invariant I1. As TestWALFailureStopsGroupWithoutPanic, on the boltdb
// store: once a single voter's append fails, the group stops without a
// panic and acknowledges nothing more.
func TestBoltFailureStopsGroupWithoutPanic(t *testing.T) {
	fault := &boltFault{t: t}
	s := OpenBoltLogs(BoltConfig{Knobs: fault.knobs()})
	m := mustMux(t, nil, 0)
	g, err := StartGroup(GroupConfig{
		ID: 1, Dir: t.TempDir(), NodeID: "n1", FSM: &applyFSM{}, Mux: m, Logs: s, Tuning: FastRaftTuning(),
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		Bootstrap: []raft.Server{{ID: "n1", Address: raft.ServerAddress(m.Addr())}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = g.Shutdown()
		_ = s.Close()
	})
	waitUntil(t, 10*time.Second, "a leader", func() bool { return g.Raft().State() == raft.Leader })
	if err := g.Raft().Apply([]byte("x"), 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	fault.arm()
	if err := g.Raft().Apply([]byte("y"), 5*time.Second).Error(); err == nil {
		t.Error("an entry whose commit failed was acknowledged")
	}
	fault.disarm()
	waitUntil(t, 10*time.Second, "the group to stop", g.logStopped)
	shutdownWithin(t, g, 10*time.Second)
	if !errors.Is(s.Err(), ErrLogFailed) {
		t.Errorf("store error %v, want ErrLogFailed", s.Err())
	}
}

// A group started on a failed boltdb store gets ErrLogFailed, bootstrapping
// or not.
func TestBoltFailedStartGroupFails(t *testing.T) {
	for _, bootstrap := range []bool{true, false} {
		t.Run(fmt.Sprint("bootstrap=", bootstrap), func(t *testing.T) {
			fault := &boltFault{t: t}
			s := OpenBoltLogs(BoltConfig{Knobs: fault.knobs()})
			g2, err := s.OpenGroup(2, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			defer g2.Close()
			fault.arm()
			if err := g2.SetUint64([]byte("CurrentTerm"), 1); err == nil {
				t.Fatal("a failed commit succeeded")
			}
			fault.disarm()
			m := mustMux(t, nil, 0)
			var servers []raft.Server
			if bootstrap {
				servers = []raft.Server{{ID: "n1", Address: raft.ServerAddress(m.Addr())}}
			}
			g, err := StartGroup(GroupConfig{
				ID: 1, Dir: t.TempDir(), NodeID: "n1", FSM: &applyFSM{}, Mux: m, Logs: s, Tuning: FastRaftTuning(),
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
