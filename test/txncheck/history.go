// Package txncheck checks histories of cairn transactions: a bank workload's
// totals (Scenario S13) and an Elle-style list-append workload for
// serializability cycles (G0, G1a, G1c, G-single, G2, and their real-time
// forms for strict serializability; invariant I8). It needs no cluster: a
// workload records a History and the checkers read it.
package txncheck

import (
	"fmt"
	"strings"
	"sync"
	"time"
)

// Status is how a transaction ended, as its client saw it.
type Status uint8

const (
	// OK: committed; its reads are what it saw.
	OK Status = 1
	// Aborted: definitely not applied (txn_aborted, condition not met with
	// nothing written, a refusal before anything was proposed).
	Aborted Status = 2
	// Unknown: outcome_unknown or a timeout; it may or may not have applied,
	// and its reads are not known.
	Unknown Status = 3
)

func (s Status) String() string {
	switch s {
	case OK:
		return "ok"
	case Aborted:
		return "aborted"
	case Unknown:
		return "unknown"
	}
	return "status(?)"
}

// MopKind is a micro-operation of a list-append transaction.
type MopKind uint8

const (
	Append MopKind = 1 // append Value to the list at Key
	Read   MopKind = 2 // read the list at Key: List
)

// Mop is one micro-operation. Appended values are unique per key across
// the whole history (the workload's job), which is what lets the checker
// tell who wrote what.
type Mop struct {
	Kind  MopKind
	Key   string
	Value int   // Append
	List  []int // Read, once completed OK
}

func (m Mop) String() string {
	if m.Kind == Append {
		return fmt.Sprintf("append(%s,%d)", m.Key, m.Value)
	}
	return fmt.Sprintf("read(%s)=%v", m.Key, m.List)
}

// Txn is one transaction of a history. Start and End are the client's
// monotonic times of invocation and completion; an Unknown transaction's End
// is taken as +infinity (it may take effect at any later time).
type Txn struct {
	ID     int
	Ops    []Mop
	Status Status
	Start  int64
	End    int64
}

func (t *Txn) String() string {
	ops := make([]string, len(t.Ops))
	for i, m := range t.Ops {
		ops[i] = m.String()
	}
	return fmt.Sprintf("T%d[%s %s]", t.ID, t.Status, strings.Join(ops, " "))
}

// Recorder collects a history from concurrent clients. Times are taken
// from one monotonic clock (time.Since of the recorder's start).
type Recorder struct {
	mu    sync.Mutex
	start time.Time
	txns  []Txn
}

// NewRecorder starts a history.
func NewRecorder() *Recorder { return &Recorder{start: time.Now()} }

// Invoke records a transaction's start and returns its id. ops are the
// micro-operations it will run (reads without results yet).
func (r *Recorder) Invoke(ops []Mop) int {
	now := int64(time.Since(r.start))
	r.mu.Lock()
	defer r.mu.Unlock()
	id := len(r.txns)
	r.txns = append(r.txns, Txn{ID: id, Ops: append([]Mop(nil), ops...), Start: now})
	return id
}

// Complete records how transaction id ended; results are its ops with the
// reads filled in (ignored unless status is OK).
func (r *Recorder) Complete(id int, status Status, results []Mop) {
	now := int64(time.Since(r.start))
	r.mu.Lock()
	defer r.mu.Unlock()
	t := &r.txns[id]
	t.Status, t.End = status, now
	if status == OK && results != nil {
		t.Ops = append([]Mop(nil), results...)
	}
}

// History returns a copy of what was recorded. A transaction never
// completed counts as Unknown.
func (r *Recorder) History() []Txn {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := append([]Txn(nil), r.txns...)
	for i := range out {
		if out[i].Status == 0 {
			out[i].Status = Unknown
		}
	}
	return out
}
