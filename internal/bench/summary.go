package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// LabelShards marks cairn runs that measure put throughput against the
// number of shards; Summarize gives them a table of their own.
const LabelShards = "shards"

// LabelLogStore prefixes the label of cairn runs that compare the raft log
// stores ("log-store=wal", "log-store=boltdb": cairn server --log-store);
// Summarize gives them a table of their own.
const LabelLogStore = "log-store="

// Summary is the results of a benchmark session ("make bench"): the runs
// and the environment they ran in.
type Summary struct {
	Title string     `json:"title"`
	Env   []EnvEntry `json:"env"`
	Runs  []*Result  `json:"runs"`
}

// EnvEntry is one fact about the environment (machine, versions, settings).
type EnvEntry struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// WriteJSON writes the summary as indented JSON.
func (s *Summary) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// rowKey identifies a row of the comparison: runs of different targets with
// the same key are compared.
type rowKey struct {
	workload    Workload
	consistency string
	readRatio   float64
	clients     int
}

func keyOf(r *Result) rowKey {
	k := rowKey{workload: r.Workload, consistency: r.Consistency, clients: r.Clients}
	if r.ReadRatio != nil {
		k.readRatio = *r.ReadRatio
	}
	return k
}

func (k rowKey) name() string {
	switch k.workload {
	case WorkloadGet:
		return "get (" + k.consistency + ")"
	case WorkloadMixed:
		reads := int(k.readRatio*100 + 0.5)
		return fmt.Sprintf("mixed %d/%d (%s)", reads, 100-reads, k.consistency)
	}
	return string(k.workload)
}

func workloadOrder(w Workload) int {
	return slices.Index([]Workload{WorkloadPut, WorkloadGet, WorkloadMixed}, w)
}

func compareKeys(a, b rowKey) int {
	return cmp.Or(
		cmp.Compare(workloadOrder(a.workload), workloadOrder(b.workload)),
		strings.Compare(a.consistency, b.consistency),
		cmp.Compare(a.readRatio, b.readRatio),
		cmp.Compare(a.clients, b.clients),
	)
}

// WriteMarkdown writes the summary's tables: cairn against etcd's JSON
// gateway per workload and client count, with the cairn/etcd ratios (and
// etcd's native client where it was measured); then cairn's put throughput
// by shard count; then cairn on each raft log store.
func (s *Summary) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", cmp.Or(s.Title, "cairn benchmark"))
	if len(s.Env) > 0 {
		b.WriteString("| | |\n|---|---|\n")
		for _, e := range s.Env {
			fmt.Fprintf(&b, "| %s | %s |\n", mdCell(e.Key), mdCell(e.Value))
		}
		b.WriteString("\n")
	}

	runs := medianRuns(s.Runs)
	if len(runs) < len(s.Runs) {
		b.WriteString("Some runs were repeated (`BENCH_REPEAT`): such a cell shows the run of median throughput, " +
			"with the lowest and highest throughput of its repeats in brackets and their count; its latencies are the median run's, " +
			"and a ratio is of the two medians.\n\n")
	}

	rows := map[rowKey]map[string]*Result{}
	var shards, locks, txns []*Result
	stores := map[rowKey]map[string]*Result{}
	for _, r := range runs {
		if r.Workload == WorkloadLock {
			locks = append(locks, r)
			continue
		}
		if r.Workload == WorkloadTxn {
			txns = append(txns, r)
			continue
		}
		if r.Label == LabelShards {
			shards = append(shards, r)
			continue
		}
		if store, ok := strings.CutPrefix(r.Label, LabelLogStore); ok {
			k := keyOf(r)
			if stores[k] == nil {
				stores[k] = map[string]*Result{}
			}
			stores[k][store] = r
			continue
		}
		k := keyOf(r)
		if rows[k] == nil {
			rows[k] = map[string]*Result{}
		}
		rows[k][r.Target] = r // a later run of the same row replaces an earlier one
	}
	keys := make([]rowKey, 0, len(rows))
	for k := range rows {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareKeys)
	native := slices.ContainsFunc(runs, func(r *Result) bool { return r.Target == "etcd-native" })

	if len(keys) > 0 {
		b.WriteString("## cairn and etcd, same runner and HTTP client\n\n")
		b.WriteString("Throughput counts successful operations; latency is per successful operation. ")
		b.WriteString("cairn/etcd above 1 means cairn is faster; p99 cairn/etcd below 1 means cairn's tail is lower.\n\n")
		b.WriteString("| workload | clients | cairn ops/s | etcd ops/s | cairn/etcd | cairn p50 / p99 ms | etcd p50 / p99 ms | p99 cairn/etcd | errors cairn / etcd |")
		if native {
			b.WriteString(" etcd native ops/s | etcd native p50 / p99 ms | cairn/etcd native |")
		}
		b.WriteString("\n|---|--:|--:|--:|--:|--:|--:|--:|--:|")
		if native {
			b.WriteString("--:|--:|--:|")
		}
		b.WriteString("\n")
		for _, k := range keys {
			c, e, n := rows[k]["cairn"], rows[k]["etcd"], rows[k]["etcd-native"]
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s / %s |", k.name(), k.clients,
				opsCell(c), opsCell(e), ratioCell(c, e, func(r *Result) float64 { return r.OpsPerSec }),
				latCell(c), latCell(e), ratioCell(c, e, func(r *Result) float64 { return r.Latency.P99 }),
				errCell(c), errCell(e))
			if native {
				fmt.Fprintf(&b, " %s | %s | %s |", opsCell(n), latCell(n),
					ratioCell(c, n, func(r *Result) float64 { return r.OpsPerSec }))
			}
			b.WriteString("\n")
		}
		b.WriteString("\n")
	}

	if len(locks) > 0 {
		writeLockTable(&b, locks, rows[rowKey{workload: WorkloadPut, clients: 1}]["cairn"])
	}

	if len(txns) > 0 {
		writeTxnTable(&b, txns)
	}

	if len(shards) > 0 {
		slices.SortStableFunc(shards, func(a, c *Result) int {
			return cmp.Or(compareKeys(keyOf(a), keyOf(c)), cmp.Compare(shardCount(a), shardCount(c)))
		})
		b.WriteString("## cairn by shard count\n\n")
		b.WriteString("| shards | workload | clients | ops/s | p50 / p99 ms | errors | vs fewest shards |\n|--:|---|--:|--:|--:|--:|--:|\n")
		base := map[rowKey]*Result{}
		for _, r := range shards {
			k := keyOf(r)
			if base[k] == nil {
				base[k] = r
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s | %s |\n", cmp.Or(r.System["shards"], "?"), k.name(), r.Clients,
				opsCell(r), latCell(r), errCell(r), ratioCell(r, base[k], func(r *Result) float64 { return r.OpsPerSec }))
		}
		b.WriteString("\n")
	}

	if len(stores) > 0 {
		keys := slices.SortedFunc(maps.Keys(stores), compareKeys)
		b.WriteString("## cairn by raft log store (--log-store)\n\n")
		b.WriteString("Puts on one shard, a fresh cluster per store, run in turn. boltdb/wal above 1 means boltdb is faster.\n\n")
		b.WriteString("| workload | clients | wal ops/s | boltdb ops/s | boltdb/wal | wal p50 / p99 ms | boltdb p50 / p99 ms | p99 boltdb/wal | errors wal / boltdb |\n")
		b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
		for _, k := range keys {
			wal, bolt := stores[k]["wal"], stores[k]["boltdb"]
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s / %s |\n", k.name(), k.clients,
				opsCell(wal), opsCell(bolt), ratioCell(bolt, wal, func(r *Result) float64 { return r.OpsPerSec }),
				latCell(wal), latCell(bolt), ratioCell(bolt, wal, func(r *Result) float64 { return r.Latency.P99 }),
				errCell(wal), errCell(bolt))
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writeLockTable is the lock part of make bench: cairn's lock API against
// etcd's concurrency.Mutex through its native client, acquire+release per
// operation, by contention and clients, with the hand-off of a contended
// lock set beside one raft commit (cairn's put p50 at one client, when the
// session measured it).
func writeLockTable(b *strings.Builder, locks []*Result, put1 *Result) {
	type key struct {
		shards    int
		contended bool
		clients   int
	}
	rows := map[key]map[string]*Result{}
	for _, r := range locks {
		k := key{labelShards(r), r.Contended, r.Clients}
		if rows[k] == nil {
			rows[k] = map[string]*Result{}
		}
		rows[k][r.Target] = r
	}
	keys := slices.SortedFunc(maps.Keys(rows), func(a, c key) int {
		return cmp.Or(cmp.Compare(a.shards, c.shards), cmp.Compare(btoi(a.contended), btoi(c.contended)),
			cmp.Compare(a.clients, c.clients))
	})
	b.WriteString("## locks: cairn against etcd's concurrency.Mutex (native client)\n\n")
	b.WriteString("One operation is an acquire and its release. Uncontended: every client takes names of its own; ")
	b.WriteString("contended: every client takes one lock, and handoff is the time from the start of a release to the answer of the acquire waiting behind it; ")
	b.WriteString("release is that release's own round trip in the same run, one raft commit of the lock's group under that load: the hand-off is within one commit when its p50 is at most the release's.")
	if put1 != nil {
		fmt.Fprintf(b, " One raft commit, for scale: cairn's put p50 at 1 client, %s ms.", formatMillis(put1.Latency.P50))
	}
	b.WriteString(" cairn shards: the shards of the cairn cluster the row ran on (a fresh cluster per count; etcd is one raft group).")
	b.WriteString("\n\n| lock | cairn shards | clients | cairn ops/s | etcd ops/s | cairn/etcd | cairn p50 / p99 ms | etcd p50 / p99 ms | handoff p50 / p99 ms cairn | etcd | release p50 / p99 ms cairn | etcd | errors cairn / etcd |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, k := range keys {
		c, e := rows[k]["cairn"], rows[k]["etcd-native"]
		name := "uncontended"
		if k.contended {
			name = "contended"
		}
		fmt.Fprintf(b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s / %s |\n", name, shardsCell(k.shards), k.clients,
			opsCell(c), opsCell(e), ratioCell(c, e, func(r *Result) float64 { return r.OpsPerSec }),
			latCell(c), latCell(e), handoffCell(c), handoffCell(e), releaseCell(c), releaseCell(e), errCell(c), errCell(e))
	}
	b.WriteString("\n")
}

// writeTxnTable is the transaction part of make bench: two-key
// transactions on one shard and across two, cairn against etcd's
// transactions through its native client, with cairn's cross-shard rate
// as a share of its one-shard rate at the same clients.
func writeTxnTable(b *strings.Builder, txns []*Result) {
	type key struct {
		shards  int
		cross   bool
		clients int
	}
	rows := map[key]map[string]*Result{}
	for _, r := range txns {
		k := key{labelShards(r), r.CrossShard, r.Clients}
		if rows[k] == nil {
			rows[k] = map[string]*Result{}
		}
		rows[k][r.Target] = r
	}
	keys := slices.SortedFunc(maps.Keys(rows), func(a, c key) int {
		return cmp.Or(cmp.Compare(a.shards, c.shards), cmp.Compare(btoi(a.cross), btoi(c.cross)),
			cmp.Compare(a.clients, c.clients))
	})
	b.WriteString("## transactions: cairn against etcd's transactions (native client)\n\n")
	b.WriteString("Each transaction compares two keys (they exist) and writes both. One shard: neighbouring keys, one raft entry. ")
	b.WriteString("Two shards: a key from each half of the keyspace, a two-phase commit; etcd is one raft group either way. ")
	b.WriteString("cairn shards: the shards of the cairn cluster the row ran on (a fresh cluster per count).\n\n")
	b.WriteString("| txn | cairn shards | clients | cairn ops/s | etcd ops/s | cairn/etcd | cairn p50 / p99 ms | etcd p50 / p99 ms | two-shard / one-shard (cairn) | errors cairn / etcd |\n")
	b.WriteString("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, k := range keys {
		c, e := rows[k]["cairn"], rows[k]["etcd-native"]
		name, share := "one shard", "–"
		if k.cross {
			name = "two shards"
			if one := rows[key{k.shards, false, k.clients}]; one != nil {
				share = ratioCell(c, one["cairn"], func(r *Result) float64 { return r.OpsPerSec })
			}
		}
		fmt.Fprintf(b, "| %s | %s | %d | %s | %s | %s | %s | %s | %s | %s / %s |\n", name, shardsCell(k.shards), k.clients,
			opsCell(c), opsCell(e), ratioCell(c, e, func(r *Result) float64 { return r.OpsPerSec }),
			latCell(c), latCell(e), share, errCell(c), errCell(e))
	}
	b.WriteString("\n")
}

func releaseCell(r *Result) string {
	if r == nil || r.Release == nil {
		return "–"
	}
	return formatMillis(r.Release.P50) + " / " + formatMillis(r.Release.P99)
}

func handoffCell(r *Result) string {
	if r == nil || r.Handoff == nil {
		return "–"
	}
	return formatMillis(r.Handoff.P50) + " / " + formatMillis(r.Handoff.P99)
}

// labelShards is the cairn shard count a lock or transaction run was
// paired under: "shards=N" in its label (make bench sets it on both
// systems' runs), else the cairn cluster's own count, else 0 (unknown).
func labelShards(r *Result) int {
	for _, f := range strings.Fields(r.Label) {
		if v, ok := strings.CutPrefix(f, "shards="); ok {
			if n, err := strconv.Atoi(v); err == nil {
				return n
			}
		}
	}
	if r.Target == "cairn" {
		return shardCount(r)
	}
	return 0
}

func shardsCell(n int) string {
	if n == 0 {
		return "–"
	}
	return strconv.Itoa(n)
}

func btoi(v bool) int {
	if v {
		return 1
	}
	return 0
}

func shardCount(r *Result) int {
	n, _ := strconv.Atoi(r.System["shards"])
	return n
}

func opsCell(r *Result) string {
	if r == nil {
		return "–"
	}
	if r.repeats > 1 {
		return fmt.Sprintf("%s (%s–%s, %d runs)", formatRate(r.OpsPerSec), formatRate(r.minOps), formatRate(r.maxOps), r.repeats)
	}
	return formatRate(r.OpsPerSec)
}

// runKey identifies the repeats of one run: everything the runner was
// asked to measure, not what it measured.
type runKey struct {
	target, label, consistency, shards, keyDist, duration string
	workload                                              Workload
	clients, keys, valueSize                              int
	count                                                 int64
	readRatio, zipfS                                      float64
	contended, cross                                      bool
}

// medianRuns returns runs with each set of repeats (the same runKey) replaced
// by the run of median throughput (the lower of the two middle ones for an
// even count), which carries the repeats' count and throughput range for
// opsCell. Order is that of each set's first run. On this kind of shared
// machine one run can move by a fifth between minutes; the median of
// alternated repeats is what a ratio should be read from.
func medianRuns(runs []*Result) []*Result {
	groups := map[runKey][]*Result{}
	var order []runKey
	type runID struct {
		target  string
		seed    uint64
		started time.Time
	}
	seen := map[runID]bool{}
	for _, r := range runs {
		// The same report read twice (two files holding it) is one run.
		if id := (runID{r.Target, r.Seed, r.Started}); !r.Started.IsZero() {
			if seen[id] {
				continue
			}
			seen[id] = true
		}
		k := runKey{target: r.Target, label: r.Label, consistency: r.Consistency, keyDist: string(r.KeyDist),
			duration: r.Duration, workload: r.Workload, clients: r.Clients, keys: r.Keys, valueSize: r.ValueSize,
			count: r.Count, zipfS: r.ZipfS, contended: r.Contended, cross: r.CrossShard}
		if r.Label == LabelShards {
			// Only here is the shard count part of what was asked; elsewhere
			// it is what the cluster reported (nothing, when that failed).
			k.shards = r.System["shards"]
		}
		if r.ReadRatio != nil {
			k.readRatio = *r.ReadRatio
		}
		if groups[k] == nil {
			order = append(order, k)
		}
		groups[k] = append(groups[k], r)
	}
	out := make([]*Result, 0, len(order))
	for _, k := range order {
		g := groups[k]
		if len(g) == 1 {
			out = append(out, g[0])
			continue
		}
		sorted := slices.Clone(g)
		slices.SortStableFunc(sorted, func(a, b *Result) int { return cmp.Compare(a.OpsPerSec, b.OpsPerSec) })
		m := *sorted[(len(sorted)-1)/2]
		m.repeats, m.minOps, m.maxOps = len(g), sorted[0].OpsPerSec, sorted[len(sorted)-1].OpsPerSec
		out = append(out, &m)
	}
	return out
}

func latCell(r *Result) string {
	if r == nil {
		return "–"
	}
	return formatMillis(r.Latency.P50) + " / " + formatMillis(r.Latency.P99)
}

func errCell(r *Result) string {
	if r == nil {
		return "–"
	}
	return strconv.FormatInt(r.Errors, 10)
}

// ratioCell is f(a)/f(b) with two decimals, "–" when either is missing or
// b's is zero.
func ratioCell(a, b *Result, f func(*Result) float64) string {
	if a == nil || b == nil || f(b) == 0 {
		return "–"
	}
	return strconv.FormatFloat(f(a)/f(b), 'f', 2, 64) + "×"
}

// mdCell keeps a value inside its table cell.
func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
