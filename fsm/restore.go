package fsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	"go.etcd.io/bbolt"

	"github.com/cairndb/cairn/internal/durable"
)

// Bounds on snapshot records, checked before reading a record's bytes.
const (
	maxSnapValue     = 4 << 20 // a dedup record may hold a Prev and a Current value
	restoreBatchRecs = 10000   // records per restore transaction
	restoreBatchSize = 16 << 20
)

var errBadSnapshot = errors.New("fsm: invalid snapshot")

func restorePath(path string) string { return path + ".restore" }

// Restore replaces the whole state with the snapshot in rc. The stream is
// written to a new bbolt file beside Path and fully verified (checksum,
// structure, meta) before it replaces the current file, so a rejected
// snapshot leaves the current state untouched.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	tmp := restorePath(f.cfg.Path)
	if err := buildRestore(tmp, rc, f.cfg.MmapSize); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	applied, err := f.swapIn(tmp)
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	f.setApplied(applied)
	f.log.Info("restored snapshot", "applied", applied)
	if f.cfg.AfterRestore != nil {
		f.cfg.AfterRestore()
	}
	return nil
}

// buildRestore writes the verified snapshot into a new bbolt file at tmp.
func buildRestore(tmp string, r io.Reader, mmapSize int) error {
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	db, err := openDB(tmp, mmapSize)
	if err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	err = loadSnapshot(db, &snapReader{r: bufio.NewReaderSize(r, 64<<10)})
	if err == nil {
		err = db.View(func(tx *bbolt.Tx) error {
			_, _, err := readMeta(tx)
			return err
		})
	}
	if cerr := db.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	return nil
}

// loadSnapshot parses the stream into db in batched transactions (each one
// fsynced on commit) and verifies the trailer.
func loadSnapshot(db *bbolt.DB, sr *snapReader) error {
	head := make([]byte, len(snapMagic)+1)
	if err := sr.readFull(head); err != nil {
		return fmt.Errorf("%w: header: %v", errBadSnapshot, err)
	}
	if string(head[:len(snapMagic)]) != snapMagic || head[len(snapMagic)] != snapFormat {
		return fmt.Errorf("%w: bad magic or unsupported version", errBadSnapshot)
	}
	for done := false; !done; {
		err := db.Update(func(tx *bbolt.Tx) error {
			var err error
			done, err = loadBatch(tx, sr)
			return err
		})
		if err != nil {
			return err
		}
	}
	want := sr.sum
	var trailer [4]byte
	if err := sr.readFull(trailer[:]); err != nil {
		return fmt.Errorf("%w: trailer: %v", errBadSnapshot, err)
	}
	if got := binary.BigEndian.Uint32(trailer[:]); got != want {
		return fmt.Errorf("%w: checksum %08x, want %08x", errBadSnapshot, got, want)
	}
	if _, err := sr.r.ReadByte(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after checksum", errBadSnapshot)
	}
	return nil
}

// loadBatch reads records into tx until the end record (done=true) or the
// batch is full.
func loadBatch(tx *bbolt.Tx, sr *snapReader) (done bool, err error) {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return false, err
		}
	}
	size := 0
	for n := 0; n < restoreBatchRecs && size < restoreBatchSize; n++ {
		id, err := sr.ReadByte()
		if err != nil {
			return false, fmt.Errorf("%w: record: %v", errBadSnapshot, err)
		}
		if id == snapEnd {
			return true, nil
		}
		if int(id) > len(allBuckets) {
			return false, fmt.Errorf("%w: unknown bucket id %d", errBadSnapshot, id)
		}
		k, err := sr.readBytes(bbolt.MaxKeySize)
		if err != nil {
			return false, fmt.Errorf("%w: key: %v", errBadSnapshot, err)
		}
		v, err := sr.readBytes(maxSnapValue)
		if err != nil {
			return false, fmt.Errorf("%w: value: %v", errBadSnapshot, err)
		}
		if err := tx.Bucket(allBuckets[id-1]).Put(k, v); err != nil {
			return false, fmt.Errorf("%w: record: %v", errBadSnapshot, err)
		}
		size += len(k) + len(v)
	}
	return false, nil
}

// snapReader reads the snapshot stream, keeping the running checksum.
type snapReader struct {
	r   *bufio.Reader
	sum uint32
}

func (s *snapReader) ReadByte() (byte, error) {
	b, err := s.r.ReadByte()
	if err == nil {
		s.sum = crc32.Update(s.sum, castagnoli, []byte{b})
	}
	return b, err
}

func (s *snapReader) readFull(p []byte) error {
	_, err := io.ReadFull(s.r, p)
	if err == nil {
		s.sum = crc32.Update(s.sum, castagnoli, p)
	}
	return err
}

// readBytes reads a uvarint length (at most max) and that many bytes into a
// fresh slice. The buffer grows with the bytes actually read, so a crafted
// length cannot make it allocate beyond the input.
func (s *snapReader) readBytes(max int) ([]byte, error) {
	n, err := binary.ReadUvarint(s)
	if err != nil {
		return nil, err
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("length %d exceeds %d", n, max)
	}
	var buf bytes.Buffer
	if _, err := io.CopyN(&buf, s.r, int64(n)); err != nil {
		return nil, err
	}
	s.sum = crc32.Update(s.sum, castagnoli, buf.Bytes())
	return buf.Bytes(), nil
}

// swapIn replaces the open database with the file at tmp and returns the
// restored applied index. Readers are excluded for the swap.
func (f *FSM) swapIn(tmp string) (uint64, error) {
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	if f.db == nil {
		return 0, ErrClosed
	}
	// The file must hold every entry applied so far if the rename fails
	// and it is reopened; and bbolt's Close waits for an open write
	// transaction.
	f.wmu.Lock()
	f.mustCommitLocked("restore")
	f.wmu.Unlock()
	if err := f.brokenErr(); err != nil {
		return 0, err
	}
	// Close waits for open read transactions, including an unreleased
	// snapshot being persisted.
	if err := f.db.Close(); err != nil {
		f.log.Error("closing store for restore", "err", err)
	}
	f.db = nil
	path := f.cfg.Path
	renameErr := os.Rename(tmp, path)
	if renameErr == nil {
		if err := durable.SyncDir(filepath.Dir(path)); err != nil {
			// The new file is in place and in use; only the durability of
			// the rename is in doubt. If a crash brings the old file back,
			// it is still a consistent earlier state that raft moves forward.
			f.log.Warn("syncing directory after restore", "err", err)
		}
	}
	db, err := openDB(path, f.cfg.MmapSize)
	if err != nil {
		return 0, fmt.Errorf("fsm: reopen after restore: %w", errors.Join(renameErr, err))
	}
	db.NoSync = f.deferred
	f.db = db
	if err := f.load(db); err != nil {
		return 0, err
	}
	if renameErr != nil {
		// The old file was reopened unchanged.
		return 0, fmt.Errorf("fsm: restore: install snapshot: %w", renameErr)
	}
	return f.applied.Load(), nil
}
