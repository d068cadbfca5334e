// Package cli is what cairn's command lines (cmd/cairn, cmd/lockctl) share:
// the global flags of docs/api.md "Command lines" (--endpoints,
// $CAIRN_ENDPOINTS, -o json|table, --timeout), the client they make, and the
// one mapping from an error to an exit code and to the line printed for it.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/client"
)

// GlobalOptions are the flags every command takes (docs/api.md, "Command lines").
type GlobalOptions struct {
	Endpoints []string
	Output    string // "table" or "json"
	Timeout   time.Duration
}

// Output formats of -o.
const (
	OutputTable = "table"
	OutputJSON  = "json"
)

// Exit codes of docs/api.md, "Command lines". A command may add its own
// above these (lockctl exec's ExitLockLost).
const (
	ExitOK          = 0
	ExitFailed      = 1 // a failed operation: condition, not found, lock held
	ExitUsage       = 2
	ExitUnreachable = 3 // no definite answer within --timeout
)

// AddGlobalFlags registers the global flags on cmd as persistent flags.
func AddGlobalFlags(cmd *cobra.Command, o *GlobalOptions) {
	def := []string{"127.0.0.1:7070"}
	if env := os.Getenv("CAIRN_ENDPOINTS"); strings.TrimSpace(env) != "" {
		def = SplitList(env)
	}
	f := cmd.PersistentFlags()
	f.StringSliceVar(&o.Endpoints, "endpoints", def, "cairn nodes, host:port,... ($CAIRN_ENDPOINTS sets the default)")
	f.StringVarP(&o.Output, "output", "o", OutputTable, "output format: table or json")
	f.DurationVar(&o.Timeout, "timeout", 10*time.Second, "give up after this long")
}

// SplitList splits a comma-separated list, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// Validate checks the global options after parsing.
func (o *GlobalOptions) Validate() error {
	switch o.Output {
	case OutputTable, OutputJSON:
	default:
		return UsageErrorf("--output must be table or json, not %q", o.Output)
	}
	var eps []string
	for _, e := range o.Endpoints {
		eps = append(eps, SplitList(e)...)
	}
	if len(eps) == 0 {
		return UsageErrorf("--endpoints is empty")
	}
	o.Endpoints = eps
	if o.Timeout <= 0 {
		return UsageErrorf("--timeout must be positive")
	}
	return nil
}

// NewClient returns a client for the global options and a context bounded by
// --timeout. Call the returned function when done.
func (o *GlobalOptions) NewClient(cmd *cobra.Command) (*client.Client, context.Context, func(), error) {
	// One command makes one call: a range map fetched for routing would cost
	// more than the forwarding hop it saves. Retries are bounded by
	// --timeout, not by a count: during a failover the cluster answers
	// "unavailable" for an election timeout or more, and a fixed count of
	// quick retries would give up long before --timeout.
	return o.ClientFor(cmd, client.Config{Endpoints: o.Endpoints, DisableRouting: true, MaxRetries: UntilTimeout}, true)
}

// UntilTimeout as client.Config.MaxRetries: retry until the context ends.
const UntilTimeout = math.MaxInt32

// LongClient is NewClient for commands that make many calls and run as long
// as they need (until Ctrl-C): routing on, no overall --timeout.
func (o *GlobalOptions) LongClient(cmd *cobra.Command) (*client.Client, context.Context, func(), error) {
	return o.ClientFor(cmd, client.Config{Endpoints: o.Endpoints}, false)
}

// ClientFor validates the global flags and makes a client with cfg and the
// command's context: bounded by --timeout when timed, else ended by Ctrl-C
// or SIGTERM.
func (o *GlobalOptions) ClientFor(cmd *cobra.Command, cfg client.Config, timed bool) (*client.Client, context.Context, func(), error) {
	if err := o.Validate(); err != nil {
		return nil, nil, nil, err
	}
	c, err := client.New(cfg)
	if err != nil {
		return nil, nil, nil, UsageErrorf("%v", err)
	}
	parent := cmd.Context()
	if parent == nil {
		parent = context.Background()
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if timed {
		ctx, cancel = context.WithTimeout(parent, o.Timeout)
	} else {
		ctx, cancel = signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	}
	return c, ctx, func() { cancel(); _ = c.Close() }, nil
}

// UsageError marks bad usage: exit code 2.
type UsageError struct{ Err error }

func (e UsageError) Error() string { return e.Err.Error() }
func (e UsageError) Unwrap() error { return e.Err }

// Usage wraps err as a usage error (exit code 2).
func Usage(err error) error { return UsageError{err} }

// UsageErrorf returns a usage error (exit code 2).
func UsageErrorf(format string, args ...any) error {
	return UsageError{fmt.Errorf(format, args...)}
}

// ExitCode maps a command's error to the process exit status of docs/api.md:
// 0 success, 1 a failed operation, 2 bad usage, 3 no definite answer within
// --timeout (no node reachable, the cluster still unavailable or
// overloaded, or a write's outcome unknown). An error carrying its own code
// (ExitError) gives that code.
// Errors of the client package print as "<code>: <message>", so Execute's
// "error: %v" gives the "error: <code>: <message>" line of the command lines.
func ExitCode(err error) int {
	var ue UsageError
	var ee *ExitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		return ee.Code
	case errors.As(err, &ue):
		return ExitUsage
	case errors.Is(err, client.ErrOutcomeUnknown),
		errors.Is(err, client.ErrUnreachable),
		errors.Is(err, client.ErrUnavailable),
		errors.Is(err, client.ErrOverloaded),
		errors.Is(err, context.DeadlineExceeded):
		return ExitUnreachable
	case errors.Is(err, client.ErrInvalidArgument), errors.Is(err, client.ErrTooLarge):
		return ExitUsage
	case errors.Is(err, client.ErrConditionFailed),
		errors.Is(err, client.ErrNotFound),
		errors.Is(err, client.ErrLockHeld),
		errors.Is(err, client.ErrStaleToken),
		errors.Is(err, client.ErrTxnAborted),
		errors.Is(err, client.ErrLockLost):
		return ExitFailed
	}
	return ExitFailed
}

// ExitError ends a command with a chosen exit code. Err, when not nil, is
// printed as the command's error; a nil Err prints nothing (a child
// process's own exit code passed through, say).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

// FinalError is the error a command reports, Execute prints and ExitCode maps.
// When --timeout ended retries, it names what the cluster last did instead
// of the bare deadline: it kept answering (the answer's code, such as
// unavailable), or no node could be reached at all (unreachable). Both exit
// 3; a write whose outcome is unknown stays outcome_unknown.
func FinalError(err error) error {
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Code != client.CodeDeadlineExceeded {
		return err
	}
	var last error
	if j, ok := ce.Unwrap().(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if !errors.Is(e, context.DeadlineExceeded) {
				last = e
			}
		}
	}
	if last == nil {
		return err // no attempt ended before the deadline
	}
	var answer *client.Error
	if errors.As(last, &answer) && answer.Status != 0 {
		return &client.Error{Status: answer.Status, Code: answer.Code, Retryable: answer.Retryable,
			Message: answer.Message + " (still so when --timeout ran out)"}
	}
	return &client.Error{Code: client.CodeUnreachable, Retryable: true,
		Message: "no endpoint answered before --timeout ran out: " + last.Error()}
}

// Execute runs root with args and ctx, prints its error as "error: ..." on
// stderr and returns the exit code: what main passes to os.Exit.
func Execute(ctx context.Context, root *cobra.Command, args []string, stderr io.Writer) int {
	root.SetArgs(args)
	err := FinalError(root.ExecuteContext(ctx))
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Err != nil {
		fmt.Fprintf(stderr, "error: %v\n", err)
	}
	return ExitCode(err)
}

// WriteJSON prints v as one line of JSON, HTML characters unescaped.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// ReportErrors silences cobra's printing on cmd and its subcommands and turns
// argument errors into usage errors.
func ReportErrors(cmd *cobra.Command) {
	cmd.SilenceErrors, cmd.SilenceUsage = true, true
	if run := cmd.RunE; run != nil {
		cmd.RunE = func(c *cobra.Command, args []string) error { return Report(c, run(c, args)) }
	}
	if check := cmd.Args; check != nil {
		cmd.Args = func(c *cobra.Command, args []string) error {
			if err := check(c, args); err != nil {
				return Report(c, UsageError{err})
			}
			return nil
		}
	}
	for _, sub := range cmd.Commands() {
		ReportErrors(sub)
	}
}

// Report prints the usage text to stderr for a usage error; Execute prints
// the error itself.
func Report(cmd *cobra.Command, err error) error {
	var ue UsageError
	if errors.As(err, &ue) {
		fmt.Fprint(cmd.ErrOrStderr(), cmd.UsageString())
	}
	return err
}

// FlagErrors reports flag parse errors as usage errors. Cobra parses flags
// before RunE runs, so they are printed here.
func FlagErrors(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return Report(c, UsageError{err})
	})
}

// Printable returns s as is, or Go-quoted when it has control characters
// (a newline or tab in a key or name would break table lines; an escape
// sequence would reach the terminal).
func Printable(s string) string {
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return strconv.Quote(s)
	}
	return s
}

// NewRoot returns a command line's root command: the global flags, cobra's
// own printing silenced (Execute prints errors), bad flags and an unknown
// command as usage errors (exit 2, with a suggestion where one is close),
// and help when run without a command.
func NewRoot(use, short, long, version string, opts *GlobalOptions) *cobra.Command {
	root := &cobra.Command{
		Use:                        use,
		Short:                      short,
		Long:                       long,
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
			return UsageErrorf("%s", msg)
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return Usage(err) })
	AddGlobalFlags(root, opts)
	return root
}
