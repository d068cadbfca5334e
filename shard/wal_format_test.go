package shard

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/wire"
)

// The WAL file header, byte for byte (fsm/DESIGN.md "Persisted formats"):
// version 1 is written without a version field, exactly as cf3dc0d wrote
// every header (test/testdata/upgrade/vcf3dc0d), so a binary from before
// the version reads this one's files; a later version writes the field.
// Each decodes to its version: no field and an explicit 1 are version 1, 2
// is refused (fsm.ErrNewerFormat) even with more after it, 0 is malformed.
func TestWALHeaderEncoding(t *testing.T) {
	for _, c := range []struct {
		name    string
		op      walOp
		golden  string // framed record: len u32 LE, crc32c u32 LE, body
		version uint64
		err     error
	}{
		// The header of test/testdata/upgrade/vcf3dc0d's n1/raft-wal/0000000000000001.wal.
		{"v1, the cf3dc0d fixture's", walOp{kind: walHeader, min: 1, version: walFormat}, "02000000a66ca8100101", 1, nil},
		{"v1, as cf3dc0d", walOp{kind: walHeader, min: 300, version: walFormat}, "030000006cfac87301ac02", 1, nil},
		{"v1, field left out", walOp{kind: walHeader, min: 300}, "030000006cfac87301ac02", 1, nil},
		{"v1, explicit", walOp{}, "04000000" + "00000000" + "01ac0201", 1, nil},
		{"v2", walOp{kind: walHeader, min: 300, version: 2}, "04000000" + "00000000" + "01ac0202", 2, fsm.ErrNewerFormat},
		{"v2 with more", walOp{}, "05000000" + "00000000" + "01ac0202ff", 2, fsm.ErrNewerFormat},
		{"v0", walOp{}, "04000000" + "00000000" + "01ac0200", 0, wire.ErrMalformed},
	} {
		golden, err := hex.DecodeString(c.golden)
		if err != nil {
			t.Fatal(err)
		}
		if c.op.kind != 0 {
			b := appendWALOpRecord(nil, c.op)
			if c.golden[8:16] == "00000000" { // crc left to the encoder
				copy(golden[4:8], b[4:8])
			}
			if !bytes.Equal(b, golden) {
				t.Errorf("%s: header encoding changed\n got %x\nwant %x", c.name, b, golden)
			}
		}
		op, err := decodeWALOp(golden[walFrameHeader:])
		if !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Errorf("%s: decode: %v, want %v", c.name, err, c.err)
			continue
		}
		seq := uint64(300)
		if c.op.min != 0 {
			seq = c.op.min
		}
		if op.kind != walHeader || op.min != seq || op.version != c.version {
			t.Errorf("%s: decoded kind %d seq %d version %d, want a header of seq %d, version %d", c.name, op.kind, op.min, op.version, seq, c.version)
		}
	}
}

// setWALHeader rewrites the header record of the segment file at path as
// body (the records after it are kept, moved).
func setWALHeader(t *testing.T, path string, body []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := walFrameHeader + int(binary.LittleEndian.Uint32(b))
	rec := make([]byte, walFrameHeader, walFrameHeader+len(body))
	rec = append(rec, body...)
	binary.LittleEndian.PutUint32(rec, uint32(len(body)))
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(body, walCRC))
	if err := os.WriteFile(path, append(rec, b[n:]...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeTestWAL leaves a closed WAL of several segments holding entries
// 1..40 of group 1 and a stable value, and returns its files.
func writeTestWAL(t *testing.T, dir string) []string {
	t.Helper()
	w := mustWAL(t, dir)
	w.segSize = 256
	storeRange(t, w.Group(1), 1, 40)
	if err := w.Group(1).SetUint64([]byte("CurrentTerm"), 5); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	files := segFiles(t, dir)
	if len(files) < 3 {
		t.Fatalf("want several segments, got %d", len(files))
	}
	return files
}

// A segment whose header says a newer format (written by a later binary)
// fails recovery with an error naming the file and the version, and is left
// as it is: not read as version 1, and in the newest file not cut off as a
// torn tail. A header with an explicit version 1 (what a later binary may
// write once no older one reads its files) opens like one without.
func TestWALNewerFormatRefused(t *testing.T) {
	for _, which := range []string{"oldest", "middle", "newest"} {
		t.Run(which, func(t *testing.T) {
			dir := t.TempDir()
			files := writeTestWAL(t, dir)
			path := map[string]string{"oldest": files[0], "middle": files[1], "newest": files[len(files)-1]}[which]
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			hdr, err := decodeWALOp(b[walFrameHeader : walFrameHeader+binary.LittleEndian.Uint32(b)])
			if err != nil || hdr.kind != walHeader {
				t.Fatalf("%s: first record %+v, %v", path, hdr, err)
			}
			setWALHeader(t, path, []byte{walHeader, byte(hdr.min), 2})
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			w, err := OpenWAL(dir)
			if err == nil {
				w.Close()
				t.Fatalf("opened a WAL whose %s file is format v2", which)
			}
			if !errors.Is(err, fsm.ErrNewerFormat) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "v2") {
				t.Fatalf("error %q: want fsm.ErrNewerFormat naming %s and v2", err, path)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
				t.Fatalf("the refused file changed: %d bytes, was %d", len(after), len(before))
			}

			// The same file with an explicit version 1 reads as before.
			setWALHeader(t, path, []byte{walHeader, byte(hdr.min), 1})
			w = mustWAL(t, dir)
			defer w.Close()
			g := w.Group(1)
			if f, l := indexes(t, g); l != 40 || f < 1 {
				t.Fatalf("explicit v1: first %d last %d, want last 40", f, l)
			}
			var out raft.Log
			if err := g.GetLog(40, &out); err != nil || out.Term != testEntry(40).Term || string(out.Data) != string(testEntry(40).Data) {
				t.Fatalf("explicit v1: entry 40: %v %+v", err, out)
			}
			if v, err := g.GetUint64([]byte("CurrentTerm")); err != nil || v != 5 {
				t.Fatalf("explicit v1: CurrentTerm %d, %v", v, err)
			}
		})
	}
}

// Files as every binary before the version wrote them (a header without a
// version, which is also what this binary writes) open as version 1, and a
// file this binary starts begins with that same header.
func TestWALFilesAreVersion1(t *testing.T) {
	dir := t.TempDir()
	files := writeTestWAL(t, dir)
	for _, path := range files {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if n := binary.LittleEndian.Uint32(b); n > 1+binary.MaxVarintLen64 || b[walFrameHeader] != walHeader {
			t.Fatalf("%s: header record of %d bytes, kind %d", path, n, b[walFrameHeader])
		}
		body := b[walFrameHeader : walFrameHeader+binary.LittleEndian.Uint32(b)]
		if _, n := binary.Uvarint(body[1:]); 1+n != len(body) {
			t.Errorf("%s: header %x has more than the seq: binaries before the version cannot read it", path, body)
		}
	}
	w := mustWAL(t, dir)
	defer w.Close()
	for _, seg := range w.segs {
		if seg.version != 1 {
			t.Errorf("segment %d: version %d, want 1", seg.seq, seg.version)
		}
	}
	if f, l := indexes(t, w.Group(1)); l != 40 || f < 1 {
		t.Fatalf("first %d last %d, want last 40", f, l)
	}
}
