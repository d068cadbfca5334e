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
//	<path>.state = {"state": "open" | "clean", "boot": <boot id>, "genesis": <range at index 0>}
//
// "open" is written (durably) before the first unsynced commit, "clean" after
// Close has synced the file. At Open, a file left "open" under a different
// boot id may be torn: it is deleted and the FSM starts again from its
// genesis range, with Rebuilt reporting it; the replica then restores the
// newest raft snapshot and raft replays the log after it (shard.Host does
// both), exactly as for a replica that lost its disk. Every other case keeps
// the file. Without a boot id (not Linux), DeferSync is ignored.

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

const (
	sidecarOpen  = "open"
	sidecarClean = "clean"
	bootIDPath   = "/proc/sys/kernel/random/boot_id"
)

type sidecar struct {
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
		return sidecar{}, false, err
	}
	var sc sidecar
	if err := json.Unmarshal(b, &sc); err != nil {
		// A torn sidecar: its own write was cut by a crash, so the FSM
		// cannot be trusted either way.
		return sidecar{State: sidecarOpen}, true, nil
	}
	return sc, true, nil
}

// writeSidecar replaces the sidecar durably: temp file, fsync, rename, fsync
// of the directory.
func writeSidecar(path string, sc sidecar) error {
	b, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	final := sidecarPath(path)
	tmp := final + ".tmp"
	fh, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, werr := fh.Write(b)
	serr := fh.Sync()
	cerr := fh.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("fsm: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	return syncDir(filepath.Dir(final))
}

// prepareDeferred decides, before the bbolt file is opened, whether it can
// be trusted, deletes it if not, and records this boot as the file's owner.
// It returns the range the FSM starts from when the file is new or deleted,
// and whether the file was deleted.
func prepareDeferred(cfg Config, boot string) (initial Range, rebuilt bool, err error) {
	initial = cfg.Initial
	sc, found, err := readSidecar(cfg.Path)
	if err != nil {
		return initial, false, fmt.Errorf("fsm: read sidecar: %w", err)
	}
	_, statErr := os.Stat(cfg.Path)
	exists := statErr == nil
	if !exists {
		// A new file: its genesis is the range it starts with.
		g := cloneRange(cfg.Initial)
		sc = sidecar{Genesis: &g}
	} else if found && sc.State != sidecarClean && sc.Boot != boot {
		// Left open under another boot: unsynced commits may be torn.
		if err := os.Remove(cfg.Path); err != nil {
			return initial, false, fmt.Errorf("fsm: remove untrusted file: %w", err)
		}
		rebuilt = true
		if sc.Genesis != nil {
			initial = cloneRange(*sc.Genesis)
		}
	}
	// (found == false with an existing file: written by a version that
	// synced every commit, so it is consistent; its genesis is unknown.)
	sc.State, sc.Boot = sidecarOpen, boot
	if err := writeSidecar(cfg.Path, sc); err != nil {
		return initial, false, err
	}
	return initial, rebuilt, nil
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
