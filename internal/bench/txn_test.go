package bench

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// memTxns records the key pairs of the transactions it serves.
type memTxns struct {
	*memTarget
	mu    sync.Mutex
	pairs [][2]int
}

type memTxnConn struct {
	memConn
	m *memTxns
}

func (m *memTxns) Conn(int) (Conn, error) { return memTxnConn{memConn{m.memTarget}, m}, nil }

func (c memTxnConn) Txn(_ context.Context, keys, values []string) error {
	var p [2]int
	for i, k := range keys {
		n, err := strconv.Atoi(strings.TrimPrefix(k, "bench/"))
		if err != nil {
			return err
		}
		p[i] = n
	}
	c.m.mu.Lock()
	c.m.pairs = append(c.m.pairs, p)
	c.m.mu.Unlock()
	return nil
}

func TestTxnWorkloadKeys(t *testing.T) {
	for _, cross := range []bool{false, true} {
		m := &memTxns{memTarget: newMemTarget(0)}
		cfg := DefaultConfig()
		cfg.Workload, cfg.Clients, cfg.Count, cfg.Keys, cfg.CrossShard, cfg.Seed = WorkloadTxn, 4, 300, 1000, cross, 3
		res, err := Run(context.Background(), cfg, m)
		if err != nil {
			t.Fatal(err)
		}
		if res.Ops != 300 || res.ByOp["txn"].Ops != 300 || len(m.pairs) != 300 || res.CrossShard != cross {
			t.Fatalf("cross=%v: ops %d, by op %v, %d transactions seen, report cross_shard %v", cross, res.Ops, res.ByOp, len(m.pairs), res.CrossShard)
		}
		for _, p := range m.pairs {
			if cross && !(p[0] < 500 && p[1] >= 500) {
				t.Fatalf("cross-shard transaction on keys %v: want one from each half of 1000", p)
			}
			if !cross && !(p[0]%2 == 0 && p[1] == p[0]+1) {
				t.Fatalf("one-shard transaction on keys %v: want neighbours 2m, 2m+1", p)
			}
		}
	}
	cfg := DefaultConfig()
	cfg.Workload, cfg.Clients, cfg.Count = WorkloadTxn, 1, 1
	if _, err := Run(context.Background(), cfg, newMemTarget(0)); err == nil || !strings.Contains(err.Error(), "no transactions") {
		t.Fatalf("err = %v; want a target without transactions refused", err)
	}
}
