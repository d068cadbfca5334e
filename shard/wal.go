package shard

// The node write-ahead log: every group's raft log and stable store as
// records appended to one file at a time, with group commit. A commit is one
// write and one fdatasync, where a bbolt commit is two fdatasyncs and a B+tree
// update; writes of all groups queued meanwhile share it.
//
// Files: <dir>/<seq, 16 hex digits>.wal, each at most walSegmentSize plus one
// commit. A record is
//
//	length uint32 LE (of body) | crc32c uint32 LE (of body) | body
//	body = kind byte | payload
//
//	walHeader  seq uvarint [| version uvarint]   first record of every file
//	walEntry   group uvarint | log entry (encodeLogEntry)
//	walDelete  group, min, max uvarint           DeleteRange(min, max)
//	walStable  group uvarint | key | value       (length-prefixed)
//	walDrop    group uvarint                     DropGroup
//
// The header's version is the file's format (walFormat): how every record
// after it is laid out. A header without one, what every binary so far has
// written, is version 1. This binary writes version-1 files in that same
// layout, so a binary from before the version existed still reads them (a
// rollback stays possible); a later format writes its version, which this
// binary refuses with fsm.ErrNewerFormat naming the file, and which a binary
// from before the version refuses too ("1 trailing bytes" in the header:
// recovery fails, nothing is cut off). The header record's frame and its
// seq stay as they are in every version, so any binary can read the version.
//
// Recovery replays every file in order; a record cut short at the end of the
// last file (a crash mid-write) is cut off, anywhere else it is corruption.
// Memory holds, per group, the location of each entry and the stable values.
//
// Space ahead of the active file's end is filled with zeros (and synced) by a
// background goroutine, walFillChunk at a time, so a commit overwrites
// allocated blocks and its fdatasync flushes data only: appending to the end
// of a file makes every fdatasync also commit the new size through the file
// system's journal, which measured 1.6x slower here with three logs syncing at
// once (PostgreSQL zero-fills its WAL segments for the same reason). A file
// therefore ends in zeros; a zero length where a record would start is its
// end when everything after it is zero too, and otherwise a torn write.
//
// Files are deleted from the oldest while every entry they hold is below its
// group's first index (compacted) or belongs to a dropped group; only from
// the oldest, because a delete or drop record may be what makes an older
// file's entries dead. Every new file starts with a copy of all stable values,
// so no deleted file held the only copy of one.
//
// A commit's records are published (visible to GetLog, Get, LastIndex, ...)
// only after its fdatasync returned: raft never reads what is not durable.
// Any failed write or sync, the committer's, the filler's or a rotation's,
// fails the log for good (ErrLogFailed): every later call refuses, and the
// node restarts to replay what is on disk. A failed fdatasync is never
// retried: Linux reports a writeback error once per open file, so a retry
// can return 0 for pages that never reached the disk (PostgreSQL's "fsyncgate").
// For the same reason a commit is not answered while a sync of the filler's,
// which flushes the same file and may be the one told of its error, is in
// flight (see commit).
//
// Entries must be stored in index order per group, as raft does. An entry that
// does not follow the group's last (raft's log after installing a snapshot
// starts past it) starts the group's log afresh at that index: the older
// entries are all below the snapshot, and raft sends a snapshot to any peer
// that would need them. A delete that starts after the first entry truncates
// the log from there to its end (see apply): the log never has holes.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/internal/durable"
	"github.com/cairndb/cairn/internal/wire"
)

const (
	walHeader byte = iota + 1
	walEntry
	walDelete
	walStable
	walDrop

	walSegmentSize = 64 << 20
	walMaxRecord   = 64 << 20 // bound on one record's body; raft entries are far smaller
	walFrameHeader = 8
	walFillChunk   = 4 << 20 // zeros written ahead of the active file's end at a time

	// walFormat is the newest file format version this binary reads, and
	// the one it writes (in the layout without a version field, see
	// appendWALOp).
	walFormat = 1
)

var (
	walCRC     = crc32.MakeTable(crc32.Castagnoli)
	errWALTorn = errors.New("shard: torn wal record")
)

// WALConfig configures the write-ahead log.
type WALConfig struct {
	Dir   string
	Knobs *WALKnobs // nil in production
}

// WALWriter names who writes or syncs a WAL file, for the knobs.
type WALWriter uint8

const (
	WALCommitter WALWriter = iota + 1 // a group commit's records
	WALFiller                         // the zeros ahead of the active file's end
	WALRotator                        // a new segment's header and stable values
)

func (w WALWriter) String() string {
	switch w {
	case WALCommitter:
		return "commit"
	case WALFiller:
		return "fill"
	case WALRotator:
		return "rotate"
	}
	return fmt.Sprintf("WALWriter(%d)", uint8(w))
}

// WALKnobs are test hooks on the WAL's file I/O; nil in production. Tests
// use them to inject I/O errors (EIO) where a failing disk would.
type WALKnobs struct {
	// Sync, when set, replaces fdatasync of a WAL file (f.Sync() keeps
	// it real).
	Sync func(by WALWriter, f *os.File) error
	// Write, when set, replaces the write of b at off in a WAL file
	// (f.WriteAt keeps it real).
	Write func(by WALWriter, f *os.File, b []byte, off int64) (int, error)
}

type walLoc struct {
	seg uint64 // segment seq
	off int64  // record start
	n   uint32 // record length, frame header included
}

type walGroupState struct {
	first  uint64   // index of locs[0]; meaningless when locs is empty
	locs   []walLoc // entries first, first+1, ...
	stable map[string][]byte
}

func (g *walGroupState) last() uint64 {
	if len(g.locs) == 0 {
		return 0
	}
	return g.first + uint64(len(g.locs)) - 1
}

type walSegment struct {
	seq     uint64
	version uint64 // the file's format, from its header (walFormat)
	f       *os.File
	size    int64             // end of the last record; guarded by WAL.mu
	max     map[uint64]uint64 // group -> highest entry index written here

	// alloc is how far the file is allocated and synced (records or the
	// filler's zeros). The committer writes below it freely; a write that
	// reaches past it holds fillMu, which the filler holds while it
	// extends the file, so the two never write the same bytes.
	alloc   atomic.Int64
	fillMu  sync.Mutex
	fillErr error // the filler's failed write or sync; guarded by fillMu
}

// WAL is the write-ahead NodeLog.
type WAL struct {
	dir     string
	knobs   *WALKnobs
	segSize int64                 // start a new segment past this size (walSegmentSize; tests lower it)
	chunk   int64                 // zero-fill this far ahead of the end (walFillChunk; 0 turns the filler off)
	gc      *groupCommit[[]walOp] // one write: the ops of one call, applied together
	cbuf    []byte                // commit's record buffer (commitBuf), only the committer's

	fill      chan struct{} // wakes the filler
	fillDone  chan struct{} // closed when the filler has stopped
	closeFill sync.Once

	mu       sync.RWMutex // guards everything below
	groups   map[uint64]*walGroupState
	segs     []*walSegment // oldest first; the last is active
	failed   error         // a write or sync failed: the log is unusable (fail)
	failedCh chan struct{} // closed when failed is set
}

type walOp struct {
	kind     byte
	group    uint64
	log      *raft.Log
	min, max uint64 // a header's seq is min
	version  uint64 // a header's file format version (0 or 1: written without the field)
	key, val []byte
}

// OpenWALConfig opens or creates the log in cfg.Dir and replays it.
func OpenWALConfig(cfg WALConfig) (*WAL, error) {
	dir := cfg.Dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("shard: wal: %w", err)
	}
	w := &WAL{dir: dir, knobs: cfg.Knobs, segSize: walSegmentSize, chunk: walFillChunk, groups: make(map[uint64]*walGroupState),
		fill: make(chan struct{}, 1), fillDone: make(chan struct{}), failedCh: make(chan struct{})}
	if err := w.recover(); err != nil {
		w.closeFiles()
		return nil, err
	}
	if len(w.segs) == 0 {
		if err := w.rotate(); err != nil {
			w.closeFiles()
			return nil, err
		}
	}
	w.gc = startGroupCommit(w.commit)
	go w.filler() // woken by the first commit
	return w, nil
}

func (w *WAL) segPath(seq uint64) string {
	return filepath.Join(w.dir, fmt.Sprintf("%016x.wal", seq))
}

// recover replays every segment in order.
func (w *WAL) recover() error {
	ents, err := os.ReadDir(w.dir)
	if err != nil {
		return fmt.Errorf("shard: wal: %w", err)
	}
	var seqs []uint64
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".wal")
		if !ok {
			if strings.HasSuffix(e.Name(), ".wal.tmp") {
				_ = os.Remove(filepath.Join(w.dir, e.Name())) // a rotation cut short
			}
			continue
		}
		seq, err := strconv.ParseUint(name, 16, 64)
		if err != nil {
			continue
		}
		seqs = append(seqs, seq)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	for i, seq := range seqs {
		f, err := os.OpenFile(w.segPath(seq), os.O_RDWR, 0o600)
		if err != nil {
			return fmt.Errorf("shard: wal: %w", err)
		}
		seg := &walSegment{seq: seq, f: f, max: make(map[uint64]uint64)}
		w.segs = append(w.segs, seg)
		good, err := w.replay(seg)
		if err != nil {
			if i != len(seqs)-1 || !errors.Is(err, errWALTorn) {
				return fmt.Errorf("shard: wal %s at offset %d: %w", w.segPath(seq), good, err)
			}
			// The tail of the newest file: a write the crash cut short,
			// never acknowledged. Cut it off.
			if err := f.Truncate(good); err != nil {
				return fmt.Errorf("shard: wal: cut torn tail: %w", err)
			}
			if err := f.Sync(); err != nil {
				return fmt.Errorf("shard: wal: %w", err)
			}
		}
		seg.size = good
		st, err := f.Stat()
		if err != nil {
			return fmt.Errorf("shard: wal: %w", err)
		}
		seg.alloc.Store(st.Size())
	}
	return nil
}

// zeroFrom reports whether f holds only zero bytes from off to size.
func zeroFrom(f *os.File, off, size int64) (bool, error) {
	buf := make([]byte, 64<<10)
	for off < size {
		n := int(min(int64(len(buf)), size-off))
		if _, err := f.ReadAt(buf[:n], off); err != nil {
			return false, fmt.Errorf("shard: wal: %w", err)
		}
		for _, c := range buf[:n] {
			if c != 0 {
				return false, nil
			}
		}
		off += int64(n)
	}
	return true, nil
}

// replay applies seg's records and returns the offset after the last good
// one.
func (w *WAL) replay(seg *walSegment) (int64, error) {
	st, err := seg.f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	var off int64
	hdr := make([]byte, walFrameHeader)
	for off < size {
		var n uint32
		if size-off >= walFrameHeader {
			if _, err := seg.f.ReadAt(hdr, off); err != nil {
				return off, fmt.Errorf("%w: %v", errWALTorn, err)
			}
			n = binary.LittleEndian.Uint32(hdr)
		}
		if n == 0 {
			// The zero-filled space past the last record, unless
			// something was written there: a torn write.
			zero, err := zeroFrom(seg.f, off, size)
			if err != nil {
				return off, err
			}
			if !zero {
				return off, errWALTorn
			}
			return off, nil
		}
		if n > walMaxRecord || int64(n) > size-off-walFrameHeader {
			return off, errWALTorn
		}
		body := make([]byte, n)
		if _, err := seg.f.ReadAt(body, off+walFrameHeader); err != nil {
			return off, fmt.Errorf("%w: %v", errWALTorn, err)
		}
		if crc32.Checksum(body, walCRC) != binary.LittleEndian.Uint32(hdr[4:]) {
			return off, errWALTorn
		}
		op, err := decodeWALOp(body)
		if err != nil {
			return off, err
		}
		loc := walLoc{seg: seg.seq, off: off, n: uint32(walFrameHeader + n)}
		if op.kind == walHeader {
			if op.min != seg.seq {
				return off, fmt.Errorf("shard: wal: header says segment %d", op.min)
			}
			seg.version = op.version
		} else if err := w.apply(op, seg, loc); err != nil {
			return off, err
		}
		off += walFrameHeader + int64(n)
	}
	return off, nil
}

// apply changes the in-memory state for one record. Callers hold mu (or are
// recovering).
func (w *WAL) apply(op walOp, seg *walSegment, loc walLoc) error {
	g := w.groups[op.group]
	switch op.kind {
	case walEntry:
		if g == nil {
			g = &walGroupState{stable: map[string][]byte{}}
			w.groups[op.group] = g
		}
		idx := op.log.Index
		switch {
		case len(g.locs) > 0 && idx == g.last()+1:
			g.locs = append(g.locs, loc)
		case len(g.locs) > 0 && idx >= g.first && idx <= g.last():
			g.locs = append(g.locs[:idx-g.first], loc)
		default:
			g.first, g.locs = idx, []walLoc{loc}
		}
		if idx > seg.max[op.group] {
			seg.max[op.group] = idx
		}
	case walDelete:
		if g == nil || len(g.locs) == 0 {
			return nil
		}
		lo, hi := max(op.min, g.first), min(op.max, g.last())
		switch {
		case lo > hi:
		case lo == g.first && hi == g.last():
			g.locs = nil
		case lo == g.first:
			g.locs = g.locs[hi-g.first+1:]
			g.first = hi + 1
		default:
			// A suffix from lo. Raft clears a conflicting suffix up to its
			// own last index, which can be below the store's: entries a
			// follower kept past a snapshot it then installed. Those are
			// beyond anything raft will read, so they go too, rather than
			// leave a hole (or refuse the delete and wedge the follower).
			g.locs = g.locs[:lo-g.first]
		}
	case walStable:
		if g == nil {
			g = &walGroupState{stable: map[string][]byte{}}
			w.groups[op.group] = g
		}
		g.stable[string(op.key)] = op.val
	case walDrop:
		delete(w.groups, op.group)
	default:
		return fmt.Errorf("shard: wal: record kind %d", op.kind)
	}
	return nil
}

// appendWALOp appends op's record body to b.
func appendWALOp(b []byte, op walOp) []byte {
	b = append(b, op.kind)
	switch op.kind {
	case walHeader:
		b = binary.AppendUvarint(b, op.min)
		// Version 1 is written without the field, byte for byte what
		// binaries before the version wrote, so they can still read it.
		if op.version > 1 {
			b = binary.AppendUvarint(b, op.version)
		}
	case walEntry:
		b = binary.AppendUvarint(b, op.group)
		b = appendLogEntry(b, op.log)
	case walDelete:
		b = binary.AppendUvarint(b, op.group)
		b = binary.AppendUvarint(b, op.min)
		b = binary.AppendUvarint(b, op.max)
	case walStable:
		b = binary.AppendUvarint(b, op.group)
		b = wire.AppendLenBytes(b, op.key)
		b = wire.AppendLenBytes(b, op.val)
	case walDrop:
		b = binary.AppendUvarint(b, op.group)
	}
	return b
}

// walOpSize bounds the size of op's record, frame header included.
func walOpSize(op walOp) int {
	n := walFrameHeader + 1 + 3*binary.MaxVarintLen64
	switch op.kind {
	case walEntry:
		n += logEntrySize(op.log)
	case walStable:
		n += 2*binary.MaxVarintLen64 + len(op.key) + len(op.val)
	}
	return n
}

func decodeWALOp(body []byte) (walOp, error) {
	op := walOp{kind: body[0]}
	d := wire.NewReader(body[1:])
	switch op.kind {
	case walHeader:
		op.min = d.Uvarint()
		return op, decodeWALVersion(&op, d)
	case walEntry:
		op.group = d.Uvarint()
		if err := d.Err(); err != nil {
			return op, err
		}
		op.log = &raft.Log{}
		if err := decodeLogEntry(d.Rest(), op.log); err != nil {
			return op, err
		}
	case walDelete:
		op.group, op.min, op.max = d.Uvarint(), d.Uvarint(), d.Uvarint()
	case walStable:
		op.group = d.Uvarint()
		op.key = d.Blob()
		op.val = d.Blob()
	case walDrop:
		op.group = d.Uvarint()
	default:
		return op, fmt.Errorf("shard: wal: record kind %d", op.kind)
	}
	return op, d.Finish()
}

// decodeWALVersion reads the version after a header's seq: none is version
// 1; one newer than walFormat is refused (ErrNewerFormat) whatever follows
// it, since a newer header may carry more.
func decodeWALVersion(op *walOp, d *wire.Reader) error {
	if err := d.Err(); err != nil {
		return err
	}
	rest := d.Rest()
	op.version = 1
	if len(rest) == 0 {
		return nil
	}
	v := wire.NewReader(rest)
	op.version = v.Uvarint()
	if err := v.Err(); err != nil {
		return err
	}
	if op.version == 0 {
		return fmt.Errorf("%w: wal header version 0", wire.ErrMalformed)
	}
	if op.version > walFormat {
		return fmt.Errorf("file format v%d, this binary reads up to v%d: %w", op.version, walFormat, fsm.ErrNewerFormat)
	}
	return v.Finish()
}

// appendWALOpRecord appends op as a framed record to buf, encoding it in
// place.
func appendWALOpRecord(buf []byte, op walOp) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, walFrameHeader)...)
	buf = appendWALOp(buf, op)
	body := buf[start+walFrameHeader:]
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(buf[start+4:], crc32.Checksum(body, walCRC))
	return buf
}

// rotate starts a new segment holding a header and a copy of every stable
// value, made durable before it is used. Callers hold mu or are starting up.
func (w *WAL) rotate() error {
	var seq uint64 = 1
	if n := len(w.segs); n > 0 {
		seq = w.segs[n-1].seq + 1
	}
	buf := appendWALOpRecord(nil, walOp{kind: walHeader, min: seq, version: walFormat})
	ids := make([]uint64, 0, len(w.groups))
	for id := range w.groups {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		keys := make([]string, 0, len(w.groups[id].stable))
		for k := range w.groups[id].stable {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			buf = appendWALOpRecord(buf, walOp{kind: walStable, group: id, key: []byte(k), val: w.groups[id].stable[k]})
		}
	}
	final := w.segPath(seq)
	tmp := final + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("shard: wal: %w", err)
	}
	_, err = w.writeAt(WALRotator, f, buf, 0)
	if err == nil {
		err = w.sync(WALRotator, f)
	}
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err == nil {
		err = durable.SyncDir(w.dir)
	}
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("shard: wal: new segment: %w", err)
	}
	seg := &walSegment{seq: seq, version: walFormat, f: f, size: int64(len(buf)), max: make(map[uint64]uint64)}
	seg.alloc.Store(seg.size)
	w.segs = append(w.segs, seg)
	return nil
}

// sync makes f's data durable: fdatasync, or the Sync knob.
func (w *WAL) sync(by WALWriter, f *os.File) error {
	if w.knobs != nil && w.knobs.Sync != nil {
		return w.knobs.Sync(by, f)
	}
	return fdatasync(f)
}

// writeAt writes b at off in f: WriteAt, or the Write knob.
func (w *WAL) writeAt(by WALWriter, f *os.File, b []byte, off int64) (int, error) {
	if w.knobs != nil && w.knobs.Write != nil {
		return w.knobs.Write(by, f, b, off)
	}
	return f.WriteAt(b, off)
}

// wakeFiller asks the filler to look at the active segment.
func (w *WAL) wakeFiller() {
	select {
	case w.fill <- struct{}{}:
	default:
	}
}

// filler keeps the active segment zero-filled and synced at least half a
// chunk past its end, up to the segment size, until Close.
func (w *WAL) filler() {
	defer close(w.fillDone)
	zeros := make([]byte, 1<<20)
	for range w.fill {
		w.mu.RLock()
		seg, end, failed := w.segs[len(w.segs)-1], w.segs[len(w.segs)-1].size, w.failed
		w.mu.RUnlock()
		if w.chunk <= 0 || failed != nil || seg.alloc.Load()-end >= w.chunk/2 || seg.alloc.Load() >= w.segSize {
			continue
		}
		seg.fillMu.Lock()
		from := seg.alloc.Load()
		to := min(max(from, end)+w.chunk, w.segSize)
		var err error
		for off := from; off < to && err == nil; off += int64(len(zeros)) {
			_, err = w.writeAt(WALFiller, seg.f, zeros[:min(int64(len(zeros)), to-off)], off)
		}
		if err == nil {
			err = w.sync(WALFiller, seg.f)
		}
		if err == nil {
			seg.alloc.Store(to)
		} else {
			// Fatal like the committer's: the failed sync may have
			// been the one told about a commit's lost pages. Recorded
			// before fillMu is let go (see commit).
			seg.fillErr = err
			w.fail(WALFiller, err)
		}
		seg.fillMu.Unlock()
	}
}

// collect deletes segments from the oldest while all they hold is dead.
// Callers hold mu.
func (w *WAL) collect() {
	for len(w.segs) > 1 {
		seg := w.segs[0]
		for g, top := range seg.max {
			st := w.groups[g]
			if st != nil && len(st.locs) > 0 && top >= st.first {
				return
			}
		}
		_ = seg.f.Close()
		if err := os.Remove(w.segPath(seg.seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return
		}
		w.segs = w.segs[1:]
	}
}

func (w *WAL) closeFiles() {
	for _, s := range w.segs {
		_ = s.f.Close()
	}
}

// submit queues ops as one write and waits until they are durable.
func (w *WAL) submit(ops ...walOp) error { return w.gc.submit(ops) }

// commit appends every write of batch in one write and one fdatasync, and
// only then publishes it: readers (raft's Get, GetLog, LastIndex, ...) never
// see a record that is not durable. A failed write or sync fails the log for
// good (fail); nothing of the failed commit is published.
func (w *WAL) commit(batch [][]walOp) []error {
	errs := make([]error, len(batch))
	w.mu.Lock()
	if w.failed == nil && w.segs[len(w.segs)-1].size >= w.segSize {
		if err := w.rotate(); err != nil {
			w.failLocked(WALRotator, err)
		} else {
			w.collect()
		}
	}
	failed := w.failed
	seg := w.segs[len(w.segs)-1]
	w.mu.Unlock()
	if failed != nil {
		for i := range errs {
			errs[i] = failed
		}
		return errs
	}

	// Only this goroutine changes seg.size and the groups, so the records
	// can be laid out against them without the lock.
	off := seg.size
	size, n := 0, 0
	for _, ops := range batch {
		for _, op := range ops {
			size += walOpSize(op)
		}
		n += len(ops)
	}
	// One write holds many ops (raft stores a batch of entries in one
	// call): size recs by ops, not by writes, or it grows again and again.
	buf := w.commitBuf(size)
	type placed struct {
		op  walOp
		loc walLoc
	}
	recs := make([]placed, 0, n)
	shrinks := false // a delete or drop: old segments may have died
	for i, ops := range batch {
		if err := checkWALOps(ops); err != nil {
			errs[i] = err // an unknown record kind: cannot happen
			continue
		}
		for _, op := range ops {
			shrinks = shrinks || op.kind == walDelete || op.kind == walDrop
			start := len(buf)
			buf = appendWALOpRecord(buf, op)
			recs = append(recs, placed{op, walLoc{seg: seg.seq, off: off + int64(start), n: uint32(len(buf) - start)}})
		}
	}

	// Readers go on meanwhile: this goroutine is the only writer of
	// records, and the filler writes only past alloc.
	var err error
	end := off + int64(len(buf))
	if end <= seg.alloc.Load() {
		_, err = w.writeAt(WALCommitter, seg.f, buf, off)
	} else {
		seg.fillMu.Lock()
		_, err = w.writeAt(WALCommitter, seg.f, buf, off)
		if end > seg.alloc.Load() {
			seg.alloc.Store(end)
		}
		seg.fillMu.Unlock()
	}
	if err == nil {
		err = w.sync(WALCommitter, seg.f)
	}
	if err != nil {
		w.fail(WALCommitter, err)
	}
	// The filler syncs the same open file, and Linux reports a writeback
	// error once per open file: to whichever fdatasync looks first. If the
	// filler's sync flushed these pages and got the error, ours returned 0.
	// The filler holds fillMu through its sync and records a failure in
	// fillErr before it lets go, so taking fillMu after our sync waits for
	// a sync of the filler's that overlapped ours, and reads its verdict.
	// (Our own fdatasync waits for the pages the filler has under writeback
	// anyway, so this costs little more.)
	seg.fillMu.Lock()
	fillErr := seg.fillErr
	seg.fillMu.Unlock()

	w.mu.Lock()
	if fillErr != nil {
		w.failLocked(WALFiller, fillErr)
	}
	if failed = w.failed; failed == nil {
		for _, r := range recs {
			_ = w.apply(r.op, seg, r.loc) // kinds checked above
		}
		seg.size = end
		if shrinks {
			w.collect()
		}
	}
	w.mu.Unlock()
	if failed != nil {
		for i := range errs {
			errs[i] = failed
		}
		return errs
	}
	if seg.alloc.Load()-end < w.chunk/2 {
		w.wakeFiller()
	}
	return errs
}

// commitBuf returns an empty buffer of at least size bytes for commit's
// records. Only the committer goroutine calls it, and nothing keeps the
// records' bytes once commit has written them, so one buffer serves every
// commit; a test knob that intercepts writes may keep them, so then each
// commit gets its own.
func (w *WAL) commitBuf(size int) []byte {
	if w.knobs != nil && w.knobs.Write != nil {
		return make([]byte, 0, size)
	}
	if cap(w.cbuf) < size {
		w.cbuf = make([]byte, 0, max(size, 64<<10))
	}
	b := w.cbuf[:0]
	if cap(w.cbuf) > 4<<20 {
		w.cbuf = nil // a rare huge commit: do not keep its buffer
	}
	return b
}

// checkWALOps reports an op apply would refuse.
func checkWALOps(ops []walOp) error {
	for _, op := range ops {
		switch op.kind {
		case walEntry, walDelete, walStable, walDrop:
		default:
			return fmt.Errorf("shard: wal: record kind %d", op.kind)
		}
	}
	return nil
}

// fail records that a write or sync by by failed: from now on every call of
// the log returns the error (wrapping ErrLogFailed) and Failed is closed.
// What the failed write left on disk is unknown, and a later fdatasync may
// return 0 without having written it (the error was reported once), so the
// log is never used again in this process: the node restarts and replays
// what is on disk, as PostgreSQL does after a failed fsync.
func (w *WAL) fail(by WALWriter, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failLocked(by, err)
}

func (w *WAL) failLocked(by WALWriter, err error) {
	if w.failed != nil {
		return
	}
	w.failed = fmt.Errorf("%w: wal %s: %w", ErrLogFailed, by, err)
	close(w.failedCh)
}

// Err returns why the log failed (wrapping ErrLogFailed), or nil.
func (w *WAL) Err() error {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.failed
}

// Failed returns a channel closed when the log fails.
func (w *WAL) Failed() <-chan struct{} { return w.failedCh }

// Close stops the committer after the queued writes and closes the files.
func (w *WAL) Close() error {
	w.gc.close()
	w.closeFill.Do(func() { close(w.fill) })
	<-w.fillDone
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closeFiles()
	return nil
}

// Stats returns how many writes committed in how many commits.
func (w *WAL) Stats() LogStoreStats { return w.gc.stats() }

// RegisterMetrics exposes commit latency and batch sizes on reg.
func (w *WAL) RegisterMetrics(reg prometheus.Registerer) error { return w.gc.registerMetrics(reg) }

// Group returns group id's log and stable store.
func (w *WAL) Group(id uint64) GroupLog { return &walGroup{w: w, id: id} }

// DropGroup deletes everything group id stored.
func (w *WAL) DropGroup(id uint64) error {
	return w.submit(walOp{kind: walDrop, group: id})
}

type walGroup struct {
	w  *WAL
	id uint64
}

func (g *walGroup) FirstIndex() (uint64, error) {
	g.w.mu.RLock()
	defer g.w.mu.RUnlock()
	if err := g.w.failed; err != nil {
		return 0, err
	}
	if st := g.w.groups[g.id]; st != nil && len(st.locs) > 0 {
		return st.first, nil
	}
	return 0, nil
}

func (g *walGroup) LastIndex() (uint64, error) {
	g.w.mu.RLock()
	defer g.w.mu.RUnlock()
	if err := g.w.failed; err != nil {
		return 0, err
	}
	if st := g.w.groups[g.id]; st != nil {
		return st.last(), nil
	}
	return 0, nil
}

func (g *walGroup) GetLog(index uint64, out *raft.Log) error {
	g.w.mu.RLock()
	defer g.w.mu.RUnlock()
	if err := g.w.failed; err != nil {
		return err
	}
	st := g.w.groups[g.id]
	if st == nil || len(st.locs) == 0 || index < st.first || index > st.last() {
		return raft.ErrLogNotFound
	}
	loc := st.locs[index-st.first]
	var seg *walSegment
	for _, s := range g.w.segs {
		if s.seq == loc.seg {
			seg = s
			break
		}
	}
	if seg == nil {
		return fmt.Errorf("shard: wal: group %d entry %d: segment %d is gone", g.id, index, loc.seg)
	}
	rec := make([]byte, loc.n)
	if _, err := seg.f.ReadAt(rec, loc.off); err != nil && !(errors.Is(err, io.EOF) && len(rec) == int(loc.n)) {
		return fmt.Errorf("shard: wal: read group %d entry %d: %w", g.id, index, err)
	}
	body := rec[walFrameHeader:]
	if crc32.Checksum(body, walCRC) != binary.LittleEndian.Uint32(rec[4:]) {
		return fmt.Errorf("shard: wal: group %d entry %d: checksum mismatch", g.id, index)
	}
	op, err := decodeWALOp(body)
	if err != nil {
		return err
	}
	if op.kind != walEntry || op.group != g.id || op.log.Index != index {
		return fmt.Errorf("shard: wal: group %d entry %d: record holds something else", g.id, index)
	}
	*out = *op.log
	return nil
}

func (g *walGroup) StoreLog(l *raft.Log) error { return g.StoreLogs([]*raft.Log{l}) }

func (g *walGroup) StoreLogs(logs []*raft.Log) error { return g.storeLogsAsync(logs)() }

// storeLogsAsync queues logs for the next commit and returns a wait for it:
// a leader's write overlaps its replication (logGuard.StoreLogsAsync).
func (g *walGroup) storeLogsAsync(logs []*raft.Log) (wait func() error) {
	ops := make([]walOp, len(logs))
	for i, l := range logs {
		ops[i] = walOp{kind: walEntry, group: g.id, log: l}
	}
	return g.w.gc.submitAsync(ops)
}

func (g *walGroup) DeleteRange(min, max uint64) error {
	return g.w.submit(walOp{kind: walDelete, group: g.id, min: min, max: max})
}

func (g *walGroup) Set(key, val []byte) error {
	return g.w.submit(walOp{kind: walStable, group: g.id,
		key: append([]byte(nil), key...), val: append([]byte(nil), val...)})
}

func (g *walGroup) Get(key []byte) ([]byte, error) {
	g.w.mu.RLock()
	defer g.w.mu.RUnlock()
	if err := g.w.failed; err != nil {
		return nil, err
	}
	if st := g.w.groups[g.id]; st != nil {
		if v, ok := st.stable[string(key)]; ok {
			return append([]byte(nil), v...), nil
		}
	}
	return nil, errStableNotFound
}

func (g *walGroup) SetUint64(key []byte, val uint64) error { return g.Set(key, u64key(val)) }

func (g *walGroup) GetUint64(key []byte) (uint64, error) { return stableUint64(g, key) }
