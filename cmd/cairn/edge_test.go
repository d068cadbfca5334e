package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/client/clienttest"
	"github.com/cairndb/cairn/internal/cli"
)

// Tests of the command line as a new user meets it (issue 11, item 9).

// runCommandIn is runCommand with stdin.
func runCommandIn(stdin io.Reader, sub func(*cli.GlobalOptions) *cobra.Command, args ...string) (stdout, stderr string, code int) {
	opts := &cli.GlobalOptions{}
	root := &cobra.Command{Use: "cairn", SilenceErrors: true, SilenceUsage: true}
	cli.AddGlobalFlags(root, opts)
	root.AddCommand(sub(opts))
	var out, errOut bytes.Buffer
	root.SetIn(stdin)
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err := cli.FinalError(root.ExecuteContext(context.Background()))
	if err != nil {
		errOut.WriteString("error: " + err.Error() + "\n")
	}
	return out.String(), errOut.String(), cli.ExitCode(err)
}

// An unknown command is bad usage: exit 2, as the help text says, at the
// top level as under "cairn kv".
func TestUnknownCommandExitCode(t *testing.T) {
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	stdout, stderr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = devNull, devNull // run prints help and errors there
	defer func() { os.Stdout, os.Stderr = stdout, stderr }()
	for _, args := range [][]string{{"frob"}, {"kv", "frob"}, {"cluster", "frob"}} {
		if code := run(args); code != 2 {
			t.Errorf("cairn %s: exit %d, want 2", strings.Join(args, " "), code)
		}
	}
	if code := run([]string{"--help"}); code != 0 {
		t.Errorf("cairn --help: exit %d, want 0", code)
	}
}

// Scenario S1 (a failover seen from the command line): while the cluster
// answers "unavailable" (no leader yet), the command keeps retrying until
// --timeout, and succeeds once a leader answers, however many retries that
// takes.
func TestKVRetriesUntilTimeout(t *testing.T) {
	f, ep := fake(t)
	f.Set("k", "v")
	faults := make([]clienttest.Fault, 8) // more than the client's default 5 retries
	for i := range faults {
		faults[i] = clienttest.FaultUnavailable
	}
	f.InjectFaults(faults...)
	out, errOut, code := runKV(t, "kv", "get", "k", "--timeout", "30s", ep)
	if code != 0 || out != "v\n" {
		t.Errorf("get through 8 unavailable answers: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	f.InjectFaults(faults...)
	out, errOut, code = runKV(t, "kv", "put", "k", "w", "--timeout", "30s", ep)
	if code != 0 || out == "" {
		t.Errorf("put through 8 unavailable answers: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// A cluster that keeps answering "unavailable" is retried for the whole
// --timeout, and the error says what it answered (not "unreachable").
func TestKVUnavailableUntilTimeout(t *testing.T) {
	f, ep := fake(t)
	faults := make([]clienttest.Fault, 1000)
	for i := range faults {
		faults[i] = clienttest.FaultUnavailable
	}
	f.InjectFaults(faults...)
	start := time.Now()
	_, errOut, code := runKV(t, "kv", "get", "k", "--timeout", "2s", ep)
	took := time.Since(start)
	if code != 3 || !strings.Contains(errOut, "unavailable") || strings.Contains(errOut, "unreachable") {
		t.Errorf("exit %d, stderr %q; want exit 3 naming unavailable", code, errOut)
	}
	if took < 1500*time.Millisecond {
		t.Errorf("gave up after %v, long before --timeout 2s", took)
	}
}

// "kv put KEY -" reads the value from stdin, exactly (no trimming).
func TestKVPutFromStdin(t *testing.T) {
	f, ep := fake(t)
	value := "line one\nline two\n"
	out, errOut, code := runCommandIn(strings.NewReader(value), newKVCmd, "kv", "put", "k", "-", ep)
	if code != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if got, _ := f.Value("k"); got != value {
		t.Errorf("stored %q, want %q (read from stdin)", got, value)
	}
}

// binaryStub serves one key, "bin", whose value is the raw bytes
// valueBase64 encodes: the server sends it as value_base64, as it does any
// value that is not UTF-8.
func binaryStub(t *testing.T, valueBase64 string) string {
	t.Helper()
	value, err := base64.StdEncoding.DecodeString(valueBase64)
	if err != nil {
		t.Fatal(err)
	}
	f, ep := fake(t)
	f.Set("bin", string(value))
	return ep
}

// "kv get" writes a value that is not text as its exact bytes (no newline
// added), a text value followed by one newline unless it ends with one, and
// with --raw always the exact bytes.
func TestKVGetExactBytes(t *testing.T) {
	f, ep := fake(t)
	f.Set("text", "hello")
	f.Set("line", "hello\n")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"text gets a newline", []string{"kv", "get", "text", ep}, "hello\n"},
		{"text ending in a newline gets none", []string{"kv", "get", "line", ep}, "hello\n"},
		{"raw text", []string{"kv", "get", "text", "--raw", ep}, "hello"},
		{"binary", []string{"kv", "get", "bin", binaryStub(t, "AP8BCg==")}, "\x00\xff\x01\n"},
		{"binary without a final newline", []string{"kv", "get", "bin", binaryStub(t, "AP8B")}, "\x00\xff\x01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := runKV(t, tc.args...)
			if code != 0 || out != tc.want {
				t.Errorf("exit %d, stdout %q, want %q; stderr %q", code, out, tc.want, errOut)
			}
		})
	}
	// JSON keeps the bytes too: as value_base64, as the API does.
	out, _, code := runKV(t, "kv", "get", "bin", "-o", "json", binaryStub(t, "AP8B"))
	if code != 0 || !strings.Contains(out, `"value_base64":"AP8B"`) {
		t.Errorf("json of a binary value: exit %d, %q", code, out)
	}
}

// The scan table is KEY<TAB>VALUE with exactly one tab, whatever the key
// lengths: cut -f2 and awk -F'\t' work on it.
func TestKVScanTableOneTab(t *testing.T) {
	f, ep := fake(t)
	f.Set("a", "1")
	f.Set("a-much-longer-key-than-a-tab-stop", "2")
	out, errOut, code := runKV(t, "kv", "scan", ep)
	want := "a\t1\na-much-longer-key-than-a-tab-stop\t2\n"
	if code != 0 || out != want {
		t.Errorf("exit %d, stdout %q, want %q; stderr %q", code, out, want, errOut)
	}
}

// "cairn server" on a new data dir with neither --bootstrap-expect nor
// --join exits 2 at once and says which flag to set, rather than waiting
// silently forever.
func TestServerWithoutFormationFlags(t *testing.T) {
	errFile, err := os.CreateTemp(t.TempDir(), "stderr")
	if err != nil {
		t.Fatal(err)
	}
	defer errFile.Close()
	stderr := os.Stderr
	os.Stderr = errFile
	code := run([]string{"server", "--id", "n1", "--data-dir", t.TempDir(), "--log-level", "error",
		"--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0"})
	os.Stderr = stderr
	out, _ := os.ReadFile(errFile.Name())
	if code != 2 || !strings.Contains(string(out), "--bootstrap-expect") || !strings.Contains(string(out), "--join") {
		t.Errorf("exit %d, stderr %q", code, out)
	}
}

// "kv scan --limit N -o json" says where the rest starts: "next" is the
// first key not printed, so --start NEXT continues the scan.
func TestKVScanJSONNext(t *testing.T) {
	f, ep := fake(t)
	for i := range 8 {
		f.Set(fmt.Sprintf("p/%d", i), fmt.Sprint(i))
	}
	out, errOut, code := runKV(t, "kv", "scan", "--start", "p/", "--limit", "5", "-o", "json", ep)
	if code != 0 || !strings.Contains(out, `"more":true`) || !strings.Contains(out, `"next":"p/5"`) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, _, code = runKV(t, "kv", "scan", "--start", "p/5", "--limit", "5", "-o", "json", ep)
	if code != 0 || !strings.Contains(out, `"more":false`) || strings.Contains(out, `"next"`) ||
		!strings.Contains(out, `"key":"p/7"`) {
		t.Fatalf("continued scan: exit %d, stdout %q", code, out)
	}
}
