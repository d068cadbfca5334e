package txn

import "fmt"

// The coordinator is decide-then-execute, as placement's scheduler is: Plan
// is a pure function from what the coordinator knows to the actions to take
// next; the executor (shard/api, not in this package) carries them out,
// records each answer in the CoordState and calls Plan again, until Plan
// returns ActDone. Because the next step is derived from the state, a lost
// answer is retried the same way whichever step it interrupted.

// PartStatus is what the coordinator knows of one participant's prepare.
type PartStatus uint8

const (
	PartUnsent     PartStatus = 0 // not sent yet
	PartSent       PartStatus = 1 // in flight
	PartYes        PartStatus = 2 // voted yes: its intents are placed
	PartConflict   PartStatus = 3 // met another transaction's intent (PartState.Blocker)
	PartPrevented  PartStatus = 4 // a recovery prevented this transaction there
	PartWrongShard PartStatus = 5 // the range moved (split, merge): re-route its keys
	PartUnknown    PartStatus = 6 // timeout or leadership lost: may or may not be placed
	PartResolved   PartStatus = 7 // its intents were resolved after the record became final
)

// PartState is one participant as the coordinator sees it.
type PartState struct {
	Shard     uint64
	Status    PartStatus
	Blocker   *Intent // PartConflict: the intent met
	Attempts  int     // prepares sent
	Resolving bool    // a resolve is in flight
}

// MayHoldIntents reports whether the participant may hold intents of the
// transaction: a yes certainly; an unknown or in-flight prepare possibly; a
// conflict or wrong_shard after an earlier attempt whose answer was lost,
// possibly. Every such participant is resolved once the record is final.
func (p *PartState) MayHoldIntents() bool {
	switch p.Status {
	case PartYes, PartUnknown, PartSent:
		return true
	case PartConflict, PartWrongShard:
		return p.Attempts > 1
	}
	return false
}

// RecStatus is what the coordinator knows of its record.
type RecStatus uint8

const (
	RecNone      RecStatus = 0 // not written
	RecSent      RecStatus = 1 // a write (begin, stage, commit, abort) is in flight
	RecPending   RecStatus = 2
	RecStaging   RecStatus = 3
	RecCommitted RecStatus = 4
	RecAborted   RecStatus = 5
	RecUnknown   RecStatus = 6 // the last write's outcome is unknown: read the record before anything else
)

// Final reports whether the record is known committed or aborted.
func (r RecStatus) Final() bool { return r == RecCommitted || r == RecAborted }

// Result is the answer the coordinator gives its client.
type Result uint8

const (
	ResultCommitted Result = 1 // 200, succeeded per the branch taken
	ResultAborted   Result = 2 // 409 txn_aborted: retry as a new transaction
	ResultUnknown   Result = 3 // 504 outcome_unknown: retry with the same request_id
)

func (r Result) String() string {
	switch r {
	case ResultCommitted:
		return "committed"
	case ResultAborted:
		return "aborted"
	case ResultUnknown:
		return "unknown"
	}
	return "result(?)"
}

// CoordState is everything the coordinator knows about one multi-shard
// transaction.
type CoordState struct {
	// Fast: no compares, so the branch (success) and the write set are
	// known before any prepare: the record is written Staging in parallel
	// with the prepares (parallel commit). Otherwise (the compare path) the
	// participants other than the anchor's are prepared, and then one
	// decide entry on the anchor's shard evaluates and commits; the
	// anchor's PartState stands for that decide (unsent/unknown: due;
	// conflict: push, then decide again; wrong_shard: re-route).
	Fast        bool
	AnchorShard uint64
	Parts       []PartState // one per participant, sorted by shard
	Record      RecStatus
	Evaluated   bool // unused since the anchor decides (kept: older executors set it)
	Replied     bool
	Deadline    bool // the client's deadline (or the coordinator's bound) has passed
	Heartbeat   bool // the heartbeat interval has elapsed since the last one
	MaxAttempts int  // prepares per participant before giving up (conflicts, unknowns, re-routes)
}

// ActionKind is one step of the coordinator.
type ActionKind uint8

const (
	ActPrepare     ActionKind = 1  // send the prepare to Shard (with EvBegin when Begin)
	ActStage       ActionKind = 2  // write the record Staging with the write set (fast path)
	ActEvaluate    ActionKind = 3  // evaluate the compares over the prepares' reads (Execute), set Evaluated
	ActCommit      ActionKind = 4  // write the record Committed (compare path: with the write set)
	ActAbort       ActionKind = 5  // write the record Aborted with Cause
	ActPush        ActionKind = 6  // push the transaction of Shard's Blocker (EvPush at its anchor), then prepare again
	ActReroute     ActionKind = 7  // look Shard's keys up again and replace the participant (re-stage on the fast path)
	ActReadRecord  ActionKind = 8  // read the record (linearizable) to learn its state
	ActResolve     ActionKind = 9  // resolve Shard's intents from the final record
	ActReply       ActionKind = 10 // answer the client with Result
	ActHeartbeat   ActionKind = 11 // EvHeartbeat on the record
	ActDone        ActionKind = 12 // nothing is left to do
	ActWaitAnswers ActionKind = 13 // answers are in flight: wait for one
	// ActDecide: compare path — one entry on the anchor's shard evaluates
	// the compares (the anchor's keys as it applies, the others' as their
	// prepares read them) and commits: the commit point ("The anchor
	// decides"). Its answer: committed or aborted (final), a conflict on an
	// anchor key (push, decide again), wrong_shard, or unknown.
	ActDecide ActionKind = 14
	// ActBegin: compare path — EvBegin on the anchor, creating the record
	// Pending so heartbeats keep the transaction alive while prepares wait
	// longer than a heartbeat interval (conflicts, pushes).
	ActBegin ActionKind = 15
)

var actionNames = map[ActionKind]string{ActPrepare: "prepare", ActStage: "stage", ActEvaluate: "evaluate",
	ActCommit: "commit", ActAbort: "abort", ActPush: "push", ActReroute: "reroute", ActReadRecord: "read-record",
	ActResolve: "resolve", ActReply: "reply", ActHeartbeat: "heartbeat", ActDone: "done", ActWaitAnswers: "wait",
	ActDecide: "decide", ActBegin: "begin"}

// Action is one step; only the fields its Kind names are set.
type Action struct {
	Kind   ActionKind
	Shard  uint64
	Begin  bool
	Cause  Cause
	Result Result
}

func (a Action) String() string {
	s := actionNames[a.Kind]
	switch a.Kind {
	case ActPrepare, ActPush, ActReroute, ActResolve, ActDecide:
		s += fmt.Sprintf("(%d)", a.Shard)
		if a.Begin {
			s += "+begin"
		}
	case ActAbort:
		s += "(" + a.Cause.String() + ")"
	case ActReply:
		s += "(" + a.Result.String() + ")"
	}
	return s
}

// Plan returns the coordinator's next actions. The rules, in order:
//  1. A write whose outcome is unknown is settled first by reading the
//     record; past the deadline the client hears outcome_unknown (the
//     record, not the coordinator, decides the outcome and a retry with the
//     request id reads it).
//  2. A final record: reply (committed or aborted) if not yet, resolve
//     every participant that may hold intents, then done.
//  3. A record write in flight: wait for it.
//  4. Abort when a participant was prevented, the deadline passed, or a
//     participant used up its attempts; the reply follows the record's
//     final state (an abort may find it committed by a recovery).
//  5. Otherwise send what is missing: prepares (on the compare path, of
//     every participant but the anchor's, which the decide covers), the
//     fast path's stage, pushes for conflicts, re-routes for wrong_shard,
//     re-sends for unknown prepares; on the compare path with no record
//     yet and the heartbeat interval gone, the begin.
//  6. Every participant voted yes: fast path, the transaction is
//     implicitly committed once the record is Staging: reply committed and
//     make it explicit; compare path: the anchor decides (one entry).
func Plan(s *CoordState) []Action {
	switch s.Record {
	case RecUnknown:
		if s.Deadline && !s.Replied {
			return []Action{{Kind: ActReply, Result: ResultUnknown}}
		}
		return []Action{{Kind: ActReadRecord}}
	case RecCommitted, RecAborted:
		return planFinal(s)
	}
	var acts []Action
	if s.Heartbeat && (s.Record == RecPending || s.Record == RecStaging) {
		acts = append(acts, Action{Kind: ActHeartbeat})
	}
	if s.Record == RecSent {
		return append(acts, Action{Kind: ActWaitAnswers})
	}
	if c, ok := s.mustAbort(); ok {
		return append(acts, Action{Kind: ActAbort, Cause: c})
	}
	// begin: the prepares outlived a heartbeat interval with no record;
	// the decide waits for the begin's answer.
	begin := !s.Fast && s.Heartbeat && s.Record == RecNone
	if begin {
		acts = append(acts, Action{Kind: ActBegin})
	}
	allYes, inFlight, hb := true, false, len(acts)
	decide := false // compare path: the anchor's decide is due once every other participant voted yes
	for _, p := range s.Parts {
		anchor := !s.Fast && p.Shard == s.AnchorShard
		switch p.Status {
		case PartUnsent, PartUnknown:
			if anchor {
				decide = true
				continue
			}
			allYes = false
			acts = append(acts, Action{Kind: ActPrepare, Shard: p.Shard})
		case PartConflict:
			allYes = false
			acts = append(acts, Action{Kind: ActPush, Shard: p.Shard})
		case PartWrongShard:
			allYes = false
			acts = append(acts, Action{Kind: ActReroute, Shard: p.Shard})
		case PartSent:
			allYes, inFlight = false, true
		}
	}
	if s.Fast && s.Record == RecNone {
		acts = append(acts, Action{Kind: ActStage})
	}
	if !allYes || begin {
		if len(acts) == hb && inFlight {
			acts = append(acts, Action{Kind: ActWaitAnswers})
		}
		return acts
	}
	switch {
	case s.Fast && s.Record == RecStaging:
		// Implicitly committed: every intent is placed and the record holds
		// the write set, so any recovery commits it too.
		if !s.Replied {
			acts = append(acts, Action{Kind: ActReply, Result: ResultCommitted})
		}
		acts = append(acts, Action{Kind: ActCommit})
	case s.Fast:
		// The record's stage is refused only if someone aborted it first; the
		// record write's answer brings it to RecAborted.
		acts = append(acts, Action{Kind: ActWaitAnswers})
	case decide && (s.Record == RecNone || s.Record == RecPending):
		acts = append(acts, Action{Kind: ActDecide, Shard: s.AnchorShard})
	default:
		acts = append(acts, Action{Kind: ActWaitAnswers})
	}
	return acts
}

// mustAbort reports whether the coordinator gives up, and why.
func (s *CoordState) mustAbort() (Cause, bool) {
	if s.Deadline {
		return CauseCoordinator, true
	}
	for _, p := range s.Parts {
		if p.Status == PartPrevented {
			return CauseRecovery, true
		}
		if s.MaxAttempts > 0 && p.Attempts >= s.MaxAttempts {
			switch p.Status {
			case PartConflict:
				return CauseConflict, true
			case PartUnknown, PartWrongShard:
				return CauseCoordinator, true
			}
		}
	}
	return 0, false
}

func planFinal(s *CoordState) []Action {
	var acts []Action
	if !s.Replied {
		r := ResultCommitted
		if s.Record == RecAborted {
			r = ResultAborted
		}
		acts = append(acts, Action{Kind: ActReply, Result: r})
	}
	waiting := false
	for _, p := range s.Parts {
		switch {
		case !s.Fast && p.Shard == s.AnchorShard && !p.Resolving:
			// The compare path never prepares the anchor's participant:
			// the decide wrote its keys directly, and holds no intent.
		case p.Resolving:
			waiting = true
		case p.MayHoldIntents():
			// Resolving a shard with no intent of ours is a no-op.
			acts = append(acts, Action{Kind: ActResolve, Shard: p.Shard})
		}
	}
	if len(acts) == 0 {
		if waiting {
			return []Action{{Kind: ActWaitAnswers}}
		}
		return []Action{{Kind: ActDone}}
	}
	return acts
}
