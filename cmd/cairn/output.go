package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairndb/cairn/client"
)

// globalOptions are the flags every command takes (docs/api.md, "Command lines").
type globalOptions struct {
	Endpoints []string
	Output    string // "table" or "json"
	Timeout   time.Duration
}

const (
	outputTable = "table"
	outputJSON  = "json"
)

// addGlobalFlags registers the global flags on cmd as persistent flags.
func addGlobalFlags(cmd *cobra.Command, o *globalOptions) {
	def := []string{"127.0.0.1:7070"}
	if env := os.Getenv("CAIRN_ENDPOINTS"); strings.TrimSpace(env) != "" {
		def = splitList(env)
	}
	f := cmd.PersistentFlags()
	f.StringSliceVar(&o.Endpoints, "endpoints", def, "cairn nodes, host:port,... ($CAIRN_ENDPOINTS sets the default)")
	f.StringVarP(&o.Output, "output", "o", outputTable, "output format: table or json")
	f.DurationVar(&o.Timeout, "timeout", 10*time.Second, "give up after this long")
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// validate checks the global options after parsing.
func (o *globalOptions) validate() error {
	switch o.Output {
	case outputTable, outputJSON:
	default:
		return usageErrorf("--output must be table or json, not %q", o.Output)
	}
	var eps []string
	for _, e := range o.Endpoints {
		eps = append(eps, splitList(e)...)
	}
	if len(eps) == 0 {
		return usageErrorf("--endpoints is empty")
	}
	o.Endpoints = eps
	if o.Timeout <= 0 {
		return usageErrorf("--timeout must be positive")
	}
	return nil
}

// newClient returns a client for the global options and a context bounded by
// --timeout. Call the returned function when done.
func (o *globalOptions) newClient(cmd *cobra.Command) (*client.Client, context.Context, func(), error) {
	// One command makes one call: a range map fetched for routing would cost
	// more than the forwarding hop it saves. Retries are bounded by
	// --timeout, not by a count: during a failover the cluster answers
	// "unavailable" for an election timeout or more, and a fixed count of
	// quick retries would give up long before --timeout.
	return o.clientFor(cmd, client.Config{Endpoints: o.Endpoints, DisableRouting: true, MaxRetries: untilTimeout}, true)
}

// untilTimeout as client.Config.MaxRetries: retry until the context ends.
const untilTimeout = math.MaxInt32

// longClient is newClient for commands that make many calls and run as long
// as they need (until Ctrl-C): routing on, no overall --timeout.
func (o *globalOptions) longClient(cmd *cobra.Command) (*client.Client, context.Context, func(), error) {
	return o.clientFor(cmd, client.Config{Endpoints: o.Endpoints}, false)
}

// clientFor validates the global flags and makes a client with cfg and the
// command's context: bounded by --timeout when timed, else ended by Ctrl-C
// or SIGTERM.
func (o *globalOptions) clientFor(cmd *cobra.Command, cfg client.Config, timed bool) (*client.Client, context.Context, func(), error) {
	if err := o.validate(); err != nil {
		return nil, nil, nil, err
	}
	c, err := client.New(cfg)
	if err != nil {
		return nil, nil, nil, usageErrorf("%v", err)
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

// usageErrorf returns a usage error (exit code 2). The usageError type is
// declared next to the server command.
func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// exitCode maps a command's error to the process exit status of docs/api.md:
// 0 success, 1 a failed operation, 2 bad usage, 3 no definite answer within
// --timeout (no node reachable, the cluster still unavailable or
// overloaded, or a write's outcome unknown).
// Errors of the client package print as "<code>: <message>", so main's
// "error: %v" gives the "error: <code>: <message>" line of the command lines.
func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ue):
		return 2
	case errors.Is(err, client.ErrOutcomeUnknown),
		errors.Is(err, client.ErrUnreachable),
		errors.Is(err, client.ErrUnavailable),
		errors.Is(err, client.ErrOverloaded),
		errors.Is(err, context.DeadlineExceeded):
		return 3
	case errors.Is(err, client.ErrInvalidArgument), errors.Is(err, client.ErrTooLarge):
		return 2
	case errors.Is(err, client.ErrConditionFailed),
		errors.Is(err, client.ErrNotFound),
		errors.Is(err, client.ErrLockHeld),
		errors.Is(err, client.ErrStaleToken),
		errors.Is(err, client.ErrTxnAborted),
		errors.Is(err, client.ErrLockLost):
		return 1
	}
	return 1
}

// finalError is the error a command reports, main prints and exitCode maps.
// When --timeout ended retries, it names what the cluster last did instead
// of the bare deadline: it kept answering (the answer's code, such as
// unavailable), or no node could be reached at all (unreachable). Both exit
// 3; a write whose outcome is unknown stays outcome_unknown.
func finalError(err error) error {
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

// writeJSON prints v as one line of JSON, HTML characters unescaped.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
