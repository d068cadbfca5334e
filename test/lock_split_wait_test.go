package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
)

// TestLockWaiterFollowsSplit: an acquire waiting in a lock's queue when the
// lock's range splits keeps its place. The queue moves to the child with the
// record; the waiting request follows it there and is granted when the
// holder releases, with a higher token (I9), instead of answering lock_held
// with its wait barely begun.
func TestLockWaiterFollowsSplit(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	ctx := Context(t, 60*time.Second)
	cls := NewClients(t, c, 3)
	const name = "lsw/lock"
	held, err := cls[0].AcquireLock(ctx, name, client.LockOptions{TTL: 30 * time.Second, Owner: "holder"})
	if err != nil {
		t.Fatal(err)
	}
	type answer struct {
		g   *client.LockGrant
		err error
	}
	waited := make(chan answer, 1)
	go func() {
		g, err := cls[1].AcquireLock(ctx, name, client.LockOptions{TTL: 30 * time.Second, Wait: 40 * time.Second, Owner: "waiter"})
		waited <- answer{g, err}
	}()
	WaitFor(t, 10*time.Second, "the waiter queued", func() error {
		info, err := cls[2].LockStatus(ctx, name)
		if err != nil {
			return err
		}
		if info.Waiters != 1 {
			return fmt.Errorf("%d waiters", info.Waiters)
		}
		return nil
	})
	splitLockAway(t, c, shardOf(c, name), name, "lsw/")
	select {
	case a := <-waited:
		t.Fatalf("the waiter answered before the release: %+v %v", a.g, a.err)
	case <-time.After(time.Second):
	}
	if err := cls[0].ReleaseLock(ctx, name, held.Token); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-waited:
		if a.err != nil {
			t.Fatalf("the waiter was not granted after the split: %v", a.err)
		}
		if a.g.Token <= held.Token {
			t.Fatalf("Invariant I9: the waiter's token %d is not above the holder's %d", a.g.Token, held.Token)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiter was not answered 20s after the release")
	}
	info, err := cls[2].LockStatus(ctx, name)
	if err != nil || !info.Held || info.Owner != "waiter" || info.Waiters != 0 {
		t.Fatalf("status after the grant: %+v %v", info, err)
	}
}

// TestLockWatchFollowsSplit: a blocking status query (wait_index) waiting
// on a lock when its range splits answers the next change of holders, made
// in the child, not an error and not early.
func TestLockWatchFollowsSplit(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	ctx := Context(t, 60*time.Second)
	cls := NewClients(t, c, 2)
	const name = "lwf/lock"
	held, err := cls[0].AcquireLock(ctx, name, client.LockOptions{TTL: 30 * time.Second, Owner: "holder"})
	if err != nil {
		t.Fatal(err)
	}
	info, err := cls[1].LockStatus(ctx, name)
	if err != nil || !info.Held {
		t.Fatalf("status: %+v %v", info, err)
	}
	type answer struct {
		info *client.LockInfo
		err  error
	}
	watched := make(chan answer, 1)
	go func() {
		got, err := cls[1].WatchLock(ctx, name, info.Index, 40*time.Second)
		watched <- answer{got, err}
	}()
	time.Sleep(300 * time.Millisecond) // the watch is waiting
	splitLockAway(t, c, shardOf(c, name), name, "lwf/")
	select {
	case a := <-watched:
		t.Fatalf("the watch answered before the release: %+v %v", a.info, a.err)
	case <-time.After(time.Second):
	}
	if err := cls[0].ReleaseLock(ctx, name, held.Token); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-watched:
		if a.err != nil || a.info.Held || a.info.Index <= info.Index {
			t.Fatalf("the watch after the split and release: %+v %v (watched from index %d)", a.info, a.err, info.Index)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the watch was not answered 20s after the release")
	}
}

// splitLockAway splits shard id, the range of lock name, at key at (at most
// name) and waits until the range map puts the lock in the child; it
// returns the child's id.
func splitLockAway(t *testing.T, c *Cluster, id uint64, name, at string) uint64 {
	t.Helper()
	_, child := splitShard(t, c, id, at)
	WaitFor(t, 10*time.Second, "the lock in the split's child", func() error {
		if got := shardOf(c, name); got != child.ID {
			return fmt.Errorf("the lock is in shard %d, want the child %d", got, child.ID)
		}
		return nil
	})
	return child.ID
}
