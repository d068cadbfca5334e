package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/internal/cli"
)

// newClusterCmd is "cairn cluster": status and the operator's placement
// commands (split, transfer-leader, drain, remove) over the HTTP API.
//
// Errors are reported as for "cairn kv" (see newKVCmd). The operations are
// not idempotent and carry no request id, so an unknown outcome is reported
// (exit 3) rather than retried; "cairn cluster status" shows what happened.
func newClusterCmd(opts *cli.GlobalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Show the cluster and move shards, leaders and nodes",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cli.UsageErrorf("missing subcommand (status, split, transfer-leader, drain, remove, token-floor)")
			}
			return cli.UsageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
		},
	}
	cmd.AddCommand(newClusterStatusCmd(opts), newClusterSplitCmd(opts), newClusterTransferCmd(opts),
		newClusterDrainCmd(opts), newClusterRemoveCmd(opts), newClusterTokenFloorCmd(opts))
	cli.ReportErrors(cmd)
	cli.FlagErrors(cmd)
	for _, sub := range cmd.Commands() {
		cli.FlagErrors(sub)
	}
	return cmd
}

func newClusterStatusCmd(opts *cli.GlobalOptions) *cobra.Command {
	var local bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Print the nodes and shards (table: one table each; * marks the placement leader)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := opts.NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			get := c.Cluster
			if local {
				get = c.ClusterLocal
			}
			st, err := get(ctx)
			if err != nil {
				return err
			}
			if opts.Output == cli.OutputJSON {
				// Empty lists print as [], not null.
				if st.Nodes == nil {
					st.Nodes = []client.NodeStatus{}
				}
				if st.Shards == nil {
					st.Shards = []client.ShardStatus{}
				}
				return cli.WriteJSON(cmd.OutOrStdout(), st)
			}
			return writeClusterTables(cmd.OutOrStdout(), st)
		},
	}
	cmd.Flags().BoolVar(&local, "local", false, "the view of the node answering (the first of --endpoints that answers), not the placement leader's")
	return cmd
}

func newClusterTokenFloorCmd(opts *cli.GlobalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "token-floor",
		Short: "Print a number above every fencing token the cluster has handed out",
		Long: `Print a number above every fencing token the cluster has handed out so far
(the highest of its shards' token ceilings, each read on the shard's leader
after a linearizable read). Pass it to 'cairn restore --token-floor' when
restoring this cluster's backup into a new cluster, so that the new cluster's
tokens stay above the ones this cluster granted after the backup.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, ctx, done, err := opts.NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			floor, err := c.TokenFloor(ctx)
			if err != nil {
				return err
			}
			if opts.Output == cli.OutputJSON {
				return cli.WriteJSON(cmd.OutOrStdout(), map[string]uint64{"token_floor": floor})
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), floor)
			return err
		},
	}
}

func newClusterSplitCmd(opts *cli.GlobalOptions) *cobra.Command {
	var epoch uint64
	cmd := &cobra.Command{
		Use:   "split SHARD [KEY]",
		Short: "Split a shard at KEY (default: the middle of its range); prints both halves",
		Long: `Split a shard at KEY (default: the middle of its range); prints both halves.

With --epoch the split happens only if the shard is still at that epoch (the
EPOCH column of "cairn cluster status"): a shard that split or changed its replicas since
is left alone and the command fails with condition_failed, so a script never
splits a range it did not look at.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseShardID(args[0])
			if err != nil {
				return err
			}
			var key string
			if len(args) == 2 {
				if key = args[1]; key == "" {
					return cli.UsageErrorf("KEY must not be empty (leave it out to split at the middle)")
				}
			}
			c, ctx, done, err := opts.NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			res, err := c.SplitShardAtEpoch(ctx, id, key, epoch)
			if err != nil {
				return err
			}
			if opts.Output == cli.OutputJSON {
				return cli.WriteJSON(cmd.OutOrStdout(), res)
			}
			return writeSplitTable(cmd.OutOrStdout(), res)
		},
	}
	cmd.Flags().Uint64Var(&epoch, "epoch", 0, "split only if the shard is still at this epoch (0: any)")
	return cmd
}

func newClusterTransferCmd(opts *cli.GlobalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "transfer-leader SHARD NODE",
		Short: "Hand a shard's leadership to NODE, which must hold one of its replicas",
		Long: `Hand a shard's leadership to NODE, which must hold one of its replicas.
The placement driver records NODE as the shard's preferred leader and keeps
leadership there (the leader balancer does not move it away, and moves it back
if an election does) until NODE stops answering, drains or is removed, no
longer holds a replica, or another transfer-leader places the shard elsewhere.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseShardID(args[0])
			if err != nil {
				return err
			}
			node, err := nodeArg(args[1])
			if err != nil {
				return err
			}
			c, ctx, done, err := opts.NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			if err := c.TransferLeader(ctx, id, node); err != nil {
				return err
			}
			if opts.Output == cli.OutputJSON {
				return cli.WriteJSON(cmd.OutOrStdout(), struct {
					Shard  uint64 `json:"shard"`
					Leader string `json:"leader"`
				}{id, node})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "shard %d: leader is now %s\n", id, cli.Printable(node))
			return err
		},
	}
}

// nodeResult is the JSON output of drain and remove, the server's answer.
type nodeResult struct {
	Node     string `json:"node"`
	Draining bool   `json:"draining"`
	Removed  bool   `json:"removed"`
}

func newClusterDrainCmd(opts *cli.GlobalOptions) *cobra.Command {
	return newClusterNodeCmd(opts, "drain NODE",
		"Move every replica and leader off NODE (returns once the drain is recorded)",
		(*client.Client).DrainNode, nodeResult{Draining: true},
		"node %s: draining; its shards move off it in the background (watch \"cairn cluster status\")\n")
}

func newClusterRemoveCmd(opts *cli.GlobalOptions) *cobra.Command {
	return newClusterNodeCmd(opts, "remove NODE", "Remove a drained or dead NODE from the cluster for good",
		(*client.Client).RemoveNode, nodeResult{Draining: true, Removed: true}, "node %s: removed\n")
}

// newClusterNodeCmd builds a command that applies op to one node and prints
// result (JSON) or message (table).
func newClusterNodeCmd(opts *cli.GlobalOptions, use, short string,
	op func(*client.Client, context.Context, string) error, result nodeResult, message string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node, err := nodeArg(args[0])
			if err != nil {
				return err
			}
			c, ctx, done, err := opts.NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			if err := op(c, ctx, node); err != nil {
				return err
			}
			if opts.Output == cli.OutputJSON {
				result.Node = node
				return cli.WriteJSON(cmd.OutOrStdout(), result)
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), message, cli.Printable(node))
			return err
		},
	}
}

func parseShardID(s string) (uint64, error) {
	id, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, cli.UsageErrorf("SHARD must be a shard id (a number), not %q", s)
	}
	return id, nil
}

func nodeArg(s string) (string, error) {
	if strings.TrimSpace(s) == "" {
		return "", cli.UsageErrorf("NODE must be a node id")
	}
	return s, nil
}

// writeClusterTables prints the nodes table, then the shards table, each
// sorted (nodes by id, shards by start key) and aligned with spaces.
func writeClusterTables(w io.Writer, st *client.ClusterStatus) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	nodes := slices.SortedFunc(slices.Values(st.Nodes), func(a, b client.NodeStatus) int { return cmp.Compare(a.ID, b.ID) })
	fmt.Fprintln(tw, "ID\tHTTP\tSTATE\tSHARDS\tLEADERS\tLEVEL")
	leaderListed := false
	for _, n := range nodes {
		id := cli.Printable(n.ID)
		if n.ID != "" && n.ID == st.PlacementLeader {
			id += "*"
			leaderListed = true
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\n", id, orDash(n.HTTPAddr), orDash(n.State), n.Shards, n.Leaders, n.Level)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	switch {
	case st.PlacementLeader == "":
		fmt.Fprintln(w, "placement leader: unknown")
	case leaderListed:
		fmt.Fprintln(w, "* placement leader")
	default:
		fmt.Fprintf(w, "placement leader: %s (not in the node list)\n", cli.Printable(st.PlacementLeader))
	}
	fmt.Fprintf(w, "command level: %d (LEVEL: each node's binary)\n", st.Level)
	fmt.Fprintln(w)

	shards := slices.SortedFunc(slices.Values(st.Shards), func(a, b client.ShardStatus) int {
		return cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(a.ID, b.ID))
	})
	fmt.Fprintln(tw, "ID\tSTART\tEND\tEPOCH\tREPLICAS\tLEADER\tSIZE\tAPPLIED")
	for _, s := range shards {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\t%d\n", s.ID, rangeStart(s.Start), rangeEnd(s.End), s.Epoch,
			replicaList(s.Replicas), orDash(s.Leader), humanBytes(s.SizeBytes), s.AppliedIndex)
	}
	return tw.Flush()
}

// writeSplitTable prints the two halves of a split, parent first.
func writeSplitTable(w io.Writer, res *client.SplitResult) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "\tID\tSTART\tEND\tEPOCH\tREPLICAS")
	for _, half := range []struct {
		name string
		r    client.ShardRange
	}{{"parent", res.Parent}, {"child", res.Child}} {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\n", half.name, half.r.ID, rangeStart(half.r.Start),
			rangeEnd(half.r.End), half.r.Epoch, replicaList(half.r.Replicas))
	}
	return tw.Flush()
}

// rangeStart and rangeEnd show the open ends of the keyspace as -inf and
// +inf. A key that is itself "-inf" or "+inf", empty-looking or holds control
// characters is printed Go-quoted so it cannot be mistaken for them.
func rangeStart(k string) string { return boundKey(k, "-inf") }
func rangeEnd(k string) string   { return boundKey(k, "+inf") }

func boundKey(k, open string) string {
	switch {
	case k == "":
		return open
	case k == "-inf" || k == "+inf" || k == "-" || strings.ContainsAny(k, " \t"):
		return strconv.Quote(k)
	}
	return cli.Printable(k)
}

func replicaList(rs []string) string {
	if len(rs) == 0 {
		return "-"
	}
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = cli.Printable(r)
	}
	return strings.Join(out, ",")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return cli.Printable(s)
}

// humanBytes formats n bytes in binary units with at most one decimal:
// "512B", "1.5KiB", "64MiB".
func humanBytes(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + "B"
	}
	v := float64(n)
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	i := -1
	for v >= 1023.95 && i < len(units)-1 { // 1023.95 would print as 1024.0
		v /= 1024
		i++
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + units[i]
}
