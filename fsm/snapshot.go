package fsm

import (
	"bufio"
	"encoding/binary"
	"fmt"
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
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 64<<10)
	bw.WriteString(snapMagic)
	bw.WriteByte(snapFormat)
	var hdr []byte
	for i, name := range allBuckets {
		err := s.tx.Bucket(name).ForEach(func(k, v []byte) error {
			hdr = append(hdr[:0], byte(i+1))
			hdr = binary.AppendUvarint(hdr, uint64(len(k)))
			bw.Write(hdr)
			bw.Write(k)
			bw.Write(binary.AppendUvarint(hdr[:0], uint64(len(v))))
			_, err := bw.Write(v) // bufio keeps the first error: checking the last write suffices
			return err
		})
		if err != nil {
			return err
		}
	}
	bw.WriteByte(snapEnd)
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(binary.BigEndian.AppendUint32(nil, crc.Sum32()))
	return err
}

// Release ends the read transaction. Safe to call more than once.
func (s *snapshot) Release() {
	s.release.Do(func() { _ = s.tx.Rollback() })
}
