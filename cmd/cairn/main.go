// Command cairn runs a cairn server and talks to a cairn cluster.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		err = finalError(err)
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		return exitCode(err)
	}
	return 0
}

func newRootCmd() *cobra.Command {
	opts := &globalOptions{}
	root := &cobra.Command{
		Use:   "cairn",
		Short: "cairn: a strongly consistent, sharded key-value store with a lock service",
		Long: `cairn is a strongly consistent, sharded key-value store with a built-in lock service.

Run a node with "cairn server", a throw-away local cluster with "cairn dev",
and talk to a cluster with "cairn kv". Every client command takes
--endpoints (default $CAIRN_ENDPOINTS or 127.0.0.1:7070) and -o json|table.

Client commands retry while the cluster answers "try again" (no leader yet,
overloaded) or cannot be reached, until --timeout.

Exit codes: 0 success, 1 failed operation (condition, not found, lock held),
2 bad usage (also an unknown command), 3 no definite answer within --timeout:
no node could be reached ("unreachable"), the cluster kept answering
"unavailable" or "overloaded", or a write's outcome is unknown.`,
		Version:                    version,
		SuggestionsMinimumDistance: 2,
		SilenceUsage:               true,
		SilenceErrors:              true,
		// Runnable, so that an unknown command reaches RunE (exit 2) rather
		// than cobra's untyped "unknown command" error (exit 1).
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += "; did you mean " + strings.Join(s, " or ") + "?"
			}
			fmt.Fprint(cmd.ErrOrStderr(), cmd.UsageString())
			return usageErrorf("%s", msg)
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	addGlobalFlags(root, opts)
	root.AddCommand(newServerCmd(), newDevCmd(), newKVCmd(opts), newHealthcheckCmd(opts), newClusterCmd(opts))
	root.AddCommand(newBenchCmd(opts), newBackupCmd(opts), newRestoreCmd(opts), newTxnCmd(opts))
	return root
}
