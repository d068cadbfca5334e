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
