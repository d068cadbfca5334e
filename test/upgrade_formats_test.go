package test

import (
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// upgradeFixtureFormats is, per fixture under testdata/upgrade, the format
// versions its files were written in ("" where the file has none: the
// layout from before the version, read as version 1). A new fixture adds its
// row; TestUpgradeOpensOldDataDir opens every fixture with today's code.
var upgradeFixtureFormats = map[string]struct {
	nodeJSON, sidecar, walHeader string
}{
	"vcf3dc0d": {nodeJSON: "", sidecar: "", walHeader: ""},
	// The sidecar says "v":1; the WAL writes version 1 without the field
	// (shard/wal.go), so its headers are cf3dc0d's bytes.
	"v70b8cd3": {nodeJSON: "1", sidecar: "1", walHeader: ""},
}

// TestUpgradeFixtureFormats checks that each upgrade fixture holds the
// formats it stands for (fsm/DESIGN.md "Persisted formats"): the fixture
// from before the versions has none, so TestUpgradeOpensOldDataDir proves
// that files without a version still open; the later ones have theirs.
func TestUpgradeFixtureFormats(t *testing.T) {
	fixtures, err := filepath.Glob(filepath.Join("testdata", "upgrade", "v*", "data.tar.gz"))
	if err != nil || len(fixtures) == 0 {
		t.Fatalf("no upgrade fixtures under testdata/upgrade: %v", err)
	}
	for _, f := range fixtures {
		name := filepath.Base(filepath.Dir(f))
		want, ok := upgradeFixtureFormats[name]
		if !ok {
			t.Errorf("%s: add the formats it was written in to upgradeFixtureFormats", name)
			continue
		}
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			if err := untarSparse(f, root); err != nil {
				t.Fatal(err)
			}
			jsonV := func(path string) string {
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				var v struct {
					V json.RawMessage `json:"v"`
				}
				if err := json.Unmarshal(b, &v); err != nil {
					t.Fatalf("%s: %v", path, err)
				}
				return string(v.V)
			}
			files := func(pattern string) []string {
				m, err := filepath.Glob(filepath.Join(root, pattern))
				if err != nil || len(m) == 0 {
					t.Fatalf("no %s in the fixture: %v", pattern, err)
				}
				return m
			}
			for _, p := range files("n*/node.json") {
				if got := jsonV(p); got != want.nodeJSON {
					t.Errorf("%s: \"v\" %q, want %q", p, got, want.nodeJSON)
				}
			}
			for _, p := range files("n*/shards/*/fsm.db.state") {
				if got := jsonV(p); got != want.sidecar {
					t.Errorf("%s: \"v\" %q, want %q", p, got, want.sidecar)
				}
			}
			for _, p := range files("n*/raft-wal/*.wal") {
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				// len u32 LE, crc32c u32 LE, kind 1, seq uvarint [, version uvarint]
				body := b[8 : 8+binary.LittleEndian.Uint32(b)]
				if body[0] != 1 {
					t.Fatalf("%s: first record of kind %d, want the header", p, body[0])
				}
				_, n := binary.Uvarint(body[1:])
				got := ""
				if rest := body[1+n:]; len(rest) > 0 {
					v, _ := binary.Uvarint(rest)
					got = strconv.FormatUint(v, 10)
				}
				if got != want.walHeader {
					t.Errorf("%s: header %x: version %q, want %q", p, body, got, want.walHeader)
				}
			}
		})
	}
}
