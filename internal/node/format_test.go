package node

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/fsm"
)

// A data dir holding a file written by a newer cairn (fsm/DESIGN.md
// "Persisted formats"): a shard's durability sidecar or a WAL segment of a
// newer format version. The node refuses to start, with an error naming the
// file and its version, and leaves the file as it is: it neither trusts the
// file nor rebuilds the shard from scratch, and does not cut the WAL. Put
// back as this binary wrote it, the data dir starts and serves its data.
func TestNodeRefusesNewerFormats(t *testing.T) {
	dir := t.TempDir()
	raftAddr := ""
	start := func() (*Node, error) { return startSingle(t, dir, "", &raftAddr) }
	n, err := start()
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "a first write", func() bool {
		s, _ := put(t, "http://"+n.HTTPAddr()+"/v1/kv/a", `{"value":"1"}`)
		return s == http.StatusOK
	})
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	sidecars, _ := filepath.Glob(filepath.Join(dir, "shards", "*", "fsm.db.state"))
	wals, _ := filepath.Glob(filepath.Join(dir, "raft-wal", "*.wal"))
	if len(sidecars) == 0 || len(wals) == 0 {
		t.Fatalf("sidecars %v, WAL files %v: want some of each", sidecars, wals)
	}
	for _, tc := range []struct {
		name, path string
		newer      func(b []byte) []byte
	}{
		{"sidecar", sidecars[0], func(b []byte) []byte {
			return []byte(strings.Replace(string(b), `"v":1`, `"v":2`, 1))
		}},
		{"wal", wals[len(wals)-1], func(b []byte) []byte {
			// The header record (seq) with a version 2 after it.
			n := 8 + binary.LittleEndian.Uint32(b)
			body := append(append([]byte(nil), b[8:n]...), 2)
			rec := binary.LittleEndian.AppendUint32(nil, uint32(len(body)))
			rec = binary.LittleEndian.AppendUint32(rec, crc32.Checksum(body, crc32.MakeTable(crc32.Castagnoli)))
			return append(append(rec, body...), b[n:]...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig, err := os.ReadFile(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			newer := tc.newer(orig)
			if string(newer) == string(orig) {
				t.Fatalf("%s unchanged: %q", tc.path, orig[:min(len(orig), 64)])
			}
			if err := os.WriteFile(tc.path, newer, 0o600); err != nil {
				t.Fatal(err)
			}
			n, err := start()
			if err == nil {
				n.Close()
				t.Fatalf("started with a newer-format %s", tc.path)
			}
			if !errors.Is(err, fsm.ErrNewerFormat) || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), "v2") {
				t.Fatalf("start: %v, want fsm.ErrNewerFormat naming %s and v2", err, tc.path)
			}
			t.Logf("refused: %v", err)
			if b, _ := os.ReadFile(tc.path); string(b) != string(newer) {
				t.Fatalf("%s changed by the refused start", tc.path)
			}

			if err := os.WriteFile(tc.path, orig, 0o600); err != nil {
				t.Fatal(err)
			}
			n, err = start()
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			waitFor(t, 30*time.Second, "the first write read back", func() bool {
				s, body := get(t, "http://"+n.HTTPAddr()+"/v1/kv/a")
				return s == http.StatusOK && strings.Contains(body, `"1"`)
			})
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
