package fsm

import "testing"

// A shard with a few small keys is not 0 bytes: bbolt keeps a bucket that
// small inline in its parent's page, with no pages of its own, and
// SizeBytes counts those bytes too ("cairn cluster status" showed 0 B,
// issue 11 item 9).
func TestSizeBytesSmallShard(t *testing.T) {
	if n := newFSM(t).SizeBytes(); n != 0 {
		t.Errorf("SizeBytes %d of an empty shard", n)
	}
	f := newFSM(t)
	mustApply(t, f, 1, put("greeting", "hello"))
	if n := f.SizeBytes(); n < int64(len("greeting")+len("hello")) {
		t.Fatalf("SizeBytes %d after one key of 13 bytes", n)
	}
}
