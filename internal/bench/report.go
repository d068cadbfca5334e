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
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// Result is the report of one run. Its JSON form is what "cairn bench --json"
// prints and what Summarize reads; add fields, do not rename them.
type Result struct {
	Workload  Workload          `json:"workload"`
	Target    string            `json:"target"`
	Endpoints []string          `json:"endpoints"`
	System    map[string]string `json:"system,omitempty"` // from the target's Describe
	Label     string            `json:"label,omitempty"`
	Clients   int               `json:"clients"`
	Duration  string            `json:"duration,omitempty"` // the time bound, when bound by time
	Count     int64             `json:"count,omitempty"`    // the operation bound, when bound by count
	Keys      int               `json:"keys"`
	ValueSize int               `json:"value_size"`
	KeyDist   KeyDist           `json:"key_dist"`
	ZipfS     float64           `json:"zipf_s,omitempty"`
	ReadRatio *float64          `json:"read_ratio,omitempty"` // mixed only
	// Contended (lock only): every client takes the same lock; else each
	// client has lock names of its own.
	Contended bool `json:"contended,omitempty"`
	// Handoff (a contended lock only) is the time from the start of a
	// release to the moment the next holder's acquire answered, for every
	// grant that followed a release it waited behind.
	Handoff *Latency `json:"handoff_ms,omitempty"`
	// Release (a contended lock only) is the round trip of the releases
	// themselves: one raft commit of the lock's group under the run's load,
	// the yardstick of Handoff (which starts with a release and ends at the
	// next holder's answer: within one commit when its p50 is at most
	// Release's).
	Release *Latency `json:"release_ms,omitempty"`
	// CrossShard (txn only): each transaction's keys are on two shards.
	CrossShard bool `json:"cross_shard,omitempty"`
	// Consistency is the read level; empty for put.
	Consistency string    `json:"consistency,omitempty"`
	Seed        uint64    `json:"seed"`
	Started     time.Time `json:"started"`

	Preload     *PreloadStats `json:"preload,omitempty"`
	ElapsedSec  float64       `json:"elapsed_s"`
	Interrupted bool          `json:"interrupted,omitempty"`
	// Ops counts successful operations; throughput and latency are theirs.
	Ops       int64   `json:"ops"`
	Errors    int64   `json:"errors"`
	OpsPerSec float64 `json:"ops_per_sec"`

	Latency Latency `json:"latency_ms"`
	// ByOp splits the figures by operation ("get", "put"): the ones the
	// workload issues.
	ByOp         map[string]OpStats `json:"by_op"`
	ErrorsByCode map[string]int64   `json:"errors_by_code,omitempty"`
	// ErrorSamples holds the first error message seen for each code.
	ErrorSamples map[string]string `json:"error_samples,omitempty"`

	// Set by Summary.WriteMarkdown on the median of repeated runs
	// (medianRuns); not part of a report.
	repeats        int
	minOps, maxOps float64
}

// PreloadStats describes the unmeasured preload.
type PreloadStats struct {
	Keys       int     `json:"keys"`
	ElapsedSec float64 `json:"elapsed_s"`
}

// OpStats are the figures of one kind of operation.
type OpStats struct {
	Ops       int64   `json:"ops"`
	Errors    int64   `json:"errors"`
	OpsPerSec float64 `json:"ops_per_sec"`
	Latency   Latency `json:"latency_ms"`
}

func newResult(cfg Config, t Target) *Result {
	r := &Result{
		Workload:  cfg.Workload,
		Target:    t.Name(),
		Endpoints: t.Endpoints(),
		Label:     cfg.Label,
		Clients:   cfg.Clients,
		Count:     cfg.Count,
		Keys:      cfg.Keys,
		ValueSize: cfg.ValueSize,
		KeyDist:   cfg.KeyDist,
		Seed:      cfg.Seed,
		Started:   time.Now().UTC().Truncate(time.Second),
	}
	if cfg.Count == 0 {
		r.Duration = cfg.Duration.String()
	}
	if cfg.KeyDist == KeyDistZipf {
		r.ZipfS = cfg.ZipfS
	}
	if cfg.Workload == WorkloadMixed {
		rr := cfg.ReadRatio
		r.ReadRatio = &rr
	}
	r.Contended = cfg.Workload == WorkloadLock && cfg.Contended
	r.CrossShard = cfg.Workload == WorkloadTxn && cfg.CrossShard
	if cfg.Workload == WorkloadGet || cfg.Workload == WorkloadMixed {
		r.Consistency = cmp.Or(cfg.Consistency, "linearizable")
	}
	return r
}

// fill computes the figures from the stopped workers.
func (r *Result) fill(workers []*worker, elapsed time.Duration) {
	r.ElapsedSec = seconds(elapsed)
	all := newRecorder()
	r.ByOp = map[string]OpStats{}
	for k := range numOps {
		rec := newRecorder()
		var errs int64
		for _, w := range workers {
			rec.merge(w.rec[k])
			for code, n := range w.errs[k] {
				errs += n
				if r.ErrorsByCode == nil {
					r.ErrorsByCode = map[string]int64{}
				}
				r.ErrorsByCode[code] += n
			}
		}
		if !r.issues(k) && rec.count() == 0 && errs == 0 {
			continue
		}
		all.merge(rec)
		r.ByOp[k.String()] = OpStats{Ops: rec.count(), Errors: errs, OpsPerSec: rate(rec.count(), elapsed), Latency: rec.summary()}
		r.Errors += errs
	}
	for _, w := range workers {
		for code, msg := range w.sample {
			if r.ErrorSamples == nil {
				r.ErrorSamples = map[string]string{}
			}
			if _, ok := r.ErrorSamples[code]; !ok {
				r.ErrorSamples[code] = msg
			}
		}
	}
	r.Ops = all.count()
	r.OpsPerSec = rate(r.Ops, elapsed)
	r.Latency = all.summary()
	if r.Workload == WorkloadLock && r.Contended {
		h := newRecorder()
		for _, w := range workers {
			h.merge(w.handoff)
		}
		if h.count() > 0 {
			l := h.summary()
			r.Handoff = &l
		}
		rel := newRecorder()
		for _, w := range workers {
			rel.merge(w.release)
		}
		if rel.count() > 0 {
			l := rel.summary()
			r.Release = &l
		}
	}
}

// issues reports whether the workload issues operations of kind k.
func (r *Result) issues(k opKind) bool {
	switch r.Workload {
	case WorkloadPut:
		return k == opPut
	case WorkloadGet:
		return k == opGet
	case WorkloadLock:
		return k == opLock
	case WorkloadTxn:
		return k == opTxn
	}
	return k == opGet || k == opPut
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(int64(float64(n)/d.Seconds()*10+0.5)) / 10
}

// WriteJSON writes r as one indented JSON object.
func (r *Result) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report for a person: what ran, then a table with a
// row per operation (and a total row when there are several), then the
// errors by code.
func (r *Result) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "cairn bench %s: target %s (%s)", r.Workload, r.Target, strings.Join(r.Endpoints, ","))
	if s := r.System["shards"]; s != "" {
		fmt.Fprintf(&b, ", %s shard%s", s, plural(s))
	}
	if r.Label != "" {
		fmt.Fprintf(&b, " [%s]", r.Label)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "%d clients, ", r.Clients)
	if r.Count > 0 {
		fmt.Fprintf(&b, "%d ops", r.Count)
	} else {
		fmt.Fprintf(&b, "%s", r.Duration)
	}
	fmt.Fprintf(&b, ", %d keys (%s", r.Keys, r.KeyDist)
	if r.KeyDist == KeyDistZipf {
		fmt.Fprintf(&b, " s=%g", r.ZipfS)
	}
	fmt.Fprintf(&b, "), %d-byte values", r.ValueSize)
	if r.ReadRatio != nil {
		fmt.Fprintf(&b, ", %g%% reads", *r.ReadRatio*100)
	}
	if r.Workload == WorkloadTxn {
		if r.CrossShard {
			b.WriteString(", two keys in different halves of the keyspace")
		} else {
			b.WriteString(", two neighbouring keys")
		}
	}
	if r.Workload == WorkloadLock {
		if r.Contended {
			b.WriteString(", one lock for every client")
		} else {
			b.WriteString(", a lock name per client and operation")
		}
	}
	if r.Consistency != "" {
		fmt.Fprintf(&b, ", %s reads", r.Consistency)
	}
	fmt.Fprintf(&b, ", seed %d\n", r.Seed)
	if r.Preload != nil {
		fmt.Fprintf(&b, "preloaded %d keys in %.1fs (not measured)\n", r.Preload.Keys, r.Preload.ElapsedSec)
	}
	fmt.Fprintf(&b, "%d ops in %.2fs: %s ops/s, %d errors", r.Ops, r.ElapsedSec, formatRate(r.OpsPerSec), r.Errors)
	if r.Interrupted {
		b.WriteString(" (interrupted)")
	}
	b.WriteString("\n\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}

	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tops\tops/s\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\terrors\t")
	row := func(name string, s OpStats) {
		l := s.Latency
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t\n", name, s.Ops, formatRate(s.OpsPerSec),
			formatMillis(l.P50), formatMillis(l.P90), formatMillis(l.P99), formatMillis(l.P999), formatMillis(l.Max), s.Errors)
	}
	latencyRow := func(name string, l Latency) {
		fmt.Fprintf(tw, "%s\t-\t-\t%s\t%s\t%s\t%s\t%s\t-\t\n", name,
			formatMillis(l.P50), formatMillis(l.P90), formatMillis(l.P99), formatMillis(l.P999), formatMillis(l.Max))
	}
	ops := slices.Sorted(maps.Keys(r.ByOp))
	for _, op := range ops {
		row(op, r.ByOp[op])
	}
	if len(ops) > 1 {
		row("total", OpStats{Ops: r.Ops, Errors: r.Errors, OpsPerSec: r.OpsPerSec, Latency: r.Latency})
	}
	if r.Handoff != nil {
		latencyRow("handoff", *r.Handoff)
	}
	if r.Release != nil {
		latencyRow("release", *r.Release)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	b.Reset()
	if len(r.ErrorsByCode) > 0 {
		b.WriteString("\nerrors by code:\n")
		codes := slices.SortedFunc(maps.Keys(r.ErrorsByCode), func(a, c string) int {
			return cmp.Or(cmp.Compare(r.ErrorsByCode[c], r.ErrorsByCode[a]), strings.Compare(a, c))
		})
		for _, code := range codes {
			fmt.Fprintf(&b, "  %-18s %8d", code, r.ErrorsByCode[code])
			if msg := r.ErrorSamples[code]; msg != "" {
				fmt.Fprintf(&b, "  e.g. %s", truncate(msg, 120))
			}
			b.WriteString("\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n string) string {
	if n == "1" {
		return ""
	}
	return "s"
}

// formatRate prints a throughput with one decimal below 100, none above.
func formatRate(v float64) string {
	if v < 100 {
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// formatMillis prints a latency in milliseconds with three significant
// digits at most (0.123, 1.23, 12.3, 123), and "-" for no value.
func formatMillis(ms float64) string {
	switch {
	case ms <= 0:
		return "-"
	case ms < 1:
		return strconv.FormatFloat(ms, 'f', 3, 64)
	case ms < 10:
		return strconv.FormatFloat(ms, 'f', 2, 64)
	case ms < 100:
		return strconv.FormatFloat(ms, 'f', 1, 64)
	}
	return strconv.FormatFloat(ms, 'f', 0, 64)
}

// truncate cuts s to at most n bytes, at a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}
