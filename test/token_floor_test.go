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

// Invariant I9 for grants the old cluster made after its backup: the
// backup's floor cannot know them, so a restore into a new cluster takes a
// second floor read from the old cluster at restore time
// (RestoreOptions.TokenFloor; cairn restore --token-floor N, with N from
// cairn cluster token-floor against the old cluster). The negative control
// restores with the backup's floor alone: the new cluster's token falls
// below the old cluster's last one.
func TestTokensIncreaseAcrossRestoreAfterLaterGrants(t *testing.T) {
	ctx := Context(t, 2*time.Minute)
	const lockName = "jobs/nightly"
	old := StartCluster(t, ClusterConfig{InitialSplits: []string{"m"}})
	oc := NewClients(t, old, 1)[0]
	acquireToken(t, ctx, oc, lockName)
	var backup bytes.Buffer
	if _, err := oc.Backup(ctx, &backup, client.BackupOptions{Prefix: "jobs/"}); err != nil {
		t.Fatal(err)
	}
	for i := range 200 { // the lock's shard's index moves well past the backup's floor
		if _, err := oc.Put(ctx, "jobs/later"+string(rune('a'+i%26)), "v"); err != nil {
			t.Fatal(err)
		}
	}
	later := acquireToken(t, ctx, oc, lockName)
	floor, err := oc.TokenFloor(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if floor <= later {
		t.Fatalf("the old cluster's token floor %d is not above its last token %d", floor, later)
	}

	restoreAndAcquire := func(opts client.RestoreOptions) uint64 {
		fresh := StartCluster(t, ClusterConfig{InitialSplits: []string{"m"}})
		fc := NewClients(t, fresh, 1)[0]
		if _, err := fc.Restore(ctx, bytes.NewReader(backup.Bytes()), opts); err != nil {
			t.Fatalf("restore: %v", err)
		}
		return acquireToken(t, ctx, fc, lockName)
	}
	if tok := restoreAndAcquire(client.RestoreOptions{TokenFloor: floor}); tok <= later {
		t.Errorf("Invariant I9: restored with the old cluster's floor %d, the lock's token is %d, not above %d the old cluster granted after its backup", floor, tok, later)
	}
	if tok := restoreAndAcquire(client.RestoreOptions{}); tok > later {
		t.Errorf("negative control: with the backup's floor alone the new cluster's token %d is still above %d; the test shows nothing", tok, later)
	}
}
