package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/internal/cli"
	"github.com/cairndb/cairn/test"
)

// asMain makes the test binary run as lockctl itself, so the exec tests run
// the real command in a process of its own (signals, process groups, exit
// codes) without a separate build.
const asMain = "LOCKCTL_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		os.Exit(run(os.Args[1:]))
	}
	// memberlist's probe of a peer outlives its Shutdown by up to a probe
	// timeout; the in-process clusters of the lock and fence tests stop
	// gossip just before goleak looks.
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

// runLockctl runs "lockctl ARGS..." in this process with ctx and returns its
// output and exit code, as main would.
func runLockctl(ctx context.Context, args ...string) (stdout, stderr string, code int) {
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	code = cli.Execute(ctx, root, args, &errOut)
	return out.String(), errOut.String(), code
}

// lockctlProcess is "lockctl ARGS..." as a process of its own.
func lockctlProcess(t *testing.T, endpoints []string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	// atexit_sleep_ms: a -race binary otherwise sleeps 1s when it exits 0.
	cmd.Env = append(os.Environ(), asMain+"=1", "CAIRN_ENDPOINTS="+strings.Join(endpoints, ","), "GORACE=atexit_sleep_ms=0")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	// A command that outlives lockctl holds the output pipes: Wait gives up
	// on them after this long.
	cmd.WaitDelay = 2 * time.Second
	return cmd, &out, &errOut
}

// exitCodeOf is the exit code of a finished process.
func exitCodeOf(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("run lockctl: %v", err)
	return -1
}

// processGone reports whether pid no longer runs (absent, or a zombie that
// only waits to be reaped).
func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return syscall.Kill(pid, 0) == syscall.ESRCH
	}
	// pid (comm) STATE ...; comm may contain spaces, so read after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func newClient(t *testing.T, endpoints []string) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestLockctlCommands: acquire, status, list, renew, release and their exit
// codes (docs/api.md "Command lines": 1 failed, 2 usage, 3 unreachable) on
// a real in-process cluster.
func TestLockctlCommands(t *testing.T) {
	c := test.StartCluster(t, test.ClusterConfig{})
	ep := "--endpoints=" + strings.Join(c.HTTPAddrs(), ",")
	ctx := test.Context(t, 30*time.Second)
	lockctl := func(args ...string) (string, string, int) { return runLockctl(ctx, append(args, ep)...) }

	out, errOut, code := lockctl("acquire", "cli/a", "--ttl", "20s", "--owner", "me")
	if code != 0 {
		t.Fatalf("acquire: exit %d: %s", code, errOut)
	}
	token := strings.TrimSpace(out)
	if n, err := strconv.ParseUint(token, 10, 64); err != nil || n == 0 {
		t.Fatalf("acquire printed %q, want the token", out)
	}
	cases := []struct {
		name   string
		args   []string
		code   int
		inOut  string
		inErr  string
		exactO string
	}{
		{"held: try once", []string{"acquire", "cli/a", "--wait", "0s"}, 1, "", "lock_held", ""},
		{"held: wait runs out", []string{"acquire", "cli/a", "--wait", "300ms"}, 1, "", "lock_held", ""},
		{"status", []string{"status", "cli/a"}, 0, token, "", ""},
		{"status json", []string{"status", "cli/a", "-o", "json"}, 0, `"token":` + token, "", ""},
		{"status free", []string{"status", "cli/free", "-o", "json"}, 0, `"held":false`, "", ""},
		{"list", []string{"list", "--prefix", "cli/"}, 0, "cli/a", "", ""},
		{"list json", []string{"list", "-o", "json"}, 0, `"name":"cli/a"`, "", ""},
		{"list none", []string{"list", "--prefix", "nothing/", "-o", "json"}, 0, "", "", "{\"locks\":[]}\n"},
		{"renew", []string{"renew", "cli/a", "--token", token}, 0, "", "", "20s\n"},
		{"renew stale", []string{"renew", "cli/a", "--token", "1"}, 1, "", "lock_lost", ""},
		{"release no token", []string{"release", "cli/a"}, 2, "", "--token", ""},
		{"release bad token", []string{"release", "cli/a", "--token", "x"}, 2, "", "invalid argument", ""},
		{"acquire no name", []string{"acquire"}, 2, "", "accepts 1 arg", ""},
		{"ttl below the minimum", []string{"acquire", "cli/b", "--ttl", "100ms"}, 2, "", "invalid_argument", ""},
		{"limit 0", []string{"acquire", "cli/b", "--limit", "0"}, 2, "", "--limit", ""},
		{"unknown command", []string{"frob"}, 2, "", "unknown command", ""},
		{"bad output", []string{"status", "cli/a", "-o", "yaml"}, 2, "", "table or json", ""},
		{"release", []string{"release", "cli/a", "--token", token}, 0, "", "", "released\n"},
		{"release again", []string{"release", "cli/a", "--token", token}, 1, "", "lock_lost", ""},
		{"acquire json", []string{"acquire", "cli/a", "-o", "json", "--ttl", "5s"}, 0, `"ttl":"5s"`, "", ""},
		{"semaphore", []string{"acquire", "cli/sem", "--limit", "2", "--ttl", "5s"}, 0, "", "", ""},
		{"semaphore second", []string{"acquire", "cli/sem", "--limit", "2", "--ttl", "5s"}, 0, "", "", ""},
		{"semaphore full", []string{"acquire", "cli/sem", "--limit", "2", "--ttl", "5s", "--wait", "0s"}, 1, "", "lock_held", ""},
		{"shared", []string{"acquire", "cli/rw", "--shared", "--ttl", "5s"}, 0, "", "", ""},
		{"shared second", []string{"acquire", "cli/rw", "--shared", "--ttl", "5s"}, 0, "", "", ""},
		{"exclusive on shared", []string{"acquire", "cli/rw", "--ttl", "5s", "--wait", "0s"}, 1, "", "lock_held", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := lockctl(tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if !strings.Contains(out, tc.inOut) || !strings.Contains(errOut, tc.inErr) {
				t.Errorf("stdout %q (want %q), stderr %q (want %q)", out, tc.inOut, errOut, tc.inErr)
			}
			if tc.exactO != "" && out != tc.exactO {
				t.Errorf("stdout %q, want %q", out, tc.exactO)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		_, errOut, code := runLockctl(ctx, "status", "cli/a", "--endpoints", closedAddr(t), "--timeout", "500ms")
		if code != 3 || !strings.Contains(errOut, "unreachable") {
			t.Fatalf("exit %d, stderr %q; want 3, unreachable", code, errOut)
		}
	})
}

// TestLockctlWatch: watch prints the state, then one line per change of
// holders, until interrupted (exit 0).
func TestLockctlWatch(t *testing.T) {
	c := test.StartCluster(t, test.ClusterConfig{})
	cl := newClient(t, c.HTTPAddrs())
	ctx := test.Context(t, 30*time.Second)
	wctx, stop := context.WithCancel(ctx)
	type result struct {
		out, errOut string
		code        int
	}
	done := make(chan result, 1)
	go func() {
		out, errOut, code := runLockctl(wctx, "watch", "cli/w", "--endpoints", strings.Join(c.HTTPAddrs(), ","))
		done <- result{out, errOut, code}
	}()
	time.Sleep(300 * time.Millisecond)
	var tokens []uint64
	for range 2 {
		l, err := cl.TryLock(ctx, "cli/w", client.LockOptions{TTL: 5 * time.Second, Owner: "watched"})
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, l.Token())
		time.Sleep(300 * time.Millisecond)
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	stop()
	r := <-done
	if r.code != 0 {
		t.Fatalf("watch exit %d: %s", r.code, r.errOut)
	}
	lines := strings.Split(strings.TrimSpace(r.out), "\n")
	want := []string{"held=false", "held=true token=" + strconv.FormatUint(tokens[0], 10) + " owner=watched",
		"held=false", "held=true token=" + strconv.FormatUint(tokens[1], 10) + " owner=watched", "held=false"}
	if len(lines) != len(want) {
		t.Fatalf("watch printed %d lines, want %d:\n%s", len(lines), len(want), r.out)
	}
	for i, w := range want {
		if !strings.Contains(lines[i], w) {
			t.Errorf("line %d %q, want %q", i, lines[i], w)
		}
	}
}
