package test

import (
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
