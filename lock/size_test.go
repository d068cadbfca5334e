package lock

import (
	"strings"
	"testing"
)

// TestMaxRecordSize pins the largest record the bounds allow, which fsm's
// snapshot reader must accept as a value and which every change rewrites.
func TestMaxRecordSize(t *testing.T) {
	r := &Record{Name: strings.Repeat("n", MaxNameSize), Limit: MaxLimit, LastToken: 1 << 62,
		DelaySeq: 1 << 62, Delay: MaxLockDelay, ChangeSeq: 1 << 62}
	for i := range MaxHolders {
		r.Holders = append(r.Holders, Holder{Token: 1<<62 + uint64(i), Owner: strings.Repeat("o", MaxOwnerSize),
			TTL: MaxTTL, LockDelay: MaxLockDelay, WaiterID: strings.Repeat("w", MaxWaiterIDSize),
			GrantSeq: 1 << 62, RenewSeq: 1 << 62})
	}
	for range MaxWaiters {
		r.Waiters = append(r.Waiters, Waiter{ID: strings.Repeat("w", MaxWaiterIDSize), Owner: strings.Repeat("o", MaxOwnerSize),
			Mode: Shared, TTL: MaxTTL, LockDelay: MaxLockDelay, Deadline: 1 << 62, Seq: 1 << 62})
	}
	n := len(EncodeRecord(r))
	t.Logf("largest record: %d bytes", n)
	if n > MaxRecordSize {
		t.Fatalf("largest record is %d bytes, above MaxRecordSize %d", n, MaxRecordSize)
	}
}
