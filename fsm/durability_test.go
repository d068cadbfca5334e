package fsm

import (
	"errors"
	"os"
	"path/filepath"
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
