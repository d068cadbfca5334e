package main

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/test"
)

// TestKVFence: kv put, del and get --fence NAME:TOKEN on a real cluster
// (invariant I11, scenario S15 from the shell): once a newer holder's token
// reached the key, the older token's write, delete and fenced read are
// refused with stale_token (exit 1), and the newer holder's go through.
func TestKVFence(t *testing.T) {
	c := test.StartCluster(t, test.ClusterConfig{})
	ep := "--endpoints=" + strings.Join(c.HTTPAddrs(), ",")
	cl, err := client.New(client.Config{Endpoints: c.HTTPAddrs()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	old, err := cl.AcquireLock(ctx, "fence/l", client.LockOptions{TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ReleaseLock(ctx, "fence/l", old.Token); err != nil {
		t.Fatal(err)
	}
	cur, err := cl.AcquireLock(ctx, "fence/l", client.LockOptions{TTL: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	oldF, curF := "fence/l:"+strconv.FormatUint(old.Token, 10), "fence/l:"+strconv.FormatUint(cur.Token, 10)
	cases := []struct {
		name  string
		args  []string
		code  int
		inErr string
	}{
		{"old holder writes first", []string{"kv", "put", "fence/k", "old", "--fence", oldF}, 0, ""},
		{"new holder's fenced read", []string{"kv", "get", "fence/k", "--fence", curF}, 0, ""},
		{"old holder's late put", []string{"kv", "put", "fence/k", "late", "--fence", oldF}, 1, "stale_token"},
		{"old holder's late delete", []string{"kv", "del", "fence/k", "--fence", oldF}, 1, "stale_token"},
		{"old holder's fenced read", []string{"kv", "get", "fence/k", "--fence", oldF}, 1, "stale_token"},
		{"new holder's put", []string{"kv", "put", "fence/k", "new", "--fence", curF}, 0, ""},
		{"value", []string{"kv", "get", "fence/k"}, 0, ""},
		{"new holder's delete", []string{"kv", "del", "fence/k", "--fence", curF}, 0, ""},
		{"malformed", []string{"kv", "put", "fence/k", "x", "--fence", "fence/l"}, 2, "NAME:TOKEN"},
		{"token 0", []string{"kv", "del", "fence/k", "--fence", "fence/l:0"}, 2, "positive"},
		{"fenced stale read", []string{"kv", "get", "fence/k", "--fence", curF, "--consistency", "stale"}, 2, "Raft"},
	}
	for _, tc := range cases {
		out, errOut, code := runKV(t, append(tc.args, ep)...)
		if code != tc.code || !strings.Contains(errOut, tc.inErr) {
			t.Fatalf("%s: exit %d, stderr %q; want %d, %q", tc.name, code, errOut, tc.code, tc.inErr)
		}
		if tc.name == "value" && out != "new\n" {
			t.Fatalf("value after the fenced writes: %q, want the new holder's", out)
		}
	}
	// Negative control: without --fence the old holder's late write lands.
	if _, errOut, code := runKV(t, "kv", "put", "fence/k", "late", ep); code != 0 {
		t.Fatalf("unfenced put: exit %d: %s", code, errOut)
	}
	if out, _, _ := runKV(t, "kv", "get", "fence/k", ep); out != "late\n" {
		t.Fatalf("negative control: the unfenced late write should land, got %q", out)
	}
}
