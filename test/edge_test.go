package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
)

// noRedirect sends requests exactly as given and never follows a redirect:
// a client that followed one would write to another key.
var noRedirect = &http.Client{
	Timeout:       20 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// doVerbatim sends method path (not escaped, not cleaned) with an optional
// JSON body to addr.
func doVerbatim(ctx context.Context, method, addr, path, body string) (*HTTPResult, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
	if err != nil {
		return nil, err
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &HTTPResult{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// TestEdgeKeysAndPrefixPaging runs the HTTP edge as a user meets it on a
// cluster of three nodes with shards split inside one prefix (issue 11 item 9).
func TestEdgeKeysAndPrefixPaging(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"pre/1", "pre/2"}})
	ctx := Context(t, 60*time.Second)
	addrs := c.HTTPAddrs()

	// A key is exactly the percent-decoded path after /v1/kv/: "//", "."
	// and ".." are part of it. Each key here and its "cleaned" twin are two
	// keys; every request goes to every node in turn, so forwarded requests
	// keep the path too.
	t.Run("keys with //, . and .. round-trip exactly", func(t *testing.T) {
		odd := []string{"/lead", "a//b", "../up", "a/../b", "./dot", "a/./b", "trail/", "x/..", "//"}
		twins := []string{"lead", "a/b", "up", "b", "dot", "trail", "x"}
		all := append(slices.Clone(odd), twins...)
		n := 0
		next := func() string { n++; return addrs[n%len(addrs)] }
		for _, k := range all {
			res, err := doVerbatim(ctx, "PUT", next(), "/v1/kv/"+k, fmt.Sprintf(`{"value":%q}`, "v:"+k))
			if err != nil || res.Status != 200 {
				t.Fatalf("PUT /v1/kv/%s: %v %v", k, res, err)
			}
		}
		for _, k := range all {
			for _, path := range []string{"/v1/kv/" + k, KVPath(k)} { // verbatim, and escaped as the client sends it
				res, err := doVerbatim(ctx, "GET", next(), path, "")
				if err != nil || res.Status != 200 {
					t.Fatalf("GET %s: %v %v", path, res, err)
				}
				var kv struct{ Key, Value string }
				if err := res.JSON(&kv); err != nil || kv.Key != k || kv.Value != "v:"+k {
					t.Fatalf("GET %s: %s; want key %q with value %q", path, res, k, "v:"+k)
				}
			}
		}
		// The keyspace holds exactly these keys: no write went to another.
		got := ScanKeys(t, ctx, func(int) string { return next() }, "keys_only=1", 1000)
		want := slices.Clone(all)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("keys stored %q; want exactly %q", got, want)
		}
		for _, k := range odd {
			res, err := doVerbatim(ctx, "DELETE", next(), "/v1/kv/"+k, "")
			if err != nil || res.Status != 200 || !strings.Contains(string(res.Body), `"deleted":1`) {
				t.Fatalf("DELETE /v1/kv/%s: %v %v", k, res, err)
			}
		}
		got = ScanKeys(t, ctx, func(int) string { return next() }, "keys_only=1", 1000)
		want = slices.Clone(twins)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("keys left after deleting the odd ones %q; want their twins %q", got, want)
		}
		for _, k := range twins {
			if _, err := doVerbatim(ctx, "DELETE", next(), KVPath(k), ""); err != nil {
				t.Fatal(err)
			}
		}
	})

	// The Go client escapes a key as one path element ("//x" is %2F%2Fx),
	// which ServeMux did not clean either; its odd keys must stay exact now
	// that the server, not the mux, reads key paths. (A regression check:
	// it passed before the fix too.)
	t.Run("the Go client's odd keys stay themselves", func(t *testing.T) {
		cl, err := client.New(client.Config{Endpoints: addrs})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		keys := []string{"//x", "/x", "x//", "..", ".", "../x", "x/../y", "x/./y"}
		for _, k := range keys {
			if _, err := cl.Put(ctx, k, "v:"+k); err != nil {
				t.Fatalf("Put(%q): %v", k, err)
			}
		}
		page, err := cl.Scan(ctx, client.ScanOptions{KeysOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, kv := range page.KVs {
			got = append(got, kv.Key)
		}
		want := slices.Clone(keys)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("keys stored %q; want exactly %q", got, want)
		}
		for _, k := range keys {
			kv, err := cl.Get(ctx, k)
			if err != nil || kv.Value != "v:"+k {
				t.Fatalf("Get(%q): %+v %v", k, kv, err)
			}
			if n, err := cl.Delete(ctx, k); err != nil || n != 1 {
				t.Fatalf("Delete(%q): %d %v", k, n, err)
			}
		}
	})

	// A prefix scan continues with its own "next" (?prefix=p&start=next)
	// to the end, across the shards the prefix spans, and never strays
	// outside the prefix.
	t.Run("prefix scan pages across shards with next", func(t *testing.T) {
		var want []string
		for i := 0; i < 30; i++ {
			want = append(want, fmt.Sprintf("pre/%02d", i))
		}
		outside := []string{"pre", "pre.", "pre0", "pra", "prf", "q"}
		for i, k := range append(slices.Clone(want), outside...) {
			res, err := Do(ctx, "PUT", addrs[i%len(addrs)], KVPath(k), `{"value":"v"}`)
			if err != nil || res.Status != 200 {
				t.Fatalf("PUT %s: %v %v", k, res, err)
			}
		}
		for _, limit := range []int{1, 4, 7, 30, 31} {
			got := ScanKeys(t, ctx, func(page int) string { return addrs[page%len(addrs)] }, "prefix=pre/&keys_only=1", limit)
			if !slices.Equal(got, want) {
				t.Fatalf("prefix scan in pages of %d: %q; want %q", limit, got, want)
			}
		}
		// "start" must lie inside the prefix: it continues a prefix scan,
		// it does not widen one.
		for _, start := range []string{"pra", "q", "pre"} {
			res, err := Do(ctx, "GET", addrs[0], "/v1/kv?prefix=pre/&start="+start, nil)
			if err != nil || res.Status != 400 || res.Code() != "invalid_argument" {
				t.Fatalf("prefix=pre/&start=%s: %v %v; want 400 invalid_argument", start, res, err)
			}
		}
	})
}
