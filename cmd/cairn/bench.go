package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"

	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/internal/bench"
	"github.com/cairndb/cairn/internal/cli"
)

// benchFlags are the flags of "cairn bench put|get|mixed".
type benchFlags struct {
	cfg         bench.Config
	target      string
	keyDist     string
	consistency string
	jsonOut     bool
	noRouting   bool
	cpuProfile  string
}

const defaultEtcdEndpoint = "127.0.0.1:2379"

// newBenchCmd is "cairn bench": the workloads of internal/bench against
// cairn or etcd's JSON gateway. The global --timeout bounds each operation.
func newBenchCmd(opts *cli.GlobalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure throughput and latency (of cairn, or of etcd for comparison)",
		Long: `Measure throughput and latency with closed-loop clients: each client sends its
next request when the previous one has answered. Each operation is one HTTP
request without retry; failures are counted by error code, and throughput and
latency (an HDR histogram: p50, p90, p99, p99.9, max) are those of successful
operations.

--target etcd runs the same workloads against etcd's v3 JSON gateway (default
endpoint 127.0.0.1:2379), through the same runner and HTTP transport. Client i
uses endpoint i mod n of --endpoints. The global --timeout bounds each
operation. "get" and "mixed" first write every key once (--preload, not
measured) so that reads find their key.`,
		Example: `  cairn bench put --clients 64 --duration 30s
  cairn bench get --consistency linearizable --key-dist zipf --json
  cairn bench mixed --read-ratio 0.9 --target etcd --endpoints 127.0.0.1:2379,127.0.0.1:22379`,
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cli.UsageErrorf("missing workload (put, get, mixed, txn, lock)")
			}
			return cli.UsageErrorf("unknown workload %q for %q (put, get, mixed, txn, lock)", args[0], cmd.CommandPath())
		},
	}
	cmd.AddCommand(
		newBenchWorkloadCmd(opts, bench.WorkloadPut, "Write random keys"),
		newBenchWorkloadCmd(opts, bench.WorkloadGet, "Read random keys (--consistency)"),
		newBenchWorkloadCmd(opts, bench.WorkloadMixed, "Reads and writes (--read-ratio, --consistency)"),
		newBenchWorkloadCmd(opts, bench.WorkloadTxn, "Two-key transactions (--cross-shard: the keys on two shards)"),
		newBenchWorkloadCmd(opts, bench.WorkloadLock, "Acquire and release locks (--contended: one lock for every client)"),
		newBenchSummarizeCmd(),
		newBenchSplitKeysCmd(),
	)
	cli.ReportErrors(cmd)
	cli.FlagErrors(cmd)
	for _, sub := range cmd.Commands() {
		cli.FlagErrors(sub)
	}
	return cmd
}

func newBenchWorkloadCmd(opts *cli.GlobalOptions, w bench.Workload, short string) *cobra.Command {
	bf := &benchFlags{cfg: bench.DefaultConfig()}
	cmd := &cobra.Command{
		Use:   string(w),
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bf.cfg.Workload = w
			return runBench(cmd, opts, bf)
		},
	}
	bf.register(cmd)
	if w == bench.WorkloadTxn {
		cmd.Long = `Each operation is one transaction (POST /v1/txn) over two keys: both compared
(mod_index > 0: the key exists, so the keys are preloaded first) and both
written. By default the keys are neighbours (2m, 2m+1), which an even split
of the keyspace (cairn bench split-keys) keeps on one shard: one raft entry.
With --cross-shard one key is from each half of the keyspace, so on two
shards of a keyspace split evenly in two or more: a two-phase commit.
etcd's transactions are measured through its native client (bench/etcdnative).`
		cmd.Flags().BoolVar(&bf.cfg.CrossShard, "cross-shard", false, "the two keys from different halves of the keyspace")
		cmd.Flags().BoolVar(&bf.cfg.Preload, "preload", true, "write every key once before measuring (the compares need the keys)")
	}
	if w == bench.WorkloadGet || w == bench.WorkloadMixed {
		cmd.Flags().StringVar(&bf.consistency, "consistency", "linearizable", "read level: linearizable, session or stale (etcd: linearizable or stale)")
		cmd.Flags().BoolVar(&bf.cfg.Preload, "preload", true, "write every key once before measuring")
	}
	if w == bench.WorkloadMixed {
		cmd.Flags().Float64Var(&bf.cfg.ReadRatio, "read-ratio", bf.cfg.ReadRatio, "fraction of operations that are reads")
	}
	if w == bench.WorkloadLock {
		cmd.Long = `Each operation acquires a lock and releases it (one request each); throughput
and latency are those of the pair. By default every client takes lock names
of its own, spread over the keyspace (--keys) and so over the shards: no
acquire ever waits. With --contended every client takes the same lock, with
a wait of --timeout, and the report adds "handoff": the time from the start
of a release to the answer of the acquire that was waiting behind it.
etcd's lock is measured through its native client (bench/etcdnative).`
		cmd.Flags().BoolVar(&bf.cfg.Contended, "contended", false, "every client takes the same lock")
		cmd.Flags().DurationVar(&bf.cfg.LockTTL, "ttl", bf.cfg.LockTTL, "lease each acquire asks for")
	}
	return cmd
}

// register adds the flags every workload takes.
func (bf *benchFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	c := &bf.cfg
	d := bench.DefaultConfig()
	f.IntVar(&c.Clients, "clients", d.Clients, "concurrent clients")
	f.DurationVar(&c.Duration, "duration", d.Duration, "how long to run (unless --count)")
	f.Int64Var(&c.Count, "count", 0, "run this many operations in total instead of for --duration")
	f.IntVar(&c.Keys, "keys", d.Keys, "size of the keyspace")
	f.StringVar(&c.KeyPrefix, "key-prefix", d.KeyPrefix, "prefix of every key")
	f.IntVar(&c.ValueSize, "value-size", d.ValueSize, "bytes per value written")
	f.StringVar(&bf.keyDist, "key-dist", string(d.KeyDist), "key distribution: uniform or zipf")
	f.Float64Var(&c.ZipfS, "zipf-s", d.ZipfS, "zipf exponent (> 1; larger is more skewed)")
	f.StringVar(&bf.target, "target", "cairn", "system to measure: cairn or etcd (its v3 JSON gateway)")
	f.BoolVar(&bf.jsonOut, "json", false, "print the report as JSON (as -o json)")
	f.Uint64Var(&c.Seed, "seed", 0, "seed of the key and operation choices (0: random; the report shows it)")
	f.StringVar(&c.Label, "label", "", "free text carried into the report (groups runs in a summary)")
	f.StringVar(&bf.cpuProfile, "cpuprofile", "", "write a CPU profile of the benchmark client (go tool pprof) to this file")
	f.BoolVar(&bf.noRouting, "no-routing", false, "cairn: send every request to --endpoints and let the nodes forward it, instead of straight to the shard leader")
}

// runBench validates the flags, runs the benchmark and prints its report.
func runBench(cmd *cobra.Command, opts *cli.GlobalOptions, bf *benchFlags) error {
	if cmd.Flags().Changed("count") && cmd.Flags().Changed("duration") {
		return cli.UsageErrorf("--count and --duration are mutually exclusive")
	}
	etcd := false
	switch bf.target {
	case "cairn":
	case "etcd":
		etcd = true
		if !cmd.Flags().Changed("endpoints") {
			opts.Endpoints = []string{defaultEtcdEndpoint}
		}
	default:
		return cli.UsageErrorf("--target must be cairn or etcd, not %q", bf.target)
	}
	if err := opts.Validate(); err != nil {
		return err
	}
	cfg := bf.cfg
	cfg.KeyDist = bench.KeyDist(bf.keyDist)
	cfg.OpTimeout = opts.Timeout
	if cfg.Workload == bench.WorkloadGet || cfg.Workload == bench.WorkloadMixed {
		cfg.Consistency = bf.consistency
	}
	if etcd && cfg.Workload == bench.WorkloadTxn {
		return cli.UsageErrorf("etcd's transactions are measured through its native client: use bench/etcdnative txn")
	}
	if etcd && cfg.Workload == bench.WorkloadLock {
		return cli.UsageErrorf("etcd's JSON gateway has no lock to measure this way: use bench/etcdnative lock (its native client's concurrency.Mutex)")
	}
	if err := cfg.Validate(); err != nil {
		return cli.Usage(err)
	}
	httpc := bench.NewHTTPClient(cfg.Clients)
	var target bench.Target
	var err error
	if etcd {
		target, err = bench.NewEtcd(bench.EtcdConfig{Endpoints: opts.Endpoints, Consistency: cfg.Consistency, HTTP: httpc})
	} else {
		target, err = bench.NewCairn(bench.CairnConfig{Endpoints: opts.Endpoints, Consistency: cfg.Consistency, HTTP: httpc,
			DisableRouting: bf.noRouting})
	}
	if err != nil {
		return cli.Usage(err)
	}
	defer target.Close()

	errOut := cmd.ErrOrStderr()
	pp := bench.NewProgressPrinter(errOut, isTerminal(errOut))
	cfg.Progress = pp.Update

	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if bf.cpuProfile != "" {
		pf, err := os.Create(bf.cpuProfile)
		if err != nil {
			return err
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	res, err := bench.Run(ctx, cfg, target)
	if err != nil {
		return benchFailure(err)
	}
	out := cmd.OutOrStdout()
	if bf.jsonOut || opts.Output == cli.OutputJSON {
		err = res.WriteJSON(out)
	} else {
		err = res.WriteText(out)
	}
	if err != nil {
		return err
	}
	if res.Ops == 0 && res.Errors > 0 {
		return benchFailure(noOpsError(res.ErrorsByCode))
	}
	return nil
}

// benchFailure maps a failed run to the exit codes of docs/api.md: 3 when the
// system was unreachable or unavailable, else 1.
func benchFailure(err error) error {
	switch bench.ErrorCode(err) {
	case bench.CodeUnreachable, client.CodeUnavailable, client.CodeOverloaded, bench.CodeDeadlineExceeded,
		client.CodeOutcomeUnknown, "resource_exhausted":
		return &client.Error{Code: client.CodeUnreachable, Message: err.Error(), Retryable: true}
	}
	return err
}

// noOpsError is the error of a run in which every operation failed, under
// the most frequent code, its message listing every code.
func noOpsError(byCode map[string]int64) error {
	codes := slices.SortedFunc(maps.Keys(byCode), func(a, b string) int {
		return cmp.Or(cmp.Compare(byCode[b], byCode[a]), strings.Compare(a, b))
	})
	parts := make([]string, len(codes))
	for i, code := range codes {
		parts[i] = fmt.Sprintf("%s %d", code, byCode[code])
	}
	return &bench.OpError{Code: codes[0], Err: fmt.Errorf("no operation succeeded (%s)", strings.Join(parts, ", "))}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// newBenchSummarizeCmd is "cairn bench summarize": the tables of
// bench/results/<date>.md from the --json reports of many runs.
func newBenchSummarizeCmd() *cobra.Command {
	var (
		title, mdPath, jsonPath string
		env                     []string
	)
	cmd := &cobra.Command{
		Use:   "summarize RESULT.json...",
		Short: "Tabulate --json reports: cairn against etcd per row, and cairn by shard count",
		Long: `Read the JSON reports of "cairn bench ... --json" (one or more per file) and write a
Markdown summary: cairn against etcd for each workload and client count with
the cairn/etcd ratios, and cairn's runs labelled "shards" by shard count. With
--json-out, also write every run and the --env facts as one JSON document.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s := &bench.Summary{Title: title}
			for _, kv := range env {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return cli.UsageErrorf("--env %q: want KEY=VALUE", kv)
				}
				s.Env = append(s.Env, bench.EnvEntry{Key: k, Value: v})
			}
			for _, path := range args {
				runs, err := readResults(path)
				if err != nil {
					return err
				}
				s.Runs = append(s.Runs, runs...)
			}
			if err := writeFileOr(cmd.OutOrStdout(), mdPath, s.WriteMarkdown); err != nil {
				return err
			}
			if jsonPath != "" {
				return writeFileOr(nil, jsonPath, s.WriteJSON)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&title, "title", "", "heading of the summary")
	cmd.Flags().StringArrayVar(&env, "env", nil, "KEY=VALUE facts about the environment, in order (repeatable)")
	cmd.Flags().StringVar(&mdPath, "md", "", "write the Markdown here instead of to stdout")
	cmd.Flags().StringVar(&jsonPath, "json-out", "", "also write the runs as one JSON document here")
	return cmd
}

func readResults(path string) ([]*bench.Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var runs []*bench.Result
	dec := json.NewDecoder(f)
	for {
		var r bench.Result
		if err := dec.Decode(&r); errors.Is(err, io.EOF) {
			return runs, nil
		} else if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		runs = append(runs, &r)
	}
}

// writeFileOr writes with write to the file at path, or to w when path is "".
func writeFileOr(w io.Writer, path string, write func(io.Writer) error) error {
	if path == "" {
		return write(w)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// newBenchSplitKeysCmd prints the --initial-splits that cut the benchmark's
// keyspace into equal shards.
func newBenchSplitKeysCmd() *cobra.Command {
	var shards, keys int
	var prefix string
	cmd := &cobra.Command{
		Use:   "split-keys --shards N",
		Short: "Print the --initial-splits that cut the benchmark keyspace into N equal shards",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if shards < 1 || keys < shards {
				return cli.UsageErrorf("--shards must be between 1 and --keys")
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), strings.Join(bench.SplitKeys(prefix, keys, shards), ","))
			return err
		},
	}
	d := bench.DefaultConfig()
	cmd.Flags().IntVar(&shards, "shards", 1, "number of shards")
	cmd.Flags().IntVar(&keys, "keys", d.Keys, "size of the keyspace")
	cmd.Flags().StringVar(&prefix, "key-prefix", d.KeyPrefix, "prefix of every key")
	return cmd
}
