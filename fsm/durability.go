package fsm

// Deferred sync (Config.DeferSync). A write is durable once raft has synced
// it to a majority's logs; the FSM file only has to be a consistent state at
// some applied index, which raft's log can carry forward. So the FSM commits
// its batches without fsync, as etcd's backend does, and a write costs one
// fsync per replica (the log's) instead of three.
//
// Skipping fsync keeps the file consistent when the process dies: the
// commits it made are in the kernel's page cache, which outlives the process.
// It does not when the machine dies: bbolt orders its data pages before its
// meta page with fsync, and without it the disk may hold a meta page that
// points at pages never written. So the FSM records, in a small sidecar file
// written with fsync, the machine boot it runs under:
//
//	<path>.state = {"v": 1, "state": "open" | "clean", "boot": <boot id>, "genesis": <range at index 0>}
//
// "v" is the sidecar's format version (sidecarFormat). Sidecars written
// before it existed have no "v" and the same layout: they are read as
// version 1 (an older binary ignores the key). A newer version is refused,
// and so is the shard's Open (ErrNewerFormat): the file is neither trusted
// nor rebuilt, since this binary cannot tell what the newer one recorded.
//
// "open" is written (durably) before the first unsynced commit, "clean" after
// Close has synced the file. At Open, a file left "open" under a different
// boot id may be torn: it is deleted and the FSM starts again from its
// genesis range, with Rebuilt reporting it; the replica then restores the
// newest raft snapshot and raft replays the log after it (shard.Host does
// both), exactly as for a replica that lost its disk. Every other case keeps
// the file. Without a boot id (not Linux), DeferSync is ignored.
//
// The genesis range is recorded in <path>.genesis when the group's file or
// directory is made (prepare, WriteGenesis); see prepare for a file whose
// genesis was never recorded.

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strings"

	"github.com/cairndb/cairn/internal/durable"
)

const (
	sidecarOpen  = "open"
	sidecarClean = "clean"
	bootIDPath   = "/proc/sys/kernel/random/boot_id"
)

// ErrGenesisUnknown: Open found a file it cannot trust, and neither the
// range the group started from nor a raft snapshot is there to rebuild it
// from. The file is kept; the replica must be restored from a peer.
var ErrGenesisUnknown = errors.New("fsm: cannot rebuild the state machine: its genesis range is unknown")

// sidecarFormat is the "v" of the sidecar this binary writes and the newest
// it reads.
const sidecarFormat = 1

// ErrNewerFormat: a file was written in a format version newer than this
// binary reads (by a newer cairn). It is refused, not guessed at or rebuilt.
var ErrNewerFormat = errors.New("written by a newer cairn")

type sidecar struct {
	V       int    `json:"v,omitempty"`
	State   string `json:"state"`
	Boot    string `json:"boot,omitempty"`
	Genesis *Range `json:"genesis,omitempty"`
}

func sidecarPath(path string) string { return path + ".state" }

// ReadBootID returns the Linux kernel's id of the current boot.
func ReadBootID() (string, error) {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return "", err
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", errors.New("fsm: empty boot id")
	}
	return id, nil
}

func readSidecar(path string) (sidecar, bool, error) {
	b, err := os.ReadFile(sidecarPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return sidecar{}, false, nil
	}
	if err != nil {
		return sidecar{}, false, fmt.Errorf("fsm: read sidecar: %w", err)
	}
	var sc sidecar
	if err := json.Unmarshal(b, &sc); err != nil {
		// A torn sidecar: its own write was cut by a crash, so the FSM
		// cannot be trusted either way.
		return sidecar{State: sidecarOpen}, true, nil
	}
	switch sc.V {
	case 0, 1: // 0: written before "v" existed, the same layout
	default:
		// Not torn (it decoded): a newer binary's, or a "v" never
		// written. Deleting the file as untrusted would throw away a
		// state the newer binary may have trusted.
		return sidecar{}, true, fmt.Errorf("fsm: %s: format v%d, this binary reads up to v%d: %w",
			sidecarPath(path), sc.V, sidecarFormat, ErrNewerFormat)
	}
	return sc, true, nil
}

// writeSidecar replaces the sidecar durably.
func writeSidecar(path string, sc sidecar) error {
	sc.V = sidecarFormat
	b, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	return writeDurably(sidecarPath(path), b)
}

// writeDurably replaces the file at final with b (durable.WriteFile).
func writeDurably(final string, b []byte) error {
	if err := durable.WriteFile(final, b, 0o600); err != nil {
		return fmt.Errorf("fsm: %w", err)
	}
	return nil
}

// opening is what prepare decided before the bbolt file is opened.
type opening struct {
	initial  Range // stored if the file is new (or was deleted)
	rebuilt  bool  // the file was deleted as untrustworthy
	deferred bool  // commits skip fsync
	// syncClean: commits are synced but the sidecar does not say "clean"
	// (an earlier run deferred): sync the file once open, then mark it.
	syncClean bool
}

// prepare decides, before the bbolt file is opened, whether it can be
// trusted (deleting it if not), where a new or deleted file starts, and
// whether commits may skip fsync. It runs in every mode: a file left open
// with unsynced commits is distrusted after a machine crash even if the node
// now runs with synced commits.
//
// The starting point of a deleted or new file is the group's genesis range,
// recorded when the group's directory was made (genesis file, or the
// sidecar of the binary before it) and never the caller's Initial when a
// genesis is recorded: a node reopening a replica found on disk knows only
// its id. A rebuild with no recorded genesis is refused (ErrGenesisUnknown)
// unless a raft snapshot will replace the state; and a file with no recorded
// genesis is never deferred, so a crash cannot make it need one.
func prepare(cfg Config, boot string, bootErr error) (opening, error) {
	op := opening{initial: cfg.Initial}
	genesis, known, err := readGenesis(cfg.Path)
	if err != nil {
		return op, err
	}
	sc, found, err := readSidecar(cfg.Path)
	if err != nil {
		return op, err
	}
	if !known && sc.Genesis != nil {
		genesis, known = cloneRange(*sc.Genesis), true
	}
	_, statErr := os.Stat(cfg.Path)
	exists := statErr == nil
	if exists && found && sc.State != sidecarClean && bootErr == nil && sc.Boot != boot {
		// Left open under another boot: unsynced commits may be torn.
		if !known && !cfg.HasSnapshot {
			return op, fmt.Errorf("%w: %s was left open with unsynced commits by another boot, "+
				"and no raft snapshot of the group exists to start from", ErrGenesisUnknown, cfg.Path)
		}
		if err := os.Remove(cfg.Path); err != nil {
			return op, fmt.Errorf("fsm: remove untrusted file: %w", err)
		}
		op.rebuilt, exists = true, false
	}
	if !exists {
		if known {
			op.initial = cloneRange(genesis) // a rebuild, or one cut short before the file was made
		} else if !op.rebuilt {
			// A new group's file: its genesis is the range it starts with.
			genesis, known = cloneRange(cfg.Initial), true
		}
	}
	if known {
		if err := recordGenesis(cfg.Path, genesis); err != nil {
			return op, err
		}
	}
	op.deferred = cfg.DeferSync && bootErr == nil && (known || cfg.HasSnapshot)
	switch {
	case op.deferred:
		sc.State, sc.Boot = sidecarOpen, boot
		if known {
			sc.Genesis = &genesis
		}
		if err := writeSidecar(cfg.Path, sc); err != nil {
			return op, err
		}
	case found && sc.State != sidecarClean && bootErr == nil:
		op.syncClean = true
	}
	return op, nil
}

// genesisMagic begins the genesis file; the byte after it is the version.
const (
	genesisMagic   = "cairn-genesis"
	genesisVersion = 1
)

// genesisPath is the group's genesis range, written once when the group's
// directory is made: magic, version, encodeRange, crc32c of all before it.
func genesisPath(path string) string { return path + ".genesis" }

// WriteGenesis records r as the range the group whose state machine lives at
// path started from, if nothing is recorded yet. A split writes it into the
// child's directory with the child's starting snapshot; Open writes it for a
// new file. It is what a rebuild after a machine crash starts from.
func WriteGenesis(path string, r Range) error {
	return recordGenesis(path, r)
}

func recordGenesis(path string, r Range) error {
	if _, err := os.Stat(genesisPath(path)); err == nil {
		return nil
	}
	b := append([]byte(genesisMagic), genesisVersion)
	b = append(b, encodeRange(r)...)
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	if err := writeDurably(genesisPath(path), b); err != nil {
		return fmt.Errorf("fsm: record genesis: %w", err)
	}
	return nil
}

// readGenesis returns the recorded genesis range. A file that does not
// decode (which writeDurably's rename rules out) counts as none; one of a
// newer version is refused (ErrNewerFormat).
func readGenesis(path string) (Range, bool, error) {
	b, err := os.ReadFile(genesisPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return Range{}, false, nil
	}
	if err != nil {
		return Range{}, false, fmt.Errorf("fsm: read genesis: %w", err)
	}
	n := len(genesisMagic) + 1
	if len(b) >= n && string(b[:len(genesisMagic)]) == genesisMagic && b[n-1] > genesisVersion {
		return Range{}, false, fmt.Errorf("fsm: %s: format v%d, this binary reads up to v%d: %w",
			genesisPath(path), b[n-1], genesisVersion, ErrNewerFormat)
	}
	if len(b) < n+4 || string(b[:len(genesisMagic)]) != genesisMagic || b[n-1] != genesisVersion ||
		crc32.Checksum(b[:len(b)-4], castagnoli) != binary.BigEndian.Uint32(b[len(b)-4:]) {
		return Range{}, false, nil
	}
	r, err := decodeRange(b[n : len(b)-4])
	if err != nil {
		return Range{}, false, nil
	}
	return r, true, nil
}

// markClean records that the file was synced and closed.
func markClean(path string) error {
	sc, _, err := readSidecar(path)
	if err != nil {
		return err
	}
	sc.State, sc.Boot = sidecarClean, ""
	return writeSidecar(path, sc)
}
