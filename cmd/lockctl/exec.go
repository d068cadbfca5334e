package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/internal/cli"
)

// Exit codes of lockctl exec beyond docs/api.md's 0-3 and the command's own.
const (
	// ExitLockLost: the lock was lost while the command ran, and the
	// command's process group was stopped.
	ExitLockLost = 4
	// ExitCannotRun: the command could not be started (not found, not
	// executable), as a shell reports it; the lock was released.
	ExitCannotRun = 127
)

// maxGrace bounds the time between SIGTERM and SIGKILL.
const maxGrace = 5 * time.Second

// graceFor is the wait between SIGTERM and SIGKILL for a lease of ttl:
// shorter than the lease, so a command that ignores SIGTERM is dead within
// one lease.
func graceFor(ttl time.Duration) time.Duration { return min(ttl/3, maxGrace) }

const execLong = `Acquire the lock NAME, run COMMAND while holding it, and release it when
COMMAND exits. The lock is renewed in the background every --ttl/3.

COMMAND runs in its own process group with these variables added to its
environment:
  CAIRN_LOCK_NAME    the lock's name
  CAIRN_LOCK_TOKEN   the grant's fencing token: send it with every write the
                     lock protects, e.g. cairn kv put --fence "$CAIRN_LOCK_NAME:$CAIRN_LOCK_TOKEN" KEY VALUE
  CAIRN_ENDPOINTS    the --endpoints lockctl used

If the lock is lost while COMMAND runs (a renew is answered lock_lost, or no
renew succeeded before the lease would run out on lockctl's clock, less a
margin), lockctl sends SIGTERM to COMMAND's whole process group (its children
too), then SIGKILL after a grace of min(ttl/3, 5s), and exits 4. The margin
includes the grace, so a COMMAND cut off from the cluster is killed before the
cluster can expire its lease. Fenced writes protect the data even when a
process is paused beyond that (a paused process cannot be stopped in time).

SIGINT, SIGTERM and SIGHUP sent to lockctl are forwarded to COMMAND's process
group; lockctl keeps the lock until COMMAND exits. Processes COMMAND leaves
behind in its group when it exits are stopped too (SIGTERM, then SIGKILL after
the grace) before the lock is released: nothing runs unprotected.
Because COMMAND has its own process group, it does not read the terminal.
Should lockctl itself be killed (SIGKILL, out of memory), the kernel kills
COMMAND (Linux; its children are not covered, fencing is what protects data
from them) and the lease runs out on the cluster.

Exit codes:
  the command's own   COMMAND ran and exited while the lock was held
                      (128+N when it was killed by signal N)
  1                   the lock was not acquired: held past --wait (lock_held),
                      or the wait was interrupted
  2                   bad usage
  3                   the cluster could not be reached within --timeout + --wait
  4                   the lock was lost while COMMAND ran; COMMAND was stopped
  127                 COMMAND could not be started (the lock was released)`

func newExecCmd(opts *cli.GlobalOptions) *cobra.Command {
	var lf lockFlags
	cmd := &cobra.Command{
		Use:     "exec NAME [--ttl 15s] [--wait 30s] [--limit N] [--shared] -- COMMAND ARGS...",
		Short:   "Run a command while holding a lock; stop it if the lock is lost",
		Long:    execLong,
		Example: `  lockctl exec jobs/daily --ttl 10s -- sh -c 'cairn kv put --fence "$CAIRN_LOCK_NAME:$CAIRN_LOCK_TOKEN" jobs/daily/last "$(date)"'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 || len(args) < 2 {
				return fmt.Errorf("want NAME -- COMMAND ARGS... (the lock name, then -- and the command)")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			lo, err := lf.options()
			if err != nil {
				return err
			}
			return runExec(cmd, opts, lo, args[0], args[1:])
		},
	}
	lf.register(cmd, true)
	return cmd
}

// runExec is lockctl exec: acquire, run, watch the lock, release.
func runExec(cmd *cobra.Command, opts *cli.GlobalOptions, lo client.LockOptions, name string, argv []string) error {
	grace := graceFor(lo.TTL)
	// Lost must fire early enough that SIGTERM, the grace and SIGKILL all
	// happen before the cluster can expire the lease.
	lo.LeaseMargin = grace + lo.TTL/10
	stderr := cmd.ErrOrStderr()

	// Signals are caught from the start: during the acquire they cancel it,
	// afterwards they go to COMMAND.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	wo := waitOptions(opts, lo.Wait)
	if err := wo.Validate(); err != nil {
		return err
	}
	c, ctx, done, err := wo.ClientFor(cmd, client.Config{Endpoints: wo.Endpoints, MaxRetries: cli.UntilTimeout}, true)
	if err != nil {
		return err
	}
	defer done()
	l, err := acquireInterruptible(ctx, c, name, lo, sigs)
	if err != nil {
		return withHolder(err)
	}

	child := exec.Command(argv[0], argv[1:]...)
	child.Stdin, child.Stdout, child.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), stderr
	if isTerminal(child.Stdin) {
		// A process group that is not the terminal's foreground group is
		// stopped (SIGTTIN) when it reads the terminal: give it no input
		// rather than a hang.
		child.Stdin = nil
	}
	child.Env = append(os.Environ(),
		"CAIRN_LOCK_NAME="+name,
		"CAIRN_LOCK_TOKEN="+strconv.FormatUint(l.Token(), 10),
		"CAIRN_ENDPOINTS="+strings.Join(wo.Endpoints, ","))
	child.SysProcAttr = commandAttr()
	// Should a process left in the group hold COMMAND's stdout open, Wait
	// still returns.
	child.WaitDelay = grace
	if err := child.Start(); err != nil {
		unlock(l, opts.Timeout, stderr)
		return &cli.ExitError{Code: ExitCannotRun, Err: fmt.Errorf("start %q: %w", argv[0], err)}
	}
	g := group{pgid: child.Process.Pid}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()

	lost, waitErr := g.supervise(exited, l.Lost(), sigs, grace, stderr)
	if lost {
		return &cli.ExitError{Code: ExitLockLost, Err: fmt.Errorf("lock %q (token %d) lost while the command ran; the command was stopped: %w",
			name, l.Token(), l.Err())}
	}
	// COMMAND is done; nothing of its group may run on without the lock.
	g.stop(grace)
	unlock(l, opts.Timeout, stderr)
	if code := exitStatus(waitErr); code != 0 {
		return &cli.ExitError{Code: code} // passed through silently
	}
	return nil
}

func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && fi.Mode()&os.ModeDevice != 0
}

// acquireInterruptible takes the lock; a signal on sigs cancels the wait.
func acquireInterruptible(ctx context.Context, c *client.Client, name string, lo client.LockOptions, sigs <-chan os.Signal) (*client.Lock, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		l   *client.Lock
		err error
	}
	res := make(chan result, 1)
	go func() {
		var r result
		if lo.Wait == 0 {
			r.l, r.err = c.TryLock(ctx, name, lo)
		} else {
			r.l, r.err = c.Lock(ctx, name, lo)
		}
		res <- r
	}()
	select {
	case r := <-res:
		return r.l, r.err
	case s := <-sigs:
		cancel()
		r := <-res
		if r.err == nil {
			// Granted as the signal came: give it back.
			unlock(r.l, time.Second*5, io.Discard)
		}
		return nil, fmt.Errorf("interrupted by %v while waiting for lock %q", s, name)
	}
}

// group is COMMAND's process group: COMMAND's pid is its id.
type group struct {
	pgid int
	// leaderOnly is a test knob: signal COMMAND alone instead of its group,
	// which leaves its children running (the negative control of the tests
	// that check that a lost lock stops them).
	leaderOnly bool
}

func (g group) signal(sig syscall.Signal) error {
	if g.leaderOnly {
		return syscall.Kill(g.pgid, sig)
	}
	return syscall.Kill(-g.pgid, sig)
}

// alive reports whether any process is left in the group.
func (g group) alive() bool {
	err := g.signal(0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// stop ends every process left in the group: SIGTERM, and SIGKILL if any is
// left after grace.
func (g group) stop(grace time.Duration) {
	if !g.alive() {
		return
	}
	_ = g.signal(syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if !g.alive() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = g.signal(syscall.SIGKILL)
}

// supervise waits for COMMAND to exit (exited), forwarding signals to its
// group, and stops the group when the lock is lost: SIGTERM, then SIGKILL
// after grace. It returns whether the lock was lost and Wait's error.
func (g group) supervise(exited <-chan error, lostCh <-chan struct{}, sigs <-chan os.Signal, grace time.Duration, stderr io.Writer) (bool, error) {
	var (
		lost  bool
		kill  <-chan time.Time
		until time.Time
	)
	for {
		select {
		case err := <-exited:
			if lost {
				// COMMAND itself is gone; its children may not be. They get
				// the rest of the grace, then SIGKILL.
				g.stop(time.Until(until))
			}
			return lost, err
		case s := <-sigs:
			_ = g.signal(s.(syscall.Signal))
		case <-lostCh:
			lostCh = nil
			lost = true
			fmt.Fprintf(stderr, "lockctl: lock lost; stopping the command (SIGTERM, SIGKILL after %v)\n", grace)
			_ = g.signal(syscall.SIGTERM)
			until = time.Now().Add(grace)
			kill = time.After(grace)
		case <-kill:
			kill = nil
			_ = g.signal(syscall.SIGKILL)
		}
	}
}

// unlock releases the lock, bounded by timeout; a failure is only reported:
// the lease ends by itself within its ttl.
func unlock(l *client.Lock, timeout time.Duration, stderr io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := l.Unlock(ctx); err != nil {
		fmt.Fprintf(stderr, "lockctl: release of %q (token %d): %v\n", l.Name(), l.Token(), err)
	}
}

// exitStatus is the exit code a shell would report for COMMAND.
func exitStatus(waitErr error) int {
	if waitErr == nil {
		return 0
	}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return cli.ExitFailed
}
