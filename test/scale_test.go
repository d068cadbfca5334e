package test

import (
	"fmt"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/cairndb/cairn/shard"
)

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkScaleShards measures a 3-node cluster (all three nodes in this
// process) holding N shards: time until every shard has a leader, idle CPU
// (all three nodes, as a fraction of one core), heap per shard replica, and
// time to elect every leader again after all three nodes restart.
//
//	go test -run '^$' -bench ScaleShards -benchtime 1x -timeout 30m ./test/
func BenchmarkScaleShards(b *testing.B) {
	for _, n := range []int{100, 500, 1000} {
		b.Run(fmt.Sprintf("shards=%d", n), func(b *testing.B) {
			splits := make([]string, n-1)
			for i := range splits {
				splits[i] = fmt.Sprintf("s%05d", i+1)
			}
			tuning := shard.DefaultRaftTuning()
			runtime.GC()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			c := StartCluster(b, ClusterConfig{Tuning: tuning, InitialSplits: splits, ReadyTimeout: 10 * time.Minute})
			formed := time.Since(start)

			time.Sleep(3 * time.Second) // settle
			runtime.GC()
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			cpu0, wall0 := cpuTime(), time.Now()
			time.Sleep(10 * time.Second)
			idle := float64(cpuTime()-cpu0) / float64(time.Since(wall0))

			for i := range c.Nodes() {
				c.Kill(i)
			}
			restart := time.Now()
			for i := range c.Nodes() {
				c.Restart(i)
			}
			c.WaitReady(10 * time.Minute)
			reelect := time.Since(restart)

			perShard := float64(after.HeapInuse-before.HeapInuse) / float64(3*n)
			b.ReportMetric(formed.Seconds(), "form-s")
			b.ReportMetric(idle*100, "idle-cpu-%")
			b.ReportMetric(perShard/1024, "heap-KiB/replica")
			b.ReportMetric(reelect.Seconds(), "reelect-s")
			b.ReportMetric(float64(runtime.NumGoroutine())/float64(3*n), "goroutines/replica")
		})
	}
}
