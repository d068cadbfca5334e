package fsm

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"sync"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// Snapshot stream format (version 1):
//
//	"CAIRNSNP" | version byte |
//	records: bucket id byte (1..6, see allBuckets) | uvarint key len | key | uvarint value len | value
//	end record: bucket id 0 |
//	crc32 (Castagnoli, big-endian) over everything before it.
//
// Our own format rather than a bbolt file copy: it is independent of bbolt's
// page layout, checksummed end to end, and restorable record by record.
const (
	snapMagic  = "CAIRNSNP"
	snapFormat = 1
	snapEnd    = 0
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// snapshot is a point-in-time view: a bbolt read transaction taken by
// Snapshot. Holding it costs no copy, so Snapshot returns at once and Apply
// (which raft blocks during Snapshot) resumes; Persist streams the view
// while later entries are applied.
//
// A long read transaction keeps bbolt from growing its mmap, so a commit
// that must grow the file waits for Release; InitialMmapSize makes that rare.
type snapshot struct {
	tx      *bbolt.Tx
	release sync.Once
}

var _ raft.FSMSnapshot = (*snapshot)(nil)

// Snapshot captures the current state without copying it.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	if f.db == nil {
		return nil, ErrClosed
	}
	f.flush("snapshot")
	if err := f.brokenErr(); err != nil {
		// The file lacks entries raft counts as applied: a snapshot of it
		// labelled with raft's index would lose them for good.
		return nil, err
	}
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("fsm: snapshot: %w", err)
	}
	return &snapshot{tx: tx}, nil
}

// Persist writes the snapshot to sink, closing it, or cancelling it on error.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.writeTo(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("fsm: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("fsm: close snapshot sink: %w", err)
	}
	return nil
}

func (s *snapshot) writeTo(w io.Writer) error {
	sw := newSnapWriter(w)
	for i, name := range allBuckets {
		if err := s.tx.Bucket(name).ForEach(func(k, v []byte) error { return sw.record(i, k, v) }); err != nil {
			return err
		}
	}
	return sw.finish()
}

// snapWriter writes the snapshot stream format above: Persist writes a whole
// store with it, a split the child's half (exportChild). restore.go reads it.
type snapWriter struct {
	w   io.Writer
	crc hash.Hash32
	bw  *bufio.Writer
	hdr []byte
}

// newSnapWriter starts a stream on w: magic and version.
func newSnapWriter(w io.Writer) *snapWriter {
	crc := crc32.New(castagnoli)
	sw := &snapWriter{w: w, crc: crc, bw: bufio.NewWriterSize(io.MultiWriter(w, crc), 64<<10)}
	sw.bw.WriteString(snapMagic)
	sw.bw.WriteByte(snapFormat)
	return sw
}

// record writes one key/value of bucket allBuckets[bucket].
func (sw *snapWriter) record(bucket int, k, v []byte) error {
	sw.hdr = append(sw.hdr[:0], byte(bucket+1))
	sw.hdr = binary.AppendUvarint(sw.hdr, uint64(len(k)))
	sw.bw.Write(sw.hdr)
	sw.bw.Write(k)
	sw.bw.Write(binary.AppendUvarint(sw.hdr[:0], uint64(len(v))))
	_, err := sw.bw.Write(v) // bufio keeps the first error: checking the last write suffices
	return err
}

// finish writes the end record and the checksum of everything before it.
func (sw *snapWriter) finish() error {
	sw.bw.WriteByte(snapEnd)
	if err := sw.bw.Flush(); err != nil {
		return err
	}
	_, err := sw.w.Write(binary.BigEndian.AppendUint32(nil, sw.crc.Sum32()))
	return err
}

// Release ends the read transaction. Safe to call more than once.
func (s *snapshot) Release() {
	s.release.Do(func() { _ = s.tx.Rollback() })
}
