package test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/api"
	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/txn"
)

// s14Knob is the coordinator hook of TestS14: the current case decides, per
// action, whether the coordinator stops there (errStop) or goes on (after
// killing a participant's leader, say). One transaction at a time.
type s14Knob struct {
	mu      sync.Mutex
	before  func(a txn.Action) error
	seen    []string
	stopped map[string]bool // a stopped coordinator stays dead: the client's retries (same id) stop too
}

var errStop = errors.New("S14: coordinator stopped here")

func (k *s14Knob) BeforeAction(id string, a txn.Action) error {
	k.mu.Lock()
	f := k.before
	k.seen = append(k.seen, a.String())
	dead := k.stopped[id]
	k.mu.Unlock()
	if dead {
		return errStop
	}
	if f == nil {
		return nil
	}
	err := f(a)
	if err != nil {
		k.mu.Lock()
		k.stopped[id] = true
		k.mu.Unlock()
	}
	return err
}

func (k *s14Knob) set(f func(a txn.Action) error) {
	k.mu.Lock()
	k.before, k.seen = f, nil
	k.mu.Unlock()
}

// stopAt stops at the n-th action of kind (1-based).
func stopAt(kind txn.ActionKind, n int) func(txn.Action) error {
	seen := 0
	return func(a txn.Action) error {
		if a.Kind == kind {
			if seen++; seen == n {
				return errStop
			}
		}
		return nil
	}
}

// TestS14 is Scenario S14 (invariant I8): a coordinator stopped at each step
// of the protocol (before any prepare, after the other shard's prepare but
// before the anchor's decide, after the decide before its reply, after the
// reply before the other shard's resolve) and a participant's or the anchor's leader killed
// between steps, driven by typed knobs (api.TxnKnobs). Every transaction
// ends committed on both shards or aborted on both (single-key readers that
// meet its intents push and resolve it), and its intents disappear.
func TestS14(t *testing.T) {
	knob := &s14Knob{stopped: map[string]bool{}}
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"s14/m"},
		TxnKnobs: &api.TxnKnobs{BeforeAction: knob.BeforeAction}})
	cls := NewClients(t, c, 3)
	ctx := Context(t, 240*time.Second) // seven cases; committed ones wait for the forget (about 10 s when the sweeper sends it)
	get := func(k string) (string, error) {
		kv, err := cls[1].Get(ctx, k)
		if errors.Is(err, client.ErrNotFound) {
			return "<absent>", nil
		}
		if err != nil {
			return "", err
		}
		return kv.Value, nil
	}
	// killLeaderOf kills the leader of the shard holding key, unless it is
	// the coordinator's node (node 0, where the client sends): a
	// participant's or the anchor's leader dies between two steps.
	killLeaderOf := func(shard uint64) func(txn.Action) error {
		return func(txn.Action) error {
			i := c.WaitLeader(shard, 10*time.Second)
			if i == 0 {
				return nil
			}
			c.Kill(i)
			go func() { time.Sleep(2 * time.Second); c.Restart(i) }()
			return nil
		}
	}
	cases := []struct {
		name      string
		before    func(txn.Action) error
		committed bool // the outcome every shard must end with
		sweeper   bool // nobody reads: the record sweeper alone ends it
		answered  bool // the client must hear the outcome (the reply came before the stop)
	}{
		// The anchor decides: the other shard is prepared, then one decide
		// entry on the anchor's shard commits (and writes the anchor's
		// keys); no record exists before it.
		{"after the other shard's prepare, nobody reads: the sweeper aborts it", stopAt(txn.ActDecide, 1), false, true, false},
		{"before any prepare", stopAt(txn.ActPrepare, 1), false, false, false},
		{"after the other shard's prepare, before the decide", stopAt(txn.ActDecide, 1), false, false, false},
		{"after the decide, before the reply", stopAt(txn.ActReply, 1), true, false, false},
		// The reply goes out at the commit point, whose entry also resolves
		// the anchor shard's intents; the other shard's are resolved after
		// it: a coordinator stopped there leaves a committed record and
		// those intents, which readers resolve, or the sweeper when nobody
		// reads.
		{"after the reply, before the other shard's resolve", stopAt(txn.ActResolve, 1), true, false, true},
		{"after the reply, before the other shard's resolve, nobody reads: the sweeper resolves it", stopAt(txn.ActResolve, 1), true, true, true},
		{"participant leader killed before the decide", func(a txn.Action) error {
			if a.Kind == txn.ActDecide {
				return killLeaderOf(2)(a)
			}
			return nil
		}, true, false, false},
		{"anchor leader killed before the decide, coordinator stopped after it", func() func(txn.Action) error {
			return func(a txn.Action) error {
				switch a.Kind {
				case txn.ActDecide:
					// The coordinator stays silent past the old 2 s record
					// timeout while the anchor fails over: its heartbeats
					// could not have landed anyway, so the anchor's new
					// leader must not sweep the record away.
					err := killLeaderOf(1)(a)
					time.Sleep(2500 * time.Millisecond)
					return err
				case txn.ActResolve:
					return errStop
				}
				return nil
			}
		}(), true, false, false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, z := fmt.Sprintf("s14/a%d", i), fmt.Sprintf("s14/z%d", i)
			for _, k := range []string{a, z} {
				if _, err := cls[2].Put(ctx, k, "old"); err != nil {
					t.Fatal(err)
				}
			}
			knob.set(tc.before)
			rid := fmt.Sprintf("s14-%d-%d", i, time.Now().UnixNano())
			res, err := cls[0].Txn().If(client.Compare(a, client.TargetValue, "==", "old")).
				Then(client.OpPut(a, "new"), client.OpPut(z, "new")).WithRequestID(rid).Commit(ctx)
			knob.mu.Lock()
			t.Logf("coordinator answered %+v %v after %v", res, err, knob.seen)
			knob.mu.Unlock()
			knob.set(nil)
			if err == nil && tc.committed != res.Succeeded {
				t.Fatalf("answered succeeded=%v, want the outcome %v", res.Succeeded, tc.committed)
			}
			if errors.Is(err, client.ErrTxnAborted) && tc.committed {
				t.Fatalf("answered aborted, want committed: %v", err)
			}
			if tc.answered && (err != nil || res.Succeeded != tc.committed) {
				t.Fatalf("answered %+v %v, want the outcome (succeeded=%v) before the stop", res, err, tc.committed)
			}
			want := map[bool]string{true: "new", false: "old"}[tc.committed]
			if tc.sweeper {
				state := map[bool]string{true: "committed", false: "aborted"}[tc.committed]
				if n := countIntents(t, c); n == 0 && tc.committed {
					t.Fatal("no intent left after the stop: the case tests nothing")
				}
				WaitFor(t, 20*time.Second, "the sweeper ends the transaction and its intents", func() error {
					r, err := Do(ctx, "GET", c.HTTPAddrs()[1], "/v1/txn/"+txn.IDForRequest(rid), nil)
					if err != nil || r.Status != 200 || !strings.Contains(string(r.Body), `"state":"`+state+`"`) {
						return fmt.Errorf("record: %v %v", r, err)
					}
					if n := countIntents(t, c); n != 0 {
						return fmt.Errorf("%d intent keys remain", n)
					}
					return nil
				})
			}
			WaitFor(t, 20*time.Second, "both keys readable and agreeing", func() error {
				va, err := get(a)
				if err != nil {
					return err
				}
				vz, err := get(z)
				if err != nil {
					return err
				}
				if va != want || vz != want {
					return fmt.Errorf("a=%s z=%s, want both %s", va, vz, want)
				}
				return nil
			})
			WaitFor(t, 20*time.Second, "its intents gone on every replica", func() error {
				if n := countIntents(t, c); n != 0 {
					return fmt.Errorf("%d intent keys remain", n)
				}
				return nil
			})
			if tc.committed {
				// I8: the record stays until every participant is resolved,
				// then is forgotten (by its coordinator, or the sweeper when
				// the coordinator stopped), so its shard drops it after the
				// dedup window (txn/DESIGN.md "Forgetting a committed record").
				WaitFor(t, 30*time.Second, "the committed record forgotten", func() error {
					r, err := Do(ctx, "GET", c.HTTPAddrs()[1], "/v1/txn/"+txn.IDForRequest(rid), nil)
					if err != nil || r.Status != 200 || !strings.Contains(string(r.Body), `"forgotten":true`) {
						return fmt.Errorf("record: %v %v", r, err)
					}
					return nil
				})
			}
		})
	}
}

// TestTxnSplitDuringPrepare (issue 13 item 6, invariant I5): a range of the
// transaction splits between its routing and its participant commands, so
// a command meets wrong_shard (it applied nothing). The coordinator routes
// the request again, over the new map, and the transaction commits on the
// three shards; no intent is left. Two cases: the anchor's shard splits (the
// decide meets wrong_shard) and the other participant's shard splits (its
// prepare does). On the code before re-routing both answered txn_aborted.
func TestTxnSplitDuringPrepare(t *testing.T) {
	for _, tc := range []struct {
		name  string
		shard uint64 // the shard that splits before the first prepare
		at    string
		keys  []string // the anchor's key first
	}{
		{"anchor shard", 1, "tsp/b", []string{"tsp/a", "tsp/c", "tsp/z"}},
		{"prepared shard", 2, "tsp/y", []string{"tsp/a", "tsp/n", "tsp/z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var (
				mu       sync.Mutex // the knob runs on a server goroutine
				done     bool
				splitErr error
				addr     string
				reroutes int
			)
			knobs := &api.TxnKnobs{BeforeAction: func(_ string, a txn.Action) error {
				mu.Lock()
				defer mu.Unlock()
				if a.Kind == txn.ActReroute {
					reroutes++
				}
				if a.Kind != txn.ActPrepare || done || addr == "" {
					return nil
				}
				done = true
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				res, err := Do(ctx, "POST", addr, fmt.Sprintf("/v1/cluster/shards/%d/split", tc.shard),
					map[string]string{"key": tc.at})
				if err == nil && res.Status != 200 {
					err = fmt.Errorf("%s", res)
				}
				splitErr = err
				return nil
			}}
			c := StartCluster(t, ClusterConfig{InitialSplits: []string{"tsp/m"}, TxnKnobs: knobs})
			cl := NewClients(t, c, 1)[0]
			ctx := Context(t, 60*time.Second)
			for _, k := range tc.keys {
				if _, err := cl.Put(ctx, k, "old"); err != nil {
					t.Fatal(err)
				}
			}
			mu.Lock()
			addr = c.Node(0).HTTPAddr
			mu.Unlock()
			res, err := cl.Txn().If(client.Compare(tc.keys[0], client.TargetValue, "==", "old")).
				Then(client.OpPut(tc.keys[0], "new"), client.OpPut(tc.keys[1], "new"), client.OpPut(tc.keys[2], "new")).
				Commit(ctx)
			mu.Lock()
			if !done || splitErr != nil {
				t.Fatalf("split: done %v, %v", done, splitErr)
			}
			n := reroutes
			mu.Unlock()
			if err != nil || !res.Succeeded || len(res.Shards) != 3 {
				t.Fatalf("a transaction whose shard %d split under it: %+v %v (re-routed %d times), want committed on 3 shards",
					tc.shard, res, err, n)
			}
			if n == 0 {
				t.Fatalf("the transaction committed without re-routing: the split did not meet it (test setup)")
			}
			for _, k := range tc.keys {
				if kv, err := cl.Get(ctx, k); err != nil || kv.Value != "new" {
					t.Fatalf("%s = %v %v after the commit", k, kv, err)
				}
			}
			WaitFor(t, 10*time.Second, "no intent left", func() error {
				if n := countIntents(t, c); n != 0 {
					return fmt.Errorf("%d intent keys", n)
				}
				return nil
			})
		})
	}
}
