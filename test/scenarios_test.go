package test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
)

// Scenario S4: a stale node never wins an election. A follower is cut off
// while the others commit; then the leader is cut off and the stale follower
// can reach only the third node, whose log is newer: the third node must win,
// and every committed entry survives.
func TestStaleNodeNeverLeads(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	id := shardOf(c, "s4")
	leader := c.WaitLeader(id, 10*time.Second)
	stale, fresh := (leader+1)%3, (leader+2)%3
	c.Isolate(stale)
	for i := 0; i < 30; i++ {
		mustPut(t, c.Node(leader).HTTPAddr, fmt.Sprintf("s4-%02d", i), "v")
	}
	c.Heal()
	c.Partition([]int{stale, fresh}, []int{leader})
	deadline := time.Now().Add(15 * time.Second)
	won := false
	for time.Now().Before(deadline) && !won {
		// Only a leader brings the stale node's log up to date, and the
		// fresh node refuses it its vote until then: it cannot lead first.
		if rep, ok := c.Node(stale).Node.Host().Replica(id); ok && rep.IsLeader() {
			t.Fatalf("Scenario S4: the stale node became leader (applied index %d) before the fresh one", rep.FSM().Applied())
		}
		if rep, ok := c.Node(fresh).Node.Host().Replica(id); ok && rep.IsLeader() {
			won = true
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !won {
		t.Fatal("no leader among the two connected nodes")
	}
	for i := 0; i < 30; i++ {
		k := fmt.Sprintf("s4-%02d", i)
		got, res, err := getValue(Context(t, 10*time.Second), c.Node(fresh).HTTPAddr, k)
		if err != nil || res.Status != 200 || got != "v" {
			t.Fatalf("committed %s lost: %q %v %v", k, got, res, err)
		}
	}
}

// Scenario S9: ids allocated from a counter key with compare-and-set while
// leaders are killed are unique, and each worker sees them increase.
func TestCounterIDsUniqueAcrossLeaderKills(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	clients := NewClients(t, c, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if _, err := clients[0].Put(ctx, "ids", "0", client.IfAbsent()); err != nil {
		t.Fatal(err)
	}
	id := shardOf(c, "ids")
	var mu sync.Mutex
	owner := map[int]int{} // id -> worker
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := 0
			for i := 0; i < 400; i++ {
				select {
				case <-stop:
					return
				default:
				}
				kv, err := cl.Get(ctx, "ids")
				if err != nil {
					continue
				}
				cur, _ := strconv.Atoi(kv.Value)
				next := cur + 1
				_, err = cl.Put(ctx, "ids", strconv.Itoa(next), client.IfValue(kv.Value))
				if err != nil {
					continue // lost the race, or outcome unknown: not acknowledged
				}
				mu.Lock()
				if o, dup := owner[next]; dup {
					mu.Unlock()
					t.Errorf("Scenario S9: id %d acknowledged to workers %d and %d", next, o, w)
					return
				}
				owner[next] = w
				mu.Unlock()
				if next <= last {
					t.Errorf("Scenario S9: worker %d got id %d after %d", w, next, last)
					return
				}
				last = next
			}
		}()
	}
	for k := 0; k < 3; k++ {
		time.Sleep(2 * time.Second)
		l := c.WaitLeader(id, 15*time.Second)
		c.Kill(l)
		time.Sleep(time.Second)
		c.Restart(l)
	}
	close(stop)
	wg.Wait()
	if len(owner) < 20 {
		t.Fatalf("only %d ids allocated", len(owner))
	}
	kv, err := clients[0].Get(context.Background(), "ids")
	if err != nil {
		t.Fatal(err)
	}
	final, _ := strconv.Atoi(kv.Value)
	if final < len(owner) {
		t.Fatalf("counter %d below the %d ids acknowledged", final, len(owner))
	}
	t.Logf("%d ids acknowledged, counter at %d, 3 leader kills", len(owner), final)

}
