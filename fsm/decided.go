package fsm

import (
	"bytes"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cairndb/cairn/txn"
)

// Bounds of the decidedCache: per replica, entries and bytes; per process
// (every replica of the node together), bytes, so a node hosting many
// shards keeps no more than decidedNodeBytes however many there are; and an
// answer's age: a coordinator decides again within its write timeout (10 s)
// or not at all.
const (
	decidedMaxEntries = 512
	decidedMaxBytes   = 4 << 20
	decidedNodeBytes  = 64 << 20
	decidedMaxAge     = 30 * time.Second
)

// decidedBytes is what every decidedCache of the process holds; decidedAll
// lists the caches that hold any, so that a put over the node's budget can
// age out the answers of idle replicas too.
var (
	decidedBytes atomic.Int64
	decidedAllMu sync.Mutex
	decidedAll   = map[*decidedCache]struct{}{}
)

// sweepAged drops the answers older than decidedMaxAge of every cache of
// the process (none of their locks held by the caller).
func sweepAged(now time.Time) {
	decidedAllMu.Lock()
	all := make([]*decidedCache, 0, len(decidedAll))
	for c := range decidedAll {
		all = append(all, c)
	}
	decidedAllMu.Unlock()
	for _, c := range all {
		c.mu.Lock()
		c.evictLocked(func(oldest *decidedAnswer) bool { return now.Sub(oldest.at) > decidedMaxAge })
		c.mu.Unlock()
	}
}

// decidedCache keeps, in memory, the answers of the decides this replica
// applied that committed their record: the anchor's keys as the entry read
// them, what it wrote, the keys it resolved; and of those that aborted it
// for a stale fence: the stale token. A coordinator whose decide
// answer was lost (its leader lost leadership while committing) decides
// again; the new leader, which applied the committing entry too, answers
// that entry's results instead of a bare "committed", so the client gets
// its gets and puts rather than outcome_unknown and a replay without them
// (txn/DESIGN.md "A lost decide answer").
//
// It is not replicated state: nothing the state machine stores or hashes
// depends on it, and a replica that restarted or installed a snapshot
// simply misses (the coordinator then answers as before). Only the answer
// of a decide that repeats a committed one differs between replicas, and
// only the leader's answer reaches anyone. An answer is reused only for a
// decide with the same request and the same states of the other
// participants' keys (compared when a decide repeats), so the
// coordinator's own reads complete it exactly as they completed the
// committing one.
type decidedCache struct {
	mu     sync.Mutex
	closed bool // the replica closed: nothing is kept any more
	m      map[string]*decidedAnswer
	order  []string // insertion order, oldest first from head
	head   int
	bytes  int
}

type decidedAnswer struct {
	at time.Time
	// What the results depend on besides the anchor's own keys: the
	// request and the other participants' states, as the committing
	// decide carried them (decoded copies, owned by the answer).
	req      *txn.Request
	states   []TxnRead
	reads    []TxnRead
	written  []TxnOpResult
	resolved [][]byte
	// stale: the decide aborted the record for this stale fence (its
	// answer is kept too, so a repeat answers stale_token, not a bare
	// "aborted").
	stale *StaleTokenError
	size  int
}

// asks reports whether tc asks what the committing decide a asked: the
// same request and the same states of the other participants' keys, field
// by field as the command carries them. Compared only when a decide
// repeats, so the committing decide pays nothing for it.
func (a *decidedAnswer) asks(tc *TxnCommand) bool {
	if !reflect.DeepEqual(a.req, tc.Request) || len(a.states) != len(tc.States) {
		return false
	}
	for i, st := range tc.States {
		if !bytes.Equal(appendTxnState(nil, st), appendTxnState(nil, a.states[i])) {
			return false
		}
	}
	return true
}

func requestSize(r *txn.Request) int {
	n := len(r.RequestID)
	for _, c := range r.Compare {
		n += len(c.Key) + len(c.Value) + 16
	}
	for _, br := range [][]txn.Op{r.Success, r.Failure} {
		for _, o := range br {
			n += len(o.Key) + len(o.Value) + 32
		}
	}
	return n
}

// put remembers the committing decide tc's answer res.
func (d *decidedCache) put(tc *TxnCommand, res *TxnCmdResult) {
	a := &decidedAnswer{at: time.Now(), req: tc.Request, states: tc.States, reads: res.Reads, written: res.Written,
		resolved: res.Resolved, stale: res.Stale, size: len(tc.ID) + requestSize(tc.Request)}
	if st := res.Stale; st != nil {
		a.size += len(st.Key) + len(st.Lock) + 16
	}
	for _, st := range tc.States {
		a.size += len(st.Key) + kvSize(st.KV)
	}
	for _, r := range res.Reads {
		a.size += len(r.Key) + kvSize(r.KV)
	}
	for _, w := range res.Written {
		a.size += len(w.Key) + kvSize(w.KV)
	}
	for _, k := range res.Resolved {
		a.size += len(k)
	}
	if a.size > decidedMaxBytes/8 {
		return // a few large answers would push out every other
	}
	if decidedBytes.Load()+int64(a.size) > decidedNodeBytes {
		sweepAged(a.at) // the node's budget is spent: aged answers anywhere go first
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	if d.m == nil {
		d.m = map[string]*decidedAnswer{}
		decidedAllMu.Lock()
		decidedAll[d] = struct{}{}
		decidedAllMu.Unlock()
	}
	d.evictLocked(func(oldest *decidedAnswer) bool {
		return a.at.Sub(oldest.at) > decidedMaxAge || decidedBytes.Load()+int64(a.size) > decidedNodeBytes
	})
	if decidedBytes.Load()+int64(a.size) > decidedNodeBytes {
		return // the other replicas' fresh answers hold the budget: this one is not kept
	}
	if old, ok := d.m[tc.ID]; ok {
		d.drop(old) // a record commits once; should it not, the newest answer wins
	} else {
		d.order = append(d.order, tc.ID)
	}
	d.m[tc.ID] = a
	d.bytes += a.size
	decidedBytes.Add(int64(a.size))
	d.evictLocked(func(*decidedAnswer) bool { return len(d.m) > decidedMaxEntries || d.bytes > decidedMaxBytes })
}

// evictLocked drops the oldest answers while over(oldest) says so.
func (d *decidedCache) evictLocked(over func(oldest *decidedAnswer) bool) {
	for d.head < len(d.order) {
		id := d.order[d.head]
		a, ok := d.m[id]
		if ok && !over(a) {
			break
		}
		d.order[d.head] = ""
		d.head++
		if ok {
			d.drop(a)
			delete(d.m, id)
		}
	}
	if d.head > len(d.order)/2 {
		d.order = append(d.order[:0:0], d.order[d.head:]...)
		d.head = 0
	}
}

func (d *decidedCache) drop(a *decidedAnswer) {
	d.bytes -= a.size
	decidedBytes.Add(-int64(a.size))
}

// clear drops every answer and keeps none from now on (the replica closes).
func (d *decidedCache) clear() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, a := range d.m {
		d.drop(a)
	}
	d.m, d.order, d.head, d.closed = nil, nil, 0, true
	decidedAllMu.Lock()
	delete(decidedAll, d)
	decidedAllMu.Unlock()
}

// get fills res with the answer of the committing decide that tc repeats,
// if this replica applied it and tc asks the same; it reports whether it did.
func (d *decidedCache) get(tc *TxnCommand, res *TxnCmdResult) bool {
	d.mu.Lock()
	a, ok := d.m[tc.ID]
	d.mu.Unlock()
	if !ok || time.Since(a.at) > decidedMaxAge || !a.asks(tc) {
		return false
	}
	// Shared with the committing decide's answer and every other repeat:
	// read-only for everyone (the coordinator only reads them).
	res.Reads, res.Written, res.Resolved, res.Stale = a.reads, a.written, a.resolved, a.stale
	return true
}

func kvSize(kv *KV) int {
	if kv == nil {
		return 0
	}
	return len(kv.Key) + len(kv.Value) + 48
}
