package shard

import (
	"bytes"
	"context"
	"errors"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/fsm"
)

// proposeClassified reports whether err is one a proposal may return
// (invariant I7): not leader or unavailable (nothing written), or outcome
// unknown.
func proposeClassified(err error) bool {
	var nl *NotLeaderError
	return errors.As(err, &nl) || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOutcomeUnknown)
}

// A membership change that is appended but cannot commit (a voter never
// answers, so the group has no quorum) is outcome unknown, not
// "never entered the log": the entry may commit once the voter appears.
// Invariant I7.
func TestMembershipChangeTimeoutIsOutcomeUnknown(t *testing.T) {
	c := startReadCluster(t, 1, nil, nil)
	reps := c.open(1)
	readWaitFor(t, 10*time.Second, "a leader", func() error {
		if !reps[0].IsLeader() {
			return errors.New("not yet")
		}
		return nil
	})
	// 127.0.0.1:1 refuses every dial.
	if err := reps[0].AddLearner("ghost", "127.0.0.1:1"); err != nil {
		t.Fatalf("AddLearner: %v", err)
	}
	// hashicorp/raft commits the promotion itself at once; from then on the
	// group needs the ghost for a quorum.
	if err := reps[0].Promote("ghost", "127.0.0.1:1"); err != nil {
		t.Fatalf("Promote: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- reps[0].AddLearner("ghost2", "127.0.0.1:2") }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("a membership change without a quorum: %v, want ErrOutcomeUnknown", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("AddLearner still waiting after 20s")
	}
}

// A proposal racing the replica's shutdown returns promptly with a
// classified error, and no goroutine stays behind waiting on a raft future
// that shutdown left unanswered. Invariant I7.
func TestProposeRacingShutdown(t *testing.T) {
	c := startReadCluster(t, 1, nil, nil)
	reps := c.open(1)
	readWaitFor(t, 10*time.Second, "a leader", func() error {
		if !reps[0].IsLeader() {
			return errors.New("not yet")
		}
		return nil
	})
	const proposers = 32
	errs := make(chan error, proposers)
	var wg sync.WaitGroup
	for i := 0; i < proposers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, err := reps[0].Propose(context.Background(), &fsm.Command{Op: fsm.OpPut, Key: []byte("k"), Value: []byte("v")})
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	if err := c.nodes[0].host.Close(); err != nil {
		t.Logf("host close: %v", err)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("proposals still waiting 10s after the replica was shut down")
	}
	close(errs)
	for err := range errs {
		if !proposeClassified(err) {
			t.Errorf("unclassified proposal error: %v", err)
		}
	}
	readWaitFor(t, 5*time.Second, "no goroutine waiting on a raft future", func() error {
		buf := make([]byte, 1<<20)
		if n := runtime.Stack(buf, true); bytes.Contains(buf[:n], []byte("shard.(*Group).wait.func1")) {
			return errors.New("a goroutine still reads a future the shutdown left unanswered")
		}
		return nil
	})
}

// The apply-queue wait before shutdown reads raft's unexported apply
// channel; a raft upgrade that renames it must fail here, not silently skip
// the wait.
func TestApplyQueueVisible(t *testing.T) {
	c := startReadCluster(t, 1, nil, nil)
	reps := c.open(1)
	if q := applyQueue(reps[0].Raft()); !q.IsValid() {
		t.Fatal("raft's apply channel is not visible: awaitApplyQueueEmpty cannot wait for it")
	}
}

// Linearizable reads racing the replica's shutdown return promptly: the
// quorum round (verify.go) waits on no raft future, only on its own
// heartbeats, a deadline and the replica's stop. Invariant I7.
func TestLinearizableReadRacingShutdown(t *testing.T) {
	c := startReadCluster(t, 3, nil, nil)
	reps := c.open(1)
	var leader int
	readWaitFor(t, 10*time.Second, "a ready leader", func() error {
		if leader = leaderIndex(reps); leader < 0 {
			return errors.New("no leader")
		}
		_, err := reps[leader].LinearizableRead(context.Background())
		return err
	})
	const readers = 16
	errs := make(chan error, readers)
	var wg sync.WaitGroup
	for i := 0; i < readers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := reps[leader].LinearizableRead(context.Background()); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	_ = c.nodes[leader].host.Close()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("linearizable reads still waiting 10s after the replica was shut down")
	}
	close(errs)
	for err := range errs {
		var nl *NotLeaderError
		if !errors.As(err, &nl) && !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrClosed) {
			t.Errorf("a read racing shutdown returned %v: want not leader, unavailable or closed", err)
		}
	}
}

// bindShutdown sets the ShutdownCh of the futures raft's Apply returns; a
// raft upgrade that renames or retypes that field must fail here, not leave
// waits on stranded futures unbounded again.
func TestApplyFutureShutdownBindable(t *testing.T) {
	c := startReadCluster(t, 1, nil, nil)
	reps := c.open(1)
	stop := make(chan struct{})
	noop, err := fsm.EncodeCommand(&fsm.Command{Op: fsm.OpNoop})
	if err != nil {
		t.Fatal(err)
	}
	f := reps[0].Raft().Apply(noop, time.Second)
	bindShutdown(f, stop)
	fld := reflect.ValueOf(f).Elem().FieldByName("ShutdownCh")
	if !fld.IsValid() || fld.Pointer() != reflect.ValueOf(stop).Pointer() {
		t.Fatal("the ShutdownCh of raft's apply future was not set: bindShutdown cannot bound waits on it")
	}
}
