package txn

import (
	"bytes"
	"time"
)

// Resolution is what a participant does with one intent once the record's
// state is known.
type Resolution struct {
	Keep   bool   // the record is not final: leave the intent
	Remove bool   // drop the intent
	Apply  *Write // and apply this write (committed write intent whose key the write set names)
}

// ResolveIntent decides an intent's fate from its record's state and write
// set (rec nil: no record found). A resolve command that finds the record
// final also leaves a tombstone for the transaction on the shard, in the
// same apply, so a prepare arriving later (a retry whose first attempt was
// applied, or a duplicate) is refused instead of placing an intent that
// would be resolved, and its committed write applied, a second time
// (TestProtocolSimulation found this). Committed: apply the write set's write of
// the key, if any (a write intent of the branch not taken has none), and
// drop the intent. Aborted: drop it. Pending, Staging or no record: keep it;
// the caller pushes the record first. Committed and forgotten: drop it,
// apply nothing (a duplicate: every intent was resolved before the forget).
// The record's write set, not the
// intent's pending write, is authoritative: the compare path only learns
// the write at commit.
func ResolveIntent(in Intent, rec *Record) Resolution {
	if rec == nil || rec.ID != in.TxnID || !rec.State.Final() {
		return Resolution{Keep: true}
	}
	if rec.State == Aborted || rec.Forgotten {
		// Forgotten: every intent of the transaction was resolved before
		// the forget, so this one is a duplicate whose write was applied
		// already (and the forget dropped the values): drop it, as a push
		// aborts it once the record is pruned.
		return Resolution{Remove: true}
	}
	for i := range rec.WriteSet {
		if bytes.Equal(rec.WriteSet[i].Key, in.Key) {
			w := rec.WriteSet[i]
			return Resolution{Remove: true, Apply: &w}
		}
	}
	return Resolution{Remove: true}
}

// Conflict reports whether an access by txn `by` ("" for a single-key
// operation outside transactions) conflicts with an existing intent: a
// transaction's own intents never conflict; reads share with reads; a
// write intent excludes everything, a read intent excludes writes.
func Conflict(by string, a Access, in Intent) bool {
	if by != "" && by == in.TxnID {
		return false
	}
	return a == AccessWrite || in.Access == AccessWrite
}

// Meeting is what a reader or writer does on meeting a conflicting intent.
type Meeting uint8

const (
	// MeetProceed: resolve the intent as ResolveIntent says (the record is
	// final), then go on: a committed record shows the new value, an aborted
	// one the old.
	MeetProceed Meeting = 1
	// MeetWait: the record is alive; wait (the request's wait is not used up).
	MeetWait Meeting = 2
	// MeetPush: waited long enough; propose EvPush on the record.
	MeetPush Meeting = 3
	// MeetGiveUp: the push said wait and the wait bound is spent: a
	// transaction ends with txn_aborted (after aborting its own record), a
	// single-key operation with unavailable (retryable).
	MeetGiveUp Meeting = 4
)

func (m Meeting) String() string {
	switch m {
	case MeetProceed:
		return "proceed"
	case MeetWait:
		return "wait"
	case MeetPush:
		return "push"
	case MeetGiveUp:
		return "give-up"
	}
	return "meeting(?)"
}

// MeetConfig bounds waiting on intents.
type MeetConfig struct {
	PushAfter time.Duration // wait this long before pushing
	MaxWait   time.Duration // give up after this long
}

// DefaultMeetConfig: push soon (most intents are resolved within a
// round-trip or two), give up well before a client's usual deadline.
func DefaultMeetConfig() MeetConfig {
	return MeetConfig{PushAfter: 50 * time.Millisecond, MaxWait: 2 * time.Second}
}

// Meet decides the next step of a request that met a conflicting intent:
// rec is the record as last read (nil: none found), waited how long this
// request has waited on it, pushedWait whether its last push answered
// VerdictWait.
func Meet(cfg MeetConfig, rec *Record, waited time.Duration, pushedWait bool) Meeting {
	if rec != nil && rec.State.Final() {
		return MeetProceed
	}
	if waited >= cfg.MaxWait {
		return MeetGiveUp
	}
	if waited >= cfg.PushAfter && !pushedWait {
		return MeetPush
	}
	return MeetWait
}

// Vote is a participant's answer to a prepare.
type Vote uint8

const (
	// VoteYes: every intent is placed (or was already, a retry); the
	// participant never drops them on its own (invariant I8).
	VoteYes Vote = 1
	// VoteConflict: a key holds a conflicting intent of another transaction;
	// nothing was placed. The coordinator may push that transaction (its
	// record is at the intent's Anchor) and prepare again.
	VoteConflict Vote = 2
	// VotePrevented: the shard holds a tombstone for the transaction: a
	// recovery prevented it here, or its intents here were already
	// resolved (this prepare is a late retry or duplicate). It can never
	// prepare on this shard again. The coordinator aborts, and learns from
	// the abort's answer if the record was committed after all.
	VotePrevented Vote = 3
)

func (v Vote) String() string {
	switch v {
	case VoteYes:
		return "yes"
	case VoteConflict:
		return "conflict"
	case VotePrevented:
		return "prevented"
	}
	return "vote(?)"
}

// PrepareDecision is the participant's pure prepare step. existing returns
// the intents now on a key; prevented whether the shard holds a tombstone
// for the transaction (left by a recovery's probe that found its intents
// missing, or by the resolution of its intents on this shard). Either every key gets its intent or none
// does: the answer is VoteYes with the intents to store, or the first
// conflicting intent.
func PrepareDecision(txnID string, keys []KeyIntent, existing func(key []byte) []Intent, prevented bool) (Vote, *Intent) {
	if prevented {
		return VotePrevented, nil
	}
	for _, k := range keys {
		for _, in := range existing(k.Key) {
			if Conflict(txnID, k.Access, in) {
				c := in
				return VoteConflict, &c
			}
		}
	}
	return VoteYes, nil
}

// ProbeResult is recovery's answer from one participant.
type ProbeResult uint8

const (
	// ProbePrepared: the transaction's intents are on every probed key.
	ProbePrepared ProbeResult = 1
	// ProbePrevented: some are missing; the shard has stored a prevention
	// tombstone, so a prepare still in flight is refused (VotePrevented).
	ProbePrevented ProbeResult = 2
)

// Probe is the participant's pure step of a recovery probe, applied as a
// raft command so it is ordered with the prepares: has reports whether the
// transaction's intent is on a key. If every key has it, the participant
// voted yes; otherwise it answers prevented and the caller stores a
// tombstone for txnID in the same apply.
func Probe(keys []KeyIntent, has func(key []byte) bool) ProbeResult {
	for _, k := range keys {
		if !has(k.Key) {
			return ProbePrevented
		}
	}
	return ProbePrepared
}

// ForKeys is r as resolving the intents on keys needs it (ResolveIntent):
// its id, state, outcome and the write set's writes to those keys, without
// the participants or the other keys' writes. A background resolution
// carries it in a resolve entry or as a rider (api/txn_batch.go), where
// the whole record, every value of the transaction included, would ride in
// every replica's log for nothing. Nil stays nil.
func (r *Record) ForKeys(keys []KeyIntent) *Record {
	if r == nil {
		return nil
	}
	out := &Record{ID: r.ID, State: r.State, Anchor: r.Anchor, Succeeded: r.Succeeded, Heartbeat: r.Heartbeat,
		Priority: r.Priority, Epoch: r.Epoch, RequestID: r.RequestID, Cause: r.Cause, Forgotten: r.Forgotten}
	if len(keys) <= 8 { // the usual participant: a scan beats a map
		for _, w := range r.WriteSet {
			for _, k := range keys {
				if bytes.Equal(w.Key, k.Key) {
					out.WriteSet = append(out.WriteSet, w)
					break
				}
			}
		}
		return out
	}
	mine := make(map[string]bool, len(keys)) // a large transaction: no keys x writes scan
	for _, k := range keys {
		mine[string(k.Key)] = true
	}
	for _, w := range r.WriteSet {
		if mine[string(w.Key)] {
			out.WriteSet = append(out.WriteSet, w)
		}
	}
	return out
}
