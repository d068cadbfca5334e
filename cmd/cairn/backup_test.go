package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// cairn backup writes the file only once it is complete; cairn restore
// puts every key back and refuses a file that was cut short or is not a
// backup, with exit code 2 and nothing written.
func TestBackupRestoreCommands(t *testing.T) {
	f, ep := fake(t)
	f.Set("app/a", "1")
	f.Set("app/b", "two words")
	f.Set("other", "x")
	dir := t.TempDir()
	path := filepath.Join(dir, "b.ndjson")

	out, errOut, code := runCommand(newBackupCmd, "backup", path, "--prefix", "app/", ep)
	if code != 0 || out != "backed up 2 keys to "+path+"\n" {
		t.Fatalf("backup: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "*.tmp")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) != 4 ||
		lines[1] != `{"key":"app/a","value":"1"}` || !strings.HasPrefix(lines[3], `{"end":true,"keys":2,"token_floor":`) {
		t.Fatalf("backup file:\n%s", b)
	}

	// The same backup, cut short: refused before anything is written.
	cut := filepath.Join(dir, "cut.ndjson")
	if err := os.WriteFile(cut, b[:len(b)-10], 0o600); err != nil {
		t.Fatal(err)
	}
	f.Set("app/a", "changed")
	_, errOut, code = runCommand(newRestoreCmd, "restore", cut, ep)
	if code != 2 || !strings.Contains(errOut, "invalid_argument") || !strings.Contains(errOut, "backup line 4") {
		t.Fatalf("restore of a cut backup: exit %d, stderr %q", code, errOut)
	}
	if v, _ := f.Value("app/a"); v != "changed" {
		t.Fatalf("a refused restore wrote app/a = %q", v)
	}
	_, errOut, code = runCommand(newRestoreCmd, "restore", filepath.Join(dir, "missing"), ep)
	if code != 2 || !strings.Contains(errOut, "no such file") {
		t.Fatalf("restore of a missing file: exit %d, stderr %q", code, errOut)
	}

	out, errOut, code = runCommand(newRestoreCmd, "restore", path, "-o", "json", ep)
	if code != 0 || !strings.Contains(out, `"keys":2`) {
		t.Fatalf("restore: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if v, _ := f.Value("app/a"); v != "1" {
		t.Fatalf("app/a after the restore: %q, want 1", v)
	}
	// The restore raised the shard's token base to the backup's floor
	// before writing (lock tokens stay above the backed-up cluster's, I9).
	if f.TokenBase() == 0 {
		t.Fatal("the restore left the token base at 0 although the backup recorded a floor")
	}

	// --token-floor raises it further (the old cluster's floor at restore
	// time), and cairn cluster token-floor prints the cluster's floor.
	out, errOut, code = runCommand(newRestoreCmd, "restore", path, "--token-floor", "1000000", ep)
	if code != 0 || f.TokenBase() < 1000000 {
		t.Fatalf("restore --token-floor 1000000: exit %d, token base %d, stdout %q, stderr %q", code, f.TokenBase(), out, errOut)
	}
	out, errOut, code = runCommand(newClusterCmd, "cluster", "token-floor", ep)
	if code != 0 || strings.TrimSpace(out) == "" || strings.TrimSpace(out) == "0" {
		t.Fatalf("cluster token-floor: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if n, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64); err != nil || n <= 1000000 {
		t.Fatalf("cluster token-floor printed %q, want a number above the raised base 1000000", out)
	}
	_, errOut, code = runCommand(newRestoreCmd, "restore", path, "--token-floor", "-3", ep)
	if code != 2 {
		t.Fatalf("restore --token-floor -3: exit %d, stderr %q; want a usage error", code, errOut)
	}
}
