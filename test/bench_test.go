package test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/shard"
)

// benchCluster starts a 3-node cluster with production raft timeouts.
func benchCluster(b *testing.B, splits []string) (*Cluster, *client.Client) {
	b.Helper()
	c := StartCluster(b, ClusterConfig{Tuning: shard.DefaultRaftTuning(), InitialSplits: splits})
	cl, err := client.New(client.Config{Endpoints: c.HTTPAddrs()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cl.Close() })
	return c, cl
}

// runClients runs b.N operations spread over `clients` goroutines, each
// talking to node i mod 3 (so two thirds of requests are forwarded, as with
// clients that do not know the leader), and reports operations per second.
func runClients(b *testing.B, c *Cluster, clients int, op func(ctx context.Context, cl *client.Client, i int) error) {
	b.Helper()
	addrs := c.HTTPAddrs()
	cls := make([]*client.Client, clients)
	for i := range cls {
		cl, err := client.New(client.Config{Endpoints: []string{addrs[i%len(addrs)]}})
		if err != nil {
			b.Fatal(err)
		}
		defer cl.Close()
		cls[i] = cl
	}
	var next, errs atomic.Int64
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	done := make(chan struct{})
	for w := 0; w < clients; w++ {
		go func(w int) {
			defer func() { done <- struct{}{} }()
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					return
				}
				if err := op(ctx, cls[w], int(i)); err != nil {
					errs.Add(1)
				}
			}
		}(w)
	}
	for w := 0; w < clients; w++ {
		<-done
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	if e := errs.Load(); e > 0 {
		b.Fatalf("%d of %d operations failed", e, b.N)
	}
}

// BenchmarkClusterPut: single-shard puts of 100-byte values, 64 clients.
//
//	go test -run '^$' -bench ClusterPut -benchtime 20000x ./test/
func BenchmarkClusterPut(b *testing.B) {
	c, _ := benchCluster(b, nil)
	value := strings.Repeat("v", 100)
	runClients(b, c, 64, func(ctx context.Context, cl *client.Client, i int) error {
		_, err := cl.Put(ctx, fmt.Sprintf("bench/%06d", i%100000), value)
		return err
	})
}

// BenchmarkClusterGet: linearizable single-shard gets, 64 clients.
func BenchmarkClusterGet(b *testing.B) {
	c, cl := benchCluster(b, nil)
	value := strings.Repeat("v", 100)
	for i := 0; i < 1000; i++ {
		if _, err := cl.Put(context.Background(), fmt.Sprintf("bench/%06d", i), value); err != nil {
			b.Fatal(err)
		}
	}
	runClients(b, c, 64, func(ctx context.Context, cl *client.Client, i int) error {
		_, err := cl.Get(ctx, fmt.Sprintf("bench/%06d", i%1000))
		return err
	})
}

// BenchmarkClusterPutFourShards: the same puts over four shards, to show
// what sharding buys on one machine.
func BenchmarkClusterPutFourShards(b *testing.B) {
	c, _ := benchCluster(b, []string{"bench/025000", "bench/050000", "bench/075000"})
	value := strings.Repeat("v", 100)
	runClients(b, c, 64, func(ctx context.Context, cl *client.Client, i int) error {
		_, err := cl.Put(ctx, fmt.Sprintf("bench/%06d", (i*7919)%100000), value)
		return err
	})
}

// BenchmarkClusterLock: uncontended lock pairs (acquire, release) on names
// of each client's own, 64 clients, one shard: the path of `cairn bench
// lock`. Besides ops/s it reports the process's CPU time (every node and
// the clients, all in this process) per pair, which a busy machine skews
// less than throughput.
//
//	go test -run '^$' -bench ClusterLock -benchtime 20000x -benchmem ./test/
func BenchmarkClusterLock(b *testing.B) {
	c, _ := benchCluster(b, nil)
	b.ReportAllocs()
	var ru0, ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	runClients(b, c, 64, func(ctx context.Context, cl *client.Client, i int) error {
		name := fmt.Sprintf("bench/lock/%06d", i%100000)
		g, err := cl.AcquireLock(ctx, name, client.LockOptions{TTL: 15 * time.Second, Owner: "bench"})
		if err != nil {
			return err
		}
		return cl.ReleaseLock(ctx, name, g.Token)
	})
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano() - ru0.Utime.Nano() + ru1.Stime.Nano() - ru0.Stime.Nano())
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
}
