package txn

import (
	"cmp"
	"fmt"
	"time"
)

// State is a transaction record's state.
type State uint8

// States. Values are part of the record encoding: never renumber.
const (
	// Pending: prepares may be in flight; the write set is not fixed. A
	// pusher of higher priority, or anyone once the heartbeat is older than
	// the timeout, may abort it.
	Pending State = 1
	// Staging: the write set is fixed and prepares are in flight (parallel
	// commit). The transaction is implicitly committed once every
	// participant holds its intents, so nobody may abort it on priority or
	// age alone: only the coordinator, or a recovery that found a
	// participant without its intents and prevented them for good.
	Staging State = 2
	// Committed: final. Intents resolve to the record's write set.
	Committed State = 3
	// Aborted: final. Intents are removed; nothing of the write set applies.
	Aborted State = 4
)

var stateNames = map[State]string{Pending: "pending", Staging: "staging", Committed: "committed", Aborted: "aborted"}

func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Final reports whether the state never changes again.
func (s State) Final() bool { return s == Committed || s == Aborted }

// Cause says why a transaction aborted (for txn_aborted's message and the
// aborts-by-cause metric).
type Cause uint8

// Causes. Values are part of the record encoding: never renumber.
const (
	CauseNone        Cause = 0
	CauseConflict    Cause = 1 // a prepare met another transaction's intent and the coordinator gave up
	CausePushed      Cause = 2 // a pusher of higher priority aborted it (deadlock breaking)
	CauseExpired     Cause = 3 // its heartbeat timed out (coordinator gone)
	CauseRecovery    Cause = 4 // recovery found a participant without its intents and prevented them
	CauseCoordinator Cause = 5 // the coordinator gave up (wrong_shard, a prepare failed, client deadline)
)

var causeNames = map[Cause]string{CauseNone: "", CauseConflict: "conflict", CausePushed: "pushed",
	CauseExpired: "expired", CauseRecovery: "recovery", CauseCoordinator: "coordinator"}

func (c Cause) String() string {
	if n, ok := causeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("cause(%d)", uint8(c))
}

// Limits of identifiers carried in records and intents.
const (
	MaxIDSize = 64 // transaction id bytes
)

// Record is a transaction record: the single commit point (invariant I8).
// It is stored on the shard that owns Anchor, in its own bucket keyed by
// (Anchor, ID), so it moves and splits with the anchor key.
type Record struct {
	ID     string
	State  State
	Anchor []byte
	// Participants are the shards and the keys locked on each, as routed.
	// Recovery probes every participant's keys; after a split it re-routes
	// them by key.
	Participants []Participant
	// WriteSet is the branch taken's writes: fixed from Staging, and carried
	// by Committed; resolution applies it.
	WriteSet  []Write
	Succeeded bool  // the branch taken (the answer's "succeeded"); meaningful once the write set is fixed
	Heartbeat int64 // proposer wall clock, unix ns, of the begin or the last heartbeat
	Priority  uint64
	// Epoch counts the record's changes other than heartbeats. A recovery
	// names the epoch it probed, so a verdict about an older write set is
	// refused.
	Epoch     uint64
	RequestID string // the client's request id: a retry returns this record's outcome (I7)
	Cause     Cause  // Aborted only
	// Forgotten: Committed only. Whoever resolved the transaction's intents
	// on every participant said so (EvForget): no intent of it is left, so
	// the record may be dropped after the dedup window, and its write set
	// keeps the keys but not the values. A committed record
	// that is not forgotten is never dropped: a missing record reads as
	// "nobody committed" to a push (txn/DESIGN.md "Forgetting a record").
	Forgotten bool
}

// Intent is a replicated lock on one key, placed by a transaction's prepare
// on the shard that owns the key, stored in its own bucket so it moves and
// splits with the key. A write intent excludes every other transaction and
// every single-key write and (until resolved) read; a read intent excludes
// writers only.
type Intent struct {
	TxnID       string
	Key         []byte
	Access      Access
	Write       *Write // the pending write, when the prepare knew the branch (parallel commit); nil otherwise
	Anchor      []byte // where the record lives: route Anchor to find the shard
	Priority    uint64
	PreparedAt  int64 // proposer wall clock, unix ns, of the prepare: bounds a record-less intent's life
	PreparedSeq uint64
}

// EventKind is what happens to a record.
type EventKind uint8

const (
	// EvBegin creates the record Pending, with the prepare on the anchor's
	// shard (compare path).
	EvBegin EventKind = 1
	// EvStage fixes the write set: creates the record Staging (parallel
	// commit, sent with the prepares) or moves Pending to Staging.
	EvStage EventKind = 2
	// EvCommit is the coordinator's commit: Pending (with the write set) or
	// Staging to Committed. The commit point of the compare path.
	EvCommit EventKind = 3
	// EvAbort is the coordinator's abort.
	EvAbort EventKind = 4
	// EvHeartbeat moves Heartbeat forward while the record is not final.
	EvHeartbeat EventKind = 5
	// EvPush is another transaction or a reader meeting an intent: it aborts
	// a Pending record whose heartbeat is older than Timeout at Now (the
	// proposer's clock) or whose priority is below the pusher's; it reports
	// Staging records that timed out as needing recovery.
	EvPush EventKind = 6
	// EvRecover is recovery's verdict on a Staging record at Epoch: every
	// participant held its intents (commit) or one was prevented (abort).
	EvRecover EventKind = 7
	// EvForget is sent by whoever finished resolving a committed
	// transaction's intents on every participant (its coordinator, or the
	// record sweeper): it marks the record Forgotten, and only then does
	// the anchor's shard queue it for dropping after the dedup window. On a
	// record that is not committed, or none, it does nothing.
	EvForget EventKind = 8
	// EvDecide is the compare path's one-entry commit on the anchor's shard
	// (the anchor decides: last-participant 2PC, txn/DESIGN.md "The anchor
	// decides"): fsm evaluates the compares over the anchor's keys as its
	// apply sees them and the other participants' states read under their
	// intents, and proposes it with the branch's write set. No record or
	// Pending: Committed with the write set (the commit point). Staging is
	// not this path's: refused (stale). Final: the verdict, nothing changes
	// (a retry, or a push that aborted it first).
	EvDecide EventKind = 9
)

var eventNames = map[EventKind]string{EvBegin: "begin", EvStage: "stage", EvCommit: "commit", EvAbort: "abort",
	EvHeartbeat: "heartbeat", EvPush: "push", EvRecover: "recover", EvForget: "forget", EvDecide: "decide"}

func (k EventKind) String() string {
	if n, ok := eventNames[k]; ok {
		return n
	}
	return fmt.Sprintf("event(%d)", uint8(k))
}

// Event is one command on a record. Now is the proposer's wall clock carried
// in the raft entry (invariant I3): time only decides liveness; the state
// check on the record, applied in log order, decides safety.
type Event struct {
	Kind EventKind
	ID   string // the transaction
	Now  int64
	// Begin, Stage, Commit: the record's contents as the coordinator knows
	// them. Commit needs WriteSet and Succeeded only from Pending.
	Anchor       []byte
	Participants []Participant
	WriteSet     []Write
	Succeeded    bool
	Priority     uint64
	RequestID    string
	Cause        Cause // Abort
	// Push: the pusher's priority and id (ties break on id), the heartbeat
	// timeout.
	PusherPriority uint64
	PusherID       string
	Timeout        time.Duration
	// Push on a missing record: the met intent's PreparedAt; Priority is
	// then the intent's (the pushee's) priority.
	PreparedAt int64
	// Recover: the epoch the recovery probed and its verdict.
	Epoch       uint64
	AllPrepared bool
}

// Verdict is what the proposer of an event learns.
type Verdict uint8

const (
	VerdictOK           Verdict = 1 // applied, or already so (idempotent retry)
	VerdictCommitted    Verdict = 2 // the record is committed (maybe by someone else)
	VerdictAborted      Verdict = 3 // the record is aborted: the coordinator answers txn_aborted
	VerdictWait         Verdict = 4 // push: the pushee is alive and outranks the pusher; wait (bounded) or give up
	VerdictNeedRecovery Verdict = 5 // push: Staging and timed out; probe the participants, then EvRecover
	VerdictStale        Verdict = 6 // recover: the record moved on since the probe; read it again
	VerdictMissing      Verdict = 7 // no record, and the event cannot create one
)

var verdictNames = map[Verdict]string{VerdictOK: "ok", VerdictCommitted: "committed", VerdictAborted: "aborted",
	VerdictWait: "wait", VerdictNeedRecovery: "need-recovery", VerdictStale: "stale", VerdictMissing: "missing"}

func (v Verdict) String() string {
	if n, ok := verdictNames[v]; ok {
		return n
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// Effects is what NextRecord asks its executor to do besides storing the
// record.
type Effects struct {
	Verdict Verdict
	Changed bool // store the returned record (it differs from the input)
	// Resolve: the record just became final; resolve its intents on every
	// participant (the coordinator does so; a recovery or pusher resolves
	// what it met).
	Resolve bool
}

// Outranks reports whether the pusher (pa, ida) beats the pushee (pb, idb):
// higher priority wins and ties break on id, so the order is total and no
// cycle of waits can form (txn/DESIGN.md "Deadlock freedom"). Priority 0 is
// reserved for requests outside transactions (single-key reads and writes
// that met an intent): it never outranks anyone, so such a request waits
// and never aborts a live transaction. Transactions take priorities >= 1.
func Outranks(pa uint64, ida string, pb uint64, idb string) bool {
	if pa == 0 {
		return false
	}
	if c := cmp.Compare(pa, pb); c != 0 {
		return c > 0
	}
	return ida < idb
}

// NextRecord is the record's transition function: from the stored record
// (nil: none yet) and an event to the record to store and the effects. It
// is pure and deterministic (invariant I3); fsm/ calls it in apply on the
// anchor's shard, so every replica takes the same transition in log order,
// which is what makes each transition a conditional write. The input is
// never modified. The table in txn/DESIGN.md lists every (state, event) pair;
// TestNextRecordTable checks each.
func NextRecord(rec *Record, ev Event) (*Record, Effects) {
	if rec == nil {
		return createRecord(ev)
	}
	if rec.ID != ev.ID {
		return rec, Effects{Verdict: VerdictMissing}
	}
	switch rec.State {
	case Committed:
		// Final: a retried commit learns it committed; an abort, push or
		// recovery that arrives late learns the same and changes nothing.
		// Only a forget changes it, and not its state: every participant
		// is resolved, so the record may now be dropped after the window.
		if ev.Kind == EvForget && !rec.Forgotten {
			next := *rec
			next.Forgotten = true
			// Nothing applies the values again (every intent is
			// resolved, and ResolveIntent applies nothing from a
			// forgotten record), so the record keeps the written keys,
			// not the values, for the rest of the dedup window.
			next.WriteSet = make([]Write, len(rec.WriteSet))
			for i, w := range rec.WriteSet {
				w.Value = nil
				next.WriteSet[i] = w
			}
			return &next, Effects{Verdict: VerdictCommitted, Changed: true}
		}
		return rec, Effects{Verdict: VerdictCommitted}
	case Aborted:
		return rec, Effects{Verdict: VerdictAborted}
	}
	next := *rec
	switch ev.Kind {
	case EvBegin:
		return rec, Effects{Verdict: VerdictOK} // a retried begin
	case EvStage:
		if rec.State == Staging && sameWrites(rec, ev) && sameParticipants(rec.Participants, ev.Participants) {
			return rec, Effects{Verdict: VerdictOK} // a retried stage
		}
		// From Pending, or a re-stage after a re-route (wrong_shard): the
		// epoch moves, so a recovery that probed the old participants is
		// refused.
		next.State, next.Participants, next.WriteSet, next.Succeeded = Staging, ev.Participants, ev.WriteSet, ev.Succeeded
		next.Heartbeat = max(rec.Heartbeat, ev.Now)
		next.Epoch++
		return &next, Effects{Verdict: VerdictOK, Changed: true}
	case EvDecide:
		if rec.State != Pending {
			return rec, Effects{Verdict: VerdictStale} // Staging: not the compare path's
		}
		next.WriteSet, next.Succeeded, next.State = ev.WriteSet, ev.Succeeded, Committed
		if ev.Participants != nil {
			next.Participants = ev.Participants
		}
		next.Epoch++
		return &next, Effects{Verdict: VerdictCommitted, Changed: true, Resolve: true}
	case EvCommit:
		if rec.State == Pending {
			next.WriteSet, next.Succeeded = ev.WriteSet, ev.Succeeded
			if ev.Participants != nil {
				next.Participants = ev.Participants
			}
		}
		next.State = Committed
		next.Epoch++
		return &next, Effects{Verdict: VerdictCommitted, Changed: true, Resolve: true}
	case EvAbort:
		return abort(&next, ev.Cause)
	case EvHeartbeat:
		if ev.Now <= rec.Heartbeat {
			return rec, Effects{Verdict: VerdictOK}
		}
		next.Heartbeat = ev.Now
		return &next, Effects{Verdict: VerdictOK, Changed: true}
	case EvPush:
		expired := ev.Now-rec.Heartbeat > int64(ev.Timeout)
		if rec.State == Staging {
			if expired {
				return rec, Effects{Verdict: VerdictNeedRecovery}
			}
			return rec, Effects{Verdict: VerdictWait}
		}
		if expired {
			return abort(&next, CauseExpired)
		}
		if Outranks(ev.PusherPriority, ev.PusherID, rec.Priority, rec.ID) {
			return abort(&next, CausePushed)
		}
		return rec, Effects{Verdict: VerdictWait}
	case EvForget:
		// Not final: nothing is resolved yet, nothing to forget.
		return rec, Effects{Verdict: VerdictOK}
	case EvRecover:
		if rec.State != Staging || ev.Epoch != rec.Epoch {
			return rec, Effects{Verdict: VerdictStale}
		}
		if ev.AllPrepared {
			next.State = Committed
			next.Epoch++
			return &next, Effects{Verdict: VerdictCommitted, Changed: true, Resolve: true}
		}
		return abort(&next, CauseRecovery)
	}
	return rec, Effects{Verdict: VerdictStale}
}

func abort(next *Record, c Cause) (*Record, Effects) {
	next.State, next.Cause = Aborted, c
	next.Epoch++
	return next, Effects{Verdict: VerdictAborted, Changed: true, Resolve: true}
}

// createRecord handles an event on a transaction with no record yet.
func createRecord(ev Event) (*Record, Effects) {
	base := func(s State) *Record {
		return &Record{ID: ev.ID, State: s, Anchor: ev.Anchor, Participants: ev.Participants,
			Heartbeat: ev.Now, Priority: ev.Priority, Epoch: 1, RequestID: ev.RequestID}
	}
	switch ev.Kind {
	case EvBegin:
		return base(Pending), Effects{Verdict: VerdictOK, Changed: true}
	case EvStage:
		r := base(Staging)
		r.WriteSet, r.Succeeded = ev.WriteSet, ev.Succeeded
		return r, Effects{Verdict: VerdictOK, Changed: true}
	case EvDecide:
		// The anchor decided before any begin: the record is created
		// Committed. Safe: a push that found no record wrote it Aborted,
		// and then this event finds that (txn/DESIGN.md "The anchor
		// decides").
		r := base(Committed)
		r.WriteSet, r.Succeeded = ev.WriteSet, ev.Succeeded
		return r, Effects{Verdict: VerdictCommitted, Changed: true, Resolve: true}
	case EvAbort:
		// A coordinator that gives up before its record was written leaves
		// an aborted record, so a late begin or stage cannot revive it.
		r := base(Aborted)
		r.Cause = ev.Cause
		return r, Effects{Verdict: VerdictAborted, Changed: true}
	case EvPush:
		// A pusher met an intent whose record is not written: the begin or
		// stage is in flight, or was lost with its coordinator. The
		// intent's PreparedAt stands in for the heartbeat and its priority
		// for the record's. Writing the record Aborted makes the late begin
		// or stage fail: this is the conditional write that decides, and it
		// is safe because no record means nobody committed.
		var c Cause
		switch {
		case ev.Now-ev.PreparedAt > int64(ev.Timeout):
			c = CauseExpired
		case Outranks(ev.PusherPriority, ev.PusherID, ev.Priority, ev.ID):
			c = CausePushed
		default:
			return nil, Effects{Verdict: VerdictWait}
		}
		r := base(Aborted)
		r.Cause, r.Heartbeat = c, ev.PreparedAt
		return r, Effects{Verdict: VerdictAborted, Changed: true}
	case EvCommit, EvRecover:
		// A commit needs a record: the coordinator's begin or stage was
		// refused or never applied. Recovery works on Staging records only.
		return nil, Effects{Verdict: VerdictMissing}
	case EvHeartbeat, EvForget:
		// A forget that finds no record creates none: the record was
		// dropped already (forgotten before), or never existed.
		return nil, Effects{Verdict: VerdictMissing}
	}
	return nil, Effects{Verdict: VerdictMissing}
}

func sameWrites(rec *Record, ev Event) bool {
	if len(rec.WriteSet) != len(ev.WriteSet) || rec.Succeeded != ev.Succeeded {
		return false
	}
	for i := range rec.WriteSet {
		a, b := &rec.WriteSet[i], &ev.WriteSet[i]
		if string(a.Key) != string(b.Key) || string(a.Value) != string(b.Value) || a.Delete != b.Delete || a.TTL != b.TTL {
			return false
		}
	}
	return true
}

func sameParticipants(a, b []Participant) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Shard != b[i].Shard || a[i].Epoch != b[i].Epoch || len(a[i].Keys) != len(b[i].Keys) {
			return false
		}
		for j := range a[i].Keys {
			if string(a[i].Keys[j].Key) != string(b[i].Keys[j].Key) || a[i].Keys[j].Access != b[i].Keys[j].Access {
				return false
			}
		}
	}
	return true
}
