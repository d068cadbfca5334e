package shard

import (
	"context"
	"testing"
	"time"
)

// Invariant I2: CommittedStatus commits an entry of the leader's term so
// that the configuration it read is known to be committed. That entry must
// be one the FSM applies: a raft Barrier (LogBarrier) is never handed to
// the FSM, so a linearizable read that takes the commit index after it
// would wait for an applied index the FSM never reaches, until the next
// write. (TestReplicaMoveUnderLoad's reads through the new node hung this
// way after a drain, whose last entry was the reconciler's barrier.)
func TestLinearizableReadAfterCommittedStatus(t *testing.T) {
	c := startReadCluster(t, 3, nil, nil)
	reps := c.open(1)
	c.transferLeader(reps, 0)
	put(t, reps[0], "a", "1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := reps[0].CommittedStatus(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := linearizable(reps[0], 3*time.Second); err != nil {
		t.Fatalf("linearizable read after CommittedStatus, with no write since: %v", err)
	}
}
