package txn

import (
	"fmt"
	"reflect"
	"testing"
	"time"
)

const sec = int64(time.Second)

func sampleParts() []Participant {
	return []Participant{
		{Shard: 1, Epoch: 3, Keys: []KeyIntent{{Key: []byte("a"), Access: AccessWrite}}},
		{Shard: 4, Epoch: 7, Keys: []KeyIntent{{Key: []byte("m"), Access: AccessRead}, {Key: []byte("n"), Access: AccessWrite}}},
	}
}

func sampleWrites() []Write {
	return []Write{{Key: []byte("a"), Value: []byte("0")}, {Key: []byte("n"), Delete: true}}
}

// rec builds a stored record of txn "t1" (priority 5, heartbeat at 100 s,
// epoch 2) in state s; nil for state 0.
func rec(s State) *Record {
	if s == 0 {
		return nil
	}
	r := &Record{ID: "t1", State: s, Anchor: []byte("a"), Participants: sampleParts(), Heartbeat: 100 * sec,
		Priority: 5, Epoch: 2, RequestID: "r1"}
	if s != Pending {
		r.WriteSet, r.Succeeded = sampleWrites(), true
	}
	if s == Aborted {
		r.Cause = CauseConflict
	}
	return r
}

// TestNextRecordTable checks every (state, event) pair of the record's
// transition table in txn/DESIGN.md (Invariant I8: the record is the single
// commit point; each transition is a conditional write decided by the
// state, in log order; time decides only liveness).
func TestNextRecordTable(t *testing.T) {
	timeout := 10 * time.Second
	begin := Event{Kind: EvBegin, ID: "t1", Now: 100 * sec, Anchor: []byte("a"), Participants: sampleParts(), Priority: 5, RequestID: "r1"}
	stage := Event{Kind: EvStage, ID: "t1", Now: 101 * sec, Anchor: []byte("a"), Participants: sampleParts(),
		WriteSet: sampleWrites(), Succeeded: true, Priority: 5}
	commit := Event{Kind: EvCommit, ID: "t1", Now: 102 * sec, WriteSet: sampleWrites(), Succeeded: true}
	abortEv := Event{Kind: EvAbort, ID: "t1", Now: 102 * sec, Cause: CauseCoordinator}
	hb := Event{Kind: EvHeartbeat, ID: "t1", Now: 105 * sec}
	hbOld := Event{Kind: EvHeartbeat, ID: "t1", Now: 90 * sec}
	pushAlive := Event{Kind: EvPush, ID: "t1", Now: 105 * sec, Timeout: timeout, PusherPriority: 1, PusherID: "t0"}
	pushExpired := Event{Kind: EvPush, ID: "t1", Now: 111 * sec, Timeout: timeout, PusherPriority: 1, PusherID: "t0"}
	pushRank := Event{Kind: EvPush, ID: "t1", Now: 105 * sec, Timeout: timeout, PusherPriority: 9, PusherID: "t9"}
	pushTie := Event{Kind: EvPush, ID: "t1", Now: 105 * sec, Timeout: timeout, PusherPriority: 5, PusherID: "t0"}
	// A push on a missing record names the met intent's PreparedAt and
	// priority.
	pushMissingAlive := Event{Kind: EvPush, ID: "t1", Now: 105 * sec, Timeout: timeout, PreparedAt: 100 * sec, Priority: 5, PusherPriority: 1, PusherID: "t0"}
	pushMissingOld := Event{Kind: EvPush, ID: "t1", Now: 111 * sec, Timeout: timeout, PreparedAt: 100 * sec, Priority: 5, PusherPriority: 1, PusherID: "t0"}
	pushMissingRank := Event{Kind: EvPush, ID: "t1", Now: 105 * sec, Timeout: timeout, PreparedAt: 100 * sec, Priority: 5, PusherPriority: 6, PusherID: "t9"}
	recoverYes := Event{Kind: EvRecover, ID: "t1", Now: 120 * sec, Epoch: 2, AllPrepared: true}
	recoverNo := Event{Kind: EvRecover, ID: "t1", Now: 120 * sec, Epoch: 2}
	recoverStale := Event{Kind: EvRecover, ID: "t1", Now: 120 * sec, Epoch: 1, AllPrepared: true}
	forget := Event{Kind: EvForget, ID: "t1", Now: 130 * sec}
	decide := Event{Kind: EvDecide, ID: "t1", Now: 102 * sec, Anchor: []byte("a"), Participants: sampleParts(),
		WriteSet: sampleWrites(), Succeeded: true, Priority: 5, RequestID: "r1"}

	cases := []struct {
		from    State // 0: no record
		ev      Event
		to      State // 0: still no record
		verdict Verdict
		resolve bool
		cause   Cause
	}{
		// no record
		{0, begin, Pending, VerdictOK, false, 0},
		{0, stage, Staging, VerdictOK, false, 0},
		{0, commit, 0, VerdictMissing, false, 0},
		{0, abortEv, Aborted, VerdictAborted, false, CauseCoordinator},
		{0, hb, 0, VerdictMissing, false, 0},
		{0, pushMissingAlive, 0, VerdictWait, false, 0},
		{0, pushMissingOld, Aborted, VerdictAborted, false, CauseExpired},
		{0, pushMissingRank, Aborted, VerdictAborted, false, CausePushed},
		{0, recoverYes, 0, VerdictMissing, false, 0},
		{0, forget, 0, VerdictMissing, false, 0},          // creates nothing
		{0, decide, Committed, VerdictCommitted, true, 0}, // the anchor decides: no record needed before
		// pending
		{Pending, begin, Pending, VerdictOK, false, 0},
		{Pending, stage, Staging, VerdictOK, false, 0},
		{Pending, commit, Committed, VerdictCommitted, true, 0},
		{Pending, abortEv, Aborted, VerdictAborted, true, CauseCoordinator},
		{Pending, hb, Pending, VerdictOK, false, 0},
		{Pending, hbOld, Pending, VerdictOK, false, 0},
		{Pending, pushAlive, Pending, VerdictWait, false, 0},
		{Pending, pushTie, Aborted, VerdictAborted, true, CausePushed}, // equal priority: the lower id "t0" wins
		{Pending, pushExpired, Aborted, VerdictAborted, true, CauseExpired},
		{Pending, pushRank, Aborted, VerdictAborted, true, CausePushed},
		{Pending, recoverYes, Pending, VerdictStale, false, 0},
		{Pending, forget, Pending, VerdictOK, false, 0},         // not final: nothing to forget
		{Pending, decide, Committed, VerdictCommitted, true, 0}, // begun by a heartbeat while prepares waited
		// staging
		{Staging, begin, Staging, VerdictOK, false, 0},
		{Staging, stage, Staging, VerdictOK, false, 0}, // the same write set: a retried stage
		{Staging, commit, Committed, VerdictCommitted, true, 0},
		{Staging, abortEv, Aborted, VerdictAborted, true, CauseCoordinator},
		{Staging, hb, Staging, VerdictOK, false, 0},
		{Staging, pushAlive, Staging, VerdictWait, false, 0},
		{Staging, pushRank, Staging, VerdictWait, false, 0}, // may be implicitly committed: priority cannot abort it
		{Staging, pushExpired, Staging, VerdictNeedRecovery, false, 0},
		{Staging, recoverYes, Committed, VerdictCommitted, true, 0},
		{Staging, recoverNo, Aborted, VerdictAborted, true, CauseRecovery},
		{Staging, recoverStale, Staging, VerdictStale, false, 0},
		{Staging, forget, Staging, VerdictOK, false, 0},
		{Staging, decide, Staging, VerdictStale, false, 0}, // the fast path's: refused
		// committed: final
		{Committed, begin, Committed, VerdictCommitted, false, 0},
		{Committed, stage, Committed, VerdictCommitted, false, 0},
		{Committed, commit, Committed, VerdictCommitted, false, 0},
		{Committed, abortEv, Committed, VerdictCommitted, false, 0},
		{Committed, hb, Committed, VerdictCommitted, false, 0},
		{Committed, pushExpired, Committed, VerdictCommitted, false, 0},
		{Committed, recoverNo, Committed, VerdictCommitted, false, 0},
		{Committed, forget, Committed, VerdictCommitted, false, 0}, // marks it Forgotten (TestForgetRecord)
		{Committed, decide, Committed, VerdictCommitted, false, 0}, // a retried decide: applies nothing
		// aborted: final
		{Aborted, begin, Aborted, VerdictAborted, false, CauseConflict},
		{Aborted, stage, Aborted, VerdictAborted, false, CauseConflict},
		{Aborted, commit, Aborted, VerdictAborted, false, CauseConflict},
		{Aborted, abortEv, Aborted, VerdictAborted, false, CauseConflict},
		{Aborted, hb, Aborted, VerdictAborted, false, CauseConflict},
		{Aborted, pushRank, Aborted, VerdictAborted, false, CauseConflict},
		{Aborted, recoverYes, Aborted, VerdictAborted, false, CauseConflict},
		{Aborted, forget, Aborted, VerdictAborted, false, CauseConflict}, // pruned after the window anyway
		{Aborted, decide, Aborted, VerdictAborted, false, CauseConflict}, // a push got there first
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%v/%v/%v", c.from, c.ev.Kind, c.verdict), func(t *testing.T) {
			in := rec(c.from)
			var before []byte
			if in != nil {
				before = EncodeRecord(in)
			}
			out, eff := NextRecord(in, c.ev)
			if in != nil && string(EncodeRecord(in)) != string(before) {
				t.Fatal("NextRecord modified its input")
			}
			if eff.Verdict != c.verdict {
				t.Fatalf("verdict %v, want %v", eff.Verdict, c.verdict)
			}
			if eff.Resolve != c.resolve {
				t.Fatalf("resolve %v, want %v", eff.Resolve, c.resolve)
			}
			if c.to == 0 {
				if out != nil {
					t.Fatalf("record %+v created", out)
				}
				return
			}
			if out == nil || out.State != c.to || out.Cause != c.cause {
				t.Fatalf("record %+v, want state %v cause %v", out, c.to, c.cause)
			}
			changed := in == nil || !reflect.DeepEqual(in, out)
			if eff.Changed != changed {
				t.Fatalf("Changed %v but the record changed: %v", eff.Changed, changed)
			}
			if in != nil && out.State != in.State && out.Epoch != in.Epoch+1 {
				t.Fatalf("a state change moved the epoch from %d to %d", in.Epoch, out.Epoch)
			}
			if out.State == Committed && len(out.WriteSet) == 0 {
				t.Fatal("committed without a write set")
			}
		})
	}
}

// TestForgetRecord (I8, txn/DESIGN.md "Forgetting a committed record"): a
// forget marks a committed record Forgotten and drops the write set's
// values (every intent is resolved: nothing will apply them again, and the
// record is kept for the dedup window), and changes nothing else (not its
// state, epoch, the written keys or verdict); a second forget changes nothing;
// a forgotten record still answers committed to every event; nothing else
// sets Forgotten, and it survives its encoding.
func TestForgetRecord(t *testing.T) {
	forget := Event{Kind: EvForget, ID: "t1", Now: 130 * sec}
	in := rec(Committed)
	out, eff := NextRecord(in, forget)
	if in.Forgotten {
		t.Fatal("NextRecord modified its input")
	}
	if !eff.Changed || eff.Resolve || eff.Verdict != VerdictCommitted || !out.Forgotten {
		t.Fatalf("forget of a committed record: %+v %+v", eff, out)
	}
	want := *in
	want.Forgotten = true
	want.WriteSet = nil
	for _, w := range in.WriteSet {
		w.Value = nil
		want.WriteSet = append(want.WriteSet, w)
	}
	if len(in.WriteSet) == 0 || in.WriteSet[0].Value == nil {
		t.Fatal("the sample record has no written value to drop")
	}
	if !reflect.DeepEqual(out, &want) {
		t.Fatalf("forget changed more than Forgotten: %+v, want %+v", out, &want)
	}
	again, eff := NextRecord(out, forget)
	if eff.Changed || again != out || eff.Verdict != VerdictCommitted {
		t.Fatalf("second forget: %+v %+v", eff, again)
	}
	for _, ev := range []Event{{Kind: EvPush, ID: "t1", Now: 1000 * sec, Timeout: time.Second, PusherPriority: 9},
		{Kind: EvAbort, ID: "t1"}, {Kind: EvRecover, ID: "t1", Epoch: out.Epoch}, {Kind: EvBegin, ID: "t1"}} {
		if r, eff := NextRecord(out, ev); eff.Changed || eff.Verdict != VerdictCommitted || r.State != Committed {
			t.Fatalf("%v on a forgotten record: %+v %+v", ev.Kind, eff, r)
		}
	}
	got, err := DecodeRecord(EncodeRecord(out))
	if err != nil || !reflect.DeepEqual(got, out) {
		t.Fatalf("forgotten record round trip: %v %+v", err, got)
	}
	// Another transaction's forget, and a forget on other states, leave the
	// record as it is (the table has the rows).
	if r, eff := NextRecord(in, Event{Kind: EvForget, ID: "t2"}); eff.Changed || r.Forgotten {
		t.Fatalf("forget of another transaction: %+v %+v", eff, r)
	}
	for _, s := range []State{Pending, Staging, Aborted} {
		if r, _ := NextRecord(rec(s), forget); r.Forgotten {
			t.Fatalf("forget marked a %v record", s)
		}
	}
}

// TestPushTieBreak: equal priorities break on id, so of two transactions
// pushing each other exactly one wins (deadlock freedom).
func TestPushTieBreak(t *testing.T) {
	for _, p := range []struct{ a, b string }{{"t0", "t1"}, {"t1", "t0"}} {
		ab := Outranks(5, p.a, 5, p.b)
		ba := Outranks(5, p.b, 5, p.a)
		if ab == ba {
			t.Fatalf("%s and %s: both or neither outrank", p.a, p.b)
		}
	}
	if Outranks(5, "x", 5, "x") {
		t.Fatal("a transaction outranks itself")
	}
	// A single-key request (priority 0, no id) never outranks, even a
	// transaction at priority 0.
	if Outranks(0, "", 0, "t1") || Outranks(0, "", 1, "t1") {
		t.Fatal("priority 0 outranks")
	}
	// The other side of the table's tie: "t2" > "t1" does not outrank.
	_, eff := NextRecord(rec(Pending), Event{Kind: EvPush, ID: "t1", Now: 105 * sec, Timeout: 10 * time.Second,
		PusherPriority: 5, PusherID: "t2"})
	if eff.Verdict != VerdictWait {
		t.Fatalf("t2 pushing t1 at equal priority: %v, want wait", eff.Verdict)
	}
}

// TestRestageAfterReroute: a re-stage with the participants re-routed
// (a split moved a key to a new shard) moves the epoch, so a recovery that
// probed the old participant set is refused.
func TestRestageAfterReroute(t *testing.T) {
	in := rec(Staging)
	moved := sampleParts()
	moved[1].Shard, moved[1].Epoch = 9, 1
	out, eff := NextRecord(in, Event{Kind: EvStage, ID: "t1", Now: 106 * sec, Participants: moved,
		WriteSet: sampleWrites(), Succeeded: true})
	if eff.Verdict != VerdictOK || !eff.Changed || out.Epoch != in.Epoch+1 || out.Participants[1].Shard != 9 {
		t.Fatalf("re-stage: %+v %+v", eff, out)
	}
	if _, eff := NextRecord(out, Event{Kind: EvRecover, ID: "t1", Epoch: in.Epoch, AllPrepared: true}); eff.Verdict != VerdictStale {
		t.Fatalf("recovery of the old participants: %v, want stale", eff.Verdict)
	}
}

func TestNextRecordForeignID(t *testing.T) {
	out, eff := NextRecord(rec(Pending), Event{Kind: EvCommit, ID: "t2"})
	if eff.Verdict != VerdictMissing || out.State != Pending {
		t.Fatalf("commit of another txn: %v %v", eff.Verdict, out.State)
	}
}

// TestResolveIntent: committed shows the new value (from the record's
// write set), aborted the old; not final keeps the intent (Invariant I8).
func TestResolveIntent(t *testing.T) {
	wi := Intent{TxnID: "t1", Key: []byte("a"), Access: AccessWrite, Anchor: []byte("a")}
	ri := Intent{TxnID: "t1", Key: []byte("m"), Access: AccessRead, Anchor: []byte("a")}
	untaken := Intent{TxnID: "t1", Key: []byte("z"), Access: AccessWrite, Anchor: []byte("a")}
	forgotten, _ := NextRecord(rec(Committed), Event{Kind: EvForget, ID: "t1"})
	cases := []struct {
		in    Intent
		rec   *Record
		want  Resolution
		value string
	}{
		{wi, nil, Resolution{Keep: true}, ""},
		{wi, rec(Pending), Resolution{Keep: true}, ""},
		{wi, rec(Staging), Resolution{Keep: true}, ""},
		{wi, rec(Aborted), Resolution{Remove: true}, ""},
		{wi, rec(Committed), Resolution{Remove: true}, "0"},
		{ri, rec(Committed), Resolution{Remove: true}, ""},
		{untaken, rec(Committed), Resolution{Remove: true}, ""},
		{Intent{TxnID: "t2", Key: []byte("a")}, rec(Committed), Resolution{Keep: true}, ""},
		// Forgotten: a duplicate intent (every one was resolved before the
		// forget): dropped, nothing applied again.
		{wi, forgotten, Resolution{Remove: true}, ""},
	}
	for i, c := range cases {
		got := ResolveIntent(c.in, c.rec)
		if got.Keep != c.want.Keep || got.Remove != c.want.Remove || (got.Apply != nil) != (c.value != "") {
			t.Fatalf("case %d: %+v, want %+v apply %q", i, got, c.want, c.value)
		}
		if got.Apply != nil && string(got.Apply.Value) != c.value {
			t.Fatalf("case %d: applies %q, want %q", i, got.Apply.Value, c.value)
		}
		// The record trimmed to the intent's key resolves it the same.
		if trimmed := ResolveIntent(c.in, c.rec.ForKeys([]KeyIntent{{Key: c.in.Key}})); !reflect.DeepEqual(trimmed, got) {
			t.Fatalf("case %d: the record for its key resolves %+v, the whole record %+v", i, trimmed, got)
		}
	}
	// ForKeys keeps the writes to its keys only, and no participants.
	full := rec(Committed)
	full.WriteSet = append(full.WriteSet, Write{Key: []byte("b"), Value: []byte("1")}, Write{Key: []byte("c"), Value: []byte("2")})
	full.Participants = []Participant{{Shard: 1, Keys: []KeyIntent{{Key: []byte("a")}}}, {Shard: 2, Keys: []KeyIntent{{Key: []byte("c")}}}}
	got := full.ForKeys([]KeyIntent{{Key: []byte("c")}, {Key: []byte("q")}})
	if len(got.WriteSet) != 1 || string(got.WriteSet[0].Key) != "c" || got.Participants != nil ||
		got.ID != full.ID || got.State != full.State || got.Succeeded != full.Succeeded {
		t.Fatalf("ForKeys(c, q) of %+v = %+v", full, got)
	}
	// Past eight keys it looks them up in a map: the same writes, in the
	// write set's order.
	many := []KeyIntent{{Key: []byte("c")}, {Key: []byte("a")}}
	for i := range 10 {
		many = append(many, KeyIntent{Key: []byte{'x', byte('0' + i)}})
	}
	got = full.ForKeys(many)
	if len(got.WriteSet) != 2 || string(got.WriteSet[0].Key) != "a" || string(got.WriteSet[1].Key) != "c" {
		t.Fatalf("ForKeys of %d keys: writes %+v, want a then c", len(many), got.WriteSet)
	}
}

// TestIntentMeetingRules: readers share read intents; anything else
// conflicts; a request that meets one waits, then pushes, then gives up;
// a final record lets it proceed at once.
func TestIntentMeetingRules(t *testing.T) {
	r := Intent{TxnID: "t1", Access: AccessRead}
	w := Intent{TxnID: "t1", Access: AccessWrite}
	for _, c := range []struct {
		by   string
		a    Access
		in   Intent
		want bool
	}{
		{"t2", AccessRead, r, false}, {"t2", AccessWrite, r, true}, {"t2", AccessRead, w, true},
		{"t2", AccessWrite, w, true}, {"t1", AccessWrite, w, false}, {"", AccessRead, r, false},
		{"", AccessRead, w, true}, {"", AccessWrite, r, true},
	} {
		if got := Conflict(c.by, c.a, c.in); got != c.want {
			t.Fatalf("%q %v meets %v: %v, want %v", c.by, c.a, c.in.Access, got, c.want)
		}
	}
	cfg := MeetConfig{PushAfter: 50 * time.Millisecond, MaxWait: time.Second}
	for _, c := range []struct {
		rec    *Record
		waited time.Duration
		pushed bool
		want   Meeting
	}{
		{rec(Committed), 0, false, MeetProceed},
		{rec(Aborted), 0, false, MeetProceed},
		{rec(Pending), 0, false, MeetWait},
		{rec(Pending), 60 * time.Millisecond, false, MeetPush},
		{nil, 60 * time.Millisecond, false, MeetPush},
		{rec(Staging), 60 * time.Millisecond, true, MeetWait},
		{rec(Staging), time.Second, true, MeetGiveUp},
		{rec(Committed), time.Hour, true, MeetProceed},
	} {
		if got := Meet(cfg, c.rec, c.waited, c.pushed); got != c.want {
			t.Fatalf("record %v waited %v pushed %v: %v, want %v", c.rec, c.waited, c.pushed, got, c.want)
		}
	}
}

func TestPrepareDecisionAndProbe(t *testing.T) {
	held := map[string][]Intent{"a": {{TxnID: "t2", Key: []byte("a"), Access: AccessRead}}}
	existing := func(k []byte) []Intent { return held[string(k)] }
	if v, c := PrepareDecision("t1", []KeyIntent{{Key: []byte("a"), Access: AccessRead}}, existing, false); v != VoteYes || c != nil {
		t.Fatalf("read on a read intent: %v", v)
	}
	v, c := PrepareDecision("t1", []KeyIntent{{Key: []byte("b"), Access: AccessWrite}, {Key: []byte("a"), Access: AccessWrite}}, existing, false)
	if v != VoteConflict || c == nil || c.TxnID != "t2" {
		t.Fatalf("write on a read intent: %v %+v", v, c)
	}
	if v, _ := PrepareDecision("t1", nil, existing, true); v != VotePrevented {
		t.Fatalf("prevented: %v", v)
	}
	keys := []KeyIntent{{Key: []byte("a")}, {Key: []byte("b")}}
	if Probe(keys, func(k []byte) bool { return true }) != ProbePrepared {
		t.Fatal("all present")
	}
	if Probe(keys, func(k []byte) bool { return string(k) == "a" }) != ProbePrevented {
		t.Fatal("one missing")
	}
}
