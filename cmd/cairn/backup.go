package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/internal/cli"
)

func newBackupCmd(opts *cli.GlobalOptions) *cobra.Command {
	var prefix string
	cmd := &cobra.Command{
		Use:   "backup FILE",
		Short: "Copy every key (or those under --prefix) to FILE, one JSON line each",
		Long: `Copy every key (or those under --prefix), with its value and TTL, to FILE as
newline-delimited JSON (client/backup.go describes the format). The keyspace is
read page by page with linearizable scans: each key is copied with a value it
held during the backup, but the copy is not one point in time across keys;
stop writes first for that. FILE appears only once the backup is complete.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := opts.LongClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			path := args[0]
			tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name()) // a no-op once renamed
			n, err := c.Backup(ctx, tmp, client.BackupOptions{Prefix: prefix})
			if err == nil {
				err = tmp.Sync()
			}
			if cerr := tmp.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Rename(tmp.Name(), path)
			}
			if err != nil {
				return err
			}
			if opts.Output == cli.OutputJSON {
				return cli.WriteJSON(cmd.OutOrStdout(), map[string]any{"file": path, "keys": n})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "backed up %d keys to %s\n", n, path)
			return err
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "only keys with this prefix")
	cli.FlagErrors(cmd)
	return cmd
}

func newRestoreCmd(opts *cli.GlobalOptions) *cobra.Command {
	var (
		concurrency int
		tokenFloor  uint64
	)
	cmd := &cobra.Command{
		Use:   "restore FILE",
		Short: "Write every key of a backup made by 'cairn backup' back",
		Long: `Write every key of a backup made by 'cairn backup' back, with its value and TTL
(a TTL runs again from the restore). The whole file is checked first: a backup
that was cut short or is malformed is refused before anything is written. Keys
that are not in the backup are left as they are.

Before it writes, restore raises every shard's fencing-token base to the
backup's token floor, so locks granted after the restore get tokens above every
token the backed-up cluster had handed out when the backup ended. Locks that
cluster granted later are covered by --token-floor: into a new cluster, pass the
old cluster's current floor,

  cairn restore --token-floor "$(cairn --endpoints OLD cluster token-floor)" FILE

(or, if the old cluster is gone, any number above the tokens it gave out).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return cli.UsageErrorf("%v", err)
			}
			defer f.Close()
			c, ctx, done, err := opts.LongClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			n, err := c.Restore(ctx, f, client.RestoreOptions{Concurrency: concurrency, TokenFloor: tokenFloor})
			if err != nil {
				return err
			}
			if opts.Output == cli.OutputJSON {
				return cli.WriteJSON(cmd.OutOrStdout(), map[string]any{"file": args[0], "keys": n})
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "restored %d keys from %s\n", n, args[0])
			return err
		},
	}
	cmd.Flags().IntVar(&concurrency, "concurrency", 16, "writes in flight")
	cmd.Flags().Uint64Var(&tokenFloor, "token-floor", 0, "raise the fencing-token floor to at least this (the old cluster's 'cairn cluster token-floor'), beyond the backup's own")
	cli.FlagErrors(cmd)
	return cmd
}
