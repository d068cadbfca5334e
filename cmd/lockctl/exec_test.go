package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/test"
)

// TestLockctlExec runs lockctl exec as a process of its own against a real
// in-process cluster (issue 12 item 6): the command sees its lock and token,
// a lost lock stops the command and its children, and every exit code of
// "lockctl exec --help".
func TestLockctlExec(t *testing.T) {
	c := test.StartCluster(t, test.ClusterConfig{})
	addrs := c.HTTPAddrs()
	cl := newClient(t, addrs)
	t.Run("ChildSeesToken", func(t *testing.T) { execSeesToken(t, addrs, cl) })
	t.Run("ExitCodes", func(t *testing.T) { execExitCodes(t, addrs, cl) })
	t.Run("LostByReleaseKillsGroup", func(t *testing.T) { execLostByRelease(t, addrs, cl) })
	t.Run("S15LostByPauseKillsGroup", func(t *testing.T) { execLostByPause(t, addrs, cl) })
	t.Run("SignalForwarded", func(t *testing.T) { execSignalForwarded(t, addrs, cl) })
	t.Run("InterruptedWait", func(t *testing.T) { execInterruptedWait(t, addrs, cl) })
	t.Run("KilledSupervisorKillsCommand", func(t *testing.T) { execKilledSupervisor(t, addrs, cl) })
	t.Run("Semaphore", func(t *testing.T) { execSemaphore(t, addrs, cl) })
}

// waitFile waits for path to exist with content and returns it.
func waitFile(t *testing.T, path string, done <-chan error) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
			return string(b)
		}
		select {
		case err := <-done:
			t.Fatalf("lockctl exited (%v) before %s was written", err, path)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("%s not written within 15s", path)
	return ""
}

// start runs cmd and returns a channel with its Wait result.
func start(t *testing.T, cmd *exec.Cmd) <-chan error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
	})
	return done
}

func waitExit(t *testing.T, done <-chan error, within time.Duration) int {
	t.Helper()
	select {
	case err := <-done:
		return exitCodeOf(t, err)
	case <-time.After(within):
		t.Fatalf("lockctl did not exit within %v", within)
		return -1
	}
}

// The command's environment names the lock and the token that holds it; the
// token fences a write; the lock is released when the command exits.
func execSeesToken(t *testing.T, addrs []string, cl *client.Client) {
	ctx := test.Context(t, 30*time.Second)
	dir := t.TempDir()
	envFile, goFile := filepath.Join(dir, "env"), filepath.Join(dir, "go")
	script := fmt.Sprintf(`env > %[1]s.tmp && mv %[1]s.tmp %[1]s; i=0; while [ ! -e %[2]s ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done`, envFile, goFile)
	cmd, _, errOut := lockctlProcess(t, addrs, "exec", "exec/token", "--ttl", "5s", "--", "sh", "-c", script)
	done := start(t, cmd)
	env := map[string]string{}
	for _, line := range strings.Split(waitFile(t, envFile, done), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = v
		}
	}
	st, err := cl.LockStatus(ctx, "exec/token")
	if err != nil {
		t.Fatal(err)
	}
	token, _ := strconv.ParseUint(env["CAIRN_LOCK_TOKEN"], 10, 64)
	if env["CAIRN_LOCK_NAME"] != "exec/token" || !st.Held || token != st.Token {
		t.Fatalf("child env name %q token %q; the lock's holder is %d (held %v)", env["CAIRN_LOCK_NAME"], env["CAIRN_LOCK_TOKEN"], st.Token, st.Held)
	}
	if env["CAIRN_ENDPOINTS"] != strings.Join(addrs, ",") {
		t.Errorf("CAIRN_ENDPOINTS %q, want %q", env["CAIRN_ENDPOINTS"], strings.Join(addrs, ","))
	}
	if _, err := cl.Put(ctx, "exec/token/k", "v", client.WithFence("exec/token", token)); err != nil {
		t.Fatalf("fenced put with the child's token: %v", err)
	}
	if err := os.WriteFile(goFile, []byte("go\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, done, 15*time.Second); code != 0 {
		t.Fatalf("exit %d, want 0: %s", code, errOut)
	}
	if st, err := cl.LockStatus(ctx, "exec/token"); err != nil || st.Held {
		t.Fatalf("after the command exited the lock should be released: %+v, %v", st, err)
	}
}

// Exit codes: the command's own, 1 lock held, 2 usage, 3 unreachable, 127
// command not found.
func execExitCodes(t *testing.T, addrs []string, cl *client.Client) {
	ctx := test.Context(t, 30*time.Second)
	held, err := cl.TryLock(ctx, "exec/held", client.LockOptions{TTL: 10 * time.Second, Owner: "someone"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = held.Unlock(ctx) }()
	marker := filepath.Join(t.TempDir(), "ran")
	cases := []struct {
		name  string
		args  []string
		code  int
		inErr string
	}{
		{"command's own code", []string{"exec", "exec/code", "--", "sh", "-c", "exit 7"}, 7, ""},
		{"killed by a signal", []string{"exec", "exec/code", "--", "sh", "-c", "kill -KILL $$"}, 128 + 9, ""},
		{"success", []string{"exec", "exec/code", "--", "true"}, 0, ""},
		{"lock held", []string{"exec", "exec/held", "--wait", "0s", "--", "touch", marker}, 1, "lock_held"},
		{"lock held past the wait", []string{"exec", "exec/held", "--wait", "300ms", "--", "touch", marker}, 1, "lock_held"},
		{"no --", []string{"exec", "exec/code", "true"}, 2, "NAME -- COMMAND"},
		{"no command", []string{"exec", "exec/code", "--"}, 2, "NAME -- COMMAND"},
		{"bad ttl", []string{"exec", "exec/code", "--ttl", "-1s", "--", "true"}, 2, "--ttl"},
		{"unreachable", []string{"exec", "exec/code", "--endpoints", closedAddr(t), "--timeout", "500ms", "--wait", "0s", "--", "touch", marker}, 3, "unreachable"},
		{"command not found", []string{"exec", "exec/code", "--", "/nonexistent/cmd"}, 127, "start"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd, _, errOut := lockctlProcess(t, addrs, tc.args...)
			code := exitCodeOf(t, cmd.Run())
			if code != tc.code || !strings.Contains(errOut.String(), tc.inErr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, tc.code, tc.inErr)
			}
		})
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a command ran without its lock: %v", err)
	}
	if st, err := cl.LockStatus(ctx, "exec/code"); err != nil || st.Held {
		t.Fatalf("exec/code still held after every exec ended: %+v, %v", st, err)
	}
}

// groupScript starts a grandchild and writes "childPID grandchildPID". Both
// ignore SIGTERM, so only the SIGKILL after the grace stops them.
func groupScript(pidFile string) string {
	return fmt.Sprintf(`trap "" TERM; sleep 1000 & echo $$ $! > %[1]s.tmp && mv %[1]s.tmp %[1]s; wait`, pidFile)
}

func readPids(t *testing.T, s string) []int {
	t.Helper()
	var pids []int
	for _, f := range strings.Fields(s) {
		p, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("pid file %q", s)
		}
		pids = append(pids, p)
	}
	if len(pids) != 2 {
		t.Fatalf("pid file %q: want child and grandchild", s)
	}
	return pids
}

// groupExec is a running "lockctl exec NAME -- sh -c groupScript".
type groupExec struct {
	cmd    *exec.Cmd
	done   <-chan error
	errOut *bytes.Buffer
	pids   []int            // the command's and its grandchild's
	st     *client.LockInfo // the lock while the command runs
}

// startGroupExec starts lockctl exec with a command that has a grandchild,
// and waits until both run and the lock is held.
func startGroupExec(t *testing.T, ctx context.Context, addrs []string, cl *client.Client, name, ttl string) groupExec {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "pids")
	var g groupExec
	g.cmd, _, g.errOut = lockctlProcess(t, addrs, "exec", name, "--ttl", ttl, "--", "sh", "-c", groupScript(pidFile))
	g.done = start(t, g.cmd)
	g.pids = readPids(t, waitFile(t, pidFile, g.done))
	st, err := cl.LockStatus(ctx, name)
	if err != nil || !st.Held {
		t.Fatalf("status: %+v, %v", st, err)
	}
	g.st = st
	return g
}

func assertGone(t *testing.T, pids []int) {
	t.Helper()
	test.WaitFor(t, 5*time.Second, "the command and its grandchild to be gone", func() error {
		for _, p := range pids {
			if !processGone(p) {
				return fmt.Errorf("pid %d still runs", p)
			}
		}
		return nil
	})
}

// A renew answered lock_lost (the grant was released behind lockctl's
// back): lockctl stops the command's whole group, children that ignore
// SIGTERM included, and exits 4.
func execLostByRelease(t *testing.T, addrs []string, cl *client.Client) {
	ctx := test.Context(t, 30*time.Second)
	g := startGroupExec(t, ctx, addrs, cl, "exec/lost", "2s")
	done, errOut, pids, st := g.done, g.errOut, g.pids, g.st
	if err := cl.ReleaseLock(ctx, "exec/lost", st.Token); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, done, 10*time.Second); code != ExitLockLost {
		t.Fatalf("exit %d, want %d: %s", code, ExitLockLost, errOut)
	}
	if !strings.Contains(errOut.String(), "lock_lost") {
		t.Errorf("stderr %q does not say lock_lost", errOut)
	}
	assertGone(t, pids)
}

// Scenario S15 for exec: lockctl itself is paused (SIGSTOP) past its lease;
// the lease expires and another client takes the lock with a higher token.
// Resumed, lockctl finds its lease over on its own clock, stops the
// command's group and exits 4. The command ran unprotected only while its
// supervisor was paused, which is what fencing is for.
func execLostByPause(t *testing.T, addrs []string, cl *client.Client) {
	ctx := test.Context(t, 30*time.Second)
	g := startGroupExec(t, ctx, addrs, cl, "exec/paused", "1s")
	cmd, done, errOut, pids, st := g.cmd, g.done, g.errOut, g.pids, g.st
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	l, err := cl.Lock(ctx, "exec/paused", client.LockOptions{TTL: 5 * time.Second, Wait: 10 * time.Second, Owner: "B"})
	_ = cmd.Process.Signal(syscall.SIGCONT)
	if err != nil {
		t.Fatalf("take over the paused holder's lock: %v", err)
	}
	defer func() { _ = l.Unlock(ctx) }()
	if l.Token() <= st.Token {
		t.Fatalf("takeover token %d not above %d (I9)", l.Token(), st.Token)
	}
	if code := waitExit(t, done, 10*time.Second); code != ExitLockLost {
		t.Fatalf("exit %d, want %d: %s", code, ExitLockLost, errOut)
	}
	assertGone(t, pids)
	// The takeover is untouched: lockctl released nothing.
	if st, err := cl.LockStatus(ctx, "exec/paused"); err != nil || st.Token != l.Token() {
		t.Fatalf("after lockctl exited: %+v, %v; want holder %d", st, err, l.Token())
	}
}

// SIGTERM to lockctl goes to the command's group; lockctl exits with the
// command's code and releases the lock.
func execSignalForwarded(t *testing.T, addrs []string, cl *client.Client) {
	ctx := test.Context(t, 30*time.Second)
	dir := t.TempDir()
	ready, got := filepath.Join(dir, "ready"), filepath.Join(dir, "got")
	script := fmt.Sprintf(`trap 'echo term > %[2]s; exit 9' TERM; echo ready > %[1]s; i=0; while [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done`, ready, got)
	cmd, _, errOut := lockctlProcess(t, addrs, "exec", "exec/signal", "--ttl", "5s", "--", "sh", "-c", script)
	done := start(t, cmd)
	waitFile(t, ready, done)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, done, 10*time.Second); code != 9 {
		t.Fatalf("exit %d, want the command's 9: %s", code, errOut)
	}
	if b, err := os.ReadFile(got); err != nil || string(b) != "term\n" {
		t.Fatalf("the command did not get SIGTERM: %q, %v", b, err)
	}
	if st, err := cl.LockStatus(ctx, "exec/signal"); err != nil || st.Held {
		t.Fatalf("lock not released after the command exited: %+v, %v", st, err)
	}
}

// TestSuperviseGroupNegativeControl is the negative control of assertGone,
// the check that a lost lock stops the command's children: with the
// leaderOnly knob the supervisor signals the command alone, and the
// grandchild the check looks for survives; without it, both are gone. The
// supervisor runs in this process on a real process group.
func TestSuperviseGroupNegativeControl(t *testing.T) {
	for _, leaderOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("leaderOnly=%v", leaderOnly), func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pids")
			child := exec.Command("sh", "-c", groupScript(pidFile))
			child.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			exited := start(t, child)
			pgid := child.Process.Pid
			t.Cleanup(func() { _ = syscall.Kill(-pgid, syscall.SIGKILL) })
			pids := readPids(t, waitFile(t, pidFile, exited))
			lost := make(chan struct{})
			close(lost)
			g := group{pgid: pgid, leaderOnly: leaderOnly}
			if wasLost, _ := g.supervise(exited, lost, nil, 200*time.Millisecond, io.Discard); !wasLost {
				t.Fatal("supervise did not report the loss")
			}
			if !leaderOnly {
				assertGone(t, pids)
				return
			}
			time.Sleep(300 * time.Millisecond)
			if processGone(pids[1]) {
				t.Fatal("negative control: signalling the command alone should leave its grandchild running")
			}
		})
	}
}

// SIGINT while exec waits in the lock's queue ends the wait: exit 1, the
// command never runs, and the waiter leaves the queue.
func execInterruptedWait(t *testing.T, addrs []string, cl *client.Client) {
	ctx := test.Context(t, 30*time.Second)
	held, err := cl.TryLock(ctx, "exec/queue", client.LockOptions{TTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = held.Unlock(ctx) }()
	marker := filepath.Join(t.TempDir(), "ran")
	cmd, _, errOut := lockctlProcess(t, addrs, "exec", "exec/queue", "--wait", "20s", "--", "touch", marker)
	done := start(t, cmd)
	test.WaitFor(t, 10*time.Second, "exec to queue", func() error {
		st, err := cl.LockStatus(ctx, "exec/queue")
		if err != nil || st.Waiters != 1 {
			return fmt.Errorf("status %+v, %v: want one waiter", st, err)
		}
		return nil
	})
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := waitExit(t, done, 5*time.Second); code != 1 || !strings.Contains(errOut.String(), "interrupted") {
		t.Fatalf("exit %d, stderr %q; want 1, interrupted", code, errOut)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the command ran without its lock: %v", err)
	}
	test.WaitFor(t, 10*time.Second, "the waiter to leave the queue", func() error {
		st, err := cl.LockStatus(ctx, "exec/queue")
		if err != nil || st.Waiters != 0 || st.Token != held.Token() {
			return fmt.Errorf("status %+v, %v: want no waiter, holder %d", st, err, held.Token())
		}
		return nil
	})
}

// lockctl killed outright (SIGKILL: it can stop nothing): the kernel kills
// COMMAND (Pdeathsig, Linux), and the lease expires on the cluster.
func execKilledSupervisor(t *testing.T, addrs []string, cl *client.Client) {
	if runtime.GOOS != "linux" {
		t.Skip("Pdeathsig is Linux only")
	}
	ctx := test.Context(t, 30*time.Second)
	pidFile := filepath.Join(t.TempDir(), "pid")
	script := fmt.Sprintf(`echo $$ > %[1]s.tmp && mv %[1]s.tmp %[1]s; i=0; while [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done`, pidFile)
	cmd, _, _ := lockctlProcess(t, addrs, "exec", "exec/killed", "--ttl", "1s", "--", "sh", "-c", script)
	done := start(t, cmd)
	pid, err := strconv.Atoi(strings.TrimSpace(waitFile(t, pidFile, done)))
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	test.WaitFor(t, 5*time.Second, "the command to die with lockctl", func() error {
		if !processGone(pid) {
			return fmt.Errorf("pid %d still runs", pid)
		}
		return nil
	})
	test.WaitFor(t, 10*time.Second, "the lease to expire", func() error {
		st, err := cl.LockStatus(ctx, "exec/killed")
		if err != nil || st.Held {
			return fmt.Errorf("status %+v, %v", st, err)
		}
		return nil
	})
}

// exec --limit 2: two commands hold the semaphore together, each with its
// own token; a third finds it full (exit 1).
func execSemaphore(t *testing.T, addrs []string, cl *client.Client) {
	ctx := test.Context(t, 30*time.Second)
	dir := t.TempDir()
	goFile := filepath.Join(dir, "go")
	var dones []<-chan error
	tokens := map[string]bool{}
	for i := range 2 {
		tokFile := filepath.Join(dir, "token"+strconv.Itoa(i))
		script := fmt.Sprintf(`echo $CAIRN_LOCK_TOKEN > %[1]s.tmp && mv %[1]s.tmp %[1]s; i=0; while [ ! -e %[2]s ] && [ $i -lt 300 ]; do sleep 0.05; i=$((i+1)); done`, tokFile, goFile)
		cmd, _, _ := lockctlProcess(t, addrs, "exec", "exec/sem", "--limit", "2", "--ttl", "5s", "--", "sh", "-c", script)
		done := start(t, cmd)
		dones = append(dones, done)
		tokens[strings.TrimSpace(waitFile(t, tokFile, done))] = true
	}
	if len(tokens) != 2 {
		t.Fatalf("two holders of a semaphore share a token: %v", tokens)
	}
	cmd, _, errOut := lockctlProcess(t, addrs, "exec", "exec/sem", "--limit", "2", "--wait", "0s", "--", "true")
	if code := exitCodeOf(t, cmd.Run()); code != 1 || !strings.Contains(errOut.String(), "lock_held") {
		t.Fatalf("third holder of a 2-semaphore: exit %d, %s; want 1, lock_held", code, errOut)
	}
	if st, err := cl.LockStatus(ctx, "exec/sem"); err != nil || len(st.Holders) != 2 || st.Limit != 2 {
		t.Fatalf("status %+v, %v: want 2 holders of limit 2", st, err)
	}
	if err := os.WriteFile(goFile, []byte("go\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, done := range dones {
		if code := waitExit(t, done, 10*time.Second); code != 0 {
			t.Fatalf("exit %d", code)
		}
	}
}
