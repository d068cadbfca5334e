package test

import (
	"bytes"
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
)

// acquireToken takes lock name (try-lock) through the HTTP API, releases it
// and returns the token it was granted.
func acquireToken(t *testing.T, ctx context.Context, cl *client.Client, name string) uint64 {
	t.Helper()
	path := "/v1/locks/" + client.EscapeKey(name)
	var grant struct {
		Token uint64 `json:"token"`
	}
	if _, err := cl.Do(ctx, client.Request{Method: "POST", Path: path + "/acquire",
		Body: map[string]any{"ttl": "10s", "wait": "0s", "owner": "floor-test"}}, &grant); err != nil {
		t.Fatalf("acquire %s: %v", name, err)
	}
	if _, err := cl.Do(ctx, client.Request{Method: "POST", Path: path + "/release",
		Body: map[string]any{"token": grant.Token}}, nil); err != nil {
		t.Fatalf("release %s: %v", name, err)
	}
	return grant.Token
}

// Invariant I9 across a restore into a new cluster (lock/DESIGN.md): the
// new cluster's raft indices start again at 1, so without the backup's
// token floor its first tokens fall below the ones the old cluster handed
// out to a protected resource. Restoring the same backup with its floor
// stripped is the negative control: the new cluster's token goes back.
func TestTokensIncreaseAcrossRestoreIntoNewCluster(t *testing.T) {
	ctx := Context(t, 2*time.Minute)
	const lockName = "jobs/nightly"
	old := StartCluster(t, ClusterConfig{InitialSplits: []string{"m"}})
	oc := NewClients(t, old, 1)[0]
	for i := range 40 { // move the lock's shard's index on
		if _, err := oc.Put(ctx, "jobs/k"+string(rune('a'+i%26)), "v"); err != nil {
			t.Fatal(err)
		}
	}
	var highest uint64
	for range 3 {
		highest = max(highest, acquireToken(t, ctx, oc, lockName))
	}
	var backup bytes.Buffer
	if _, err := oc.Backup(ctx, &backup, client.BackupOptions{Prefix: "jobs/"}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(backup.Bytes(), []byte(`"token_floor":`)) {
		t.Fatalf("the backup has no token floor:\n%s", backup.String())
	}
	stripped := regexp.MustCompile(`,"token_floor":\d+`).ReplaceAll(backup.Bytes(), nil)

	restoreAndAcquire := func(b []byte) uint64 {
		fresh := StartCluster(t, ClusterConfig{InitialSplits: []string{"m"}})
		fc := NewClients(t, fresh, 1)[0]
		if _, err := fc.Restore(ctx, bytes.NewReader(b), client.RestoreOptions{}); err != nil {
			t.Fatalf("restore: %v", err)
		}
		return acquireToken(t, ctx, fc, lockName)
	}
	if tok := restoreAndAcquire(backup.Bytes()); tok <= highest {
		t.Errorf("Invariant I9: after a restore into a new cluster the lock's token is %d, not above %d the old cluster granted", tok, highest)
	}
	if tok := restoreAndAcquire(stripped); tok > highest {
		t.Errorf("negative control: without the floor the new cluster's token %d is still above %d; the test shows nothing", tok, highest)
	}
}
