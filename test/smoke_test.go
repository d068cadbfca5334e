package test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSmokeClusterPutGet(t *testing.T) {
	c := StartCluster(t, ClusterConfig{InitialSplits: []string{"g", "n", "t"}})
	for i, addr := range c.HTTPAddrs() {
		req, _ := http.NewRequest(http.MethodPut, "http://"+addr+"/v1/kv/k"+string(rune('a'+i*7)), strings.NewReader(`{"value":"v"}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("put via %s: %d %s %v", addr, resp.StatusCode, b, resp.Header)
		if resp.StatusCode != 200 {
			t.Fatalf("put: %d %s", resp.StatusCode, b)
		}
	}
	_ = time.Second
	for _, addr := range c.HTTPAddrs() {
		resp, err := http.Get("http://" + addr + "/v1/kv/ka")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Logf("get via %s: %d %s", addr, resp.StatusCode, b)
	}
}

// GET /v1/cluster answers from the placement leader (a node forwards it
// there); ?local=true answers from the node asked, which the chaos suite
// uses to compare the replicas' own views.
func TestClusterLocalView(t *testing.T) {
	c := StartCluster(t, ClusterConfig{})
	ctx := Context(t, 30*time.Second)
	metaLeader := ""
	WaitFor(t, 10*time.Second, "meta leader", func() error {
		for _, h := range c.Nodes() {
			if h.Node != nil && h.Node.MetaGroup().IsLeader() {
				metaLeader = h.ID
				return nil
			}
		}
		return fmt.Errorf("no meta leader")
	})
	for _, h := range c.Nodes() {
		for _, tc := range []struct {
			query, served string
		}{
			{"", metaLeader},
			{"?local=false", metaLeader},
			{"?local=true", h.ID},
			{"?local=1", h.ID},
		} {
			res, err := Do(ctx, "GET", h.HTTPAddr, "/v1/cluster"+tc.query, nil)
			if err != nil || res.Status != 200 {
				t.Fatalf("%s GET /v1/cluster%s: %v %v", h.ID, tc.query, res, err)
			}
			if got := res.Header.Get("X-Cairn-Node"); got != tc.served {
				t.Errorf("%s GET /v1/cluster%s: served by %q, want %q", h.ID, tc.query, got, tc.served)
			}
			var view struct {
				Shards []struct{ ID uint64 } `json:"shards"`
			}
			if err := res.JSON(&view); err != nil || len(view.Shards) == 0 {
				t.Errorf("%s GET /v1/cluster%s: %v, %d shards", h.ID, tc.query, err, len(view.Shards))
			}
		}
	}
	res, err := Do(ctx, "GET", c.Node(0).HTTPAddr, "/v1/cluster?local=maybe", nil)
	if err != nil || res.Status != 400 || res.Code() != "invalid_argument" {
		t.Fatalf("?local=maybe: %v %v, want 400 invalid_argument", res, err)
	}
}
