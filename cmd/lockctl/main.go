// Command lockctl takes, inspects and holds cairn locks from the command
// line: acquire, release, renew, status, list, watch, and exec, which runs a
// command while holding a lock and stops it if the lock is lost.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/internal/cli"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	return cli.Execute(context.Background(), newRootCmd(), args, os.Stderr)
}

const rootLong = `lockctl takes, inspects and holds locks of a cairn cluster (docs/api.md, "Locks").

Every grant carries a fencing token that only ever grows for a lock name;
send it with every write the lock protects (cairn kv put --fence NAME:TOKEN)
and the store refuses the late writes of a holder that lost its lock.

Every command takes --endpoints (default $CAIRN_ENDPOINTS or 127.0.0.1:7070),
-o json|table and --timeout (for acquire and exec, added to --wait).

Exit codes: 0 success, 1 failed operation (lock held, lock lost, not found),
2 bad usage, 3 no definite answer within --timeout (cluster unreachable).
lockctl exec adds 4 (the lock was lost while the command ran) and passes the
command's own code through; see "lockctl exec --help".`

func newRootCmd() *cobra.Command {
	opts := &cli.GlobalOptions{}
	root := cli.NewRoot("lockctl", "lockctl: take, inspect and hold cairn locks", rootLong, version, opts)
	root.AddCommand(newAcquireCmd(opts), newReleaseCmd(opts), newRenewCmd(opts), newStatusCmd(opts),
		newListCmd(opts), newWatchCmd(opts), newExecCmd(opts))
	for _, sub := range root.Commands() {
		cli.ReportErrors(sub)
		cli.FlagErrors(sub)
	}
	return root
}

// lockFlags are the acquire flags of acquire and exec.
type lockFlags struct {
	ttl, wait, lockDelay time.Duration
	owner                string
	limit                int
	shared               bool
}

func (f *lockFlags) register(cmd *cobra.Command, withOwner bool) {
	fl := cmd.Flags()
	fl.DurationVar(&f.ttl, "ttl", client.DefaultLockTTL, "lease: the lock is lost if not renewed within it (1s..24h)")
	fl.DurationVar(&f.wait, "wait", 30*time.Second, "how long to wait for the lock (0s: try once)")
	fl.IntVar(&f.limit, "limit", 1, "semaphore size: up to N holders, each with its own token")
	fl.BoolVar(&f.shared, "shared", false, "shared mode: many shared holders together, or one exclusive holder")
	fl.DurationVar(&f.lockDelay, "lock-delay", 0, "keep the lock ungranted this long after this holder's lease expires")
	if withOwner {
		fl.StringVar(&f.owner, "owner", "", "a label for the holder, shown by status (default the host name)")
	}
}

func (f *lockFlags) options() (client.LockOptions, error) {
	switch {
	case f.ttl <= 0:
		return client.LockOptions{}, cli.UsageErrorf("--ttl must be positive")
	case f.wait < 0:
		return client.LockOptions{}, cli.UsageErrorf("--wait must not be negative")
	case f.limit < 1:
		return client.LockOptions{}, cli.UsageErrorf("--limit must be at least 1")
	case f.lockDelay < 0:
		return client.LockOptions{}, cli.UsageErrorf("--lock-delay must not be negative")
	}
	owner := f.owner
	if owner == "" {
		owner, _ = os.Hostname()
	}
	return client.LockOptions{TTL: f.ttl, Wait: f.wait, Owner: owner, Limit: f.limit, Shared: f.shared,
		LockDelay: f.lockDelay}, nil
}

// waitOptions are the global options with --timeout stretched by wait, so
// that a long --wait is not cut short by --timeout.
func waitOptions(opts *cli.GlobalOptions, wait time.Duration) *cli.GlobalOptions {
	o := *opts
	o.Timeout += wait
	return &o
}

func newAcquireCmd(opts *cli.GlobalOptions) *cobra.Command {
	var lf lockFlags
	cmd := &cobra.Command{
		Use:   "acquire NAME",
		Short: "Acquire a lock and print its fencing token (nothing renews it: see renew, or exec)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			lo, err := lf.options()
			if err != nil {
				return err
			}
			c, ctx, done, err := waitOptions(opts, lo.Wait).NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			g, err := c.AcquireLock(ctx, args[0], lo)
			if err != nil {
				return withHolder(err)
			}
			if opts.Output == cli.OutputJSON {
				return cli.WriteJSON(cmd.OutOrStdout(), map[string]any{
					"name": g.Name, "token": g.Token, "ttl": g.TTL.String(), "owner": g.Owner})
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), g.Token)
			return err
		},
	}
	lf.register(cmd, true)
	return cmd
}

// tokenCmd is a command on one grant, "NAME --token N": release and renew.
// do makes the call and returns what to print as a line (table) and as JSON.
func tokenCmd(opts *cli.GlobalOptions, use, short string,
	do func(ctx context.Context, c *client.Client, name string, token uint64) (line string, js any, err error)) *cobra.Command {
	var token uint64
	cmd := &cobra.Command{
		Use:   use + " NAME --token N",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("token") || token == 0 {
				return cli.UsageErrorf("--token N (a positive integer) is required")
			}
			c, ctx, done, err := opts.NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			line, js, err := do(ctx, c, args[0], token)
			if err != nil {
				return err
			}
			if opts.Output == cli.OutputJSON {
				return cli.WriteJSON(cmd.OutOrStdout(), js)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), line)
			return err
		},
	}
	cmd.Flags().Uint64Var(&token, "token", 0, "the fencing token of the grant (required)")
	return cmd
}

func newReleaseCmd(opts *cli.GlobalOptions) *cobra.Command {
	return tokenCmd(opts, "release", "Release a grant (exit 1, lock_lost, when the token no longer holds the lock)",
		func(ctx context.Context, c *client.Client, name string, token uint64) (string, any, error) {
			err := c.ReleaseLock(ctx, name, token)
			return "released", map[string]bool{"released": true}, err
		})
}

func newRenewCmd(opts *cli.GlobalOptions) *cobra.Command {
	return tokenCmd(opts, "renew", "Restart a grant's lease; prints its ttl (exit 1, lock_lost, when the token no longer holds the lock)",
		func(ctx context.Context, c *client.Client, name string, token uint64) (string, any, error) {
			ttl, err := c.RenewLock(ctx, name, token)
			return ttl.String(), map[string]string{"ttl": ttl.String()}, err
		})
}

func newStatusCmd(opts *cli.GlobalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "status NAME",
		Short: "Show a lock: its holders with their tokens, owners and remaining leases, and its waiters",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := opts.NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			li, err := c.LockStatus(ctx, args[0])
			if err != nil {
				return err
			}
			if opts.Output == cli.OutputJSON {
				return cli.WriteJSON(cmd.OutOrStdout(), li)
			}
			return writeStatus(cmd.OutOrStdout(), li)
		},
	}
}

// writeStatus prints one lock as "field value" lines, then its holders.
func writeStatus(w io.Writer, li *client.LockInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "name\t%s\n", cli.Printable(li.Name))
	fmt.Fprintf(tw, "held\t%t\n", li.Held)
	if li.Mode != "" {
		fmt.Fprintf(tw, "mode\t%s\n", li.Mode)
	}
	if li.Limit > 0 {
		fmt.Fprintf(tw, "limit\t%d\n", li.Limit)
	}
	fmt.Fprintf(tw, "waiters\t%d\n", li.Waiters)
	fmt.Fprintf(tw, "index\t%d\n", li.Index)
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(li.Holders) == 0 {
		return nil
	}
	fmt.Fprintln(tw, "\nTOKEN\tOWNER\tMODE\tEXPIRES IN")
	for _, h := range li.Holders {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", h.Token, cli.Printable(h.Owner), dash(h.Mode), h.ExpiresIn.Round(100*time.Millisecond))
	}
	return tw.Flush()
}

func newListCmd(opts *cli.GlobalOptions) *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "list [--prefix P]",
		Short: "List the locks in use, in name order",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := opts.NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			locks, err := c.ListLocks(ctx, prefix)
			if err != nil {
				return err
			}
			if locks == nil {
				locks = []client.LockInfo{}
			}
			if opts.Output == cli.OutputJSON {
				return cli.WriteJSON(cmd.OutOrStdout(), map[string]any{"locks": locks})
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tHELD\tTOKEN\tOWNER\tEXPIRES IN\tWAITERS")
			for _, li := range locks {
				tok := "-"
				if li.Held {
					tok = fmt.Sprint(li.Token)
				}
				fmt.Fprintf(tw, "%s\t%t\t%s\t%s\t%s\t%d\n", cli.Printable(li.Name), li.Held, tok, dash(cli.Printable(li.Owner)),
					li.ExpiresIn().Round(100*time.Millisecond), li.Waiters)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "only locks whose names start with P")
	return cmd
}

// watchWait is how long one blocking status query waits for a change.
const watchWait = 30 * time.Second

func newWatchCmd(opts *cli.GlobalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "watch NAME",
		Short: "Print the lock's state, then a line at each change of holders, until interrupted",
		Long: `Print the lock's state, then a line each time its holders change (a grant,
release or expiry), until interrupted (Ctrl-C or SIGTERM: exit 0). Each line is
"index=N held=B token=T owner=O holders=H waiters=W" (-o json: the status as
one JSON line). It uses blocking status queries (GET /v1/locks/NAME?wait_index=N).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := opts.LongClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			err = watch(ctx, c, args[0], func(li *client.LockInfo) error {
				if opts.Output == cli.OutputJSON {
					return cli.WriteJSON(cmd.OutOrStdout(), li)
				}
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "index=%d held=%t token=%d owner=%s holders=%d waiters=%d\n",
					li.Index, li.Held, li.Token, cli.Printable(li.Owner), len(li.Holders), li.Waiters)
				return err
			})
			if ctx.Err() != nil {
				return nil // interrupted: the normal end of a watch
			}
			return err
		},
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// withHolder adds the holder that a lock_held error names to its message,
// keeping the error (and so its exit code) as it is.
func withHolder(err error) error {
	owner, token, ok := client.LockHolderOf(err)
	if !ok {
		return err
	}
	if owner == "" {
		owner = "-"
	}
	return fmt.Errorf("%w (held by owner %s, token %d)", err, cli.Printable(owner), token)
}
