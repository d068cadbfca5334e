package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/client"
)

// TestExitCode: the exit codes of docs/api.md "Command lines" for every
// kind of error a command returns, and ExitError's own code.
func TestExitCode(t *testing.T) {
	cases := []struct {
		err  error
		code int
	}{
		{nil, 0},
		{UsageErrorf("bad"), 2},
		{fmt.Errorf("wrapped: %w", Usage(errors.New("x"))), 2},
		{client.ErrInvalidArgument, 2},
		{client.ErrTooLarge, 2},
		{client.ErrUnreachable, 3},
		{client.ErrUnavailable, 3},
		{client.ErrOverloaded, 3},
		{client.ErrOutcomeUnknown, 3},
		{context.DeadlineExceeded, 3},
		{client.ErrLockHeld, 1},
		{client.ErrLockLost, 1},
		{client.ErrStaleToken, 1},
		{client.ErrConditionFailed, 1},
		{client.ErrNotFound, 1},
		{errors.New("anything else"), 1},
		{&ExitError{Code: 4, Err: client.ErrLockLost}, 4},
		{&ExitError{Code: 7}, 7},
	}
	for _, tc := range cases {
		if got := ExitCode(tc.err); got != tc.code {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
}

// TestExecute: the printed error line, none for an ExitError without an
// error (a command's own exit code passed through), and usage errors.
func TestExecute(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		args   []string
		code   int
		stderr string
	}{
		{"ok", nil, []string{"x"}, 0, ""},
		{"failed", client.ErrLockHeld, []string{"x"}, 1, "error: lock_held\n"},
		{"silent code", &ExitError{Code: 9}, []string{"x"}, 9, ""},
		{"code with error", &ExitError{Code: 4, Err: errors.New("lost")}, []string{"x"}, 4, "error: lost\n"},
		{"unknown command", nil, []string{"y"}, 2, `unknown command "y"`},
		{"unknown flag", nil, []string{"x", "--nope"}, 2, "unknown flag"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opts := &GlobalOptions{}
			root := NewRoot("tool", "a tool", "a tool", "v", opts)
			sub := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return tc.err }}
			root.AddCommand(sub)
			ReportErrors(sub)
			FlagErrors(sub)
			var out, errOut bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&errOut)
			code := Execute(context.Background(), root, tc.args, &errOut)
			if code != tc.code || !strings.Contains(errOut.String(), tc.stderr) {
				t.Fatalf("exit %d, stderr %q; want %d, %q", code, errOut.String(), tc.code, tc.stderr)
			}
			if tc.stderr == "" && errOut.Len() != 0 {
				t.Fatalf("stderr %q, want nothing", errOut.String())
			}
		})
	}
}
