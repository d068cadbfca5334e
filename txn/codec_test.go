package txn

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

func sampleRequest() *Request {
	return &Request{
		Compare: []Compare{cmpv("acct/a", TargetValue, CmpGe, "10"), cmpv("acct/b", TargetModIndex, CmpEq, "0")},
		Success: []Op{put("acct/a", "0"), {Kind: OpPut, Key: []byte("acct/b"), Value: []byte("10"), TTL: time.Minute,
			Fence: &Fence{Lock: "jobs/daily", Token: 4711}}, get("acct/c"), del("tmp/x")},
		Failure:   []Op{get("acct/a")},
		RequestID: "t-17",
	}
}

func sampleRecords() []*Record {
	rs := []*Record{rec(Pending), rec(Staging), rec(Committed), rec(Aborted)}
	rs[1].WriteSet[0].Fence = &Fence{Lock: "l", Token: 3}
	rs[1].WriteSet[0].TTL = time.Second
	return append(rs, &Record{ID: "x", State: Aborted, Cause: CauseExpired, Heartbeat: -5})
}

func sampleIntents() []*Intent {
	return []*Intent{
		{TxnID: "t1", Key: []byte("a"), Access: AccessWrite, Anchor: []byte("a"), Priority: 3, PreparedAt: 100 * sec, PreparedSeq: 12,
			Write: &Write{Key: []byte("a"), Value: []byte("0"), Fence: &Fence{Lock: "l", Token: 9}}},
		{TxnID: "t1", Key: []byte("m"), Access: AccessRead, Anchor: []byte("a")},
		{TxnID: "t2", Key: []byte("n"), Access: AccessWrite, Anchor: []byte("q"), Write: &Write{Key: []byte("n"), Delete: true}},
	}
}

// TestCodecRoundTrip: every encoding decodes to what was encoded (the
// request, the record and the intent are part of the log and snapshots).
func TestCodecRoundTrip(t *testing.T) {
	r := sampleRequest()
	got, err := DecodeRequest(EncodeRequest(r))
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("request: %v\n got %+v\nwant %+v", err, got, r)
	}
	for _, rc := range sampleRecords() {
		got, err := DecodeRecord(EncodeRecord(rc))
		if err != nil || !reflect.DeepEqual(got, rc) {
			t.Fatalf("record: %v\n got %+v\nwant %+v", err, got, rc)
		}
	}
	for _, in := range sampleIntents() {
		got, err := DecodeIntent(EncodeIntent(in))
		if err != nil || !reflect.DeepEqual(got, in) {
			t.Fatalf("intent: %v\n got %+v\nwant %+v", err, got, in)
		}
	}
}

// TestCodecGolden pins the bytes of one record and one intent: a change of
// what an encoder writes breaks stored state and mixed-version logs.
func TestCodecGolden(t *testing.T) {
	rc := &Record{ID: "t", State: Committed, Anchor: []byte("a"), WriteSet: []Write{{Key: []byte("a"), Value: []byte("1")}},
		Succeeded: true, Heartbeat: 1, Priority: 2, Epoch: 3}
	if got, want := EncodeRecord(rc), "\x01\x0a\x01t\x10\x03\x1a\x01a\x2a\x06\x0a\x01a\x12\x011\x30\x01\x38\x02\x40\x02\x48\x03"; string(got) != want {
		t.Fatalf("record bytes %q, want %q", got, want)
	}
	in := &Intent{TxnID: "t", Key: []byte("k"), Access: AccessRead, Anchor: []byte("a")}
	if got, want := EncodeIntent(in), "\x01\x0a\x01t\x12\x01k\x18\x01\x2a\x01a"; string(got) != want {
		t.Fatalf("intent bytes %q, want %q", got, want)
	}
}

func TestDecodeRejects(t *testing.T) {
	bad := map[string][]byte{
		"empty":           nil,
		"unknown format":  {9},
		"truncated":       EncodeRecord(rec(Staging))[:20],
		"no id":           EncodeRecord(&Record{State: Pending}),
		"bad state":       EncodeRecord(&Record{ID: "t", State: 9}),
		"cause not abort": EncodeRecord(&Record{ID: "t", State: Committed, Cause: CauseExpired}),
		"forgotten abort": EncodeRecord(&Record{ID: "t", State: Aborted, Forgotten: true}),
		"wrong wire type": {recordFormat, 0x08, 0x01}, // field 1 (id) as a varint
	}
	for name, b := range bad {
		if _, err := DecodeRecord(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("record %s: %v", name, err)
		}
	}
	badIntent := map[string]*Intent{
		"no access":        {TxnID: "t", Key: []byte("k"), Anchor: []byte("a")},
		"no anchor":        {TxnID: "t", Key: []byte("k"), Access: AccessRead},
		"read with write":  {TxnID: "t", Key: []byte("k"), Access: AccessRead, Anchor: []byte("a"), Write: &Write{Key: []byte("k")}},
		"write other key":  {TxnID: "t", Key: []byte("k"), Access: AccessWrite, Anchor: []byte("a"), Write: &Write{Key: []byte("j")}},
		"empty key":        {TxnID: "t", Access: AccessRead, Anchor: []byte("a")},
		"delete and value": {TxnID: "t", Key: []byte("k"), Access: AccessWrite, Anchor: []byte("a"), Write: &Write{Key: []byte("k"), Delete: true, Value: []byte("v")}},
	}
	for name, in := range badIntent {
		if _, err := DecodeIntent(EncodeIntent(in)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("intent %s: %v", name, err)
		}
	}
	for name, r := range map[string]*Request{
		"empty":      {},
		"bad target": {Compare: []Compare{{Key: []byte("a"), Target: 9, Op: CmpEq}}},
		"dup write":  {Success: []Op{put("a", "1"), put("a", "2")}},
	} {
		if _, err := DecodeRequest(EncodeRequest(r)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("request %s: %v", name, err)
		}
	}
}

func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{requestFormat})
	f.Add(EncodeRequest(sampleRequest()))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		r2, err := DecodeRequest(EncodeRequest(r))
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("decode(encode(x)) != x: %v\n%+v\n%+v", err, r2, r)
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{recordFormat})
	for _, r := range sampleRecords() {
		f.Add(EncodeRecord(r))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecord(b)
		if sum, perr := PeekRecord(b); perr != nil && !errors.Is(perr, ErrCorrupt) {
			t.Fatalf("peek error %v does not wrap ErrCorrupt", perr)
		} else if err == nil && (perr != nil || sum != (RecordSummary{State: r.State, Heartbeat: r.Heartbeat, Forgotten: r.Forgotten})) {
			t.Fatalf("peek %+v %v disagrees with the decoded record %+v", sum, perr, r)
		}
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		r2, err := DecodeRecord(EncodeRecord(r))
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("decode(encode(x)) != x: %v\n%+v\n%+v", err, r2, r)
		}
	})
}

func FuzzDecodeIntent(f *testing.F) {
	f.Add([]byte{})
	for _, in := range sampleIntents() {
		f.Add(EncodeIntent(in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := DecodeIntent(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		in2, err := DecodeIntent(EncodeIntent(in))
		if err != nil || !reflect.DeepEqual(in, in2) {
			t.Fatalf("decode(encode(x)) != x: %v\n%+v\n%+v", err, in2, in)
		}
	})
}

// FuzzNextRecord: any stored record and event give a record that encodes
// and decodes, and a final record never changes state.
func FuzzNextRecord(f *testing.F) {
	for _, r := range sampleRecords() {
		f.Add(EncodeRecord(r), uint8(EvPush), int64(200*sec), uint64(1), true)
		f.Add(EncodeRecord(r), uint8(EvDecide), int64(200*sec), uint64(1), false)
	}
	f.Add([]byte{}, uint8(EvDecide), int64(200*sec), uint64(0), false)
	f.Fuzz(func(t *testing.T, rb []byte, kind uint8, now int64, epoch uint64, all bool) {
		r, err := DecodeRecord(rb)
		if err != nil {
			r = nil
		}
		id := "t1"
		if r != nil {
			id = r.ID
		}
		ev := Event{Kind: EventKind(kind), ID: id, Now: now, Epoch: epoch, AllPrepared: all, Timeout: time.Second,
			WriteSet: sampleWrites(), Cause: CauseCoordinator, PusherID: "p"}
		out, _ := NextRecord(r, ev)
		if out == nil {
			return
		}
		if _, err := DecodeRecord(EncodeRecord(out)); err != nil && r != nil {
			t.Fatalf("next record does not decode: %v", err)
		}
		if r != nil && r.State.Final() && out.State != r.State {
			t.Fatalf("final %v became %v", r.State, out.State)
		}
		if ev.Kind == EvDecide && (r == nil || r.State == Pending) &&
			(out.State != Committed || len(out.WriteSet) != len(ev.WriteSet)) {
			t.Fatalf("a decide from %v left %+v", r, out)
		}
		if ev.Kind == EvDecide && r != nil && r.State == Staging && out.State != Staging {
			t.Fatalf("a decide moved a staging record to %v", out.State)
		}
	})
}

// TestPeekRecord: the sweep's cheap look at a stored record agrees with
// its decoding (state, heartbeat, forgotten) and refuses what is not a
// record.
func TestPeekRecord(t *testing.T) {
	recs := sampleRecords()
	recs = append(recs, &Record{ID: "f", State: Committed, Heartbeat: -5, Epoch: 3, Forgotten: true})
	for _, r := range recs {
		sum, err := PeekRecord(EncodeRecord(r))
		if err != nil || sum != (RecordSummary{State: r.State, Heartbeat: r.Heartbeat, Forgotten: r.Forgotten}) {
			t.Fatalf("peek of %+v: %+v %v", r, sum, err)
		}
	}
	for _, b := range [][]byte{nil, {9}, {recordFormat}, {recordFormat, 0xff}} {
		if _, err := PeekRecord(b); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("peek of %x: %v", b, err)
		}
	}
}
