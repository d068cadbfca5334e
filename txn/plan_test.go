package txn

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// rangeLookup routes like a range map: shard i+1 owns [bounds[i-1], bounds[i]).
func rangeLookup(bounds ...string) Lookup {
	return func(key []byte) (uint64, uint64, error) {
		for i, b := range bounds {
			if string(key) < b {
				return uint64(i + 1), uint64(10 + i), nil
			}
		}
		return uint64(len(bounds) + 1), uint64(10 + len(bounds)), nil
	}
}

func TestRoute(t *testing.T) {
	r := &Request{
		Compare: []Compare{cmpv("acct/a", TargetValue, CmpGe, "10"), cmpv("acct/q", TargetExists, CmpEq, "true")},
		Success: []Op{get("acct/z"), put("acct/q", "1"), put("acct/a", "0")},
		Failure: []Op{get("acct/a"), del("acct/z")},
	}
	rt, err := Route(r, rangeLookup("acct/m", "acct/t"))
	if err != nil {
		t.Fatal(err)
	}
	if got := rt.Shards(); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Fatalf("shards %v", got)
	}
	if string(rt.Anchor) != "acct/q" || rt.AnchorShard != 2 {
		t.Fatalf("anchor %q on %d, want the first success write acct/q on 2", rt.Anchor, rt.AnchorShard)
	}
	p1 := rt.Participant(1)
	if p1.Epoch != 10 || !slices.Equal(p1.Compare, []int{0}) || !slices.Equal(p1.Success, []int{2}) ||
		!slices.Equal(p1.Failure, []int{0}) || len(p1.Keys) != 1 || p1.Keys[0].Access != AccessWrite {
		t.Fatalf("shard 1 part %+v", p1)
	}
	p3 := rt.Participant(3)
	if len(p3.Keys) != 1 || p3.Keys[0].Access != AccessWrite { // read in success, deleted in failure
		t.Fatalf("shard 3 part %+v", p3)
	}
	if rt.Participant(9) != nil || rt.SingleShard() {
		t.Fatal("participant 9 or single shard")
	}
	one, _ := Route(&Request{Compare: []Compare{cmpv("b", TargetVersion, CmpEq, "0")}, Success: []Op{get("a")}}, rangeLookup("m"))
	if !one.SingleShard() || string(one.Anchor) != "b" {
		t.Fatalf("read-only one-shard routing %+v", one)
	}
	boom := errors.New("no range")
	if _, err := Route(r, func([]byte) (uint64, uint64, error) { return 0, 0, boom }); !errors.Is(err, boom) {
		t.Fatalf("lookup error: %v", err)
	}
	flaky := 0
	_, err = Route(r, func(k []byte) (uint64, uint64, error) { flaky++; return 1, uint64(flaky), nil })
	if err == nil || !strings.Contains(err.Error(), "epochs") {
		t.Fatalf("one shard at two epochs: %v", err)
	}
}

func parts(st ...PartStatus) []PartState {
	ps := make([]PartState, len(st))
	for i, s := range st {
		ps[i] = PartState{Shard: uint64(i + 1), Status: s, Attempts: 1}
	}
	return ps
}

func acts(as []Action) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, " ")
}

// TestPlan is the coordinator's decision table (decide, then execute):
// each row is what the coordinator knows, and the actions it must take.
// Invariant I8 (the record is the only commit point: a reply of committed
// follows a Committed record or a Staging one with every vote; an abort
// goes through the record) and I7 (an unknown outcome is reported as such).
func TestPlan(t *testing.T) {
	cases := []struct {
		name string
		s    CoordState
		want string
	}{
		{"fast: start", CoordState{Fast: true, AnchorShard: 1, Parts: parts(PartUnsent, PartUnsent)},
			"prepare(1) prepare(2) stage"},
		{"compare path: start, every participant but the anchor's prepares", CoordState{AnchorShard: 2, Parts: parts(PartUnsent, PartUnsent, PartUnsent)},
			"prepare(1) prepare(3)"},
		{"record write in flight", CoordState{Fast: true, Record: RecSent, Parts: parts(PartSent, PartYes)}, "wait"},
		{"prepares in flight", CoordState{Fast: true, Record: RecStaging, Parts: parts(PartSent, PartYes)}, "wait"},
		{"fast: all yes and staging: implicitly committed", CoordState{Fast: true, Record: RecStaging, Parts: parts(PartYes, PartYes)},
			"reply(committed) commit"},
		{"fast: all yes, replied", CoordState{Fast: true, Record: RecStaging, Replied: true, Parts: parts(PartYes, PartYes)}, "commit"},
		{"compare path: the others voted yes, the anchor decides", CoordState{AnchorShard: 2, Parts: parts(PartYes, PartUnsent)}, "decide(2)"},
		{"compare path: decide from a begun record", CoordState{AnchorShard: 1, Record: RecPending, Parts: parts(PartUnsent, PartYes)}, "decide(1)"},
		{"compare path: decide waits for the other votes", CoordState{AnchorShard: 2, Parts: parts(PartSent, PartUnsent)}, "wait"},
		{"compare path: decide in flight", CoordState{AnchorShard: 2, Record: RecSent, Parts: parts(PartYes, PartSent)}, "wait"},
		{"compare path: decide's answer unknown, the record read none: decide again", CoordState{AnchorShard: 2, Parts: parts(PartYes, PartUnknown), MaxAttempts: 3},
			"decide(2)"},
		{"compare path: decide met an intent on an anchor key: push it", CoordState{AnchorShard: 2, Parts: parts(PartYes, PartConflict), MaxAttempts: 3},
			"push(2)"},
		{"compare path: decide out of attempts", CoordState{AnchorShard: 2, Parts: []PartState{{Shard: 1, Status: PartYes}, {Shard: 2, Status: PartConflict, Attempts: 3}}, MaxAttempts: 3},
			"abort(conflict)"},
		{"compare path: decide wrong_shard: re-route", CoordState{AnchorShard: 2, Parts: parts(PartYes, PartWrongShard), MaxAttempts: 3}, "reroute(2)"},
		{"compare path: prepares outlive a heartbeat interval: begin the record, no decide yet", CoordState{AnchorShard: 2, Heartbeat: true, Parts: parts(PartConflict, PartUnsent), MaxAttempts: 3},
			"begin push(1)"},
		{"compare path: heartbeat due with all yes: begin first, then decide", CoordState{AnchorShard: 2, Heartbeat: true, Parts: parts(PartYes, PartUnsent)}, "begin"},
		{"compare path: committed: the anchor holds no intent, resolve the others", CoordState{AnchorShard: 2, Record: RecCommitted, Parts: parts(PartYes, PartResolved, PartYes)},
			"reply(committed) resolve(1) resolve(3)"},
		{"compare path: aborted after conflicts on the anchor: resolve the others only", CoordState{AnchorShard: 1, Record: RecAborted,
			Parts: []PartState{{Shard: 1, Status: PartConflict, Attempts: 3}, {Shard: 2, Status: PartYes}}}, "reply(aborted) resolve(2)"},
		{"conflict: push the blocker", CoordState{Record: RecPending, Parts: parts(PartYes, PartConflict), MaxAttempts: 3}, "push(2)"},
		{"conflict: out of attempts", CoordState{Record: RecPending, Parts: []PartState{{Shard: 1, Status: PartConflict, Attempts: 3}}, MaxAttempts: 3},
			"abort(conflict)"},
		{"wrong shard: re-route", CoordState{Fast: true, Record: RecStaging, Parts: parts(PartWrongShard, PartYes), MaxAttempts: 3}, "reroute(1)"},
		{"unknown prepare: send again", CoordState{Record: RecPending, AnchorShard: 2, Parts: parts(PartUnknown, PartYes), MaxAttempts: 3}, "prepare(1)"},
		{"prevented: abort", CoordState{Fast: true, Record: RecStaging, Parts: parts(PartPrevented, PartYes)}, "abort(recovery)"},
		{"deadline: abort", CoordState{Record: RecPending, Deadline: true, Parts: parts(PartSent, PartYes)}, "abort(coordinator)"},
		{"heartbeat due", CoordState{Record: RecPending, Heartbeat: true, Parts: parts(PartSent, PartYes)}, "heartbeat wait"},
		{"record write unknown: read it", CoordState{Record: RecUnknown, Parts: parts(PartYes, PartYes)}, "read-record"},
		{"record write unknown at the deadline", CoordState{Record: RecUnknown, Deadline: true, Parts: parts(PartYes, PartYes)},
			"reply(unknown)"},
		{"unknown, replied, keep reading", CoordState{Record: RecUnknown, Deadline: true, Replied: true, Parts: parts(PartYes)}, "read-record"},
		{"committed: reply and resolve", CoordState{Record: RecCommitted, Parts: parts(PartYes, PartYes)},
			"reply(committed) resolve(1) resolve(2)"},
		{"aborted: resolve what may hold intents", CoordState{Record: RecAborted,
			Parts: []PartState{{Shard: 1, Status: PartYes}, {Shard: 2, Status: PartConflict, Attempts: 1}, {Shard: 3, Status: PartUnknown},
				{Shard: 4, Status: PartUnsent}, {Shard: 5, Status: PartConflict, Attempts: 2}}},
			"reply(aborted) resolve(1) resolve(3) resolve(5)"},
		{"resolving", CoordState{Record: RecCommitted, Replied: true, Parts: []PartState{{Shard: 1, Status: PartResolved}, {Shard: 2, Status: PartYes, Resolving: true}}},
			"wait"},
		{"done", CoordState{Record: RecCommitted, Replied: true, Parts: parts(PartResolved, PartResolved)}, "done"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := acts(Plan(&c.s)); got != c.want {
				t.Fatalf("Plan = %q, want %q", got, c.want)
			}
		})
	}
}
