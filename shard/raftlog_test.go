package shard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// recordHandler keeps every record it is handed, with the attributes
// added by With.
type recordHandler struct {
	mu      *sync.Mutex
	records *[]slog.Record
	attrs   []slog.Attr
}

func newRecordHandler() *recordHandler {
	return &recordHandler{mu: &sync.Mutex{}, records: &[]slog.Record{}}
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	h.mu.Lock()
	*h.records = append(*h.records, r)
	h.mu.Unlock()
	return nil
}
func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(append([]slog.Attr(nil), h.attrs...), as...)
	return &c
}
func (h *recordHandler) WithGroup(string) slog.Handler { return h }

func (h *recordHandler) all() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), *h.records...)
}

// raft's messages reach slog as records of their own: the message as the
// record's message, raft's key/value pairs as attributes, no second
// timestamp; what happens in a healthy cluster (elections, catching up a
// follower, a peer that stopped, a group that is closing) below WARN, real
// failures at their own level.
func TestRaftLoggerLevels(t *testing.T) {
	dialErr := errors.New("dial tcp 127.0.0.1:7081: connect: connection refused")
	cases := []struct {
		name  string
		log   func(l hclog.Logger)
		level slog.Level
		msg   string
		attr  string // "key=value" expected among the attributes
	}{
		{"election at start", func(l hclog.Logger) {
			l.Warn("heartbeat timeout reached, starting election", "last-leader-addr", "", "last-leader-id", "")
		}, slog.LevelInfo, "raft: heartbeat timeout reached, starting election", "last-leader-id="},
		{"joiner without peers", func(l hclog.Logger) {
			l.Warn("no known peers, aborting election")
		}, slog.LevelDebug, "raft: no known peers, aborting election", ""},
		{"follower catching up", func(l hclog.Logger) {
			l.Warn("failed to get previous log", "previous-index", 1, "last-index", 0, "error", raft.ErrLogNotFound)
		}, slog.LevelDebug, "raft: failed to get previous log", "previous-index=1"},
		{"leader sends older logs", func(l hclog.Logger) {
			l.Warn("appendEntries rejected, sending older logs", "peer", "n2", "next", 1)
		}, slog.LevelDebug, "raft: appendEntries rejected, sending older logs", "next=1"},
		{"split child: log compacted, snapshot sent", func(l hclog.Logger) {
			l.Error("failed to get log", "index", 1, "error", raft.ErrLogNotFound)
		}, slog.LevelDebug, "raft: failed to get log", "index=1"},
		{"group closing", func(l hclog.Logger) {
			l.Error("failed to accept connection", "error", fmt.Errorf("%w: group 3", ErrMuxGroupClosed))
		}, slog.LevelDebug, "raft: failed to accept connection", ""},
		{"peer stopped", func(l hclog.Logger) {
			l.Error("failed to appendEntries to", "peer", "n2", "error", dialErr)
		}, slog.LevelDebug, "raft: failed to appendEntries to", "peer=n2"},
		{"peer stopped, heartbeat", func(l hclog.Logger) {
			l.Error("failed to heartbeat to", "peer", "127.0.0.1:7081", "backoff time", 10*time.Millisecond, "error", dialErr)
		}, slog.LevelDebug, "raft: failed to heartbeat to", "backoff time=10ms"},
		{"newer term", func(l hclog.Logger) {
			l.Error("peer has newer term, stopping replication", "peer", "n2")
		}, slog.LevelInfo, "raft: peer has newer term, stopping replication", "peer=n2"},
		// Kept: a follower out of contact, a leader losing its quorum, and
		// real failures.
		{"follower out of contact", func(l hclog.Logger) {
			l.Warn("failed to contact", "server-id", "n3", "time", time.Second)
		}, slog.LevelWarn, "raft: failed to contact", "server-id=n3"},
		{"quorum lost", func(l hclog.Logger) {
			l.Warn("failed to contact quorum of nodes, stepping down")
		}, slog.LevelWarn, "raft: failed to contact quorum of nodes, stepping down", ""},
		{"snapshot transfer cut: this node stopping", func(l hclog.Logger) {
			l.Error("failed to copy snapshot", "error", fmt.Errorf("read tcp 127.0.0.1:7081->127.0.0.1:40000: %w", net.ErrClosed))
		}, slog.LevelDebug, "raft: failed to copy snapshot", ""},
		{"snapshot transfer cut: the sender went away", func(l hclog.Logger) {
			l.Error("failed to copy snapshot", "error", fmt.Errorf("read tcp 127.0.0.1:7081->127.0.0.1:40000: %w", syscall.ECONNRESET))
		}, slog.LevelWarn, "raft: failed to copy snapshot", ""},
		{"snapshot transfer cut short", func(l hclog.Logger) {
			l.Error("failed to copy snapshot", "error", io.ErrUnexpectedEOF)
		}, slog.LevelWarn, "raft: failed to copy snapshot", ""},
		{"snapshot to a full disk", func(l hclog.Logger) {
			l.Error("failed to copy snapshot", "error", errors.New("write snapshot: no space left on device"))
		}, slog.LevelError, "raft: failed to copy snapshot", ""},
		{"log store failure", func(l hclog.Logger) {
			l.Error("failed to get log", "index", 7, "error", errors.New("read wal: input/output error"))
		}, slog.LevelError, "raft: failed to get log", "index=7"},
		{"commit failure", func(l hclog.Logger) {
			l.Error("failed to commit logs", "error", errors.New("sync: no space left on device"))
		}, slog.LevelError, "raft: failed to commit logs", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newRecordHandler()
			tc.log(newRaftLogger(slog.New(h).With("shard", 3)))
			recs := h.all()
			if len(recs) != 1 {
				t.Fatalf("%d records, want 1: %v", len(recs), recs)
			}
			r := recs[0]
			var attrs []string
			r.Attrs(func(a slog.Attr) bool {
				attrs = append(attrs, a.Key+"="+a.Value.String())
				return true
			})
			joined := strings.Join(attrs, " ")
			if r.Level != tc.level || r.Message != tc.msg {
				t.Errorf("level %v msg %q, want %v %q (attrs %s)", r.Level, r.Message, tc.level, tc.msg, joined)
			}
			if !strings.Contains(joined, tc.attr) || !strings.Contains(joined, "shard=3") {
				t.Errorf("attrs %q lack %q or shard=3", joined, tc.attr)
			}
			for _, a := range attrs {
				if strings.HasPrefix(a, "line=") {
					t.Errorf("raft's formatted line (with its own timestamp) as an attribute: %s", a)
				}
			}
		})
	}
}
