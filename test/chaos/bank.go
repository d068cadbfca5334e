package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/test/txncheck"
)

// BankWorkload is the bank workload of issue 13 (Scenario S13, invariant
// I8): accounts spread over every shard, concurrent transfers between random
// accounts, each one transaction whose compares pin both balances read
// before it (mod_index) and require the source to cover the amount, and
// concurrent whole-bank reads, each one transaction of gets. Every read that
// completed must see every account, none negative, summing to the total
// (txncheck.CheckBank), and so must a final read after the faults.
type BankWorkload struct {
	Clients   []*client.Client
	Accounts  []string // keys, spread over the shards
	Shards    int      // how many shards the accounts are on, for the report
	Initial   int64    // each account's opening balance
	OpTimeout time.Duration
	Gap       time.Duration
	MaxOps    int64
	Seed      uint64
	// ReadOneIn makes one operation of a client in that many a whole-bank
	// read; the others are transfers.
	ReadOneIn int
	// NonAtomic is a test knob: a transfer is two plain conditional puts
	// instead of one transaction, so a whole-bank read between them sees
	// money missing and CheckBank must say so (the negative control).
	NonAtomic bool

	begin     time.Time
	issued    atomic.Int64
	errs      errorCounts
	mu        sync.Mutex
	hist      []txncheck.BankTxn
	malformed []string // 200 answers to whole-bank reads that were not one
}

// txnCompare, txnOp and txnAnswer are POST /v1/txn's body and answer
// (docs/api.md, "Transactions").
type txnCompare struct {
	Key    string `json:"key"`
	Target string `json:"target"`
	Op     string `json:"op"`
	Value  string `json:"value"`
}

type txnOp struct {
	Op    string  `json:"op"`
	Key   string  `json:"key"`
	Value *string `json:"value,omitempty"`
}

type txnBody struct {
	Compare   []txnCompare `json:"compare,omitempty"`
	Success   []txnOp      `json:"success"`
	Failure   []txnOp      `json:"failure,omitempty"`
	RequestID string       `json:"request_id"`
}

type txnAnswer struct {
	Succeeded bool `json:"succeeded"`
	Results   []struct {
		Op    string  `json:"op"`
		Key   string  `json:"key"`
		Found *bool   `json:"found"`
		Value *string `json:"value"`
	} `json:"results"`
	Shards []uint64 `json:"shards"`
	// Replay: the answer to a retry of a transaction an earlier attempt
	// committed; it says which branch ran, but may carry no get results.
	Replay bool `json:"replay"`
}

// Total is the money in the bank.
func (b *BankWorkload) Total() int64 { return b.Initial * int64(len(b.Accounts)) }

// commit sends one transaction; its request id makes the client's retries
// safe (invariant I7).
func commit(ctx context.Context, c *client.Client, body txnBody) (*txnAnswer, error) {
	if body.RequestID == "" {
		body.RequestID = c.NewRequestID()
	}
	var a txnAnswer
	_, err := c.Do(ctx, client.Request{Method: http.MethodPost, Path: "/v1/txn", Body: body, Idempotent: true}, &a)
	if err != nil {
		return nil, err
	}
	return &a, nil
}

// malformedError is a whole-bank read that answered 200 with something
// other than one get result per account holding an integer: a server bug,
// which the check reports rather than counting it as a failed read.
type malformedError struct{ msg string }

func (e *malformedError) Error() string { return "malformed answer to a whole-bank read: " + e.msg }

func (a *txnAnswer) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "shards %v results [", a.Shards)
	for i, r := range a.Results {
		if i > 0 {
			sb.WriteString(" ")
		}
		fmt.Fprintf(&sb, "%s %s", r.Op, r.Key)
		if r.Found != nil {
			fmt.Fprintf(&sb, " found=%v", *r.Found)
		}
		if r.Value != nil {
			fmt.Fprintf(&sb, " value=%q", *r.Value)
		}
	}
	sb.WriteString("]")
	return sb.String()
}

// readAll reads every account in one transaction of gets.
func (b *BankWorkload) readAll(ctx context.Context, c *client.Client) (map[string]int64, error) {
	body := txnBody{}
	for _, a := range b.Accounts {
		body.Success = append(body.Success, txnOp{Op: "get", Key: a})
	}
	ans, err := commit(ctx, c, body)
	if err != nil {
		return nil, err
	}
	if ans.Replay && len(ans.Results) == 0 {
		// A retry of a read that committed: what it read is not known.
		return nil, &client.Error{Code: "replay", Message: "whole-bank read answered as a replay, without its gets"}
	}
	if !ans.Succeeded || len(ans.Results) != len(b.Accounts) {
		return nil, &malformedError{fmt.Sprintf("succeeded=%v with %d results for %d gets: %s", ans.Succeeded, len(ans.Results), len(b.Accounts), ans)}
	}
	out := map[string]int64{}
	for _, r := range ans.Results {
		if r.Found != nil && !*r.Found || r.Value == nil {
			continue // absent: CheckBank reports the missing account
		}
		v, err := strconv.ParseInt(*r.Value, 10, 64)
		if err != nil {
			return nil, &malformedError{fmt.Sprintf("account %q holds %q: %s", r.Key, *r.Value, ans)}
		}
		out[r.Key] = v
	}
	return out, nil
}

// Probe reports why the workload cannot run against this cluster, or "":
// a whole-bank read (one transaction over every shard the accounts are on)
// must answer 200. Before transactions are served, POST /v1/txn answers
// 404; before they span shards, 400.
func (b *BankWorkload) Probe(ctx context.Context, c *client.Client) string {
	ctx, cancel := context.WithTimeout(ctx, b.OpTimeout)
	defer cancel()
	_, err := b.readAll(ctx, c)
	var ce *client.Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &ce) && ce.Status == http.StatusNotFound:
		return "POST /v1/txn answers 404 (transactions not served): " + err.Error()
	default:
		return "a whole-bank read transaction failed: " + err.Error()
	}
}

// Setup writes every account's opening balance, retrying until each write
// is acknowledged.
func (b *BankWorkload) Setup(ctx context.Context, c *client.Client) error {
	for _, a := range b.Accounts {
		var err error
		for attempt := 0; attempt < 10; attempt++ {
			octx, cancel := context.WithTimeout(ctx, b.OpTimeout)
			_, err = c.Put(octx, a, strconv.FormatInt(b.Initial, 10))
			cancel()
			if err == nil {
				break
			}
			sleepCtx(ctx, time.Second)
		}
		if err != nil {
			return fmt.Errorf("opening account %q: %w", a, err)
		}
	}
	return nil
}

// Run runs transfers and whole-bank reads until ctx ends, until passes or
// MaxOps were issued.
func (b *BankWorkload) Run(ctx context.Context, until time.Time) {
	b.begin = time.Now()
	var wg sync.WaitGroup
	for i, c := range b.Clients {
		rng := rand.New(rand.NewPCG(b.Seed, 0xba4b+uint64(i)))
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(until) {
				if b.issued.Add(1) > b.MaxOps {
					return
				}
				if rng.IntN(max(1, b.ReadOneIn)) == 0 {
					b.read(ctx, c)
				} else {
					from := rng.IntN(len(b.Accounts))
					to := (from + 1 + rng.IntN(len(b.Accounts)-1)) % len(b.Accounts)
					b.transfer(ctx, c, b.Accounts[from], b.Accounts[to], 1+rng.Int64N(b.Initial/4+1))
				}
				sleepCtx(ctx, b.Gap)
			}
		})
	}
	wg.Wait()
}

func (b *BankWorkload) now() int64 { return int64(time.Since(b.begin)) }

// status maps a transaction's error to its outcome: a timeout or
// outcome_unknown may have committed; a replay committed, with reads unknown.
func bankStatus(err error) txncheck.Status {
	var ce *client.Error
	if errors.As(err, &ce) && ce.Code == "replay" {
		return txncheck.Unknown
	}
	switch classifyAdd(err) {
	case addAcked:
		return txncheck.OK
	case addUnknown:
		return txncheck.Unknown
	default:
		return txncheck.Aborted
	}
}

func (b *BankWorkload) record(t txncheck.BankTxn, err error) {
	if err != nil {
		b.errs.note(err)
	}
	b.mu.Lock()
	b.hist = append(b.hist, t)
	b.mu.Unlock()
}

// read is one whole-bank read.
func (b *BankWorkload) read(ctx context.Context, c *client.Client) {
	octx, cancel := context.WithTimeout(ctx, b.OpTimeout)
	defer cancel()
	t := txncheck.BankTxn{Kind: txncheck.Balances, Start: b.now()}
	bal, err := b.readAll(octx, c)
	t.End, t.Status, t.Balances = b.now(), bankStatus(err), bal
	var m *malformedError
	if errors.As(err, &m) {
		t.Status = txncheck.Unknown
		b.mu.Lock()
		b.malformed = append(b.malformed, fmt.Sprintf("%s (read at %s UTC)", m.Error(), time.Now().UTC().Format("15:04:05.000")))
		b.mu.Unlock()
		err = &client.Error{Code: "malformed"}
	}
	b.record(t, err)
}

// transfer moves amount from one account to another: it reads both
// balances, then commits a transaction whose compares pin both (mod_index)
// and require from to hold amount. A compare that no longer holds ends it
// with nothing written (succeeded false: aborted).
func (b *BankWorkload) transfer(ctx context.Context, c *client.Client, from, to string, amount int64) {
	octx, cancel := context.WithTimeout(ctx, b.OpTimeout)
	defer cancel()
	kf, err := c.Get(octx, from)
	if err != nil {
		b.errs.note(err)
		return
	}
	kt, err := c.Get(octx, to)
	if err != nil {
		b.errs.note(err)
		return
	}
	vf, err1 := strconv.ParseInt(kf.Value, 10, 64)
	vt, err2 := strconv.ParseInt(kt.Value, 10, 64)
	if err1 != nil || err2 != nil || vf < amount {
		return // not enough money (or garbage, which a read reports)
	}
	nf, nt := strconv.FormatInt(vf-amount, 10), strconv.FormatInt(vt+amount, 10)
	body := txnBody{
		Compare: []txnCompare{
			{Key: from, Target: "mod_index", Op: "==", Value: strconv.FormatUint(kf.ModIndex, 10)},
			{Key: to, Target: "mod_index", Op: "==", Value: strconv.FormatUint(kt.ModIndex, 10)},
			{Key: from, Target: "value", Op: ">=", Value: strconv.FormatInt(amount, 10)},
		},
		Success: []txnOp{{Op: "put", Key: from, Value: &nf}, {Op: "put", Key: to, Value: &nt}},
	}
	t := txncheck.BankTxn{Kind: txncheck.Transfer, From: from, To: to, Amount: amount, Start: b.now()}
	if b.NonAtomic {
		_, err := c.Put(octx, from, nf, client.IfModIndex(kf.ModIndex))
		if err == nil {
			sleepCtx(octx, 5*time.Millisecond) // widen the window a read can fall in
			_, err = c.Put(octx, to, nt, client.IfModIndex(kt.ModIndex))
		}
		t.End, t.Status = b.now(), bankStatus(err)
		b.record(t, err)
		return
	}
	ans, err := commit(octx, c, body)
	t.End, t.Status = b.now(), bankStatus(err)
	if err == nil && !ans.Succeeded {
		t.Status = txncheck.Aborted
	}
	b.record(t, err)
}

// BankResult is the check of the bank history.
type BankResult struct {
	Skipped          string // why the workload did not run; "" when it ran
	Accounts, Shards int
	Total            int64
	// Transfers and reads by status.
	Transfers, Reads map[string]int
	Final            string // the final whole-bank read, formatted
	Violations       []string
	readsDuring      int // whole-bank reads that completed during the run
}

// Anomalies lists the violations; a bank that ran without one completed
// read proves nothing and is one too.
func (r *BankResult) Anomalies() []string {
	if r == nil || r.Skipped != "" {
		return nil
	}
	var out []string
	for _, v := range r.Violations {
		out = append(out, "bank: "+v)
	}
	if r.readsDuring == 0 {
		out = append(out, "bank: no whole-bank read completed during the run: the workload proves nothing")
	}
	return out
}

// Check reads the whole bank once more (retried while the cluster settles),
// adds that read to the history and checks it with txncheck.CheckBank.
func (b *BankWorkload) Check(ctx context.Context, c *client.Client) *BankResult {
	r := &BankResult{Accounts: len(b.Accounts), Shards: b.Shards, Total: b.Total(), Transfers: map[string]int{}, Reads: map[string]int{}}
	var final map[string]int64
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		final, err = b.readAll(octx, c)
		cancel()
		if err == nil {
			break
		}
		sleepCtx(ctx, time.Second)
	}
	b.mu.Lock()
	h := append([]txncheck.BankTxn(nil), b.hist...)
	b.mu.Unlock()
	for _, t := range h {
		if t.Kind == txncheck.Balances && t.Status == txncheck.OK {
			r.readsDuring++
		}
	}
	if err != nil {
		r.Violations = append(r.Violations, "final whole-bank read failed: "+err.Error())
	} else {
		h = append(h, txncheck.BankTxn{Kind: txncheck.Balances, Status: txncheck.OK, Balances: final, Start: b.now(), End: b.now()})
		r.Final = fmtBank(final)
	}
	for _, t := range h {
		if t.Kind == txncheck.Transfer {
			r.Transfers[t.Status.String()]++
		} else {
			r.Reads[t.Status.String()]++
		}
	}
	b.mu.Lock()
	r.Violations = append(r.Violations, b.malformed...)
	b.mu.Unlock()
	for _, v := range txncheck.CheckBank(b.Accounts, b.Total(), h) {
		r.Violations = append(r.Violations, v.String())
	}
	return r
}

// Errors returns how many operations ended with each error code.
func (b *BankWorkload) Errors() map[string]int { return b.errs.snapshot() }

func fmtBank(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	sum := int64(0)
	for k, v := range m {
		keys = append(keys, k)
		sum += v
	}
	sort.Strings(keys)
	s := ""
	for _, k := range keys {
		s += fmt.Sprintf("%s=%d ", k, m[k])
	}
	return fmt.Sprintf("%s(sum %d)", s, sum)
}
