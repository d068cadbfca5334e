package fsm

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
)

// benchLogs returns n 100-byte puts over a spread of keys.
func benchLogs(b *testing.B, n int) []*raft.Log {
	value := bytes.Repeat([]byte("v"), 100)
	logs := make([]*raft.Log, n)
	for i := range logs {
		logs[i] = cmdLog(b, uint64(i+1), &Command{Op: OpPut, Key: fmt.Appendf(nil, "key-%06d", i%10000), Value: value})
	}
	return logs
}

// BenchmarkApply: one entry per bbolt transaction (one fsync per entry).
func BenchmarkApply(b *testing.B) {
	f := newFSM(b)
	logs := benchLogs(b, b.N)
	b.ResetTimer()
	for i := range b.N {
		f.Apply(logs[i])
	}
}

// BenchmarkApplyBatch: 64 entries per transaction, as raft hands them over
// under load. ns/op is per entry, comparable with BenchmarkApply.
func BenchmarkApplyBatch(b *testing.B) {
	const batch = 64
	f := newFSM(b)
	logs := benchLogs(b, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i += batch {
		f.ApplyBatch(logs[i:min(i+batch, b.N)])
	}
}

// BenchmarkApplyBatchDedup: 64 puts per transaction, each with a request id,
// from 64 clients over 100,000 keys (the shape of "cairn bench put"). The
// sub-benchmarks differ only in the shape of the ids: "counter" is
// "<client>-<n>", one insertion point per client in the dedup tree;
// "time-prefixed" is what client.NewRequestID makes, ids that sort by time.
// ns/op is per entry.
func BenchmarkApplyBatchDedup(b *testing.B) {
	const batch, clients = 64, 64
	value := bytes.Repeat([]byte("v"), 256)
	shapes := []struct {
		name string
		id   func(i int) string
	}{
		{"counter", func(i int) string { return fmt.Sprintf("bench%d.%08x-%d", i%clients, i%clients*7919, i/clients) }},
		{"time-prefixed", func(i int) string {
			return fmt.Sprintf("%012x.bench%d.%08x-%d", 1_700_000_000_000_000+i*15, i%clients, i%clients*7919, i/clients)
		}},
	}
	for _, shape := range shapes {
		b.Run(shape.name, func(b *testing.B) {
			f := newFSM(b)
			logs := make([]*raft.Log, b.N)
			for i := range logs {
				key := fmt.Appendf(nil, "bench/%08d", (i*7919)%100000)
				logs[i] = cmdLog(b, uint64(i+1), &Command{Op: OpPut, Key: key, Value: value,
					RequestID: shape.id(i), Time: int64(1_700_000_000_000_000_000 + i*15_000)})
			}
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				f.ApplyBatch(logs[i:min(i+batch, b.N)])
			}
		})
	}
}

// BenchmarkGet: point reads of present keys, the hot read path (each one a
// read transaction that also checks the key against the stored range).
func BenchmarkGet(b *testing.B) {
	f := newFSM(b)
	logs := benchLogs(b, 1000)
	f.ApplyBatch(logs)
	b.ResetTimer()
	for i := range b.N {
		if kv, err := f.Get(fmt.Appendf(nil, "key-%06d", i%1000)); err != nil || kv == nil {
			b.Fatalf("Get: %v %v", kv, err)
		}
	}
}
