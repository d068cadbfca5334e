package bench

import (
	"context"
	"testing"

	"github.com/cairndb/cairn/client/clienttest"
)

func TestCairnTarget(t *testing.T) {
	f := clienttest.NewServer()
	defer f.Close()
	tgt, err := NewCairn(CairnConfig{Endpoints: []string{f.Addr()}, Consistency: "stale", DisableRouting: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	conn, _ := tgt.Conn(0)
	ctx := context.Background()
	if err := conn.Put(ctx, "bench/00000001", "v"); err != nil {
		t.Fatalf("put: %v", err)
	}
	if err := conn.Get(ctx, "bench/00000001"); err != nil {
		t.Fatalf("get: %v", err)
	}
	if err := conn.Get(ctx, "missing"); ErrorCode(err) != CodeNotFound {
		t.Errorf("get missing: %v, want not_found", err)
	}
	reqs := f.Requests()
	if len(reqs) != 3 || reqs[0].RequestID == "" || reqs[1].Query.Get("consistency") != "stale" {
		t.Errorf("requests %+v: want a put with a request id and stale gets", reqs)
	}
}

func TestCairnTargetNoRetry(t *testing.T) {
	f := clienttest.NewServer()
	defer f.Close()
	tgt, _ := NewCairn(CairnConfig{Endpoints: []string{f.Addr()}, DisableRouting: true})
	defer tgt.Close()
	conn, _ := tgt.Conn(0)
	f.InjectFaults(clienttest.FaultUnavailable)
	if err := conn.Put(context.Background(), "k", "v"); ErrorCode(err) != "unavailable" {
		t.Errorf("put: %v, want unavailable (no retry)", err)
	}
	if n := len(f.Requests()); n != 1 {
		t.Errorf("%d requests, want 1: a benchmark operation is one request", n)
	}
}

func TestCairnTargetRunAndDescribe(t *testing.T) {
	f := clienttest.NewServer()
	defer f.Close()
	tgt, _ := NewCairn(CairnConfig{Endpoints: []string{f.Addr()}, DisableRouting: true})
	defer tgt.Close()
	cfg := testConfig(WorkloadMixed)
	cfg.Count, cfg.Keys, cfg.Preload = 200, 50, true
	res, err := Run(context.Background(), cfg, tgt)
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 200 || res.Errors != 0 || res.Target != "cairn" {
		t.Errorf("ops %d errors %d %v target %s", res.Ops, res.Errors, res.ErrorsByCode, res.Target)
	}
	// The test server's /v1/cluster is one shard on one node, which leads
	// it: Describe reports it.
	if res.System["shards"] != "1" || res.System["nodes"] != "1" || res.System["leaders"] != "n1=1" {
		t.Errorf("system %v", res.System)
	}
}

func TestCairnTargetSpreadsConns(t *testing.T) {
	a, b := clienttest.NewServer(), clienttest.NewServer()
	defer a.Close()
	defer b.Close()
	tgt, _ := NewCairn(CairnConfig{Endpoints: []string{a.Addr(), b.Addr()}, DisableRouting: true})
	defer tgt.Close()
	for i := range 4 {
		conn, _ := tgt.Conn(i)
		_ = conn.Put(context.Background(), "k", "v")
	}
	if na, nb := len(a.Requests()), len(b.Requests()); na != 2 || nb != 2 {
		t.Errorf("requests per endpoint %d and %d, want 2 and 2", na, nb)
	}
	if _, err := NewCairn(CairnConfig{Endpoints: []string{a.Addr()}, Consistency: "eventual"}); err == nil {
		t.Error("unknown consistency accepted")
	}
}
