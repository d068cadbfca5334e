package placement

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/shard"
)

// openLoneMeta starts a meta replica that forms a one-voter meta group and
// waits for it to lead.
func openLoneMeta(t *testing.T) (*Meta, *shard.Mux) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux, err := shard.NewMux(shard.MuxConfig{Listener: ln})
	if err != nil {
		_ = ln.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mux.Close() })
	logs := shard.OpenBoltLogs(shard.BoltConfig{})
	t.Cleanup(func() { _ = logs.Close() })
	m, err := OpenMeta(MetaConfig{NodeID: "n1", DataDir: t.TempDir(), Mux: mux, Tuning: shard.FastRaftTuning(),
		Logs: logs, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	if err := m.Bootstrap([]raft.Server{{ID: "n1", Address: raft.ServerAddress(mux.Addr())}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !m.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("the lone meta replica did not become leader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return m, mux
}

// classified reports whether err is one of the errors a proposal may return:
// not leader or unavailable (nothing written) or outcome unknown.
func classified(err error) bool {
	var nl *shard.NotLeaderError
	return errors.As(err, &nl) || errors.Is(err, shard.ErrUnavailable) || errors.Is(err, shard.ErrOutcomeUnknown)
}

// A meta proposal racing the group's shutdown returns promptly, even without
// a deadline of its own, with an error classified as shard replicas classify
// theirs (invariant I7): raft hands out futures at shutdown that it never
// answers (BatchApplyCh), so no proposal may wait on one unbounded.
func TestMetaProposeRacingShutdown(t *testing.T) {
	m, _ := openLoneMeta(t)
	if err := m.RegisterNode(context.Background(), NodeInfo{ID: "n1"}); err != nil {
		t.Fatalf("a proposal to a healthy leader failed: %v", err)
	}
	const proposers = 32
	errs := make(chan error, 2*proposers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < proposers; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			for {
				err := m.RegisterNode(context.Background(), NodeInfo{ID: "n1", HTTPAddr: "x"})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			<-start
			for {
				if _, err := m.AllocRangeID(context.Background()); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	close(start)
	time.Sleep(50 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- m.Close() }()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("meta proposals still waiting 10s after the group was shut down")
	}
	close(errs)
	for err := range errs {
		if !classified(err) {
			t.Errorf("unclassified proposal error: %v (%T)", err, errors.Unwrap(err))
		}
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
}

// A meta membership change that cannot commit (a voter never answers, so the
// group needs a quorum it cannot get) reports outcome unknown: the
// entry is in the log and may yet commit. Invariant I7.
func TestMetaMembershipTimeoutIsOutcomeUnknown(t *testing.T) {
	m, _ := openLoneMeta(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	// 127.0.0.1:1 refuses every dial: the new voter never acknowledges.
	// hashicorp/raft commits the promotion itself at once; from then on the
	// group needs the ghost for a quorum.
	if err := m.AddVoter(ctx, "ghost", "127.0.0.1:1"); err != nil {
		t.Fatalf("AddVoter: %v", err)
	}
	err := m.AddNonvoter(ctx, "ghost2", "127.0.0.1:2")
	if !errors.Is(err, shard.ErrOutcomeUnknown) {
		t.Fatalf("a membership change without a quorum: %v, want ErrOutcomeUnknown", err)
	}
	// A proposal with a deadline that cannot commit is outcome unknown too.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel2()
	if err := m.RegisterNode(ctx2, NodeInfo{ID: "n2"}); !classified(err) {
		t.Fatalf("RegisterNode without a quorum: %v, want a classified error", err)
	}
}
