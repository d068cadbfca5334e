package txn

import (
	"bytes"
	"testing"
)

// benchRecord is a two-shard transfer's record as the decide writes it: a
// key on each shard, both written with a 256-byte value.
func benchRecord() *Record {
	v := bytes.Repeat([]byte("v"), 256)
	return &Record{ID: "r61800cbfa5761a07f8972e3ccf74339f134f0d76", State: Committed, Anchor: []byte("bench/00001234"),
		Participants: []Participant{
			{Shard: 1, Epoch: 3, Keys: []KeyIntent{{Key: []byte("bench/00001234"), Access: AccessWrite}}},
			{Shard: 3, Epoch: 2, Keys: []KeyIntent{{Key: []byte("bench/00015678"), Access: AccessWrite}}},
		},
		WriteSet:  []Write{{Key: []byte("bench/00001234"), Value: v}, {Key: []byte("bench/00015678"), Value: v}},
		Succeeded: true, Heartbeat: 1 << 60, Priority: 1 << 31, Epoch: 2, RequestID: "w12-0000000001234567"}
}

func BenchmarkEncodeRecord(b *testing.B) {
	r := benchRecord()
	b.ReportAllocs()
	for b.Loop() {
		_ = EncodeRecord(r)
	}
}

func BenchmarkDecodeRecord(b *testing.B) {
	enc := EncodeRecord(benchRecord())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeRecord(enc); err != nil {
			b.Fatal(err)
		}
	}
}
