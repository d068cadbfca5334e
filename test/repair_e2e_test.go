package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/cairndb/cairn/api"
	"github.com/cairndb/cairn/internal/syncbuf"
)

// startRepairProc starts p as `cairn server` with a split at m and a short
// --dead-after (issue 10 item 6's layout).
func startRepairProc(t *testing.T, bin string, p *proc, join string) {
	t.Helper()
	args := []string{"server", "--id", p.id, "--data-dir", p.dataDir, "--http-addr", p.http,
		"--raft-addr", p.raft, "--gossip-addr", p.gossip, "--bootstrap-expect", "3",
		"--initial-splits", "m", "--dead-after", "2s", "--raft-heartbeat", "500ms", "--log-level", "info"}
	if join != "" {
		args = append(args, "--join", join)
	}
	p.log = &syncbuf.Buffer{}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = os.Environ()
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.id, err)
	}
}

// clusterView is GET /v1/cluster through addr.
func clusterView(ctx context.Context, addr string) (api.ClusterView, error) {
	var v api.ClusterView
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := Do(ctx, "GET", addr, "/v1/cluster", nil)
	if err != nil {
		return v, err
	}
	if res.Status != 200 {
		return v, fmt.Errorf("GET /v1/cluster: %v", res)
	}
	return v, res.JSON(&v)
}

// Issue 10 item 6, end to end with real processes: three `cairn server`
// processes, a few keys, a split at m; a fourth node joins and the balancer
// moves a replica to it; then a replica holder of the moved range (not the
// placement leader) is SIGKILLed for good. After --dead-after every range is
// back to three live replicas, GET /v1/cluster shows every shard's leader,
// and every key reads back.
func TestEndToEndRepairOfMovedRange(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := cairnBinary(t)
	procs := newProcs(t, 4)
	for i, p := range procs[:3] {
		join := ""
		if i > 0 {
			join = procs[0].gossip
		}
		startRepairProc(t, bin, p, join)
	}
	ctx := Context(t, 3*time.Minute)
	for _, p := range procs[:3] {
		waitReadyz(t, ctx, p.http)
	}
	keys := []string{"apple", "kiwi", "lemon", "mango", "peach", "zucchini"}
	for _, k := range keys {
		expectStatus(t, ctx, "PUT", procs[0].http, KVPath(k), fmt.Sprintf(`{"value":%q}`, k), 200)
	}
	startRepairProc(t, bin, procs[3], procs[0].gossip)
	waitReadyz(t, ctx, procs[3].http)

	// The balancer moves a replica to n4; wait for a settled layout.
	var moved api.ShardView
	var leader string
	stable := 0
	WaitFor(t, 90*time.Second, "a range moved to n4, layout settled", func() error {
		v, err := clusterView(ctx, procs[0].http)
		if err != nil {
			return err
		}
		count := map[string]int{}
		found := false
		for _, s := range v.Shards {
			if len(s.Replicas) != 3 || s.Leader == "" {
				stable = 0
				return fmt.Errorf("shard %d replicas %v leader %q", s.ID, s.Replicas, s.Leader)
			}
			for _, id := range s.Replicas {
				count[id]++
			}
			if slices.Contains(s.Replicas, "n4") && !found {
				moved, found = s, true
			}
		}
		if !found {
			stable = 0
			return fmt.Errorf("no shard on n4 yet")
		}
		if stable++; stable < 10 { // about a second without a change
			return fmt.Errorf("layout %v not settled yet", count)
		}
		leader = v.PlacementLeader
		return nil
	})
	reps := append([]string(nil), moved.Replicas...)
	sort.Strings(reps)
	victim := ""
	for _, id := range reps {
		if id != leader {
			victim = id
			break
		}
	}
	t.Logf("shard %d replicas %v, placement leader %s (the issue's layout: %v); killing %s",
		moved.ID, reps, leader, !slices.Contains(reps, leader), victim)
	var live []*proc
	for _, p := range procs {
		if p.id == victim {
			p.kill()
		} else {
			live = append(live, p)
		}
	}
	WaitFor(t, 60*time.Second, "every shard repaired to three live replicas with a leader in the cluster view", func() error {
		for _, p := range live {
			v, err := clusterView(ctx, p.http)
			if err != nil {
				return err
			}
			for _, s := range v.Shards {
				if len(s.Replicas) != 3 || slices.Contains(s.Replicas, victim) {
					return fmt.Errorf("via %s: shard %d replicas %v", p.id, s.ID, s.Replicas)
				}
				if s.Leader == "" {
					return fmt.Errorf("via %s: shard %d has no leader in the cluster view", p.id, s.ID)
				}
			}
		}
		return nil
	})
	for _, k := range keys {
		for _, p := range live {
			res, err := Do(ctx, "GET", p.http, KVPath(k), nil)
			if err != nil || res.Status != 200 {
				t.Fatalf("Invariant I1: GET %s via %s after the repair: %v %v", k, p.id, res, err)
			}
		}
	}
}
