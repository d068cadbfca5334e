package fsm

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func deferredOn(boot string) func(*Config) {
	return func(c *Config) {
		c.DeferSync = true
		c.BootID = func() (string, error) { return boot, nil }
	}
}

// Deferred sync: a process crash keeps the file; a crash of the machine (a
// file left open under another boot id) is detected and the FSM starts again
// from its genesis range; a clean close is trusted across boots.
func TestDeferredSyncTrust(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	put := func(f *FSM, index uint64, key string) {
		t.Helper()
		mustApply(t, f, index, &Command{Op: OpPut, Key: []byte(key), Value: []byte("v")})
		f.flush("test") // committed without fsync: what the page cache keeps
	}

	f, err := Open(Config{Path: path, Initial: testRange, DeferSync: true, BootID: func() (string, error) { return "boot-A", nil }})
	if err != nil {
		t.Fatal(err)
	}
	if !f.deferred || f.Rebuilt() {
		t.Fatalf("new file: deferred %v rebuilt %v", f.deferred, f.Rebuilt())
	}
	put(f, 1, "c1")
	put(f, 2, "c2")
	f.crashClose() // the process dies: no sync, no clean mark

	// Same boot: the page cache kept every commit.
	f = mustOpen(t, path, deferredOn("boot-A"))
	if f.Rebuilt() || f.Applied() != 2 {
		t.Fatalf("after a process crash: rebuilt %v applied %d, want kept at 2", f.Rebuilt(), f.Applied())
	}
	put(f, 3, "c3")
	f.crashClose()

	// Another boot: the machine went down with unsynced commits.
	f = mustOpen(t, path, deferredOn("boot-B"))
	if !f.Rebuilt() || f.Applied() != 0 {
		t.Fatalf("after a machine crash: rebuilt %v applied %d, want rebuilt at 0", f.Rebuilt(), f.Applied())
	}
	if got := f.Range(); got.ID != testRange.ID || string(got.Start) != string(testRange.Start) || got.Epoch != testRange.Epoch {
		t.Errorf("rebuilt from range %+v, want the genesis %+v", got, testRange)
	}
	put(f, 1, "c1")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// A clean close is trusted under any boot.
	f = mustOpen(t, path, deferredOn("boot-C"))
	if f.Rebuilt() || f.Applied() != 1 {
		t.Fatalf("after a clean close: rebuilt %v applied %d", f.Rebuilt(), f.Applied())
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	// No boot id: commits are synced, nothing is distrusted.
	f = mustOpen(t, path, func(c *Config) {
		c.DeferSync = true
		c.BootID = func() (string, error) { return "", errors.New("no /proc") }
	})
	if f.deferred || f.Applied() != 1 {
		t.Fatalf("without a boot id: deferred %v applied %d", f.deferred, f.Applied())
	}
}

// A file from before deferred sync (no sidecar) was synced on every commit:
// it is trusted, and a torn sidecar is not.
func TestDeferredSyncSidecarCases(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "fsm.db")
	f := mustOpen(t, path) // synced mode: no sidecar
	mustApply(t, f, 1, &Command{Op: OpPut, Key: []byte("c"), Value: []byte("v")})
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sidecarPath(path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("synced mode wrote a sidecar: %v", err)
	}
	f = mustOpen(t, path, deferredOn("boot-A"))
	if f.Rebuilt() || f.Applied() != 1 {
		t.Fatalf("legacy file: rebuilt %v applied %d", f.Rebuilt(), f.Applied())
	}
	f.crashClose()
	if err := os.WriteFile(sidecarPath(path), []byte(`{"state":"op`), 0o600); err != nil {
		t.Fatal(err)
	}
	f = mustOpen(t, path, deferredOn("boot-A"))
	if !f.Rebuilt() {
		t.Fatal("a torn sidecar was trusted")
	}
}

// placeholder is the range a node passes when it reopens a replica found on
// disk (internal/node: fsm.Range{ID: id}): it knows only the id, so a
// rebuild must not start from it.
var placeholder = Range{ID: testRange.ID}

func sameRange(a, b Range) bool {
	return a.ID == b.ID && string(a.Start) == string(b.Start) && string(a.End) == string(b.End) &&
		a.Epoch == b.Epoch && slices.Equal(a.Replicas, b.Replicas)
}

// mustCrashRebuild leaves f open with unsynced commits (crashClose) and
// reopens it under another boot, as after a machine crash.
func reopenAfterMachineCrash(t *testing.T, f *FSM, path string, mods ...func(*Config)) *FSM {
	t.Helper()
	f.crashClose()
	return mustOpen(t, path, append([]func(*Config){deferredOn("boot-B"), func(c *Config) { c.Initial = placeholder }}, mods...)...)
}

// Invariants I5, I6: a file written with fsync on every commit (--fsm-sync,
// or a binary from before deferred sync: no sidecar, no snapshot yet) and
// then run with deferred sync is rebuilt after a machine crash from the
// range the group was created with, not from the id-only range a node
// reopens replicas with (whole keyspace, epoch 0), which would accept every
// key and diverge from the other replicas' epochs.
func TestRebuildStartsFromGenesis(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f := mustOpen(t, path) // synced mode, created with its genesis range
	mustApply(t, f, 1, put("c", "v"))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	f = mustOpen(t, path, deferredOn("boot-A"), func(c *Config) { c.Initial = placeholder }) // restart
	mustApply(t, f, 2, put("d", "v"))
	f = reopenAfterMachineCrash(t, f, path)
	if f.Rebuilt() {
		if got := f.Range(); !sameRange(got, testRange) || f.Applied() != 0 {
			t.Fatalf("rebuilt at applied %d from range %+v, want the genesis %+v at 0", f.Applied(), got, testRange)
		}
	} else if f.Applied() != 2 {
		t.Fatalf("kept the file at applied %d, want 2", f.Applied())
	}
}

// A rebuild interrupted after it deleted the file and before it rewrote the
// sidecar starts again from the recorded genesis, not from the range the
// caller passes.
func TestRebuildInterruptedKeepsGenesis(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f := mustOpen(t, path, deferredOn("boot-A"))
	mustApply(t, f, 1, put("c", "v"))
	f.crashClose()
	if err := os.Remove(path); err != nil { // the rebuild's first step, then the machine dies again
		t.Fatal(err)
	}
	f = mustOpen(t, path, deferredOn("boot-B"), func(c *Config) { c.Initial = placeholder })
	if got := f.Range(); !sameRange(got, testRange) {
		t.Fatalf("started from range %+v, want the genesis %+v", got, testRange)
	}
}

// A sidecar that says "open" under another boot but records no genesis (as
// the binary before this one wrote after switching from --fsm-sync) cannot
// be rebuilt correctly from the log alone: Open refuses, keeping the file,
// unless a raft snapshot will replace the state anyway.
func TestRebuildWithoutGenesis(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f := mustOpen(t, path, deferredOn("boot-A"))
	mustApply(t, f, 1, put("c", "v"))
	f.crashClose()
	for _, p := range []string{sidecarPath(path), genesisPath(path)} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if err := writeSidecar(path, sidecar{State: sidecarOpen, Boot: "boot-A"}); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Path: path, Initial: placeholder, DeferSync: true, BootID: func() (string, error) { return "boot-B", nil }}
	if g, err := Open(cfg); !errors.Is(err, ErrGenesisUnknown) {
		if err == nil {
			t.Errorf("Open rebuilt=%v from range %+v, want ErrGenesisUnknown", g.Rebuilt(), g.Range())
			g.Close()
		}
		t.Fatalf("Open: %v, want ErrGenesisUnknown", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the refused file was not kept: %v", err)
	}
	cfg.HasSnapshot = true
	g, err := Open(cfg)
	if err != nil || !g.Rebuilt() {
		t.Fatalf("with a snapshot to restore: Open %v rebuilt %v", err, err == nil && g.Rebuilt())
	}
	g.Close()
}

// A file whose genesis is unknown (from before genesis records) is not
// deferred: its commits stay synced, so a machine crash never makes it
// rebuild.
func TestUnknownGenesisStaysSynced(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f := mustOpen(t, path) // synced mode
	mustApply(t, f, 1, put("c", "v"))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(genesisPath(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	f = mustOpen(t, path, deferredOn("boot-A"), func(c *Config) {
		c.Initial = placeholder
		c.CommitBatches = 0 // the mode's default: every batch, when synced
	})
	if f.deferred {
		t.Fatal("a file with an unknown genesis runs deferred")
	}
	mustApply(t, f, 2, put("d", "v"))
	f = reopenAfterMachineCrash(t, f, path)
	if f.Rebuilt() || f.Applied() != 2 || !sameRange(f.Range(), testRange) {
		t.Fatalf("after a machine crash: rebuilt %v applied %d range %+v, want the synced file kept", f.Rebuilt(), f.Applied(), f.Range())
	}
}

// A file left open with unsynced commits is distrusted after a machine
// crash even when the node now runs with --fsm-sync.
func TestSyncedModeChecksSidecar(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f := mustOpen(t, path, deferredOn("boot-A"))
	mustApply(t, f, 1, put("c", "v"))
	f.crashClose()
	f = mustOpen(t, path, func(c *Config) {
		c.Initial = placeholder
		c.BootID = func() (string, error) { return "boot-B", nil }
	})
	if !f.Rebuilt() || !sameRange(f.Range(), testRange) {
		t.Fatalf("synced mode after a machine crash: rebuilt %v range %+v, want rebuilt from the genesis", f.Rebuilt(), f.Range())
	}
}

// crashClose closes the file as a killed process would leave it: no sync, no
// clean mark (tests).
func (f *FSM) crashClose() {
	f.closeOnce.Do(func() {
		close(f.closed)
		f.dbMu.Lock()
		defer f.dbMu.Unlock()
		// The open write transaction dies with the process: nothing of it
		// reached the file (raft replays its entries).
		f.wmu.Lock()
		f.rollbackLocked()
		f.wmu.Unlock()
		_ = f.db.Close()
		f.db = nil
	})
}

// The sidecar's format version (fsm/DESIGN.md "Persisted formats"): a
// sidecar from before "v" (cf3dc0d, test/testdata/upgrade/vcf3dc0d) is read
// as version 1 and keeps its meaning, open or clean; one this binary writes
// says "v":1; one of a newer version is refused with an error naming the
// file and the version, and the state machine's file is kept, not rebuilt.
func TestSidecarFormatVersion(t *testing.T) {
	const genesis = `"genesis":{"ID":7,"Start":"Yg==","End":"eQ==","Epoch":3,"Replicas":["n1","n2","n3"]}`
	setup := func(t *testing.T, sidecar string) string {
		t.Helper()
		path := filepath.Join(t.TempDir(), "fsm.db")
		f := mustOpen(t, path) // synced mode: no sidecar
		mustApply(t, f, 1, &Command{Op: OpPut, Key: []byte("c"), Value: []byte("v")})
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(sidecarPath(path), []byte(sidecar), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}

	t.Run("without v, clean", func(t *testing.T) {
		path := setup(t, `{"state":"clean",`+genesis+`}`)
		f := mustOpen(t, path, deferredOn("boot-B"))
		if f.Rebuilt() || f.Applied() != 1 {
			t.Fatalf("old clean sidecar: rebuilt %v applied %d, want kept at 1", f.Rebuilt(), f.Applied())
		}
		b, err := os.ReadFile(sidecarPath(path))
		if err != nil {
			t.Fatal(err)
		}
		if want := `{"v":1,"state":"open","boot":"boot-B",` + genesis + `}`; string(b) != want {
			t.Errorf("sidecar rewritten as\n %s\nwant\n %s", b, want)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if b, _ = os.ReadFile(sidecarPath(path)); string(b) != `{"v":1,"state":"clean",`+genesis+`}` {
			t.Errorf("sidecar after a clean close: %s", b)
		}
	})
	t.Run("without v, open under another boot", func(t *testing.T) {
		path := setup(t, `{"state":"open","boot":"boot-A",`+genesis+`}`)
		f := mustOpen(t, path, deferredOn("boot-B"), func(c *Config) { c.Initial = placeholder })
		if !f.Rebuilt() || !sameRange(f.Range(), testRange) {
			t.Fatalf("old open sidecar: rebuilt %v from %+v, want rebuilt from the genesis %+v", f.Rebuilt(), f.Range(), testRange)
		}
		f.Close()
	})
	for _, sc := range []string{
		`{"v":2,"state":"clean"}`,
		`{"v":2,"state":"open","boot":"boot-A",` + genesis + `}`, // would be rebuilt, were it v1
		`{"v":-1,"state":"clean"}`,
	} {
		t.Run(sc, func(t *testing.T) {
			path := setup(t, sc)
			for _, deferred := range []bool{true, false} {
				f, err := Open(Config{Path: path, Initial: testRange, DeferSync: deferred,
					BootID: func() (string, error) { return "boot-B", nil }})
				if err == nil {
					f.Close()
					t.Fatalf("deferred %v: opened a state machine whose sidecar is %s", deferred, sc)
				}
				if !errors.Is(err, ErrNewerFormat) || !strings.Contains(err.Error(), sidecarPath(path)) ||
					!strings.Contains(err.Error(), "format v") {
					t.Fatalf("deferred %v: error %q: want ErrNewerFormat naming %s and the version", deferred, err, sidecarPath(path))
				}
			}
			// Nothing was touched: the newer binary's files are as it left them.
			if b, _ := os.ReadFile(sidecarPath(path)); string(b) != sc {
				t.Errorf("sidecar changed to %s", b)
			}
			if _, err := os.Stat(path); err != nil {
				t.Errorf("the state machine's file is gone: %v", err)
			}
		})
	}
}

// A genesis file of a newer version (magic, version byte 2) is refused with
// an error naming it, not taken for a missing one.
func TestGenesisNewerVersionRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	f := mustOpen(t, path)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(genesisPath(path))
	if err != nil {
		t.Fatal(err)
	}
	if b[len(genesisMagic)] != 1 {
		t.Fatalf("genesis version byte %d, want 1", b[len(genesisMagic)])
	}
	b[len(genesisMagic)] = 2
	if err := os.WriteFile(genesisPath(path), b, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err = Open(Config{Path: path, Initial: testRange})
	if err == nil {
		f.Close()
		t.Fatal("opened with a genesis file of version 2")
	}
	if !errors.Is(err, ErrNewerFormat) || !strings.Contains(err.Error(), genesisPath(path)) || !strings.Contains(err.Error(), "v2") {
		t.Fatalf("error %q: want ErrNewerFormat naming %s and v2", err, genesisPath(path))
	}
}
