// Command etcdnative measures etcd through its native Go client
// (go.etcd.io/etcd/client/v3, gRPC) with cairn's benchmark runner
// (internal/bench), so that its figures compare with "cairn bench" against
// cairn and against etcd's JSON gateway: same workloads, same key and value
// generation, same histograms and report. It lives in a module of its own so
// that cairn's module does not carry gRPC.
//
//	etcdnative put|get|mixed|lock|txn [--endpoints 127.0.0.1:2379,...] [--clients 64] [--duration 30s] [--json] ...
//
// lock is etcd's recipe for a lock, concurrency.Mutex: each benchmark
// client opens a session (a lease kept alive in the background) before the
// measured phase, and each operation is Lock (TryLock when uncontended)
// then Unlock, against "cairn bench lock" doing acquire then release.
// txn is one etcd transaction per operation: If both keys' ModRevision > 0
// Then put both, as "cairn bench txn" does (etcd is one raft group, so
// --cross-shard changes only which keys are picked).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cairndb/cairn/internal/bench"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(stderr, "usage: etcdnative put|get|mixed|lock|txn [flags]; etcdnative put -h lists the flags")
		return 2
	}
	cfg := bench.DefaultConfig()
	cfg.Workload = bench.Workload(args[0])
	fs := flag.NewFlagSet("etcdnative "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	endpoints := fs.String("endpoints", "127.0.0.1:2379", "etcd client URLs, host:port,...")
	conns := fs.Int("conns", 0, "gRPC connections, spread over the endpoints (0: one per client, at most 64)")
	keyDist := fs.String("key-dist", string(cfg.KeyDist), "key distribution: uniform or zipf")
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	fs.IntVar(&cfg.Clients, "clients", cfg.Clients, "concurrent clients")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long to run (unless --count)")
	fs.Int64Var(&cfg.Count, "count", 0, "run this many operations in total instead of for --duration")
	fs.IntVar(&cfg.Keys, "keys", cfg.Keys, "size of the keyspace")
	fs.StringVar(&cfg.KeyPrefix, "key-prefix", cfg.KeyPrefix, "prefix of every key")
	fs.IntVar(&cfg.ValueSize, "value-size", cfg.ValueSize, "bytes per value written")
	fs.Float64Var(&cfg.ZipfS, "zipf-s", cfg.ZipfS, "zipf exponent (> 1)")
	fs.Float64Var(&cfg.ReadRatio, "read-ratio", cfg.ReadRatio, "mixed: fraction of operations that are reads")
	fs.StringVar(&cfg.Consistency, "consistency", "linearizable", "read level: linearizable or stale (serializable)")
	fs.BoolVar(&cfg.Preload, "preload", cfg.Workload == bench.WorkloadGet || cfg.Workload == bench.WorkloadMixed || cfg.Workload == bench.WorkloadTxn, "write every key once before measuring (get, mixed, txn)")
	fs.BoolVar(&cfg.CrossShard, "cross-shard", false, "txn: keys from the two halves of the keyspace (as cairn's two-shard transactions)")
	fs.BoolVar(&cfg.Contended, "contended", false, "lock: every client takes the same lock")
	fs.DurationVar(&cfg.LockTTL, "ttl", cfg.LockTTL, "lock: the TTL of each client's session lease")
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the key and operation choices (0: random)")
	fs.StringVar(&cfg.Label, "label", "", "free text carried into the report")
	fs.DurationVar(&cfg.OpTimeout, "timeout", cfg.OpTimeout, "bound on each operation")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	cfg.KeyDist = bench.KeyDist(*keyDist)
	if cfg.Workload == bench.WorkloadPut || cfg.Workload == bench.WorkloadLock || cfg.Workload == bench.WorkloadTxn {
		cfg.Consistency = ""
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 2
	}
	serializable := false
	switch cfg.Consistency {
	case "", "linearizable":
	case "stale":
		serializable = true
	default:
		fmt.Fprintf(stderr, "error: --consistency must be linearizable or stale for etcd, not %q\n", cfg.Consistency)
		return 2
	}
	n := *conns
	if n <= 0 {
		n = min(cfg.Clients, 64)
	}
	t, err := newTarget(strings.Split(*endpoints, ","), n, serializable)
	if err == nil && cfg.Workload == bench.WorkloadLock {
		t.lockTTL = cfg.LockTTL
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 3
	}
	defer t.Close()

	pp := bench.NewProgressPrinter(stderr, isTerminal(stderr))
	cfg.Progress = pp.Update
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, cfg, t)
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	if *jsonOut {
		err = res.WriteJSON(stdout)
	} else {
		err = res.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	if res.Ops == 0 && res.Errors > 0 {
		fmt.Fprintln(stderr, "error: no operation succeeded")
		return 3
	}
	return 0
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// target is etcd through clientv3: conns clients, client j connected to
// endpoint j mod n only, and benchmark client i using connection i mod conns.
type target struct {
	endpoints    []string
	clis         []*clientv3.Client
	serializable bool
	lockTTL      time.Duration // > 0: the lock workload; each Conn opens a session
	sessions     []*concurrency.Session
}

func newTarget(endpoints []string, conns int, serializable bool) (*target, error) {
	t := &target{endpoints: endpoints, serializable: serializable}
	for j := range conns {
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   []string{endpoints[j%len(endpoints)]},
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
		})
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("connect to %s: %w", endpoints[j%len(endpoints)], err)
		}
		t.clis = append(t.clis, cli)
	}
	return t, nil
}

func (t *target) Name() string        { return "etcd-native" }
func (t *target) Endpoints() []string { return t.endpoints }

func (t *target) Conn(i int) (bench.Conn, error) {
	c := &conn{cli: t.clis[i%len(t.clis)], serializable: t.serializable}
	if t.lockTTL > 0 {
		s, err := concurrency.NewSession(c.cli, concurrency.WithTTL(max(int(t.lockTTL/time.Second), 1)))
		if err != nil {
			return nil, fmt.Errorf("session: %w", err)
		}
		t.sessions = append(t.sessions, s)
		return &lockConn{conn: c, session: s}, nil
	}
	return c, nil
}

func (t *target) Close() error {
	var errs []error
	for _, s := range t.sessions {
		errs = append(errs, s.Close())
	}
	for _, c := range t.clis {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

type conn struct {
	cli          *clientv3.Client
	serializable bool
}

func (c *conn) Put(ctx context.Context, key, value string) error {
	_, err := c.cli.Put(ctx, key, value)
	return opError(err)
}

func (c *conn) Get(ctx context.Context, key string) error {
	var opts []clientv3.OpOption
	if c.serializable {
		opts = append(opts, clientv3.WithSerializable())
	}
	resp, err := c.cli.Get(ctx, key, opts...)
	if err != nil {
		return opError(err)
	}
	if len(resp.Kvs) == 0 {
		return &bench.OpError{Code: bench.CodeNotFound, Err: fmt.Errorf("key %q not found", key)}
	}
	return nil
}

// Txn is one etcd transaction: every key's ModRevision > 0 (it exists),
// then every put.
func (c *conn) Txn(ctx context.Context, keys, values []string) error {
	cmps := make([]clientv3.Cmp, len(keys))
	ops := make([]clientv3.Op, len(keys))
	for i, k := range keys {
		cmps[i] = clientv3.Compare(clientv3.ModRevision(k), ">", 0)
		ops[i] = clientv3.OpPut(k, values[i])
	}
	resp, err := c.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return opError(err)
	}
	if !resp.Succeeded {
		return &bench.OpError{Code: "condition_failed", Err: fmt.Errorf("transaction on %v: a compare failed", keys)}
	}
	return nil
}

// lockConn is a client of the lock workload: its session's lease holds
// every lock it takes, as etcd's recipe has it.
type lockConn struct {
	*conn
	session *concurrency.Session
}

func (c *lockConn) Lock(ctx context.Context, name string, _, wait time.Duration) (func(context.Context) error, error) {
	m := concurrency.NewMutex(c.session, "/"+name)
	var err error
	if wait == 0 {
		err = m.TryLock(ctx)
	} else {
		err = m.Lock(ctx)
	}
	if errors.Is(err, concurrency.ErrLocked) {
		return nil, &bench.OpError{Code: "lock_held", Err: err}
	}
	if err != nil {
		return nil, opError(err)
	}
	return func(ctx context.Context) error { return opError(m.Unlock(ctx)) }, nil
}

// opError gives err the snake-case name of its gRPC code ("unavailable",
// "deadline_exceeded"), as the JSON gateway target does.
func opError(err error) error {
	if err == nil {
		return nil
	}
	var coded interface{ Code() codes.Code }
	code := bench.ErrorCode(err)
	if errors.As(err, &coded) {
		code = snake(coded.Code().String())
	} else if s, ok := status.FromError(err); ok && s.Code() != codes.Unknown {
		code = snake(s.Code().String())
	}
	return &bench.OpError{Code: code, Err: err}
}

// snake turns "DeadlineExceeded" into "deadline_exceeded".
func snake(s string) string {
	var b strings.Builder
	for i, r := range s {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
