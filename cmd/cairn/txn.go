package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/internal/cli"
)

// newTxnCmd is "cairn txn -f FILE|-" and "cairn txn inspect ID".
func newTxnCmd(opts *cli.GlobalOptions) *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "txn -f FILE|-",
		Short: "Run a transaction read from a JSON file (- for stdin)",
		Long: `Run a transaction: the JSON body of POST /v1/txn (docs/api.md "Transactions"),
{"compare":[...],"success":[...],"failure":[...],"request_id":"..."}, read from
FILE or, with -f -, from stdin. A request id is added when the file has none,
so retries apply it at most once. Prints which branch ran and each op's
result; exits 1 when the failure branch ran (a compare did not hold).`,
		Example: `  echo '{"compare":[{"key":"a","target":"value","op":">=","value":"10"}],
        "success":[{"op":"put","key":"a","value":"0"},{"op":"put","key":"b","value":"10"}]}' |
    cairn txn -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if file == "" {
				return cli.UsageErrorf("-f FILE (or -f - for stdin) is required")
			}
			body, err := readTxnFile(cmd, file)
			if err != nil {
				return err
			}
			c, ctx, done, err := opts.NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			if _, ok := body["request_id"]; !ok {
				id, _ := json.Marshal(c.NewRequestID())
				body["request_id"] = id
			}
			var res client.TxnResponse
			if _, err := c.Do(ctx, client.Request{Method: http.MethodPost, Path: "/v1/txn", Body: body, Idempotent: true}, &res); err != nil {
				return err
			}
			if err := printTxn(cmd.OutOrStdout(), opts.Output, &res); err != nil {
				return err
			}
			if !res.Succeeded {
				return errFailureBranch
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the transaction as JSON; - reads stdin")
	cmd.AddCommand(newTxnInspectCmd(opts))
	cli.ReportErrors(cmd)
	cli.FlagErrors(cmd)
	return cmd
}

// errFailureBranch: the transaction ran its failure branch (exit 1).
var errFailureBranch = errors.New("a compare did not hold: the failure branch ran")

func readTxnFile(cmd *cobra.Command, file string) (map[string]json.RawMessage, error) {
	var r io.Reader
	if file == "-" {
		r = cmd.InOrStdin()
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, cli.UsageErrorf("%v", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxStdinValue+1))
	if err != nil {
		return nil, fmt.Errorf("read the transaction: %w", err)
	}
	if len(b) > maxStdinValue {
		return nil, cli.UsageErrorf("the transaction is larger than %d bytes", maxStdinValue)
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(b, &body); err != nil || body == nil {
		return nil, cli.UsageErrorf("the transaction is not a JSON object: %v", err)
	}
	return body, nil
}

func printTxn(w io.Writer, output string, res *client.TxnResponse) error {
	if output == cli.OutputJSON {
		return cli.WriteJSON(w, res)
	}
	branch := "success"
	if !res.Succeeded {
		branch = "failure"
	}
	shards := make([]string, len(res.Shards))
	for i, s := range res.Shards {
		shards[i] = fmt.Sprint(s)
	}
	fmt.Fprintf(w, "branch: %s\nshards: %s\n", branch, strings.Join(shards, ","))
	if res.ID != "" {
		fmt.Fprintf(w, "id: %s\n", res.ID)
	}
	for _, r := range res.Results {
		switch r.Op {
		case "get":
			if r.KV == nil {
				fmt.Fprintf(w, "get %s: not found\n", r.Key)
			} else {
				fmt.Fprintf(w, "get %s: %q mod_index=%d version=%d\n", r.Key, r.KV.Value, r.KV.ModIndex, r.KV.Version)
			}
		case "put":
			fmt.Fprintf(w, "put %s: mod_index=%d version=%d\n", r.Key, r.ModIndex, r.Version)
		case "delete":
			fmt.Fprintf(w, "delete %s: deleted=%d\n", r.Key, r.Deleted)
		}
	}
	return nil
}

func newTxnInspectCmd(opts *cli.GlobalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "inspect ID",
		Short: "Show a multi-shard transaction's record: state, shards, intents",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, ctx, done, err := opts.NewClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			var raw json.RawMessage
			if _, err := c.Do(ctx, client.Request{Path: "/v1/txn/" + client.EscapeKey(args[0])}, &raw); err != nil {
				return err
			}
			if opts.Output == cli.OutputJSON {
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "%s\n", raw)
				return err
			}
			var rec client.TxnRecord
			if err := json.Unmarshal(raw, &rec); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "id: %s\nstate: %s\nanchor: %s\nshards: %v\n", rec.ID, rec.State, rec.Anchor, rec.Shards)
			if rec.Cause != "" {
				fmt.Fprintf(w, "cause: %s\n", rec.Cause)
			}
			if len(rec.Intents) > 0 {
				fmt.Fprintf(w, "intents: %s\n", rec.Intents)
			}
			return nil
		},
	}
}
