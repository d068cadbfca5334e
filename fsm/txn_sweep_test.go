package fsm

import (
	"fmt"
	"math"
	"testing"

	"go.etcd.io/bbolt"

	"github.com/cairndb/cairn/txn"
)

// storeRecords writes n records straight into the records bucket, ids
// rec-000000.., each as state(i) makes it (forgotten when committed and
// forgotten(i)), heartbeat 1.
func storeRecords(tb testing.TB, f *FSM, n int, state func(i int) txn.State, forgotten func(i int) bool) {
	tb.Helper()
	f.flush("test") // bbolt allows one write transaction at a time
	for lo := 0; lo < n; lo += 10000 {
		err := f.db.Update(func(tx *bbolt.Tx) error {
			b := tx.Bucket(bucketRecords)
			for i := lo; i < min(n, lo+10000); i++ {
				id := fmt.Sprintf("rec-%06d", i)
				r := &txn.Record{ID: id, State: state(i), Anchor: []byte("bal"), Heartbeat: 1, Priority: 1,
					WriteSet: []txn.Write{{Key: []byte("bal")}}, Succeeded: true}
				r.Forgotten = r.State == txn.Committed && forgotten(i)
				if r.State == txn.Aborted {
					r.Cause = txn.CauseConflict
				}
				if err := b.Put([]byte(id), txn.EncodeRecord(r)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// TestTxnSweepRecordsBounded: a sweep pass looks at no more records than
// its bound and resumes after the last one it looked at, so passes that
// follow its cursor (and start again at the end) find every live record and
// every committed record never forgotten, wherever they sit among the final
// ones a shard keeps for the dedup window.
func TestTxnSweepRecordsBounded(t *testing.T) {
	f := newFSM(t)
	const n, visit = 100, 8
	storeRecords(t, f, n, func(i int) txn.State {
		switch i {
		case 3:
			return txn.Pending
		case 57:
			return txn.Staging
		case 41, 99:
			return txn.Committed
		}
		if i%2 == 0 {
			return txn.Aborted
		}
		return txn.Committed
	}, func(i int) bool { return i != 41 && i != 99 })
	var live, unforgotten []string
	var after []byte
	passes := 0
	for {
		recs, next, err := f.TxnSweepRecords(after, 2, 2, visit, 256)
		if err != nil {
			t.Fatal(err)
		}
		passes++
		for _, r := range recs {
			if r.State.Final() {
				unforgotten = append(unforgotten, r.ID)
			} else {
				live = append(live, r.ID)
			}
		}
		if next == nil {
			break
		}
		if string(next) <= string(after) {
			t.Fatalf("pass %d resumes at %q, after %q: no progress", passes, next, after)
		}
		if got := string(next); after != nil && got != fmt.Sprintf("rec-%06d", (passes)*visit-1) {
			t.Fatalf("pass %d stopped at %q, want after %d records", passes, got, visit)
		}
		after = next
	}
	if want := (n + visit - 1) / visit; passes != want {
		t.Fatalf("%d passes over %d records at %d a pass, want %d", passes, n, visit, want)
	}
	if fmt.Sprint(live) != "[rec-000003 rec-000057]" || fmt.Sprint(unforgotten) != "[rec-000041 rec-000099]" {
		t.Fatalf("live %v, unforgotten %v; want [rec-000003 rec-000057], [rec-000041 rec-000099]", live, unforgotten)
	}
	// A heartbeat at or after the bounds is not picked yet: neither a live
	// record that has not expired nor a committed one still young.
	if recs, _, err := f.TxnSweepRecords(nil, 1, 1, n+1, 256); err != nil || len(recs) != 0 {
		t.Fatalf("picked with a recent heartbeat: %d records, %v", len(recs), err)
	}
	// The pick limit stops a pass too.
	if recs, next, err := f.TxnSweepRecords(nil, 2, 2, n+1, 2); err != nil || len(recs) != 2 || string(next) != "rec-000041" {
		t.Fatalf("picks bounded at 2: %d records, next %q, %v", len(recs), next, err)
	}
}

// BenchmarkTxnSweepPass: one pass of the record sweeper on a shard holding
// 100,000 final records (ten minutes of 170 transactions a second), before
// (every record, twice: the live scan, then the unforgotten scan) and
// after (one pass bounded at the sweeper's 16,384 records).
func BenchmarkTxnSweepPass(b *testing.B) {
	f := newFSM(b)
	storeRecords(b, f, 100000, func(i int) txn.State {
		if i%2 == 0 {
			return txn.Aborted
		}
		return txn.Committed
	}, func(int) bool { return true })
	b.Run("full-scans", func(b *testing.B) {
		for range b.N {
			if _, _, err := f.TxnSweepRecords(nil, math.MaxInt64, math.MinInt64, 0, 0); err != nil {
				b.Fatal(err)
			}
			if _, _, err := f.TxnSweepRecords(nil, math.MinInt64, 2, 0, 256); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bounded", func(b *testing.B) {
		var after []byte
		for range b.N {
			_, next, err := f.TxnSweepRecords(after, 2, 2, 16384, 256)
			if err != nil {
				b.Fatal(err)
			}
			after = next
		}
	})
}

// BenchmarkTxnTombstones: a batch of 32 resolutions' tombstones (and their
// clean-up queue entries) into a shard holding 100,000, in one bbolt
// transaction as an apply batch writes them, with the ids of cairn's
// clients (time first: txn.IDForRequest) against random ids (hash only, as
// every request id gave before). Random ids land each tombstone on its own
// leaf of about a hundred, which bbolt decodes, copies and writes back:
//
//	go test -run '^$' -bench TxnTombstones -benchmem ./fsm/
func BenchmarkTxnTombstones(b *testing.B) {
	const existing, batch = 100000, 32
	ids := map[string]func(i int) string{
		"time-ordered": func(i int) string { return txn.IDForRequest(fmt.Sprintf("%012x.c1-%d", 0x5f0000000000+i, i)) },
		"random":       func(i int) string { return txn.IDForRequest(fmt.Sprintf("c1-%d", i)) },
	}
	for _, name := range []string{"time-ordered", "random"} {
		id := ids[name]
		b.Run(name, func(b *testing.B) {
			f := newFSM(b)
			put := func(from, n int) error {
				f.flush("test")
				return f.db.Update(func(tx *bbolt.Tx) error {
					c := &applyCtx{b: txBuckets(tx)}
					for i := from; i < from+n; i++ {
						if err := c.leaveTombstone(id(i), txn.Committed, int64(i)); err != nil {
							return err
						}
					}
					return nil
				})
			}
			for lo := 0; lo < existing; lo += 10000 {
				if err := put(lo, 10000); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for n := range b.N {
				if err := put(existing+n*batch, batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
