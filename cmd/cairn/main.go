// Command cairn runs a cairn server and talks to a cairn cluster.
package main

import (
	"fmt"
	"os"

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

Exit codes: 0 success, 1 failed operation (condition, not found, lock held),
2 bad usage, 3 cluster unreachable.`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	addGlobalFlags(root, opts)
	root.AddCommand(newServerCmd(), newDevCmd(), newKVCmd(opts), newHealthcheckCmd(opts), newClusterCmd(opts))
	root.AddCommand(newBenchCmd(opts), newBackupCmd(opts), newRestoreCmd(opts))
	return root
}
