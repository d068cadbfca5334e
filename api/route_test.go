package api

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/shard"
)

// The routing loop, tested without a cluster: a fake replica on this node
// (n1), fake peers (node ids to addresses, a down list, liveness), and local
// and remote steps that answer from a script.

type fakeReplica struct {
	mu     sync.Mutex
	leader string // node id; "n1" = this replica leads
}

func (f *fakeReplica) IsLeader() bool { f.mu.Lock(); defer f.mu.Unlock(); return f.leader == "n1" }
func (f *fakeReplica) Leader() (string, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader, ""
}
func (f *fakeReplica) set(leader string) { f.mu.Lock(); f.leader = leader; f.mu.Unlock() }

type fakePeers struct {
	rep   *fakeReplica // this node's replica of shard 1, nil: none
	down  map[string]bool
	alive map[string]bool // nil: all alive
}

func newRouter(p *fakePeers) *router[*fakeReplica] {
	rt := &router[*fakeReplica]{
		self: "n1",
		replica: func(id uint64) (*fakeReplica, bool) {
			return p.rep, p.rep != nil && id == 1
		},
		addr:  func(node string) (string, bool) { return node + ":7070", node != "" },
		down:  func(addr string) bool { return p.down[addr] },
		wait:  500 * time.Millisecond,
		pause: time.Millisecond,
	}
	if p.alive != nil {
		rt.alive = func(node string) bool { return p.alive[node] }
	}
	return rt
}

var shard1 = fsm.Range{ID: 1, Epoch: 1, Replicas: []string{"n1", "n2", "n3"}}

// step records each attempt, "local" or the address forwarded to.
type steps struct {
	mu  sync.Mutex
	log []string
}

func (s *steps) add(x string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = append(s.log, x)
	return len(s.log)
}
func (s *steps) String() string { s.mu.Lock(); defer s.mu.Unlock(); return fmt.Sprint(s.log) }

func TestRouteLoop(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	byKey := func() (fsm.Range, error) { return shard1, nil }

	t.Run("leader moved: routed again to the new leader", func(t *testing.T) {
		rep := &fakeReplica{leader: "n1"}
		rt := newRouter(&fakePeers{rep: rep})
		var st steps
		err := rt.route(ctx, routeReq[*fakeReplica]{rng: byKey, leader: true,
			local: func(*fakeReplica, fsm.Range) error {
				st.add("local")
				rep.set("n2") // lost leadership before the entry was appended
				return &shard.NotLeaderError{Group: 1, LeaderID: "n2"}
			},
			remote: func(addr string, _ fsm.Range) error { st.add(addr); return nil },
		})
		if err != nil || st.String() != "[local n2:7070]" {
			t.Fatalf("err %v, steps %v; want local then n2", err, st.String())
		}
	})

	t.Run("outcome unknown is never routed again", func(t *testing.T) {
		rt := newRouter(&fakePeers{rep: &fakeReplica{leader: "n2"}})
		var st steps
		err := rt.route(ctx, routeReq[*fakeReplica]{rng: byKey, leader: true,
			remote: func(addr string, _ fsm.Range) error { st.add(addr); return errForwardFailed },
		})
		if !errors.Is(err, shard.ErrOutcomeUnknown) || st.String() != "[n2:7070]" {
			t.Fatalf("err %v, steps %v; want one attempt, outcome unknown", err, st.String())
		}
	})

	t.Run("range map lags a split: looked up again", func(t *testing.T) {
		rt := newRouter(&fakePeers{rep: &fakeReplica{leader: "n1"}})
		lookups := 0
		err := rt.route(ctx, routeReq[*fakeReplica]{
			rng: func() (fsm.Range, error) {
				if lookups++; lookups < 3 {
					return fsm.Range{}, errStaleRangeMap
				}
				return shard1, nil
			},
			leader: true,
			local:  func(*fakeReplica, fsm.Range) error { return nil },
		})
		if err != nil || lookups != 3 {
			t.Fatalf("err %v after %d lookups; want success on the third", err, lookups)
		}
	})

	t.Run("unreachable leader, new one elected", func(t *testing.T) {
		rep := &fakeReplica{leader: "n2"}
		p := &fakePeers{rep: rep, down: map[string]bool{}}
		rt := newRouter(p)
		var st steps
		err := rt.route(ctx, routeReq[*fakeReplica]{rng: byKey, leader: true,
			remote: func(addr string, _ fsm.Range) error {
				if st.add(addr) == 1 {
					p.down[addr] = true // the dial failed: marked down
					go func() { time.Sleep(20 * time.Millisecond); rep.set("n3") }()
					return errPeerUnreachable
				}
				return nil
			},
		})
		if err != nil || st.String() != "[n2:7070 n3:7070]" {
			t.Fatalf("err %v, steps %v; want n2 then the newly elected n3", err, st.String())
		}
	})

	t.Run("fallback asks the other members at once", func(t *testing.T) {
		p := &fakePeers{alive: map[string]bool{"n2": true, "n3": true, "n4": false}}
		rt := newRouter(p)
		rng := fsm.Range{ID: 2, Replicas: []string{"n4", "n2", "n3"}} // no replica here
		var st steps
		err := rt.route(ctx, routeReq[*fakeReplica]{rng: func() (fsm.Range, error) { return rng, nil }, leader: true, fallback: true,
			remote: func(addr string, _ fsm.Range) error {
				if st.add(addr) == 1 {
					return errRemoteUnavailable // refused before doing anything
				}
				return nil
			},
		})
		// Alive members first (n2, n3), the suspect n4 last.
		if err != nil || st.String() != "[n2:7070 n3:7070]" {
			t.Fatalf("err %v, steps %v; want n2 then n3", err, st.String())
		}
	})

	t.Run("gives up at RouteWait with the last error", func(t *testing.T) {
		rt := newRouter(&fakePeers{rep: &fakeReplica{leader: "n1"}})
		attempts := 0
		start := time.Now()
		err := rt.route(ctx, routeReq[*fakeReplica]{rng: byKey, leader: true,
			local: func(*fakeReplica, fsm.Range) error {
				attempts++
				return &fsm.WrongShardError{Key: []byte("k")}
			},
		})
		var ws *fsm.WrongShardError
		if !errors.As(err, &ws) || time.Since(start) > 5*time.Second || attempts < 2 {
			t.Fatalf("err %v after %d attempts in %v; want wrong shard after several", err, attempts, time.Since(start))
		}
	})

	t.Run("a definite answer is not routed again", func(t *testing.T) {
		rt := newRouter(&fakePeers{rep: &fakeReplica{leader: "n1"}})
		attempts := 0
		err := rt.route(ctx, routeReq[*fakeReplica]{rng: byKey, leader: true,
			local: func(*fakeReplica, fsm.Range) error { attempts++; return &fsm.ConditionError{Key: []byte("k")} },
		})
		if attempts != 1 || err == nil {
			t.Fatalf("err %v after %d attempts; want one", err, attempts)
		}
	})

	t.Run("replica reads prefer this node, else a live member", func(t *testing.T) {
		rt := newRouter(&fakePeers{rep: &fakeReplica{leader: "n2"}})
		var st steps
		q := routeReq[*fakeReplica]{rng: byKey,
			local:  func(*fakeReplica, fsm.Range) error { st.add("local"); return nil },
			remote: func(addr string, _ fsm.Range) error { st.add(addr); return nil },
		}
		if err := rt.route(ctx, q); err != nil || st.String() != "[local]" {
			t.Fatalf("err %v, steps %v; want local", err, st.String())
		}
		rt = newRouter(&fakePeers{down: map[string]bool{"n2:7070": true}})
		st = steps{}
		if err := rt.route(ctx, q); err != nil || st.String() != "[n3:7070]" {
			t.Fatalf("err %v, steps %v; want n3 (n2's dial failed a moment ago)", err, st.String())
		}
		rt = newRouter(&fakePeers{down: map[string]bool{"n2:7070": true, "n3:7070": true}})
		if err := rt.route(ctx, q); !errors.Is(err, errNoRoute) {
			t.Fatalf("err %v; want no route when every member is down", err)
		}
	})

	t.Run("replica reads try the next member when one did nothing", func(t *testing.T) {
		rt := newRouter(&fakePeers{})
		var st steps
		err := rt.route(ctx, routeReq[*fakeReplica]{rng: byKey,
			remote: func(addr string, _ fsm.Range) error {
				if st.add(addr) == 1 {
					return errRemoteUnavailable // n2 has no state yet
				}
				return nil
			},
		})
		if err != nil || st.String() != "[n2:7070 n3:7070]" {
			t.Fatalf("err %v, steps %v; want n2 then n3 at once", err, st.String())
		}
	})
}
