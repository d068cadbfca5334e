package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"go.uber.org/goleak"

	"github.com/cairndb/cairn/client"
	"github.com/cairndb/cairn/client/clienttest"
	"github.com/cairndb/cairn/internal/cli"
)

func TestMain(m *testing.M) {
	// IgnoreCurrent: goroutines started by other packages' init are not ours.
	// memberlist's probe of a peer outlives its Shutdown by up to a probe
	// timeout; the in-process clusters of the lock and fence tests stop
	// gossip just before goleak looks.
	goleak.VerifyTestMain(m, goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"))
}

// runKV runs "cairn ARGS..." with only the global flags and the kv command,
// prints a returned error the way main does, and returns the exit code.
func runKV(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runCommand(newKVCmd, args...)
}

// runCommand runs "cairn ARGS..." with only the global flags and the command
// sub builds, prints a returned error the way main does, and returns the
// output and exit code. Shared by every command's tests.
func runCommand(sub func(*cli.GlobalOptions) *cobra.Command, args ...string) (stdout, stderr string, code int) {
	opts := &cli.GlobalOptions{}
	root := &cobra.Command{Use: "cairn", SilenceErrors: true, SilenceUsage: true}
	cli.AddGlobalFlags(root, opts)
	root.AddCommand(sub(opts))
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := cli.FinalError(root.ExecuteContext(context.Background()))
	if err != nil {
		fmt.Fprintf(&errOut, "error: %v\n", err)
	}
	return out.String(), errOut.String(), cli.ExitCode(err)
}

func fake(t *testing.T) (*clienttest.Server, string) {
	t.Helper()
	f := clienttest.NewServer()
	t.Cleanup(f.Close)
	return f, "--endpoints=" + f.Addr()
}

func TestKVCommands(t *testing.T) {
	f, ep := fake(t)
	f.Set("other", "x")
	cases := []struct {
		name   string
		args   []string
		code   int
		stdout string // exact, unless empty
		inOut  string // substring of stdout
		inErr  string // substring of stderr
	}{
		{"put", []string{"kv", "put", "a/b c", "hello world", ep}, 0, "2\n", "", ""},
		{"get table prints the value alone", []string{"kv", "get", "a/b c", ep}, 0, "hello world\n", "", ""},
		{"get json", []string{"kv", "get", "a/b c", "-o", "json", ep}, 0, "", `"value":"hello world"`, ""},
		{"get linearizable", []string{"kv", "get", "a/b c", "--consistency", "linearizable", ep}, 0, "hello world\n", "", ""},
		{"get stale", []string{"kv", "get", "a/b c", "--consistency=stale", "--max-staleness=1s", ep}, 0, "hello world\n", "", ""},
		{"put if-mod-index", []string{"kv", "put", "a/b c", "v2", "--if-mod-index", "2", "--ttl", "30s", ep}, 0, "3\n", "", ""},
		{"put json", []string{"kv", "put", "n", "1", "-o", "json", ep}, 0, "", `"mod_index":4`, ""},
		{"put if-absent fails", []string{"kv", "put", "n", "1", "--if-absent", ep}, 1, "", "", "error: condition_failed: "},
		{"put stale if-mod-index fails", []string{"kv", "put", "n", "1", "--if-mod-index", "1", ep}, 1, "", "", "condition_failed"},
		{"get missing", []string{"kv", "get", "missing", ep}, 1, "", "", "error: not_found: "},
		{"del", []string{"kv", "del", "n", ep}, 0, "1\n", "", ""},
		{"del missing", []string{"kv", "del", "n", "-o", "json", ep}, 0, "{\"deleted\":0}\n", "", ""},
		{"del if-mod-index fails", []string{"kv", "del", "a/b c", "--if-mod-index", "1", ep}, 1, "", "", "condition_failed"},
		{"get no key", []string{"kv", "get", ep}, 2, "", "", "Usage:"},
		{"put one arg", []string{"kv", "put", "a", ep}, 2, "", "", "accepts 2 arg(s)"},
		{"scan with arg", []string{"kv", "scan", "x", ep}, 2, "", "", "Usage:"},
		{"unknown flag", []string{"kv", "get", "a", "--bogus", ep}, 2, "", "", "unknown flag"},
		{"bad uint", []string{"kv", "del", "a", "--if-mod-index", "-1", ep}, 2, "", "", "invalid argument"},
		{"bad output", []string{"kv", "get", "a", "-o", "yaml", ep}, 2, "", "", "table or json"},
		{"bad consistency", []string{"kv", "get", "a", "--consistency", "weak", ep}, 2, "", "", "--consistency"},
		{"exclusive conditions", []string{"kv", "put", "a", "b", "--if-absent", "--if-mod-index", "3", ep}, 2, "", "", "mutually exclusive"},
		{"prefix and range", []string{"kv", "scan", "--prefix", "a", "--start", "b", ep}, 2, "", "", "cannot be combined"},
		{"kv alone", []string{"kv", ep}, 2, "", "", "missing subcommand"},
		{"kv unknown", []string{"kv", "frob", ep}, 2, "", "", "unknown command"},
		{"scan table", []string{"kv", "scan", ep}, 0, "a/b c\tv2\nother\tx\n", "", ""},
		{"scan keys only", []string{"kv", "scan", "--keys-only", "--start", "b", ep}, 0, "other\n", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runKV(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out, errOut)
			}
			if tc.stdout != "" && out != tc.stdout {
				t.Errorf("stdout %q, want %q", out, tc.stdout)
			}
			if !strings.Contains(out, tc.inOut) {
				t.Errorf("stdout %q does not contain %q", out, tc.inOut)
			}
			if !strings.Contains(errOut, tc.inErr) {
				t.Errorf("stderr %q does not contain %q", errOut, tc.inErr)
			}
			if tc.code != 0 && out != "" {
				t.Errorf("failed command wrote to stdout: %q", out)
			}
		})
	}
}

func TestKVScanLimitAndPaging(t *testing.T) {
	f, ep := fake(t)
	f.MaxLimit = 3 // force several pages
	for i := range 8 {
		f.Set(fmt.Sprintf("p/%d", i), fmt.Sprint(i))
	}
	f.Set("q", "outside")
	f.Set("p/tab", "a\tb")

	out, errOut, code := runKV(t, "kv", "scan", "--prefix", "p/", ep)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 9 || !strings.HasPrefix(lines[0], "p/0\t") || lines[8] != `p/tab`+"\t"+`"a\tb"` {
		t.Errorf("scan output:\n%s", out)
	}

	out, errOut, code = runKV(t, "kv", "scan", "--prefix", "p/", "--limit", "5", "-o", "json", ep)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var page struct {
		KVs  []client.KV `json:"kvs"`
		More bool        `json:"more"`
	}
	if err := json.Unmarshal([]byte(out), &page); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(page.KVs) != 5 || !page.More || page.KVs[4].Key != "p/4" {
		t.Errorf("page = %+v", page)
	}

	out, _, _ = runKV(t, "kv", "scan", "--prefix", "zzz", "-o", "json", ep)
	if out != "{\"kvs\":[],\"more\":false}\n" {
		t.Errorf("empty scan json = %q", out)
	}
}

func TestKVUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	out, errOut, code := runKV(t, "kv", "get", "a", "--endpoints", addr, "--timeout", "5s")
	if code != 3 || out != "" || !strings.Contains(errOut, "error: unreachable: ") {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestKVEndpointsFromEnv(t *testing.T) {
	f, _ := fake(t)
	f.Set("k", "from env")
	t.Setenv("CAIRN_ENDPOINTS", "127.0.0.1:1, "+f.Addr())
	out, errOut, code := runKV(t, "kv", "get", "k")
	if code != 0 || out != "from env\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// Invariant I7: an unknown outcome is not reported as a failure.
func TestKVOutcomeUnknown(t *testing.T) {
	f, ep := fake(t)
	// Every answer until --timeout is outcome_unknown (the command retries
	// until --timeout, not a fixed number of times).
	faults := make([]clienttest.Fault, 1000)
	for i := range faults {
		faults[i] = clienttest.FaultTimeoutAfterApply
	}
	f.InjectFaults(faults...)
	_, errOut, code := runKV(t, "kv", "put", "k", "v", "--timeout", "2s", ep)
	if code != 3 || !strings.Contains(errOut, "error: outcome_unknown: ") {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{cli.UsageErrorf("x"), 2},
		{fmt.Errorf("wrapped: %w", cli.UsageErrorf("x")), 2},
		{&client.Error{Code: client.CodeNotFound}, 1},
		{&client.Error{Code: client.CodeConditionFailed}, 1},
		{&client.Error{Code: client.CodeLockHeld}, 1},
		{&client.Error{Code: client.CodeStaleToken}, 1},
		{&client.Error{Code: client.CodeTxnAborted}, 1},
		{&client.Error{Code: client.CodeLockLost}, 1},
		{&client.Error{Code: client.CodeInvalidArgument}, 2},
		{&client.Error{Code: client.CodeTooLarge}, 2},
		{&client.Error{Code: client.CodeUnavailable}, 3},
		{&client.Error{Code: client.CodeOverloaded}, 3},
		{&client.Error{Code: client.CodeOutcomeUnknown}, 3},
		{&client.Error{Code: client.CodeUnreachable}, 3},
		{context.DeadlineExceeded, 3},
		{errors.New("something else"), 1},
	} {
		if got := cli.ExitCode(tc.err); got != tc.want {
			t.Errorf("cli.ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
