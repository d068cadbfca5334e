package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHealthcheck(t *testing.T) {
	ready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer ready.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/readyz"
	ln.Close()

	cases := []struct {
		name string
		args []string
		code int
	}{
		{"200 is healthy", []string{"healthcheck", "--url", ready.URL + "/readyz"}, 0},
		{"503 is unhealthy", []string{"healthcheck", "--url", ready.URL + "/other"}, 1},
		{"refused is unhealthy", []string{"healthcheck", "--url", closed, "--timeout", "1s"}, 1},
		{"bad url is usage", []string{"healthcheck", "--url", "127.0.0.1:7070/readyz"}, 2},
		{"arguments are usage", []string{"healthcheck", "extra"}, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := run(tc.args); got != tc.code {
				t.Fatalf("cairn %v exited %d, want %d", tc.args, got, tc.code)
			}
		})
	}
}
