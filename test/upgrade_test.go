package test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/fsm"
	"github.com/cairndb/cairn/shard"
)

// TestUpgradeOpensOldDataDir opens the data dirs written by earlier cairn
// binaries (test/testdata/upgrade/v*/, one per format change, written by
// gen.sh) with today's code, and checks that the cluster serves what the old
// binary wrote: every key with its value and metadata, the binary value, the
// TTL keys (the long one kept, the short one expired by the new leader), the
// range map after the split, and new writes; then that the cluster restarts
// from the meta snapshots today's code writes over the old log. In the
// style of rqlite's
// upgrade tests: a fixture is never regenerated, only added, so every
// persisted format (fsm/DESIGN.md "Persisted formats", placement/DESIGN.md "Encoding")
// stays readable by every later binary.
func TestUpgradeOpensOldDataDir(t *testing.T) {
	fixtures, err := filepath.Glob(filepath.Join("testdata", "upgrade", "v*", "data.tar.gz"))
	if err != nil || len(fixtures) == 0 {
		t.Fatalf("no upgrade fixtures under testdata/upgrade: %v", err)
	}
	for _, f := range fixtures {
		name := filepath.Base(filepath.Dir(f))
		t.Run(name, func(t *testing.T) { testUpgradeFixture(t, f) })
	}
}

// upgradeKV is a key gen.sh writes and its expected state.
type upgradeKV struct {
	value   []byte
	version uint64
	ttl     string
}

// upgradeKeys are the keys gen.sh leaves in every fixture (ttl/short is
// checked apart: it expires).
var upgradeKeys = map[string]upgradeKV{
	"alpha":       {value: []byte("one"), version: 2},
	"bin":         {value: []byte("\x00\x01\x02\xfe\xff binary\n"), version: 1},
	"config/mode": {value: []byte("fast"), version: 1},
	"hotel":       {value: []byte("h is in shard 2, then in the parent after the split"), version: 1},
	"moon":        {value: []byte("in the child after the split"), version: 1},
	"nova":        {value: []byte("written after the split"), version: 1},
	"ttl/long":    {value: []byte("kept"), version: 1, ttl: "8760h0m0s"},
	"zeta":        {value: []byte("last range"), version: 1},
}

// upgradeRanges is the range map gen.sh leaves: formed with
// --initial-splits g (ranges 1 and 2 at epoch 1), range 2 split at m.
var upgradeRanges = []fsm.Range{
	{ID: 1, Start: nil, End: []byte("g"), Epoch: 1, Replicas: []string{"n1", "n2", "n3"}},
	{ID: 2, Start: []byte("g"), End: []byte("m"), Epoch: 2, Replicas: []string{"n1", "n2", "n3"}},
	{ID: 3, Start: []byte("m"), End: nil, Epoch: 2, Replicas: []string{"n1", "n2", "n3"}},
}

func testUpgradeFixture(t *testing.T, archive string) {
	root := t.TempDir()
	if err := untarSparse(archive, root); err != nil {
		t.Fatalf("unpack %s: %v", archive, err)
	}
	// The fixtures were written on the WAL (a data dir keeps its log store).
	cfg := ClusterConfig{Nodes: 3, ApplyTimeout: 5 * time.Second, Tuning: shard.FastRaftTuning(), LogStore: shard.LogStoreWAL}
	c := newCluster(t, cfg)
	t.Cleanup(c.Close)
	for i := 1; i <= 3; i++ {
		// The raft address is part of the data dir's identity (node.json):
		// gen.sh used 127.0.0.1:2718N. HTTP and gossip ports are free.
		h := &NodeHandle{ID: fmt.Sprintf("n%d", i), DataDir: filepath.Join(root, fmt.Sprintf("n%d", i)),
			RaftAddr: fmt.Sprintf("127.0.0.1:%d", 27180+i)}
		raftLn, err := listenRetry(h.RaftAddr, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: raft address of the fixture: %v", h.ID, err)
		}
		httpLn := mustListen(t)
		h.HTTPAddr = httpLn.Addr().String()
		h.cfg = c.nodeConfig(h, cfg)
		h.cfg.HTTPListener, h.cfg.RaftListener = httpLn, raftLn
		for _, o := range c.nodes {
			h.cfg.Join = append(h.cfg.Join, o.GossipAddr)
		}
		h.Node = c.startWithGossipPort(h)
		c.nodes = append(c.nodes, h)
	}
	c.WaitReady(30 * time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := c.Node(0).HTTPAddr

	// The range map, as every node's meta replica replayed it.
	for _, h := range c.Nodes() {
		got := h.Node.Ranges()
		if fmt.Sprint(got) != fmt.Sprint(upgradeRanges) {
			t.Errorf("%s: ranges after upgrade\n got %v\nwant %v", h.ID, got, upgradeRanges)
		}
	}

	// Every key, linearizable, through each node (forwarded to the leaders).
	for _, h := range c.Nodes() {
		for k, want := range upgradeKeys {
			checkUpgradeKey(t, ctx, h.HTTPAddr, k, want)
		}
	}

	// A full scan returns exactly the keys, once each, in order (ttl/short
	// may still be there until the new leader expires it).
	keys := ScanKeys(t, ctx, func(int) string { return addr }, "", 3)
	var wantKeys []string
	for k := range upgradeKeys {
		wantKeys = append(wantKeys, k)
	}
	sort.Strings(wantKeys)
	got := strings.Join(removeKey(keys, "ttl/short"), ",")
	if got != strings.Join(wantKeys, ",") {
		t.Errorf("scan after upgrade:\n got %s\nwant %s", got, strings.Join(wantKeys, ","))
	}

	// The short TTL key was written last with ttl 5s: the new leader's
	// countdown expires it (invariant I10: never early, here soon).
	WaitFor(t, 30*time.Second, "ttl/short to expire", func() error {
		res, err := Do(ctx, http.MethodGet, addr, KVPath("ttl/short"), nil)
		if err != nil {
			return err
		}
		if res.Status != http.StatusNotFound {
			return fmt.Errorf("GET ttl/short: %s", res)
		}
		return nil
	})

	// The cluster takes writes in every range.
	newKeys := []string{"after/a", "after/h", "after/z", "b", "k", "x"}
	for _, k := range newKeys {
		res, err := Do(ctx, http.MethodPut, addr, KVPath(k), map[string]any{"value": "new " + k})
		if err != nil || res.Status != http.StatusOK {
			t.Fatalf("PUT %s after upgrade: %v %v", k, err, res)
		}
		checkUpgradeKey(t, ctx, addr, k, upgradeKV{value: []byte("new " + k), version: 1})
	}

	// Today's encodings on top of the old ones: every node snapshots its
	// meta replica (today's versioned snapshot format), then the whole
	// cluster restarts from those snapshots and the logs after them.
	for _, h := range c.Nodes() {
		if err := h.Node.MetaGroup().Raft().Snapshot().Error(); err != nil {
			t.Fatalf("%s: meta snapshot: %v", h.ID, err)
		}
	}
	for i := range c.Nodes() {
		c.Kill(i)
	}
	for i := range c.Nodes() {
		c.Restart(i)
	}
	c.WaitReady(30 * time.Second)
	addr = c.Node(1).HTTPAddr
	for _, h := range c.Nodes() {
		if got := h.Node.Ranges(); fmt.Sprint(got) != fmt.Sprint(upgradeRanges) {
			t.Errorf("%s: ranges after the second restart\n got %v\nwant %v", h.ID, got, upgradeRanges)
		}
	}
	for k, want := range upgradeKeys {
		checkUpgradeKey(t, ctx, addr, k, want)
	}
	for _, k := range newKeys {
		checkUpgradeKey(t, ctx, addr, k, upgradeKV{value: []byte("new " + k), version: 1})
	}
}

func checkUpgradeKey(t *testing.T, ctx context.Context, addr, key string, want upgradeKV) {
	t.Helper()
	res, err := Do(ctx, http.MethodGet, addr, KVPath(key), nil)
	if err != nil || res.Status != http.StatusOK {
		t.Errorf("GET %s via %s: %v %v", key, addr, err, res)
		return
	}
	var kv struct {
		Value       *string `json:"value"`
		ValueBase64 []byte  `json:"value_base64"`
		Version     uint64  `json:"version"`
		TTL         string  `json:"ttl"`
	}
	if err := res.JSON(&kv); err != nil {
		t.Errorf("GET %s: %v", key, err)
		return
	}
	value := kv.ValueBase64
	if kv.Value != nil {
		value = []byte(*kv.Value)
	}
	if !bytes.Equal(value, want.value) || kv.Version != want.version || kv.TTL != want.ttl {
		t.Errorf("GET %s via %s: value %q version %d ttl %q, want %q version %d ttl %q",
			key, addr, value, kv.Version, kv.TTL, want.value, want.version, want.ttl)
	}
}

func removeKey(keys []string, k string) []string {
	var out []string
	for _, x := range keys {
		if x != k {
			out = append(out, x)
		}
	}
	return out
}

// listenRetry binds addr, retrying while a previous user (an earlier
// subtest's node, another test) still holds it.
func listenRetry(addr string, timeout time.Duration) (net.Listener, error) {
	deadline := time.Now().Add(timeout)
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil || time.Now().After(deadline) {
			return ln, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// untarSparse unpacks a .tar.gz into dir, leaving runs of zeros as holes:
// the fixtures' WAL and bbolt files are mostly zeros (the WAL's zero-filled
// space ahead, bbolt's grown file), so the unpacked dirs take kilobytes of
// disk, not the tens of megabytes their sizes say.
func untarSparse(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(gz)
	buf := make([]byte, 64<<10)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		path := filepath.Join(dir, filepath.Clean(hdr.Name))
		if !strings.HasPrefix(path, filepath.Clean(dir)+string(os.PathSeparator)) {
			return fmt.Errorf("%s: path outside the archive's root", hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(hdr.Mode)&0o777|0o600)
			if err != nil {
				return err
			}
			var off int64
			for {
				n, rerr := io.ReadFull(tr, buf)
				if n > 0 && !allZero(buf[:n]) {
					if _, err := out.WriteAt(buf[:n], off); err != nil {
						out.Close()
						return err
					}
				}
				off += int64(n)
				if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
					break
				}
				if rerr != nil {
					out.Close()
					return rerr
				}
			}
			if err := out.Truncate(off); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected entry type %c", hdr.Name, hdr.Typeflag)
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
