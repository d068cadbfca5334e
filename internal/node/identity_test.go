package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// node.json as cf3dc0d wrote it (test/testdata/upgrade/vcf3dc0d, n1) is
// read by today's code; a new file carries its format version; a file of a
// newer version is refused (fsm/DESIGN.md "Persisted formats").
func TestIdentityFileFormats(t *testing.T) {
	old := t.TempDir()
	if err := os.WriteFile(filepath.Join(old, "node.json"), []byte(`{"id":"n1","raft_addr":"127.0.0.1:27181"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := checkIdentity(old, "n1", "127.0.0.1:27181", 1); err != nil {
		t.Fatalf("cf3dc0d's node.json: %v", err)
	}
	if _, err := checkIdentity(old, "n1", "127.0.0.1:9", 1); err == nil || !strings.Contains(err.Error(), "--raft-addr") {
		t.Fatalf("another raft address accepted: %v", err)
	}

	fresh := t.TempDir()
	if _, err := checkIdentity(fresh, "n2", "127.0.0.1:27182", 1); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(fresh, "node.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"v":1,"id":"n2","raft_addr":"127.0.0.1:27182"}`; got != want {
		t.Fatalf("new node.json is %s, want %s", got, want)
	}
	if _, err := checkIdentity(fresh, "n2", "127.0.0.1:27182", 1); err != nil {
		t.Fatalf("reopen: %v", err)
	}

	newer := t.TempDir()
	if err := os.WriteFile(filepath.Join(newer, "node.json"), []byte(`{"v":3,"id":"n3","raft_addr":"127.0.0.1:27183"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := checkIdentity(newer, "n3", "127.0.0.1:27183", 1); err == nil || !strings.Contains(err.Error(), "newer cairn") {
		t.Fatalf("node.json v3 accepted: %v", err)
	}
}

// A data dir remembers the highest cluster command level its node saw; a
// binary below it is refused there (a downgrade), one at or above it starts.
func TestIdentityRefusesBinaryBelowClusterLevel(t *testing.T) {
	dir := t.TempDir()
	if _, err := checkIdentity(dir, "n1", "127.0.0.1:27181", 1); err != nil {
		t.Fatal(err)
	}
	if err := recordLevel(dir, 2); err != nil {
		t.Fatal(err)
	}
	if err := recordLevel(dir, 1); err != nil { // never lowers
		t.Fatal(err)
	}
	if _, err := checkIdentity(dir, "n1", "127.0.0.1:27181", 1); err == nil || !strings.Contains(err.Error(), "downgrade") {
		t.Fatalf("a level-1 binary started in a data dir that saw level 2: %v", err)
	}
	seen, err := checkIdentity(dir, "n1", "127.0.0.1:27181", 2)
	if err != nil || seen != 2 {
		t.Fatalf("level-2 binary: seen %d, %v; want 2, nil", seen, err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "node.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Version 2 once a level is recorded: a binary from before levels,
	// which would ignore "level", refuses a version it does not know.
	if got, want := string(b), `{"v":2,"id":"n1","raft_addr":"127.0.0.1:27181","level":2}`; got != want {
		t.Fatalf("node.json is %s, want %s", got, want)
	}
}
