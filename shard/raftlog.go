package shard

import (
	"context"
	"log/slog"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// newRaftLogger adapts hashicorp/raft's hclog output to slog. Raft is chatty
// at info level (every election, every snapshot) for hundreds of groups, so
// only warnings and errors pass.
func newRaftLogger(l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:   "raft",
		Level:  hclog.Warn,
		Output: slogWriter{l},
	})
}

type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	level := slog.LevelWarn
	if strings.Contains(line, "[ERROR]") {
		level = slog.LevelError
	}
	w.l.Log(context.Background(), level, "raft", "line", line)
	return len(p), nil
}
