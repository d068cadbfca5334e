package test

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// lostOp is a write TestLostLeadershipSettled sends to a leader that loses
// leadership under it, and how to check that it took effect exactly once
// (answer: the write's own 200 answer, or nil for "took effect").
type lostOp struct {
	send  func(ctx context.Context, addr, key string) (*HTTPResult, error)
	check func(ctx context.Context, addr, key string, answer *HTTPResult) error
}

var lostPut = lostOp{
	send: func(ctx context.Context, addr, key string) (*HTTPResult, error) {
		return Do(ctx, "PUT", addr, KVPath(key), map[string]any{"value": "v"})
	},
	check: func(ctx context.Context, addr, key string, _ *HTTPResult) error {
		r, err := Do(ctx, "GET", addr, KVPath(key), nil)
		if err != nil || r.Status != 200 {
			return fmt.Errorf("%v %v", r, err)
		}
		var kv struct {
			Value   string `json:"value"`
			Version int64  `json:"version"`
		}
		if err := r.JSON(&kv); err != nil {
			return err
		}
		if kv.Value != "v" || kv.Version != 1 {
			return fmt.Errorf("%s = %+v, want v at version 1", key, kv)
		}
		return nil
	},
}

// lostAcquire: a lock acquire without a wait. Unsettled, its unknown outcome
// made the node cancel it and answer 503 (nothing held).
var lostAcquire = lostOp{
	send: func(ctx context.Context, addr, key string) (*HTTPResult, error) {
		return Do(ctx, "POST", addr, LockPath(key, "acquire"), map[string]any{"ttl": "60s", "owner": "lls"})
	},
	check: func(ctx context.Context, addr, key string, answer *HTTPResult) error {
		r, err := Do(ctx, "GET", addr, LockPath(key, ""), nil)
		if err != nil || r.Status != 200 {
			return fmt.Errorf("%v %v", r, err)
		}
		var st lockStatus
		if err := r.JSON(&st); err != nil {
			return err
		}
		if !st.Held || len(st.Holders) != 1 || st.Owner != "lls" {
			return fmt.Errorf("lock %s: %+v, want one holder, lls", key, st)
		}
		if answer != nil {
			var g lockGrant
			if err := answer.JSON(&g); err != nil {
				return err
			}
			if g.Token != st.Token {
				return fmt.Errorf("lock %s: held with token %d, the acquire answered %d", key, st.Token, g.Token)
			}
		}
		return nil
	},
}

// lostTxn: a one-shard transaction (a compare that the key is absent, a put
// of it and a get of a neighbour), one raft entry like a put. Its answer's
// results come from the entry's apply, so a settled answer must carry the
// same results a plain commit would: the put's mod_index is the key's.
var lostTxn = lostOp{
	send: func(ctx context.Context, addr, key string) (*HTTPResult, error) {
		return Do(ctx, "POST", addr, "/v1/txn", map[string]any{
			"compare":    []map[string]any{{"key": key, "target": "exists", "op": "==", "value": "false"}},
			"success":    []map[string]any{{"op": "put", "key": key, "value": "v"}, {"op": "get", "key": key + "/n"}},
			"failure":    []map[string]any{{"op": "get", "key": key}},
			"request_id": "lls-" + key,
		})
	},
	check: func(ctx context.Context, addr, key string, answer *HTTPResult) error {
		if err := lostPut.check(ctx, addr, key, nil); err != nil {
			return err
		}
		if answer == nil {
			return nil
		}
		var res struct {
			Succeeded bool `json:"succeeded"`
			Results   []struct {
				Op       string `json:"op"`
				Found    bool   `json:"found"`
				ModIndex uint64 `json:"mod_index"`
			} `json:"results"`
		}
		if err := answer.JSON(&res); err != nil {
			return err
		}
		if !res.Succeeded || len(res.Results) != 2 || res.Results[0].Op != "put" || res.Results[1].Op != "get" ||
			res.Results[1].Found {
			return fmt.Errorf("txn on %s answered %s, want the success branch: the put, then a get of nothing", key, answer.Body)
		}
		r, err := Do(ctx, "GET", addr, KVPath(key), nil)
		if err != nil || r.Status != 200 {
			return fmt.Errorf("%v %v", r, err)
		}
		var kv struct {
			ModIndex uint64 `json:"mod_index"`
		}
		if err := r.JSON(&kv); err != nil {
			return err
		}
		if kv.ModIndex == 0 || kv.ModIndex != res.Results[0].ModIndex {
			return fmt.Errorf("%s has mod_index %d, the transaction answered %d", key, kv.ModIndex, res.Results[0].ModIndex)
		}
		return nil
	},
}

// TestLostLeadershipSettled (S1, S2, invariant I1): a put (and a lock
// acquire, S16's grant path, and a one-shard transaction) whose leader loses
// leadership after appending the entry and before committing it used to
// answer 504 outcome_unknown. The old leader stays a member: once it applies
// that index as a follower it knows the entry's fate (raft's log matching:
// the entry committed there has the same term if and only if it is the put),
// and answers it (shard/claims.go). Both fates:
//
//   - committed: the followers store the entry but their answers never reach
//     the leader, which steps down; the followers elect one of them, which
//     commits the entry; the partition heals, the old leader applies it, and
//     the put answers 200 with its result.
//   - not written: the followers never receive the entry; they elect one of
//     them, whose own entries take the index; the partition heals, the old
//     leader applies that index, learns the put never commits, and the put
//     is routed to the new leader and written there once.
//
// Before the change both answered 504 outcome_unknown.
func TestLostLeadershipSettled(t *testing.T) {
	for _, tc := range []struct {
		name      string
		committed bool
		op        lostOp
	}{
		{"committed", true, lostPut},
		{"not written", false, lostPut},
		{"lock acquire committed", true, lostAcquire},
		{"lock acquire not written", false, lostAcquire},
		{"one-shard txn committed", true, lostTxn},
		{"one-shard txn not written", false, lostTxn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := StartCluster(t, ClusterConfig{})
			key := "lls/" + map[bool]string{true: "committed", false: "lost"}[tc.committed]
			id := shardOf(c, key)
			leader := c.WaitLeader(id, 10*time.Second)
			mustPut(t, c.Node(leader).HTTPAddr, "lls/warm", "x")
			rep, ok := c.Node(leader).Node.Host().Replica(id)
			if !ok {
				t.Fatalf("node %d has no replica of shard %d", leader, id)
			}
			before := rep.Raft().LastIndex()
			nodes := c.Nodes()
			var followers []int
			for i := range nodes {
				if i != leader {
					followers = append(followers, i)
				}
			}
			for _, f := range followers {
				if tc.committed {
					c.Net.set(nodes[f].RaftAddr, nodes[leader].RaftAddr, true) // answers lost
				} else {
					c.Net.set(nodes[leader].RaftAddr, nodes[f].RaftAddr, true) // entries lost
				}
			}
			ctx := Context(t, 30*time.Second)
			type answer struct {
				res *HTTPResult
				err error
			}
			done := make(chan answer, 1)
			go func() {
				res, err := tc.op.send(ctx, nodes[leader].HTTPAddr, key)
				done <- answer{res, err}
			}()
			if tc.committed {
				for _, f := range followers {
					frep, ok := c.Node(f).Node.Host().Replica(id)
					if !ok {
						t.Fatalf("node %d has no replica of shard %d", f, id)
					}
					WaitFor(t, 5*time.Second, fmt.Sprintf("node %d to store the put's entry", f), func() error {
						if last := frep.Raft().LastIndex(); last <= before {
							return fmt.Errorf("last index %d", last)
						}
						return nil
					})
				}
				// A follower leads and the put is committed: readable there.
				newLeader := c.WaitLeader(id, 10*time.Second, leader)
				WaitFor(t, 10*time.Second, "the write committed by the new leader", func() error {
					return tc.op.check(ctx, c.Node(newLeader).HTTPAddr, key, nil)
				})
				c.Heal()
			} else {
				// A follower leads, with its own entries from the put's index
				// on; then the old leader hears from it.
				newLeader := c.WaitLeader(id, 10*time.Second, leader)
				nrep, ok := c.Node(newLeader).Node.Host().Replica(id)
				if !ok {
					t.Fatalf("node %d has no replica of shard %d", newLeader, id)
				}
				WaitFor(t, 5*time.Second, "the new leader to commit past the put's index", func() error {
					if ci := nrep.Raft().CommitIndex(); ci <= before {
						return fmt.Errorf("commit index %d", ci)
					}
					return nil
				})
				c.Heal()
			}
			var a answer
			select {
			case a = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("the put did not answer within 20s")
			}
			c.Heal()
			if a.err != nil || a.res.Status != 200 {
				t.Fatalf("the write whose leader lost leadership answered %v %v; want 200 (its fate is known)", a.res, a.err)
			}
			if n := rep.Settled(); n == 0 {
				t.Fatalf("the old leader settled no proposal (the put succeeded some other way)")
			}
			// Written once, by one entry.
			newLeader := c.WaitLeader(id, 10*time.Second)
			WaitFor(t, 10*time.Second, "written once", func() error {
				return tc.op.check(ctx, c.Node(newLeader).HTTPAddr, key, a.res)
			})
			assertReplicasConverge(t, c, id)
		})
	}
}
