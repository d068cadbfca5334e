package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/internal/cli"
)

// newKVCmd is "cairn kv": get, put, del and scan over the HTTP API.
//
// Its commands return errors for main to print ("error: %v") and map with
// cli.ExitCode; for bad usage (wrong arguments, bad flags) they print the usage
// text to stderr first. Cobra's own error and usage printing is silenced.
func newKVCmd(opts *cli.GlobalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "Read and write keys",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cli.UsageErrorf("missing subcommand (get, put, del, scan)")
			}
			return cli.UsageErrorf("unknown command %q for %q", args[0], cmd.CommandPath())
		},
	}
	cmd.AddCommand(newKVGetCmd(opts), newKVPutCmd(opts), newKVDelCmd(opts), newKVScanCmd(opts))
	cli.ReportErrors(cmd)
	cli.FlagErrors(cmd)
	return cmd
}

// readFlags are the consistency flags of get and scan.
type readFlags struct {
	consistency  string
	maxStaleness time.Duration
}

func (r *readFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&r.consistency, "consistency", "", "read level: linearizable (default), session or stale")
	cmd.Flags().DurationVar(&r.maxStaleness, "max-staleness", 0, "with --consistency stale: how old the replica's view may be (server default 5s)")
}

func (r *readFlags) level() (client.Consistency, error) {
	var c client.Consistency
	switch r.consistency {
	case "":
	case "linearizable":
		c = client.ConsistencyLinearizable
	case "session":
		c = client.ConsistencySession
	case "stale":
		c = client.ConsistencyStale
	default:
		return "", cli.UsageErrorf("--consistency must be linearizable, session or stale, not %q", r.consistency)
	}
	if r.maxStaleness != 0 && c != client.ConsistencyStale {
		return "", cli.UsageErrorf("--max-staleness needs --consistency stale")
	}
	if r.maxStaleness < 0 {
		return "", cli.UsageErrorf("--max-staleness must not be negative")
	}
	return c, nil
}

// fenceFlag is --fence NAME:TOKEN of put, del and get: a fenced write or
// read under a lock grant (invariant I11), e.g. the CAIRN_LOCK_NAME and
// CAIRN_LOCK_TOKEN that lockctl exec gives its command.
type fenceFlag struct{ spec string }

func (f *fenceFlag) register(cmd *cobra.Command, what string) {
	cmd.Flags().StringVar(&f.spec, "fence", "", "NAME:TOKEN: "+what+" under lock NAME with fencing token TOKEN")
}

// parse returns the lock and token; ok is false when --fence was not given.
// The token follows the last ':', so a lock name may contain ':'.
func (f *fenceFlag) parse() (lock string, token uint64, ok bool, err error) {
	if f.spec == "" {
		return "", 0, false, nil
	}
	i := strings.LastIndexByte(f.spec, ':')
	if i <= 0 {
		return "", 0, false, cli.UsageErrorf("--fence must be NAME:TOKEN, not %q", f.spec)
	}
	token, err = strconv.ParseUint(f.spec[i+1:], 10, 64)
	if err != nil || token == 0 {
		return "", 0, false, cli.UsageErrorf("--fence %q: the token must be a positive integer", f.spec)
	}
	return f.spec[:i], token, true, nil
}

func newKVGetCmd(opts *cli.GlobalOptions) *cobra.Command {
	var (
		rf    readFlags
		raw   bool
		fence fenceFlag
	)
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Print a key's value (-o json: the key with its metadata)",
		Long: `Print a key's value. A text value (UTF-8, no NUL byte) is followed by a
newline unless it ends with one; any other value is written as its exact
bytes, and so is every value with --raw. -o json prints the key with its
metadata, a value that is not UTF-8 as value_base64.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			level, err := rf.level()
			if err != nil {
				return err
			}
			var ro []client.ReadOption
			switch level {
			case client.ConsistencyLinearizable:
				ro = append(ro, client.Linearizable())
			case client.ConsistencySession:
				ro = append(ro, client.Session())
			case client.ConsistencyStale:
				ro = append(ro, client.Stale(rf.maxStaleness))
			}
			if lock, token, ok, err := fence.parse(); err != nil {
				return err
			} else if ok {
				if level == client.ConsistencySession || level == client.ConsistencyStale {
					return cli.UsageErrorf("--fence is a read through Raft: it cannot be combined with --consistency %s", level)
				}
				ro = append(ro, client.FencedRead(lock, token))
			}
			c, ctx, done, err := opts.NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			kv, err := c.Get(ctx, args[0], ro...)
			if err != nil {
				return err
			}
			if opts.Output == cli.OutputJSON {
				return cli.WriteJSON(cmd.OutOrStdout(), jsonKV(kv))
			}
			return writeValue(cmd.OutOrStdout(), kv.Value, raw)
		},
	}
	rf.register(cmd)
	cmd.Flags().BoolVar(&raw, "raw", false, "print the value's exact bytes, without a newline after text")
	fence.register(cmd, "a fenced read (through Raft; registers TOKEN on the key, refused with stale_token if a higher one is there)")
	cli.FlagErrors(cmd)
	return cmd
}

func newKVPutCmd(opts *cli.GlobalOptions) *cobra.Command {
	var (
		ttl        time.Duration
		ifModIndex uint64
		ifAbsent   bool
		ifValue    string
		fence      fenceFlag
	)
	cmd := &cobra.Command{
		Use:   "put KEY VALUE|-",
		Short: "Write a key (VALUE - reads it from stdin); prints its new mod_index",
		Long: `Write a key; prints its new mod_index. VALUE "-" reads the value from
stdin, byte for byte (to store the one-character value "-", pipe it in:
printf %s - | cairn kv put KEY -).`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			value := args[1]
			if value == "-" {
				b, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), maxStdinValue+1))
				if err != nil {
					return fmt.Errorf("read the value from stdin: %w", err)
				}
				if len(b) > maxStdinValue {
					return cli.UsageErrorf("the value on stdin is larger than %d bytes", maxStdinValue)
				}
				value = string(b)
			}
			var po []client.PutOption
			conds := 0
			if cmd.Flags().Changed("ttl") {
				if ttl <= 0 {
					return cli.UsageErrorf("--ttl must be positive")
				}
				po = append(po, client.WithTTL(ttl))
			}
			if cmd.Flags().Changed("if-mod-index") {
				conds++
				po = append(po, client.IfModIndex(ifModIndex))
			}
			if ifAbsent {
				conds++
				po = append(po, client.IfAbsent())
			}
			if cmd.Flags().Changed("if-value") {
				conds++
				po = append(po, client.IfValue(ifValue))
			}
			if conds > 1 {
				return cli.UsageErrorf("--if-mod-index, --if-absent and --if-value are mutually exclusive")
			}
			if lock, token, ok, err := fence.parse(); err != nil {
				return err
			} else if ok {
				po = append(po, client.WithFence(lock, token))
			}
			c, ctx, done, err := opts.NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			res, err := c.Put(ctx, args[0], value, po...)
			if err != nil {
				return err
			}
			if opts.Output == cli.OutputJSON {
				return cli.WriteJSON(cmd.OutOrStdout(), res)
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), res.ModIndex)
			return err
		},
	}
	f := cmd.Flags()
	f.DurationVar(&ttl, "ttl", 0, "the key disappears after this long")
	f.Uint64Var(&ifModIndex, "if-mod-index", 0, "write only if the key's mod_index is N (0: the key is absent)")
	f.BoolVar(&ifAbsent, "if-absent", false, "write only if the key does not exist")
	f.StringVar(&ifValue, "if-value", "", "write only if the key's value is V")
	fence.register(cmd, "a fenced write (refused with stale_token once a higher token of the lock reached the key)")
	cli.FlagErrors(cmd)
	return cmd
}

func newKVDelCmd(opts *cli.GlobalOptions) *cobra.Command {
	var (
		ifModIndex uint64
		fence      fenceFlag
	)
	cmd := &cobra.Command{
		Use:     "del KEY",
		Aliases: []string{"delete"},
		Short:   "Delete a key; prints how many keys were deleted (0 or 1)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var do []client.DeleteOption
			if cmd.Flags().Changed("if-mod-index") {
				do = append(do, client.IfModIndex(ifModIndex))
			}
			if lock, token, ok, err := fence.parse(); err != nil {
				return err
			} else if ok {
				do = append(do, client.WithFence(lock, token))
			}
			c, ctx, done, err := opts.NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			n, err := c.Delete(ctx, args[0], do...)
			if err != nil {
				return err
			}
			if opts.Output == cli.OutputJSON {
				return cli.WriteJSON(cmd.OutOrStdout(), map[string]int{"deleted": n})
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), n)
			return err
		},
	}
	cmd.Flags().Uint64Var(&ifModIndex, "if-mod-index", 0, "delete only if the key's mod_index is N")
	fence.register(cmd, "a fenced delete (refused with stale_token once a higher token of the lock reached the key)")
	cli.FlagErrors(cmd)
	return cmd
}

// maxScanPage is the page size asked of the server (docs/api.md's default).
const maxScanPage = 1000

func newKVScanCmd(opts *cli.GlobalOptions) *cobra.Command {
	var (
		so    client.ScanOptions
		limit int
		rf    readFlags
	)
	cmd := &cobra.Command{
		Use:   "scan [--prefix P | --start A --end B]",
		Short: "List keys in byte order (table: KEY<TAB>VALUE lines; -o json with --limit: next, where the rest starts)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if so.Prefix != "" && (so.Start != "" || so.End != "") {
				return cli.UsageErrorf("--prefix cannot be combined with --start/--end")
			}
			if limit < 0 {
				return cli.UsageErrorf("--limit must not be negative")
			}
			level, err := rf.level()
			if err != nil {
				return err
			}
			so.Consistency, so.MaxStaleness = level, rf.maxStaleness
			so.Limit = maxScanPage
			if limit > 0 && limit < maxScanPage {
				so.Limit = limit + 1 // one more, to know whether the limit cut the scan
			}
			c, ctx, done, err := opts.NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			kvs := []client.KV{}
			more, next := false, ""
			err = c.ScanAll(ctx, so, func(kv client.KV) error {
				if limit > 0 && len(kvs) == limit {
					more, next = true, kv.Key
					return client.ErrStopScan
				}
				kvs = append(kvs, kv)
				return nil
			})
			if err != nil {
				return err
			}
			if opts.Output == cli.OutputJSON {
				// next: the first key not printed; --start NEXT continues.
				return cli.WriteJSON(cmd.OutOrStdout(), struct {
					KVs  []client.KV `json:"kvs"`
					More bool        `json:"more"`
					Next string      `json:"next,omitempty"`
				}{kvs, more, next})
			}
			return writeScanTable(cmd.OutOrStdout(), kvs, so.KeysOnly)
		},
	}
	f := cmd.Flags()
	f.StringVar(&so.Prefix, "prefix", "", "keys starting with P")
	f.StringVar(&so.Start, "start", "", "first key of the range (inclusive)")
	f.StringVar(&so.End, "end", "", "end of the range (exclusive; default the end of the keyspace)")
	f.IntVar(&limit, "limit", 0, "print at most N keys (0: all)")
	f.BoolVar(&so.KeysOnly, "keys-only", false, "print keys without values")
	rf.register(cmd)
	cli.FlagErrors(cmd)
	return cmd
}

// writeScanTable prints KEY<TAB>VALUE lines with exactly one tab, for cut
// and awk (not aligned: a tabwriter padding with tabs put several after a
// short key). A key or value with control characters (a newline or tab
// would break the lines) is printed Go-quoted.
func writeScanTable(w io.Writer, kvs []client.KV, keysOnly bool) error {
	bw := bufio.NewWriter(w)
	for _, kv := range kvs {
		if keysOnly {
			fmt.Fprintln(bw, cli.Printable(kv.Key))
			continue
		}
		fmt.Fprintf(bw, "%s\t%s\n", cli.Printable(kv.Key), cli.Printable(kv.Value))
	}
	return bw.Flush()
}

// maxStdinValue bounds a value read from stdin: a little over the server's
// largest value, so the server's own error reports a value just too large.
const maxStdinValue = 8 << 20

// isText reports whether a value prints as text: valid UTF-8 without NUL.
func isText(v string) bool {
	return utf8.ValidString(v) && !strings.ContainsRune(v, 0)
}

// writeValue prints a value for "kv get": its exact bytes when raw or when
// it is not text, else the text and a newline unless it ends with one.
func writeValue(w io.Writer, v string, raw bool) error {
	if !raw && isText(v) && !strings.HasSuffix(v, "\n") {
		v += "\n"
	}
	_, err := io.WriteString(w, v)
	return err
}

// jsonKV is a KV as "kv get -o json" prints it: a value that is not UTF-8
// as value_base64, as the HTTP API sends it (JSON strings cannot hold it).
func jsonKV(kv *client.KV) any {
	if utf8.ValidString(kv.Value) {
		return kv
	}
	type plain client.KV // without KV's own JSON methods
	return struct {
		plain
		Value       string `json:"value,omitempty"`
		ValueBase64 string `json:"value_base64"`
	}{plain: plain(*kv), ValueBase64: base64.StdEncoding.EncodeToString([]byte(kv.Value))}
}
