package test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
)

// countKeys counts the keys under prefix with a linearizable scan.
func countKeys(t *testing.T, cl *client.Client, prefix string) int {
	t.Helper()
	n := 0
	if err := cl.ScanAll(Context(t, 30*time.Second), client.ScanOptions{Prefix: prefix}, func(client.KV) error {
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

// deleteAll deletes every key under prefix, as the operator in S23 does.
func deleteAll(t *testing.T, cl *client.Client, prefix string) {
	t.Helper()
	ctx := Context(t, time.Minute)
	var keys []string
	if err := cl.ScanAll(ctx, client.ScanOptions{Prefix: prefix, KeysOnly: true}, func(kv client.KV) error {
		keys = append(keys, kv.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, err := cl.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
}

// Scenario S23: an operator deletes everything by mistake, and replication
// copies the mistake to every replica. A backup taken before (client
// Backup, `cairn backup`) brings the data back as of the backup: every key
// with its value, binary values and TTLs included. A backup cut short is
// refused before anything is written.
func TestS23RestoreAfterDeletingEverything(t *testing.T) {
	const prefix = "s23/"
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{prefix + "k3", prefix + "k6"}})
	cl := NewClients(t, c, 1)[0]
	ctx := Context(t, 2*time.Minute)

	want := map[string]string{}
	for i := 0; i < 300; i++ {
		k := fmt.Sprintf("%sk%d", prefix, i)
		v := fmt.Sprintf("value-%d", i)
		if i%10 == 0 {
			v = string([]byte{0xff, 0xfe, byte(i), 0x00}) // not UTF-8: travels as base64
		}
		want[k] = v
		if _, err := cl.Put(ctx, k, v); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
	}
	if _, err := cl.Put(ctx, prefix+"ttl", "expires", client.WithTTL(time.Hour)); err != nil {
		t.Fatal(err)
	}
	want[prefix+"ttl"] = "expires"
	for k, v := range want { // the client reads binary values back as written
		kv, err := cl.Get(ctx, k)
		if err != nil || kv.Value != v {
			t.Fatalf("get %s before the backup: %q %v, want %q", k, kv.Value, err, v)
		}
	}

	path := filepath.Join(t.TempDir(), "backup.ndjson")
	var buf bytes.Buffer
	n, err := cl.Backup(ctx, &buf, client.BackupOptions{Prefix: prefix})
	if err != nil || n != len(want) {
		t.Fatalf("backup: %d keys, %v; want %d", n, err, len(want))
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	deleteAll(t, cl, prefix)
	if n := countKeys(t, cl, prefix); n != 0 {
		t.Fatalf("%d keys left after deleting everything", n)
	}

	// A backup cut short (the last lines lost) is refused whole.
	cut := buf.Bytes()[:buf.Len()*2/3]
	if _, err := cl.Restore(ctx, bytes.NewReader(cut), client.RestoreOptions{}); !errors.Is(err, client.ErrInvalidArgument) {
		t.Fatalf("restore of a truncated backup: %v, want invalid_argument", err)
	}
	if n := countKeys(t, cl, prefix); n != 0 {
		t.Fatalf("a refused restore wrote %d keys", n)
	}

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err = cl.Restore(ctx, f, client.RestoreOptions{})
	if err != nil || n != len(want) {
		t.Fatalf("restore: %d keys, %v; want %d", n, err, len(want))
	}
	got := map[string]client.KV{}
	if err := cl.ScanAll(ctx, client.ScanOptions{Prefix: prefix}, func(kv client.KV) error {
		got[kv.Key] = kv
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("after the restore %d keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k].Value != v {
			t.Fatalf("%s after the restore: %q, want %q", k, got[k].Value, v)
		}
	}
	if got[prefix+"ttl"].TTL != time.Hour.String() {
		t.Fatalf("ttl after the restore: %q, want %q", got[prefix+"ttl"].TTL, time.Hour)
	}
	// Restoring again writes the same values: nothing doubles or changes.
	if _, err := f.Seek(0, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := cl.Restore(ctx, f, client.RestoreOptions{Concurrency: 3}); err != nil || n != len(want) {
		t.Fatalf("second restore: %d keys, %v", n, err)
	}
	if n := countKeys(t, cl, prefix); n != len(want) {
		t.Fatalf("after a second restore %d keys, want %d", n, len(want))
	}
	for _, id := range []uint64{1, 2, 3} {
		assertReplicasConverge(t, c, id)
	}
}
