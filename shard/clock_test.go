package shard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/clock"
)

func TestHostConfigValidate(t *testing.T) {
	mux := mustMux(t, nil, 0)
	good := DefaultHostConfig()
	good.NodeID, good.DataDir, good.Mux, good.Logs = "n1", t.TempDir(), mux, OpenBoltLogs(BoltConfig{})
	if err := good.Validate(); err != nil {
		t.Fatalf("a default config with identity: %v", err)
	}
	bad := map[string]func(c *HostConfig){
		"no node id":        func(c *HostConfig) { c.NodeID = "" },
		"no data dir":       func(c *HostConfig) { c.DataDir = "" },
		"no mux":            func(c *HostConfig) { c.Mux = nil },
		"no log store":      func(c *HostConfig) { c.Logs = nil },
		"zero tuning":       func(c *HostConfig) { c.Tuning = RaftTuning{} },
		"negative timeout":  func(c *HostConfig) { c.ApplyTimeout = -time.Second },
		"lease above beats": func(c *HostConfig) { c.Tuning.LeaderLeaseTimeout = 2 * c.Tuning.HeartbeatTimeout },
	}
	for name, mutate := range bad {
		t.Run(name, func(t *testing.T) {
			c := good
			mutate(&c)
			if err := c.Validate(); err == nil {
				t.Fatal("Validate accepted it")
			}
			if _, err := NewHost(c); err == nil {
				t.Fatal("NewHost accepted it")
			}
		})
	}
}

// The stale-read decision reads the host's clock only (docs/api.md
// consistency=stale): with the clock stopped, a follower that has heard
// nothing from any leader for longer than max_staleness of wall time still
// sees its data as fresh, because by its clock no time has passed; moving
// the clock on makes the same read too stale.
func TestStaleReadDecidedByClock(t *testing.T) {
	fake := clock.NewFake(time.Now())
	const n = 3
	var hosts []*Host
	var servers []raft.Server
	for i := 0; i < n; i++ {
		m := mustMux(t, nil, 0)
		h, err := NewHost(HostConfig{NodeID: fmt.Sprintf("n%d", i+1), DataDir: t.TempDir(), Mux: m,
			Tuning: FastRaftTuning(), Logs: OpenBoltLogs(BoltConfig{}), Logger: slog.New(slog.DiscardHandler), Clock: fake})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		hosts = append(hosts, h)
		servers = append(servers, raft.Server{ID: raft.ServerID(fmt.Sprintf("n%d", i+1)), Address: raft.ServerAddress(m.Addr())})
	}
	var reps []*Replica
	for _, h := range hosts {
		r, err := h.OpenReplica(fsm.Range{ID: 1, Epoch: 1}, servers)
		if err != nil {
			t.Fatal(err)
		}
		reps = append(reps, r)
	}
	var leader int
	readWaitFor(t, 10*time.Second, "a leader", func() error {
		if leader = leaderIndex(reps); leader < 0 {
			return errors.New("none")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := reps[leader].Propose(ctx, &fsm.Command{Op: fsm.OpPut, Key: []byte("k"), Value: []byte("v")}); err != nil {
		t.Fatal(err)
	}
	f := (leader + 1) % n
	const bound = 500 * time.Millisecond
	readWaitFor(t, 10*time.Second, "a fresh stale read on the follower", func() error {
		_, err := reps[f].StaleRead(bound)
		return err
	})
	// Cut the follower off from every leader: stop the other two nodes.
	for i, h := range hosts {
		if i != f {
			_ = h.Close()
		}
	}
	readWaitFor(t, 10*time.Second, "wall time past the bound since the last contact", func() error {
		if since := time.Since(reps[f].Raft().LastContact()); since <= 2*bound {
			return fmt.Errorf("last contact %v ago", since)
		}
		return nil
	})
	if _, err := reps[f].StaleRead(bound); err != nil {
		t.Fatalf("with the clock stopped, the stale read was refused: %v", err)
	}
	fake.Advance(2 * bound)
	if _, err := reps[f].StaleRead(bound); !errors.Is(err, ErrTooStale) {
		t.Fatalf("with the clock moved past the bound: %v, want ErrTooStale", err)
	}
}
