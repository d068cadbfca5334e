package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Transactions (docs/api.md "Transactions"): compares, then the Then ops if
// every compare holds, else the Else ops, atomically whichever shards the
// keys live on (invariant I8).
//
//	res, err := c.Txn().
//		If(client.Compare("acct/a", client.TargetValue, ">=", 10)).
//		Then(client.OpPut("acct/a", "0"), client.OpPut("acct/b", "10")).
//		Else(client.OpGet("acct/a")).
//		Commit(ctx)
//
// Errors are *Error: ErrInvalidArgument (a malformed transaction, nothing
// written), ErrStaleToken (a fenced write's token was stale, nothing
// written), ErrTxnAborted (a conflict or a recovery aborted it; retry as a
// new transaction), ErrOutcomeUnknown (it may have committed: Commit again
// the same *Txn, which reuses its request id, to learn the outcome).

// CompareTarget is what a compare reads from a key.
type CompareTarget string

const (
	TargetValue       CompareTarget = "value"
	TargetModIndex    CompareTarget = "mod_index"
	TargetCreateIndex CompareTarget = "create_index"
	TargetVersion     CompareTarget = "version"
	TargetExists      CompareTarget = "exists"
)

// Cmp is one compare of a transaction.
type Cmp struct {
	Key    string        `json:"key"`
	Target CompareTarget `json:"target"`
	Op     string        `json:"op"` // == != < <= > >=
	Value  string        `json:"value"`
}

// Compare builds a compare: value may be a string, an integer or a bool
// (for TargetExists). Values compare as integers when both sides parse as
// integers, else as byte strings.
func Compare(key string, target CompareTarget, op string, value any) Cmp {
	var v string
	switch x := value.(type) {
	case string:
		v = x
	case bool:
		v = strconv.FormatBool(x)
	case int:
		v = strconv.Itoa(x)
	case int64:
		v = strconv.FormatInt(x, 10)
	case uint64:
		v = strconv.FormatUint(x, 10)
	default:
		v = fmt.Sprint(x)
	}
	return Cmp{Key: key, Target: target, Op: op, Value: v}
}

// TxnOp is one operation of a branch.
type TxnOp struct {
	Op    string  `json:"op"` // get, put, delete
	Key   string  `json:"key"`
	Value *string `json:"value,omitempty"`
	TTL   string  `json:"ttl,omitempty"`
	Fence *fence  `json:"fence,omitempty"`
}

// TxnOpOption adjusts a put or delete op.
type TxnOpOption func(*TxnOp)

// TxnTTL makes a put's key disappear after d.
func TxnTTL(d time.Duration) TxnOpOption { return func(o *TxnOp) { o.TTL = d.String() } }

// TxnFence fences a put or delete under (lock, token) (invariant I11).
func TxnFence(lock string, token uint64) TxnOpOption {
	return func(o *TxnOp) { o.Fence = &fence{Lock: lock, Token: token} }
}

// OpGet reads key inside the transaction.
func OpGet(key string) TxnOp { return TxnOp{Op: "get", Key: key} }

// OpPut writes key=value if the branch runs.
func OpPut(key, value string, opts ...TxnOpOption) TxnOp {
	o := TxnOp{Op: "put", Key: key, Value: &value}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// OpDelete deletes key if the branch runs.
func OpDelete(key string, opts ...TxnOpOption) TxnOp {
	o := TxnOp{Op: "delete", Key: key}
	for _, f := range opts {
		f(&o)
	}
	return o
}

// Txn is a transaction being built. Not safe for concurrent use.
type Txn struct {
	c    *Client
	body txnBody
}

type txnBody struct {
	Compare   []Cmp   `json:"compare,omitempty"`
	Success   []TxnOp `json:"success,omitempty"`
	Failure   []TxnOp `json:"failure,omitempty"`
	RequestID string  `json:"request_id"`
}

// Txn starts a transaction.
func (c *Client) Txn() *Txn { return &Txn{c: c} }

// If adds compares; all must hold for Then to run.
func (t *Txn) If(cs ...Cmp) *Txn { t.body.Compare = append(t.body.Compare, cs...); return t }

// Then adds ops to the branch run when every compare holds.
func (t *Txn) Then(ops ...TxnOp) *Txn { t.body.Success = append(t.body.Success, ops...); return t }

// Else adds ops to the branch run when a compare does not hold.
func (t *Txn) Else(ops ...TxnOp) *Txn { t.body.Failure = append(t.body.Failure, ops...); return t }

// WithRequestID sets the transaction's idempotency key instead of a
// generated one (invariant I7). A read-only transaction (no put or delete in
// either branch) has nothing to apply twice: the server ignores its id, and
// a retry reads again.
func (t *Txn) WithRequestID(id string) *Txn { t.body.RequestID = id; return t }

// RequestID is the transaction's idempotency key (set by Commit if empty).
func (t *Txn) RequestID() string { return t.body.RequestID }

// TxnResponse is the answer to a committed (or failure-branch) transaction.
type TxnResponse struct {
	Succeeded bool          `json:"succeeded"` // which branch ran
	Results   []TxnOpResult `json:"results"`   // one per op of that branch
	Shards    []uint64      `json:"shards"`
	ID        string        `json:"id,omitempty"` // several shards: the transaction record's id
	// Replay: an earlier attempt with this request id committed (Commit
	// retries after an unknown outcome, so a caller can meet it without
	// retrying itself). Succeeded is that attempt's; Results is its stored
	// results for a one-shard transaction, and empty for a multi-shard one
	// (the gets are not read again). Rare there: a leader change during the
	// commit costs no results unless the new leader also restarted meanwhile.
	Replay bool   `json:"replay,omitempty"`
	Index  uint64 `json:"-"` // X-Cairn-Index (one shard: the entry's index)
}

// TxnOpResult is one op's result. Get: Found and, when found, KV. Put:
// ModIndex, Version, CreateIndex of the written key. Delete: Deleted.
type TxnOpResult struct {
	Op          string `json:"op"`
	Key         string `json:"key"`
	Found       bool   `json:"found"`
	KV          *KV    `json:"-"`
	CreateIndex uint64 `json:"create_index"`
	ModIndex    uint64 `json:"mod_index"`
	Version     uint64 `json:"version"`
	Deleted     int    `json:"deleted"`
}

// UnmarshalJSON reads one result; a get's key fields become KV.
func (r *TxnOpResult) UnmarshalJSON(b []byte) error {
	type plain TxnOpResult
	if err := json.Unmarshal(b, (*plain)(r)); err != nil {
		return err
	}
	if r.Op == "get" && r.Found {
		var kv KV
		if err := json.Unmarshal(b, &kv); err != nil {
			return err
		}
		r.KV = &kv
	}
	return nil
}

// Commit runs the transaction. It carries one request id, reused by every
// retry and by a later Commit of the same *Txn, so it applies at most once
// (a read-only transaction runs again instead: WithRequestID).
func (t *Txn) Commit(ctx context.Context) (*TxnResponse, error) {
	if t.body.RequestID == "" {
		t.body.RequestID = t.c.NewRequestID()
	}
	req := Request{Method: http.MethodPost, Path: "/v1/txn", Body: &t.body, Idempotent: true,
		RouteKey: t.anchor()}
	var res TxnResponse
	meta, err := t.c.Do(ctx, req, &res)
	if err != nil {
		return nil, err
	}
	res.Index = meta.Index
	return &res, nil
}

// maxRequestID is the server's bound on a request id (docs/api.md).
const maxRequestID = 256

// CommitRetry is Commit for a transaction that may meet others: while an
// attempt ends in ErrTxnAborted (a conflicting transaction won, or a
// recovery aborted it; nothing was written), it runs the same transaction
// again as a new one, after the client's backoff, up to attempts times in
// all (at least once). It resends the same compares and ops, so it helps
// blind writes and conflicts with transactions that aborted; a transaction
// that lost to a committed one usually finds its compares false and runs
// its failure branch, and a read-modify-write loop must read again itself.
//
// Each attempt after the first has a request id of its own, derived from
// the first (its id plus "/2", "/3", ...), so RequestID still names the
// first attempt and a caller-set id (WithRequestID) stays recognizable; the
// last attempt's id is RequestID()'s after it returns. An abort that
// answered a request id sent more than once (an earlier send timed out
// and may have applied) is returned, not run again: it may be the answer
// to a replay. Any other error ends it; on ErrOutcomeUnknown, Commit the
// same *Txn again to learn the outcome of its last attempt. If ctx ends
// while it waits to run again, it returns the last attempt's abort.
func (t *Txn) CommitRetry(ctx context.Context, attempts int) (*TxnResponse, error) {
	if t.body.RequestID == "" {
		t.body.RequestID = t.c.NewRequestID()
	}
	first := t.body.RequestID
	for n := 1; ; n++ {
		res, err := t.Commit(ctx)
		var e *Error
		if err == nil || !errors.Is(err, ErrTxnAborted) || n >= attempts || (errors.As(err, &e) && e.replay) {
			return res, err
		}
		if sleep(ctx, t.c.backoff(n)) != nil {
			return res, err // the caller's time ran out: the last attempt's answer
		}
		// The aborted attempt's request id answers "aborted" to any retry
		// with it: the next attempt is a new transaction.
		if t.body.RequestID = first + "/" + strconv.Itoa(n+1); len(t.body.RequestID) > maxRequestID {
			t.body.RequestID = t.c.NewRequestID()
		}
	}
}

// anchor is the key whose shard the server starts at (the record's shard for
// several shards): the first written key, as txn.AnchorKey picks it.
func (t *Txn) anchor() string {
	for _, br := range [][]TxnOp{t.body.Success, t.body.Failure} {
		for _, o := range br {
			if o.Op == "put" || o.Op == "delete" {
				return o.Key
			}
		}
	}
	switch {
	case len(t.body.Compare) > 0:
		return t.body.Compare[0].Key
	case len(t.body.Success) > 0:
		return t.body.Success[0].Key
	case len(t.body.Failure) > 0:
		return t.body.Failure[0].Key
	}
	return ""
}

// TxnRecord is GET /v1/txn/{id}: a multi-shard transaction's record.
type TxnRecord struct {
	ID           string          `json:"id"`
	State        string          `json:"state"` // pending, staging, committed, aborted
	Anchor       string          `json:"anchor"`
	Shards       []uint64        `json:"shards"`
	Succeeded    bool            `json:"succeeded"`
	Cause        string          `json:"cause,omitempty"`
	Intents      json.RawMessage `json:"intents,omitempty"` // per shard, as the server reports them
	RequestID    string          `json:"request_id,omitempty"`
	Participants json.RawMessage `json:"participants,omitempty"`
}

// TxnInspect returns a multi-shard transaction's record (ErrNotFound when
// the transaction has none or it was pruned).
func (c *Client) TxnInspect(ctx context.Context, id string) (*TxnRecord, error) {
	var rec TxnRecord
	if _, err := c.Do(ctx, Request{Method: http.MethodGet, Path: "/v1/txn/" + url.PathEscape(id)}, &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}
