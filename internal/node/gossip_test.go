package node

import "testing"

func TestResolveGossipHost(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", ""},
		{"0.0.0.0", "0.0.0.0"},
		{"10.1.2.3", "10.1.2.3"},
		{"::1", "::1"},
		{"localhost", "127.0.0.1"},
	}
	for _, tc := range cases {
		got, err := resolveGossipHost(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("resolveGossipHost(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	if _, err := resolveGossipHost("no-such-host.invalid"); err == nil {
		t.Errorf("an unresolvable host name gave no error")
	}
}
