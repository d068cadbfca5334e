package lock_test

import (
	"fmt"
	"time"

	"github.com/cairndb/cairn/lock"
)

// The fsm's apply loop, reduced to one lock: load the record, Apply at the
// entry's index with the group's base and the proposer's time, store what
// comes back (nil: delete).
func ExampleApply() {
	var rec *lock.Record
	base := uint64(1000) // this range is a split's child
	apply := func(index uint64, cmd lock.Command) lock.Result {
		next, res := lock.Apply(rec, cmd, index, base, 0)
		if res.Err == nil {
			rec = next
		}
		return res
	}
	a := apply(5, lock.Acquire{Name: "jobs/daily", Owner: "worker-3", TTL: 15 * time.Second, Limit: 1})
	b := apply(6, lock.Acquire{Name: "jobs/daily", Owner: "worker-4", TTL: 15 * time.Second, Limit: 1,
		Wait: 10 * time.Second, WaiterID: "req-4"})
	r := apply(7, lock.Release{Name: "jobs/daily", Token: a.Token})
	lost := apply(8, lock.Renew{Name: "jobs/daily", Token: a.Token})
	fmt.Println("worker-3 token", a.Token)
	fmt.Println("worker-4 queued at", b.Position)
	fmt.Println("release hands over to", r.Granted[0].Owner, "with token", r.Granted[0].Token)
	fmt.Println("old token renews:", lost.Err.Code)
	// Output:
	// worker-3 token 1005
	// worker-4 queued at 0
	// release hands over to worker-4 with token 1007
	// old token renews: lock_lost
}
