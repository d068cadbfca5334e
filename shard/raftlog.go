package shard

import (
	"context"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// newRaftLogger adapts hashicorp/raft's hclog output to slog, at the level
// the node's logger enables: elections and leadership changes (info) are
// what a post-mortem of a fault needs; debug adds every RPC decision.
func newRaftLogger(l *slog.Logger) hclog.Logger {
	level := hclog.Warn
	switch {
	case l.Enabled(context.Background(), slog.LevelDebug):
		level = hclog.Debug
	case l.Enabled(context.Background(), slog.LevelInfo):
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:   "raft",
		Level:  level,
		Output: slogWriter{l},
	})
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelWarn
	switch {
	case strings.Contains(line, "[ERROR]"):
		level = slog.LevelError
	case strings.Contains(line, "[INFO]"):
		level = slog.LevelInfo
	case strings.Contains(line, "[DEBUG]"), strings.Contains(line, "[TRACE]"):
		level = slog.LevelDebug
	}
	w.l.Log(context.Background(), level, "raft", "line", line)
	return len(p), nil
}
