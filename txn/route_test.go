package txn

import "testing"

// TestRouteAnchorShardIsAParticipant: the anchor's shard comes from the
// participant holding the anchor key. A range map that changes between two
// lookups (a split under a routing) once gave an anchor shard that no
// participant had: Plan then never sent the decide and the coordinator spun
// until it answered outcome_unknown, intents left (review of the re-routing).
func TestRouteAnchorShardIsAParticipant(t *testing.T) {
	req := &Request{
		Compare: []Compare{{Key: []byte("a"), Target: TargetValue, Op: CmpEq, Value: []byte("old")}},
		Success: []Op{{Kind: OpPut, Key: []byte("a"), Value: []byte("x")}, {Kind: OpPut, Key: []byte("c"), Value: []byte("x")},
			{Kind: OpPut, Key: []byte("z"), Value: []byte("x")}},
	}
	calls := 0
	lookup := func(k []byte) (uint64, uint64, error) {
		calls++
		if string(k) >= "m" {
			return 2, 1, nil
		}
		if calls > 4 { // the map changes after the participants' lookups
			return 5, 2, nil
		}
		return 1, 1, nil
	}
	rt, err := Route(req, lookup)
	if err != nil {
		t.Fatal(err)
	}
	p := rt.Participant(rt.AnchorShard)
	if p == nil {
		t.Fatalf("anchor shard %d is no participant's (%v)", rt.AnchorShard, rt.Shards())
	}
	found := false
	for _, k := range p.Keys {
		found = found || string(k.Key) == "a"
	}
	if !found || rt.AnchorShard != 1 {
		t.Fatalf("anchor shard %d (participant %+v), want 1, holding the anchor key a", rt.AnchorShard, p)
	}
}
