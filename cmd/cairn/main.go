// Command cairn runs a cairn server and talks to a cairn cluster.
package main

import (
	"context"
	"os"

	"github.com/spf13/cobra"

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

const rootLong = `cairn is a strongly consistent, sharded key-value store with a built-in lock service.

Run a node with "cairn server", a throw-away local cluster with "cairn dev",
and talk to a cluster with "cairn kv". Every client command takes
--endpoints (default $CAIRN_ENDPOINTS or 127.0.0.1:7070) and -o json|table.

Client commands retry while the cluster answers "try again" (no leader yet,
overloaded) or cannot be reached, until --timeout.

Exit codes: 0 success, 1 failed operation (condition, not found, lock held),
2 bad usage (also an unknown command), 3 no definite answer within --timeout:
no node could be reached ("unreachable"), the cluster kept answering
"unavailable" or "overloaded", or a write's outcome is unknown.`

func newRootCmd() *cobra.Command {
	opts := &cli.GlobalOptions{}
	root := cli.NewRoot("cairn", "cairn: a strongly consistent, sharded key-value store with a lock service", rootLong, version, opts)
	root.AddCommand(newServerCmd(), newDevCmd(), newKVCmd(opts), newHealthcheckCmd(opts), newClusterCmd(opts))
	root.AddCommand(newBenchCmd(opts), newBackupCmd(opts), newRestoreCmd(opts), newTxnCmd(opts))
	return root
}
