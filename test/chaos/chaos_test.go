package chaos

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.uber.org/goleak"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/test"
)

// Environment of the suite.
const (
	envEnable   = "CAIRN_CHAOS_DOCKER"   // "1" runs the suite against the compose cluster
	envDuration = "CAIRN_CHAOS_DURATION" // length of the fault phase, default 10m
	envNodes    = "CAIRN_CHAOS_NODES"    // node ids, default n1,n2,n3
	envNetwork  = "CAIRN_CHAOS_NETWORK"  // compose network, default cairn-net
	envSeed     = "CAIRN_SEED"
)

// canaryPrefix puts the canary keys on the first shard; the -leader faults
// strike that shard's leader.
const canaryPrefix = "canary/"

// Scenarios S1, S3, S5, S15, S22 and S25 against real processes and a real
// network: while the nemesis kills, pauses, cuts off and restarts node
// containers (one fault after another, with random combinations), a
// register/CAS workload, a set workload, fenced lock workloads and a canary
// writer run from the host. Porcupine must find every register and canary
// history linearizable (Invariants I1, I2), every acknowledged set add must
// survive and nothing unacknowledged may appear, every fenced counter must
// hold exactly the increments applied with none lost and tokens must rise in
// grant order (I9, I11), the cluster must recover after every fault and
// the replicas must converge. The median time from a leader's death to the
// next successful write is reported against the 2 s goal.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent(),
		// TestLockWorkloadInProcess runs nodes in this process: memberlist's
		// Shutdown does not wait for a probe in flight, which ends on its
		// own at the probe timeout.
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

func TestChaos(t *testing.T) {
	if os.Getenv(envEnable) != "1" {
		t.Skip("chaos suite skipped: it runs against the docker-compose cluster; use `make test-chaos`, " +
			"or `make cluster-up` and " + envEnable + "=1")
	}
	duration := envDurationOr(t, envDuration, 10*time.Minute)
	seed := chaosSeed(t)
	d := Docker{}
	ctx, cancel := context.WithTimeout(context.Background(), duration+10*time.Minute)
	defer cancel()
	if err := d.Available(ctx); err != nil {
		t.Fatalf("%s=1 but docker does not answer: %v", envEnable, err)
	}
	c, err := Discover(ctx, d, envOr(envNetwork, "cairn-net"), strings.Split(envOr(envNodes, "n1,n2,n3"), ","))
	if err != nil {
		t.Fatalf("compose cluster not found (make cluster-up starts it): %v", err)
	}
	t.Cleanup(c.Close)
	t.Cleanup(func() {
		// Whatever happened, leave every node running and connected.
		if err := HealAll(context.Background(), d, c); err != nil {
			t.Logf("healing after the run: %v", err)
		}
	})
	if _, err := c.WaitHealthy(ctx, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	v, err := c.View(ctx, c.Nodes[0])
	if err != nil {
		t.Fatal(err)
	}
	probe, _ := ShardOf(v, canaryPrefix)
	var prefixes []string // one key prefix per shard, so every workload spans every shard
	for _, s := range v.Shards {
		p := fmt.Sprintf("%sx-%d/", cmp.Or(s.Start, "a"), seed)
		if id, _ := ShardOf(v, p); id != s.ID {
			t.Fatalf("key prefix %q falls on shard %d, not %d (%q..%q)", p, id, s.ID, s.Start, s.End)
		}
		prefixes = append(prefixes, p)
	}
	t.Logf("chaos: seed %d, %v of faults, nodes %v, %d shards, canary on shard %d", seed, duration, c.Endpoints(0), len(v.Shards), probe)

	r := &Report{Seed: seed, Duration: duration}
	bank := startBank(ctx, t, c, seed, prefixes, r)
	until := time.Now().Add(duration)
	canary := newCanary(t, c, seed, duration)
	set := newSetWorkload(t, c, prefixes)
	canary.Explain, set.Explain = c.ReplicaReads, c.ReplicaReads
	locks := newLockWorkloads(t, c, seed, prefixes)
	nem := &Nemesis{C: c, D: d, Seed: seed, ProbeShard: probe, OnLeaderFault: canary.Mark, Logf: t.Logf}
	var wg sync.WaitGroup
	wg.Go(func() { canary.Run(ctx, until) })
	wg.Go(func() { set.Run(ctx, until) })
	for _, lw := range locks {
		wg.Go(func() { lw.Run(ctx, until) })
	}
	if bank != nil {
		wg.Go(func() { bank.Run(ctx, until) })
	}
	wg.Go(func() { nem.Run(ctx, until) })
	rounds := runRegisterRounds(ctx, t, c, seed, prefixes, until)
	wg.Wait()
	r.Faults = nem.Faults()

	check(ctx, t, c, d, r, rounds, canary, set, locks, bank)
	var sb strings.Builder
	r.Print(&sb)
	fmt.Print(sb.String())
	if dir := artifactsDir(t); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, "summary.txt"), []byte(sb.String()), 0o644)
	}
	if an := r.Anomalies(); len(an) > 0 {
		saveLogs(t, d, c)
		t.Fatalf("%d anomalies (seed %d): %s", len(an), seed, strings.Join(an, "; "))
	}
}

// newCanary returns the canary writer: a write every 50ms to the probe shard,
// through clients that do not retry, so a write's end is when it worked.
func newCanary(t *testing.T, c *Cluster, seed uint64, duration time.Duration) *Canary {
	canary := &Canary{
		Prefix:         fmt.Sprintf("%s%d/", canaryPrefix, seed),
		Every:          50 * time.Millisecond,
		AttemptTimeout: 3 * time.Second,
		MaxInFlight:    100,
		MaxOps:         int64(duration / (50 * time.Millisecond)),
	}
	for i := range c.Nodes {
		canary.Clients = append(canary.Clients, newClient(t, c, i, fmt.Sprintf("canary%d", i), -1, 2*time.Second))
	}
	return canary
}

// newSetWorkload returns the set workload: two clients adding elements on
// every shard.
func newSetWorkload(t *testing.T, c *Cluster, prefixes []string) *SetWorkload {
	set := &SetWorkload{OpTimeout: 6 * time.Second, Gap: 20 * time.Millisecond, MaxOps: 200000}
	for _, p := range prefixes {
		set.Prefixes = append(set.Prefixes, p+"set/")
	}
	for i := range 2 {
		set.Clients = append(set.Clients, newClient(t, c, i, fmt.Sprintf("set%d", i), 8, 2500*time.Millisecond))
	}
	return set
}

// newLockWorkloads returns the fenced lock workloads (S15): two locks, each
// on its own shard with its counter on the next, three clients each starting
// at a different node. One iteration in twenty pauses between its fenced read
// and its fenced write for longer than the lease.
func newLockWorkloads(t *testing.T, c *Cluster, seed uint64, prefixes []string) []*LockWorkload {
	const ttl = 3 * time.Second
	var out []*LockWorkload
	for l := range 2 {
		w := &LockWorkload{
			Lock:       prefixes[(2*l)%len(prefixes)] + "lock",
			Counter:    prefixes[(2*l+1)%len(prefixes)] + "lock-counter",
			TTL:        ttl,
			Wait:       1500 * time.Millisecond,
			OpTimeout:  8 * time.Second,
			PauseOneIn: 20,
			Pause:      ttl + time.Second,
			Gap:        20 * time.Millisecond,
			MaxOps:     100000,
			Seed:       seed + uint64(l),
		}
		for i := range 3 {
			name := fmt.Sprintf("lock%d-c%d", l, i)
			// The answer to a waiting acquire comes after up to Wait: the
			// header timeout must outlast it, or the client would leave
			// every queue it joins.
			w.Clients = append(w.Clients, newClient(t, c, i, name, 8, w.Wait+2500*time.Millisecond))
			w.Names = append(w.Names, name)
		}
		out = append(out, w)
	}
	return out
}

// startBank returns the bank workload (S13, I8): eight accounts, two on
// each shard, four clients, one operation in four a whole-bank read. It runs
// only when the cluster serves a transaction over every shard; otherwise it
// returns nil and r says why (before transactions land, the suite stays
// green without it).
func startBank(ctx context.Context, t *testing.T, c *Cluster, seed uint64, prefixes []string, r *Report) *BankWorkload {
	b := &BankWorkload{Initial: 100, OpTimeout: 6 * time.Second, Gap: 20 * time.Millisecond, MaxOps: 100000,
		Seed: seed, ReadOneIn: 4, Shards: len(prefixes)}
	for i := range 2 * len(prefixes) {
		b.Accounts = append(b.Accounts, fmt.Sprintf("%sbank/acct-%d", prefixes[i%len(prefixes)], i))
	}
	for i := range 4 {
		b.Clients = append(b.Clients, newClient(t, c, i, fmt.Sprintf("bank%d", i), 8, 2500*time.Millisecond))
	}
	if why := b.Probe(ctx, b.Clients[0]); why != "" {
		t.Logf("bank workload skipped: %s", why)
		r.Bank = &BankResult{Skipped: why}
		return nil
	}
	if err := b.Setup(ctx, b.Clients[0]); err != nil {
		t.Fatalf("bank workload: %v", err)
	}
	t.Logf("bank workload: %d accounts of %d over %d shards", len(b.Accounts), b.Initial, len(prefixes))
	return b
}

// check heals the cluster, lets it settle and fills r with what the
// workloads and the cluster show.
func check(ctx context.Context, t *testing.T, c *Cluster, d Docker, r *Report, rounds []round, canary *Canary, set *SetWorkload, locks []*LockWorkload, bank *BankWorkload) {
	start := time.Now()
	step := func(what string) { t.Logf("check [%6.1fs]: %s", time.Since(start).Seconds(), what) }
	step("healing every fault")
	if err := HealAll(ctx, d, c); err != nil {
		r.FinalHealth = err.Error()
	}
	step("waiting for every node to be healthy")
	if _, err := c.WaitHealthy(ctx, 2*time.Minute); err != nil {
		r.FinalHealth = err.Error()
	}
	step("waiting for replicas to converge")
	r.Convergence = waitConverged(ctx, c, time.Minute)
	reader := newClient(t, c, 0, "reader", 8, 5*time.Second)
	step("reading back the set")
	if res, err := set.Check(ctx, reader); err != nil {
		r.SetErr = err.Error()
	} else {
		r.Set = res
	}
	step("reading back the canary")
	if res, err := canary.Check(ctx, reader); err != nil {
		r.CanaryErr = err.Error()
	} else {
		r.Canary = res
	}
	r.CanarySkipped = canary.Skipped()
	r.CanaryErrors, r.SetErrors = canary.Errors(), set.Errors()
	r.Failovers = canary.Failovers()
	for _, lw := range locks {
		step("reading back lock " + lw.Lock + "'s counter")
		res, err := lw.Check(ctx, reader)
		if err != nil {
			r.LockErrs = append(r.LockErrs, fmt.Sprintf("lock %s: %v", lw.Lock, err))
			continue
		}
		r.Locks = append(r.Locks, res)
		r.LockErrors = append(r.LockErrors, lw.Errors())
	}
	if bank != nil {
		step("reading back the bank")
		r.Bank, r.BankErrors = bank.Check(ctx, reader), bank.Errors()
	}
	step("checking register histories")
	for _, rd := range rounds {
		r.RegisterRounds++
		r.Register = addStats(r.Register, rd.rec.Stats())
		switch rd.rec.Check(t, 60*time.Second) {
		case porcupine.Illegal:
			r.NonLinearRound = append(r.NonLinearRound, rd.prefix)
		case porcupine.Unknown:
			r.Inconclusive = append(r.Inconclusive, rd.prefix)
		}
	}
}

// round is one register workload round: its own keys, its own history.
type round struct {
	prefix string
	rec    *test.Recorder
}

// runRegisterRounds runs the register/CAS workload in rounds of at most a
// minute until until, each on fresh keys of the next shard, so every history
// stays small enough for porcupine to decide.
func runRegisterRounds(ctx context.Context, t *testing.T, c *Cluster, seed uint64, prefixes []string, until time.Time) []round {
	const clients = 6
	var cls []*client.Client
	for i := range clients {
		cls = append(cls, newClient(t, c, i, fmt.Sprintf("reg%d", i), 8, 2500*time.Millisecond))
	}
	var rounds []round
	for n := 0; ctx.Err() == nil; n++ {
		left := time.Until(until)
		if left < 5*time.Second {
			break
		}
		cfg := test.DefaultWorkloadConfig()
		cfg.Seed = int64(seed) + int64(n)
		cfg.Clients = clients
		cfg.Keys = 6
		cfg.KeyPrefix = fmt.Sprintf("%sreg-r%d/", prefixes[n%len(prefixes)], n)
		cfg.Duration = min(left, time.Minute)
		cfg.Ops = 50000
		cfg.OpTimeout = 6 * time.Second
		cfg.Stores = func(i int) test.KVStore { return test.ClientStore{C: cls[i]} }
		cfg.Classify = test.ClassifyClientError
		rounds = append(rounds, round{prefix: cfg.KeyPrefix, rec: test.RunRegisterWorkload(ctx, t, cfg)})
	}
	return rounds
}

// newClient returns a client that starts at node i and fails over to the
// others. An attempt that gets no answer within headerTimeout ends as a
// connection failure, so the client moves to the next node instead of
// waiting on a paused one until the operation's deadline.
func newClient(t *testing.T, c *Cluster, i int, id string, retries int, headerTimeout time.Duration) *client.Client {
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: time.Second}).DialContext,
		ResponseHeaderTimeout: headerTimeout,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       30 * time.Second,
	}
	cl, err := client.New(client.Config{
		Endpoints:  c.Endpoints(i % len(c.Nodes)),
		HTTPClient: &http.Client{Transport: tr},
		MaxRetries: retries,
		BackoffMin: 20 * time.Millisecond,
		BackoffMax: 300 * time.Millisecond,
		ClientID:   id,
		// Nodes advertise container names (n1:7070) the host cannot dial,
		// and each client here talks to the endpoint it was given on
		// purpose: no leader routing.
		DisableRouting: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return cl
}

func waitConverged(ctx context.Context, c *Cluster, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		err := c.Converged(ctx)
		if err == nil {
			return ""
		}
		if time.Now().After(deadline) {
			return err.Error()
		}
		sleepCtx(ctx, 500*time.Millisecond)
	}
}

func addStats(a, b test.RecorderStats) test.RecorderStats {
	a.Calls += b.Calls
	a.OK += b.OK
	a.Failed += b.Failed
	a.Indeterminate += b.Indeterminate
	a.DroppedReads += b.DroppedReads
	a.Pending += b.Pending
	return a
}

func saveLogs(t *testing.T, d Docker, c *Cluster) {
	dir := artifactsDir(t)
	if dir == "" {
		return
	}
	for _, n := range c.Nodes {
		out, _ := d.Logs(context.Background(), n.Container, 20000)
		_ = os.WriteFile(filepath.Join(dir, n.Container+".log"), []byte(out), 0o644)
	}
	t.Logf("node logs saved in %s", dir)
}

var (
	artifactsOnce sync.Once
	artifacts     string
)

// artifactsDir is $CAIRN_TEST_ARTIFACTS, or a fresh directory that outlives
// the test.
func artifactsDir(t *testing.T) string {
	artifactsOnce.Do(func() {
		artifacts = os.Getenv(test.ArtifactsEnv)
		if artifacts == "" {
			var err error
			if artifacts, err = os.MkdirTemp("", "cairn-chaos-"); err != nil {
				t.Logf("artifacts: %v", err)
				artifacts = ""
			}
		} else if err := os.MkdirAll(artifacts, 0o755); err != nil {
			t.Logf("artifacts: %v", err)
			artifacts = ""
		}
	})
	return artifacts
}

func chaosSeed(t *testing.T) uint64 {
	if s := os.Getenv(envSeed); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", envSeed, err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

func envOr(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}

func envDurationOr(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 10m", name, v)
	}
	return d
}
