package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// newRaftLogger adapts hashicorp/raft's hclog logging to slog: each raft
// message becomes one record of l, with raft's message (prefixed "raft: ")
// and its key/value pairs as attributes, the time and level of l's handler
// and no second timestamp. The level is raft's, except for what raft
// reports as a warning or error although it happens in every healthy
// cluster (raftLevel). Group labels (shard=N, group=meta) come with l.
func newRaftLogger(l *slog.Logger) hclog.Logger {
	return &raftLogger{l: l, name: "raft"}
}

// raftLevel is the slog level of a raft message logged at level.
//
// Lowered, because they are routine:
//   - elections and a leader meeting a newer term are leadership changes:
//     INFO, as raft logs "entering leader state";
//   - a replica not yet in its group's configuration declines to start an
//     election; a leader walks a new or lagging follower back through its log
//     ("rejected, sending older logs", the follower's "failed to get previous
//     log"); a log entry already compacted away ("log not found") makes the
//     leader send a snapshot instead, which is how every split's child is
//     first replicated: DEBUG;
//   - one RPC to a peer failing (appendEntries, heartbeat, requestVote): a
//     peer restarting or stopping, retried with backoff and repeated every
//     few milliseconds while it is down: DEBUG. raft's own "failed to
//     contact" WARN says once that a follower is out of reach, and "failed to
//     contact quorum of nodes, stepping down" that a leader lost its quorum;
//   - the transport's accept loop seeing its group's layer closed, or a
//     connection cut by its shutdown: this node is stopping the group: DEBUG;
//   - a snapshot being received cut off: by this node's own shutdown, DEBUG;
//     by its sender going away (reset, cut short), WARN: the leader sends
//     it again.
//
// Everything else keeps raft's level: a log store that fails, a snapshot
// that cannot be written or restored, a follower out of contact.
func raftLevel(level hclog.Level, msg string, args []any) slog.Level {
	switch msg {
	case "heartbeat timeout reached, starting election",
		"Election timeout reached, restarting election",
		"new leader elected, stepping down",
		"peer has newer term, stopping replication",
		"clearing log suffix":
		return min(slog.LevelInfo, slogLevel(level))
	case "no known peers, aborting election",
		"not part of stable configuration, aborting election",
		"heartbeat timeout reached, not part of a stable configuration or a non-voter, not triggering a leader election",
		"appendEntries rejected, sending older logs",
		"previous log term mis-match",
		"skipping application of old log",
		"failed to appendEntries to",
		"failed to heartbeat to",
		"failed to pipeline appendEntries",
		"failed to start pipeline replication to",
		"failed to make requestVote RPC":
		return slog.LevelDebug
	case "failed to get log", "failed to get previous log", "failed to get log entry":
		if argErrIs(args, raft.ErrLogNotFound) {
			return slog.LevelDebug
		}
	case "failed to accept connection":
		if argErrIs(args, net.ErrClosed) {
			return slog.LevelDebug
		}
	case "failed to decode incoming command":
		if argErrIs(args, raft.ErrTransportShutdown) {
			return slog.LevelDebug
		}
	case "failed to copy snapshot":
		// A follower receiving a snapshot. Its own transport closing
		// under it: this node is stopping. The sender gone mid-stream
		// (stopped, crashed, cut off): the leader sends it again, to this
		// node or, if it was deposed, the next leader does. A sink that
		// cannot be written stays an error.
		switch {
		case argErrIs(args, net.ErrClosed), argErrIs(args, ErrMuxGroupClosed), argErrIs(args, raft.ErrTransportShutdown):
			return slog.LevelDebug
		case argErrIs(args, syscall.ECONNRESET), argErrIs(args, io.ErrUnexpectedEOF), argErrIs(args, ErrMuxConnBlocked):
			return min(slog.LevelWarn, slogLevel(level))
		}
	}
	if strings.HasPrefix(msg, "rejecting pre-vote request") {
		return slog.LevelDebug // pre-vote exists to be refused harmlessly
	}
	if strings.HasPrefix(msg, "rejecting vote request") {
		return min(slog.LevelInfo, slogLevel(level))
	}
	return slogLevel(level)
}

// argErrIs reports whether one of raft's key/value pairs holds an error
// matching target (by errors.Is, or by its text when a transport lost the
// type: a log store's "log not found" comes back as an RPC error string).
func argErrIs(args []any, target error) bool {
	for i := 1; i < len(args); i += 2 {
		if err, ok := args[i].(error); ok && (errors.Is(err, target) || strings.Contains(err.Error(), target.Error())) {
			return true
		}
	}
	return false
}

func slogLevel(l hclog.Level) slog.Level {
	switch {
	case l <= hclog.Debug:
		return slog.LevelDebug
	case l == hclog.Info:
		return slog.LevelInfo
	case l == hclog.Warn:
		return slog.LevelWarn
	}
	return slog.LevelError
}

// raftLogger implements hclog.Logger over slog.
type raftLogger struct {
	l    *slog.Logger
	name string
}

var _ hclog.Logger = (*raftLogger)(nil)

func (r *raftLogger) Log(level hclog.Level, msg string, args ...any) {
	lvl := raftLevel(level, msg, args)
	ctx := context.Background()
	if !r.l.Enabled(ctx, lvl) {
		return
	}
	if r.name != "" {
		msg = r.name + ": " + msg
	}
	r.l.Log(ctx, lvl, msg, attrs(args)...)
}

// reservedKeys are attribute names slog's handlers or the node's loggers
// already use: raft's "time" (since the last contact) and "node" (its own
// description) are renamed raft-time and raft-node, so no line names a key
// twice.
var reservedKeys = map[string]bool{
	slog.TimeKey: true, slog.LevelKey: true, slog.MessageKey: true, slog.SourceKey: true,
	"node": true, "shard": true, "group": true, "component": true,
}

// attrs turns hclog's key/value pairs into slog's, formatting hclog.Fmt
// values and renaming reservedKeys; a value without a key is kept under
// "extra".
func attrs(args []any) []any {
	out := make([]any, 0, len(args))
	for i := 0; i < len(args); i += 2 {
		if i+1 == len(args) {
			out = append(out, slog.Any("extra", args[i]))
			break
		}
		key := fmt.Sprint(args[i])
		if reservedKeys[key] {
			key = "raft-" + key
		}
		v := args[i+1]
		if f, ok := v.(hclog.Format); ok && len(f) > 0 {
			if s, ok := f[0].(string); ok {
				v = fmt.Sprintf(s, f[1:]...)
			}
		}
		out = append(out, slog.Any(key, v))
	}
	return out
}

func (r *raftLogger) Trace(msg string, args ...any) { r.Log(hclog.Trace, msg, args...) }
func (r *raftLogger) Debug(msg string, args ...any) { r.Log(hclog.Debug, msg, args...) }
func (r *raftLogger) Info(msg string, args ...any)  { r.Log(hclog.Info, msg, args...) }
func (r *raftLogger) Warn(msg string, args ...any)  { r.Log(hclog.Warn, msg, args...) }
func (r *raftLogger) Error(msg string, args ...any) { r.Log(hclog.Error, msg, args...) }

func (r *raftLogger) enabled(l slog.Level) bool { return r.l.Enabled(context.Background(), l) }

func (r *raftLogger) IsTrace() bool { return false }
func (r *raftLogger) IsDebug() bool { return r.enabled(slog.LevelDebug) }
func (r *raftLogger) IsInfo() bool  { return r.enabled(slog.LevelInfo) }
func (r *raftLogger) IsWarn() bool  { return r.enabled(slog.LevelWarn) }
func (r *raftLogger) IsError() bool { return r.enabled(slog.LevelError) }

func (r *raftLogger) ImpliedArgs() []any { return nil }

func (r *raftLogger) With(args ...any) hclog.Logger {
	return &raftLogger{l: r.l.With(attrs(args)...), name: r.name}
}

func (r *raftLogger) Name() string { return r.name }

func (r *raftLogger) Named(name string) hclog.Logger {
	if r.name != "" {
		name = r.name + "." + name
	}
	return &raftLogger{l: r.l, name: name}
}

func (r *raftLogger) ResetNamed(name string) hclog.Logger { return &raftLogger{l: r.l, name: name} }

// SetLevel does nothing: the slog handler decides what is logged.
func (r *raftLogger) SetLevel(hclog.Level) {}

func (r *raftLogger) GetLevel() hclog.Level {
	switch {
	case r.IsDebug():
		return hclog.Debug
	case r.IsInfo():
		return hclog.Info
	case r.IsWarn():
		return hclog.Warn
	}
	return hclog.Error
}

func (r *raftLogger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(r.StandardWriter(opts), "", 0)
}

// StandardWriter logs each line written at INFO (raft does not use it).
func (r *raftLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer { return lineWriter{r} }

type lineWriter struct{ r *raftLogger }

func (w lineWriter) Write(p []byte) (int, error) {
	w.r.Info(strings.TrimSpace(string(p)))
	return len(p), nil
}
